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
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// A Service's fields as a source reads them (strings as written, before any rule), which
/// [`ServiceFields::into_view`] turns into a [`ServiceView`]. Every source fills one: the
/// Kubernetes roles from k8s-openapi objects, standalone mode and `config check --services` from
/// YAML manifests. The rules (family and policy names, the `clusterIP` fallback, the `TCP`
/// default, empty strings meaning unset) are written here once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFields {
    pub key: ServiceKey,
    /// `spec.type`.
    pub type_: Option<String>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.ipFamilies`.
    pub ip_families: Vec<String>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<String>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<String>,
    /// `spec.clusterIP`, read when `clusterIPs` is empty.
    pub cluster_ip: Option<String>,
    /// `spec.loadBalancerIP`.
    pub load_balancer_ip: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// `spec.ports[]`: `protocol` and `port` as written.
    pub ports: Vec<(Option<String>, i64)>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<String>,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// `status.loadBalancer.ingress[].ip`.
    pub ingress_ips: Vec<String>,
}

impl ServiceFields {
    /// The view: unknown family names and unparsable addresses are dropped, an empty class or
    /// `loadBalancerIP` means none, a port outside 0..=65535 is dropped, a port without a
    /// protocol is `TCP`, `clusterIP` stands in for an empty `clusterIPs`.
    pub fn into_view(self) -> ServiceView {
        let ServiceFields {
            key,
            type_,
            load_balancer_class,
            ip_families,
            ip_family_policy,
            cluster_ips,
            cluster_ip,
            load_balancer_ip,
            annotations,
            labels,
            ports,
            external_traffic_policy,
            selector,
            ingress_ips,
        } = self;
        let ip_families = ip_families
            .iter()
            .filter_map(|f| match f.as_str() {
                "IPv4" => Some(IpFamily::V4),
                "IPv6" => Some(IpFamily::V6),
                _ => None,
            })
            .collect();
        let ip_family_policy = match ip_family_policy.as_deref() {
            Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
            _ => IpFamilyPolicy::SingleStack,
        };
        let cluster_ip_texts = if cluster_ips.is_empty() {
            cluster_ip.into_iter().collect()
        } else {
            cluster_ips
        };
        let external_traffic_policy = match external_traffic_policy.as_deref() {
            Some("Local") => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        };
        ServiceView {
            key,
            is_load_balancer: type_.as_deref() == Some("LoadBalancer"),
            load_balancer_class: load_balancer_class.filter(|c| !c.is_empty()),
            ip_families,
            ip_family_policy,
            cluster_ips: parse_ips(&cluster_ip_texts),
            load_balancer_ip: load_balancer_ip.filter(|s| !s.is_empty()),
            annotations: annotations::canonical(annotations),
            labels,
            ports: ports
                .into_iter()
                .filter_map(|(protocol, port)| {
                    Some(ServicePort {
                        protocol: protocol.unwrap_or_else(|| "TCP".to_string()),
                        port: u16::try_from(port).ok()?,
                    })
                })
                .collect(),
            external_traffic_policy,
            selector,
            ingress_ips: parse_ips(&ingress_ips),
        }
    }
}

/// The texts that parse as addresses, in order.
fn parse_ips(texts: &[String]) -> Vec<IpAddr> {
    texts.iter().filter_map(|s| s.parse().ok()).collect()
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
    use std::collections::BTreeMap;

    pub const ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
    pub const LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
    pub const ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
    /// The `metallb.io/` names of the request annotations (MetalLB 0.14.9 and later; the old
    /// names still work), beside the old ones, under which a view keeps them.
    const RENAMED: [(&str, &str); 3] = [
        ("metallb.io/address-pool", ADDRESS_POOL),
        ("metallb.io/loadBalancerIPs", LOAD_BALANCER_IPS),
        ("metallb.io/allow-shared-ip", ALLOW_SHARED_IP),
    ];

    /// The annotations with each `metallb.io/` request annotation (`address-pool`,
    /// `loadBalancerIPs`, `allow-shared-ip`) under its `metallb.universe.tf/` name, which the
    /// rest of ferrolb reads. The new name wins when a Service has both, as in MetalLB.
    pub fn canonical(mut a: BTreeMap<String, String>) -> BTreeMap<String, String> {
        for (new, old) in RENAMED {
            if let Some(v) = a.remove(new) {
                a.insert(old.to_string(), v);
            }
        }
        a
    }

    /// True for an annotation the allocator reads, under either name.
    pub fn read_by_allocator(key: &str) -> bool {
        RENAMED.iter().any(|(new, old)| key == *new || key == *old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_io_annotations_are_read_as_the_old_names_and_win() {
        let fields = ServiceFields {
            annotations: BTreeMap::from([
                ("metallb.io/address-pool".to_string(), "new".to_string()),
                (
                    "metallb.universe.tf/address-pool".to_string(),
                    "old".to_string(),
                ),
                (
                    "metallb.io/loadBalancerIPs".to_string(),
                    "192.0.2.1".to_string(),
                ),
                ("metallb.io/other".to_string(), "x".to_string()),
            ]),
            ..ServiceFields::default()
        };
        let v = fields.into_view();
        assert_eq!(
            v.annotations,
            BTreeMap::from([
                ("metallb.io/other".to_string(), "x".to_string()),
                (annotations::ADDRESS_POOL.to_string(), "new".to_string()),
                (
                    annotations::LOAD_BALANCER_IPS.to_string(),
                    "192.0.2.1".to_string()
                ),
            ])
        );
        assert!(annotations::read_by_allocator("metallb.io/allow-shared-ip"));
        assert!(annotations::read_by_allocator(annotations::ALLOW_SHARED_IP));
        assert!(!annotations::read_by_allocator("metallb.io/other"));
    }

    #[test]
    fn fields_become_a_view_by_the_documented_rules() {
        let fields = ServiceFields {
            key: ServiceKey::new("ns", "a"),
            type_: Some("LoadBalancer".into()),
            load_balancer_class: Some(String::new()),
            ip_families: vec!["IPv6".into(), "IPv7".into(), "IPv4".into()],
            ip_family_policy: Some("RequireDualStack".into()),
            cluster_ip: Some("10.96.0.1".into()),
            load_balancer_ip: Some(String::new()),
            ports: vec![
                (None, 80),
                (Some("UDP".into()), 53),
                (Some("TCP".into()), 70_000),
            ],
            external_traffic_policy: Some("Local".into()),
            ingress_ips: vec!["192.0.2.1".into(), "not-an-ip".into()],
            ..ServiceFields::default()
        };
        let v = fields.clone().into_view();
        assert!(v.is_load_balancer);
        assert_eq!(v.load_balancer_class, None, "empty class: none");
        assert_eq!(v.ip_families, vec![IpFamily::V6, IpFamily::V4]);
        assert_eq!(v.ip_family_policy, IpFamilyPolicy::RequireDualStack);
        assert_eq!(
            v.cluster_ips,
            vec!["10.96.0.1".parse::<IpAddr>().unwrap()],
            "clusterIP fallback"
        );
        assert_eq!(v.load_balancer_ip, None);
        assert_eq!(
            v.ports,
            vec![
                ServicePort {
                    protocol: "TCP".into(),
                    port: 80
                },
                ServicePort {
                    protocol: "UDP".into(),
                    port: 53
                }
            ]
        );
        assert_eq!(v.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(v.ingress_ips, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        // clusterIPs win over clusterIP; unknown policies are the defaults.
        let v = ServiceFields {
            cluster_ips: vec!["fd00::1".into(), "None".into()],
            ip_family_policy: Some("Whatever".into()),
            external_traffic_policy: Some("Cluster".into()),
            type_: Some("ClusterIP".into()),
            ..fields
        }
        .into_view();
        assert_eq!(v.cluster_ips, vec!["fd00::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(v.ip_family_policy, IpFamilyPolicy::SingleStack);
        assert_eq!(v.external_traffic_policy, TrafficPolicy::Cluster);
        assert!(!v.is_load_balancer);
    }

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
