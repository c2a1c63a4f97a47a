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
