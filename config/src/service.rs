//! The plain view of a Kubernetes Service that ferrolb reasons about.
//!
//! Both sources produce it: the Kubernetes shell (from k8s-openapi objects) and standalone mode /
//! `config check --services` (from Service manifests in YAML). Fields are kept close to the raw
//! object (annotations unparsed) so that request parsing and its error messages live in one place,
//! the controller's allocator.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::addr::IpFamily;

/// Reads Service manifests (`kubectl get svc -A -o yaml`); see [`crate::manifests`].
pub use crate::manifests::parse_services;

/// `namespace/name` of a Service; ordered for stable output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// One `spec.ports` entry, as far as sharing rules care.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServicePort {
    /// `TCP`, `UDP` or `SCTP` (default `TCP`).
    pub protocol: String,
    pub port: u16,
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// What ferrolb needs to know about one Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub key: ServiceKey,
    /// `spec.type == LoadBalancer`.
    pub is_load_balancer: bool,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.ipFamilies` in order (the first is the primary family). Empty when the source
    /// did not say; consumers then use `cluster_ips`, else assume IPv4.
    pub ip_families: Vec<IpFamily>,
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.clusterIPs` (or `spec.clusterIP`), parsed; "None" and unparsable values dropped.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.loadBalancerIP`, raw (validated by the allocator, which reports errors).
    pub load_balancer_ip: Option<String>,
    /// `metadata.annotations`, raw.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// `status.loadBalancer.ingress[].ip` that parse as addresses, in order.
    pub ingress_ips: Vec<IpAddr>,
}

impl ServiceView {
    /// A minimal IPv4 single-stack `LoadBalancer` Service with no ports, for tests and tools.
    pub fn new_load_balancer(key: ServiceKey) -> ServiceView {
        ServiceView {
            key,
            is_load_balancer: true,
            load_balancer_class: None,
            ip_families: vec![IpFamily::V4],
            ip_family_policy: IpFamilyPolicy::SingleStack,
            cluster_ips: Vec::new(),
            load_balancer_ip: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            external_traffic_policy: TrafficPolicy::Cluster,
            selector: BTreeMap::new(),
            ingress_ips: Vec::new(),
        }
    }
}

/// The `spec.loadBalancerClass` ferrolb serves unless told otherwise (besides Services with no
/// class).
pub const DEFAULT_CLASS: &str = "ferrolb";

/// True when ferrolb serves this Service: `type: LoadBalancer` and either no
/// `spec.loadBalancerClass` or exactly `our_class`. The one copy of this rule: the allocator,
/// the planner, the speaker's World and `config check` all ask it.
pub fn is_ours(view: &ServiceView, our_class: &str) -> bool {
    view.is_load_balancer
        && view
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == our_class)
}

/// Annotation names MetalLB users already use.
pub mod annotations {
    pub const ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
    pub const LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
    pub const ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_filtering() {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", "a"));
        assert!(is_ours(&v, DEFAULT_CLASS));
        v.load_balancer_class = Some(DEFAULT_CLASS.into());
        assert!(is_ours(&v, DEFAULT_CLASS));
        v.load_balancer_class = Some("other.example/lb".into());
        assert!(!is_ours(&v, DEFAULT_CLASS));
        assert!(is_ours(&v, "other.example/lb"));
        v.load_balancer_class = None;
        v.is_load_balancer = false;
        assert!(!is_ours(&v, DEFAULT_CLASS));
    }
}
