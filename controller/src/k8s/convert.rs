//! The controller's compact copy of a Service: what it keeps of each watched Service (the
//! mapping of a Service's fields to a [`ServiceView`] is `ferrolb_runtime::service`'s).
//!
//! Must not: decide anything, or map a field differently from `ferrolb_runtime::service`.

use std::collections::BTreeMap;

use ferrolb_config::{ServiceKey, ServiceView};
use k8s_openapi::api::core::v1::Service;

pub use ferrolb_runtime::service::{service_key, ServiceMeta};

/// The controller's compact copy of a Service, taking the object apart instead of copying it:
/// the view with only the annotations the allocator reads and, unless `labels` (the
/// configuration may come from MetalLB's CRDs, whose `serviceSelectors` read them), no labels
/// (`kubectl apply`'s last-applied-configuration alone is often larger than the rest), plus
/// the uid and resourceVersion. The object itself (with its managedFields) is dropped. The ports
/// and the selector are read only by the sharing rules, so they are kept only for a Service with
/// an `allow-shared-ip` key (a selector alone costs a B-tree node of ~0.5 KiB per Service).
pub fn compact(svc: Service, labels: bool) -> (ServiceView, ServiceMeta) {
    let Service {
        metadata,
        spec,
        status,
    } = svc;
    let key = ServiceKey::new(
        metadata.namespace.unwrap_or_default(),
        metadata.name.unwrap_or_default(),
    );
    let mut annotations = metadata.annotations.unwrap_or_default();
    annotations.retain(|k, _| ferrolb_config::service::annotations::read_by_allocator(k));
    let annotations = ferrolb_config::service::annotations::canonical(annotations);
    let shares = annotations
        .get(ferrolb_config::service::annotations::ALLOW_SHARED_IP)
        .is_some_and(|k| !k.trim().is_empty());
    let mut spec = spec.unwrap_or_default();
    if !shares {
        spec.ports = None;
        spec.selector = None;
    }
    let labels = match labels {
        true => metadata.labels.unwrap_or_default(),
        false => BTreeMap::new(),
    };
    let view = ferrolb_runtime::service::fields(key, spec, annotations, labels, status.as_ref())
        .into_view();
    let meta = ServiceMeta {
        uid: metadata.uid,
        resource_version: metadata.resource_version,
    };
    (view, meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_runtime::service::service_view;
    use std::collections::BTreeMap;

    /// The Service of `ferrolb_runtime::service`'s tests, as the apiserver sends it.
    fn svc() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "ns",
                "name": "web",
                "annotations": {"metallb.universe.tf/allow-shared-ip": "k"}
            },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "ferrolb",
                "ipFamilies": ["IPv6", "IPv4"],
                "ipFamilyPolicy": "RequireDualStack",
                "clusterIPs": ["2001:db8::1", "198.51.100.9"],
                "loadBalancerIP": "",
                "externalTrafficPolicy": "Local",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "UDP"}]
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example"}]}}
        }))
        .expect("a valid Service")
    }

    #[test]
    fn compact_keeps_what_the_allocator_reads_and_the_reference() {
        let mut s = svc();
        s.metadata.uid = Some("u-1".into());
        s.metadata.resource_version = Some("42".into());
        s.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        if let Some(a) = s.metadata.annotations.as_mut() {
            a.insert(
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{...}".into(),
            );
        }
        let full = service_view(&s);
        let (view, meta) = compact(s.clone(), false);
        let (with_labels, _) = compact(s.clone(), true);
        assert_eq!(with_labels.labels, full.labels, "labels kept when asked");
        assert!(!full.labels.is_empty());
        let mut expected = full.clone();
        expected.labels.clear();
        expected
            .annotations
            .retain(|k, _| ferrolb_config::service::annotations::read_by_allocator(k));
        assert_eq!(view, expected);
        assert_eq!(view.annotations.len(), 1, "allow-shared-ip kept");
        assert!(!view.ports.is_empty(), "a sharing Service keeps its ports");
        assert!(!view.selector.is_empty(), "and its selector");
        assert_eq!(meta.revision(), Some(42));
        assert_eq!(
            meta.object_ref(&view.key),
            kube::Resource::object_ref(&s, &())
        );
    }

    #[test]
    fn compact_drops_ports_and_selector_of_a_service_that_shares_nothing() {
        for key in [None, Some("  ")] {
            let mut s = svc();
            let a = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
            a.remove(ferrolb_config::service::annotations::ALLOW_SHARED_IP);
            if let Some(k) = key {
                a.insert(
                    ferrolb_config::service::annotations::ALLOW_SHARED_IP.into(),
                    k.into(),
                );
            }
            let full = service_view(&s);
            let (view, _) = compact(s, false);
            assert!(view.ports.is_empty() && view.selector.is_empty(), "{key:?}");
            let mut expected = full;
            expected.labels.clear();
            expected.ports.clear();
            expected.selector.clear();
            assert_eq!(view, expected, "everything else kept ({key:?})");
        }
    }
}
