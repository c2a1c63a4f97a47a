//! A k8s-openapi `Service` as ferrolb reads it: its raw fields
//! ([`ServiceFields`](ferrolb_config::service::ServiceFields)), whose rules turn them into a
//! [`ServiceView`]. Both Kubernetes roles read Services through here.
//!
//! Must not: apply a rule itself (families, policies, defaults live in `ferrolb_config`).

use std::collections::BTreeMap;

use ferrolb_config::service::ServiceFields;
use ferrolb_config::{ServiceKey, ServiceView};
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceSpec, ServiceStatus};

/// `namespace/name` of a Service object (empty strings when missing).
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// What a role keeps of a Service besides its view, to refer to it (Events, status writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMeta {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl ServiceMeta {
    /// `metadata.resourceVersion` as a number when it is one (etcd revisions are).
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }

    /// The reference an Event about Service `key` points at (what `Resource::object_ref` gives).
    pub fn object_ref(&self, key: &ServiceKey) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Service".to_string()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: self.uid.clone(),
            resource_version: None,
            field_path: None,
        }
    }
}

/// The view of a Service (the object is borrowed; see [`fields`] to take one apart).
pub fn service_view(svc: &Service) -> ServiceView {
    fields(
        service_key(svc),
        svc.spec.clone().unwrap_or_default(),
        svc.metadata.annotations.clone().unwrap_or_default(),
        svc.metadata.labels.clone().unwrap_or_default(),
        svc.status.as_ref(),
    )
    .into_view()
}

/// The raw fields of a Service taken apart (strings are moved, not copied).
pub fn fields(
    key: ServiceKey,
    spec: ServiceSpec,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    status: Option<&ServiceStatus>,
) -> ServiceFields {
    // From a borrowed list: collecting from `into_iter()` would reuse the k8s-openapi list's
    // allocation (room for several full `ServicePort`s) for the small converted ones.
    let ports = spec
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|p| (p.protocol.clone(), i64::from(p.port)))
        .collect();
    ServiceFields {
        key,
        type_: spec.type_,
        load_balancer_class: spec.load_balancer_class,
        ip_families: spec.ip_families.unwrap_or_default(),
        ip_family_policy: spec.ip_family_policy,
        cluster_ips: spec.cluster_ips.unwrap_or_default(),
        cluster_ip: spec.cluster_ip,
        load_balancer_ip: spec.load_balancer_ip,
        annotations,
        labels,
        ports,
        external_traffic_policy: spec.external_traffic_policy,
        selector: spec.selector.unwrap_or_default(),
        ingress_ips: ingress_texts(status),
    }
}

/// `status.loadBalancer.ingress[].ip` as written.
fn ingress_texts(status: Option<&ServiceStatus>) -> Vec<String> {
    status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}
