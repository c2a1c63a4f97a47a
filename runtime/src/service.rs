//! The one place where a k8s-openapi `Service` becomes a [`ServiceView`], for both roles (the
//! controller's compact copy and the speaker's cached view are built from it).
//!
//! Must not: decide anything. Unknown or malformed values are passed on raw (or dropped when they
//! cannot be represented) so the allocator reports them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::{
    IpFamily, IpFamilyPolicy, ServiceKey, ServicePort, ServiceView, TrafficPolicy,
};
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceSpec, ServiceStatus};

/// `namespace/name` of a Service object (empty strings when missing).
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The view of a Service that the allocator, the reconcile decisions and the speaker use.
pub fn service_view(svc: &Service) -> ServiceView {
    view_of(
        service_key(svc),
        svc.spec.clone().unwrap_or_default(),
        svc.metadata.annotations.clone().unwrap_or_default(),
        svc.metadata.labels.clone().unwrap_or_default(),
        ingress_ips(svc),
    )
}

/// What a role keeps of a Service besides its view: what it needs to write to it (the
/// controller) or to refer to it in an Event (both).
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

/// The view of a Service taken apart: its key, spec, the annotations and labels kept, and the
/// addresses of its status ([`ingress_of`]).
pub fn view_of(
    key: ServiceKey,
    spec: ServiceSpec,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    ingress_ips: Vec<IpAddr>,
) -> ServiceView {
    let ip_families = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        })
        .collect();
    let ip_family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .unwrap_or_else(|| spec.cluster_ip.into_iter().collect())
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    // From a borrowed list: collecting from `into_iter()` would reuse the k8s-openapi list's
    // allocation (room for several full `ServicePort`s) for the small converted ones.
    let ports = spec
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let external_traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    ServiceView {
        key,
        is_load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
        load_balancer_class: spec.load_balancer_class,
        ip_families,
        ip_family_policy,
        cluster_ips,
        load_balancer_ip: spec.load_balancer_ip.filter(|s| !s.is_empty()),
        annotations,
        labels,
        ports,
        external_traffic_policy,
        selector: spec.selector.unwrap_or_default(),
        ingress_ips,
    }
}

/// `status.loadBalancer.ingress[].ip` that parse as addresses, in order.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    ingress_of(svc.status.as_ref())
}

/// `status.loadBalancer.ingress[].ip` of a status that parse as addresses, in order.
pub fn ingress_of(status: Option<&ServiceStatus>) -> Vec<IpAddr> {
    status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.as_deref())
                .filter_map(|ip| ip.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

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
