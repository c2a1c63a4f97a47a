//! What the controller keeps of a k8s-openapi `Service`: a compact [`ServiceView`] (read through
//! `ferrolb_runtime::service`, where both roles read Services) and what it needs to write to it.
//!
//! Must not: decide anything. Unknown or malformed values are passed on raw (or dropped when they
//! cannot be represented) so the allocator reports them.

use std::collections::BTreeMap;

use ferrolb_config::{ServiceKey, ServiceView};
use k8s_openapi::api::core::v1::Service;

pub use ferrolb_runtime::service::{service_key, service_view, ServiceMeta};

/// Prefix of every annotation the allocator reads (`metallb.universe.tf/address-pool`,
/// `.../loadBalancerIPs`, `.../allow-shared-ip`).
pub const ALLOCATOR_ANNOTATION_PREFIX: &str = "metallb.universe.tf/";

/// The controller's compact copy of a Service, taking the object apart instead of copying it:
/// the view with only the annotations the allocator reads and no labels (the allocator reads
/// none; `kubectl apply`'s last-applied-configuration alone is often larger than the rest), plus
/// the uid and resourceVersion. The object itself (with its managedFields) is dropped. The ports
/// and the selector are read only by the sharing rules, so they are kept only for a Service with
/// an `allow-shared-ip` key (a selector alone costs a B-tree node of ~0.5 KiB per Service).
pub fn compact(svc: Service) -> (ServiceView, ServiceMeta) {
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
    annotations.retain(|k, _| k.starts_with(ALLOCATOR_ANNOTATION_PREFIX));
    let shares = annotations
        .get(ferrolb_config::service::annotations::ALLOW_SHARED_IP)
        .is_some_and(|k| !k.trim().is_empty());
    let mut spec = spec.unwrap_or_default();
    if !shares {
        spec.ports = None;
        spec.selector = None;
    }
    let view =
        ferrolb_runtime::service::fields(key, spec, annotations, BTreeMap::new(), status.as_ref())
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
    use ferrolb_config::{IpFamily, IpFamilyPolicy, ServicePort, TrafficPolicy};
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                annotations: Some(BTreeMap::from([(
                    "metallb.universe.tf/allow-shared-ip".to_string(),
                    "k".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: Some("ferrolb".into()),
                ip_families: Some(vec!["IPv6".into(), "IPv4".into()]),
                ip_family_policy: Some("RequireDualStack".into()),
                cluster_ips: Some(vec!["2001:db8::1".into(), "198.51.100.9".into()]),
                load_balancer_ip: Some(String::new()),
                external_traffic_policy: Some("Local".into()),
                selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                    port: 80,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![
                        LoadBalancerIngress {
                            ip: Some("203.0.113.7".into()),
                            ..Default::default()
                        },
                        LoadBalancerIngress {
                            hostname: Some("lb.example".into()),
                            ..Default::default()
                        },
                    ]),
                }),
                ..ServiceStatus::default()
            }),
        }
    }

    #[test]
    fn converts_every_field_the_allocator_reads() {
        let v = service_view(&svc());
        assert_eq!(v.key, ServiceKey::new("ns", "web"));
        assert!(v.is_load_balancer);
        assert_eq!(v.load_balancer_class.as_deref(), Some("ferrolb"));
        assert_eq!(v.ip_families, vec![IpFamily::V6, IpFamily::V4]);
        assert_eq!(v.ip_family_policy, IpFamilyPolicy::RequireDualStack);
        assert_eq!(v.cluster_ips.len(), 2);
        assert_eq!(v.load_balancer_ip, None, "empty loadBalancerIP means none");
        assert_eq!(v.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(
            v.ports,
            vec![ServicePort {
                protocol: "UDP".into(),
                port: 80
            }]
        );
        assert_eq!(
            v.ingress_ips,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(v.annotations.len(), 1);
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
        let (view, meta) = compact(s.clone());
        let mut expected = full.clone();
        expected.labels.clear();
        expected
            .annotations
            .retain(|k, _| k.starts_with(ALLOCATOR_ANNOTATION_PREFIX));
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
            let (view, _) = compact(s);
            assert!(view.ports.is_empty() && view.selector.is_empty(), "{key:?}");
            let mut expected = full;
            expected.labels.clear();
            expected.ports.clear();
            expected.selector.clear();
            assert_eq!(view, expected, "everything else kept ({key:?})");
        }
    }

    #[test]
    fn cluster_ip_service_is_not_a_load_balancer() {
        let mut s = svc();
        if let Some(spec) = s.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
            spec.cluster_ips = None;
            spec.cluster_ip = Some("198.51.100.3".into());
        }
        let v = service_view(&s);
        assert!(!v.is_load_balancer);
        assert_eq!(
            v.cluster_ips,
            vec!["198.51.100.3".parse::<IpAddr>().unwrap()]
        );
    }
}
