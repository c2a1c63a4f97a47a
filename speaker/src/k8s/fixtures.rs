//! Kubernetes objects for the speaker's tests: Services, EndpointSlices and Nodes as the
//! apiserver would send them, and a configuration with a layer2 and a BGP pool.

use std::collections::BTreeMap;

use ferrolb_config::{Config, ServiceView};
use ferrolb_runtime::service::service_view;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition, NodeStatus, Service,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use kube::api::ObjectMeta;

use super::convert::{cached_slice, readiness, CachedSlice, SERVICE_NAME_LABEL};
use crate::world::build::assigned_views;
use crate::world::{AssignedService, Readiness};

pub fn svc(name: &str, ips: &[&str], policy: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some(policy.into()),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some((*ip).into()),
                            ..LoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
            ..ServiceStatus::default()
        }),
    }
}

pub fn slice(service: &str, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(format!("{service}-abc")),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                service.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(node, ready)| Endpoint {
                addresses: vec!["198.51.100.50".into()],
                node_name: Some((*node).into()),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: None,
    }
}

pub fn node(name: &str, ready: &str, ip: Option<&str>, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![
                NodeCondition {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    ..NodeCondition::default()
                },
                NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..NodeCondition::default()
                },
            ]),
            addresses: ip.map(|ip| {
                vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    },
                ]
            }),
            ..NodeStatus::default()
        }),
    }
}

pub fn config() -> Config {
    ferrolb_config::parse(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [192.0.2.100-192.0.2.110]\n- name: b\n  protocol: bgp\n  addresses: [203.0.113.0/28]\n",
    )
    .unwrap()
}

/// [`readiness`] straight from EndpointSlice objects.
pub fn ready(slices: &[EndpointSlice]) -> Readiness {
    let cached: Vec<CachedSlice> = slices.iter().cloned().map(cached_slice).collect();
    readiness(&cached)
}

/// [`assigned_views`] straight from Services (converting every one).
pub fn assigned_services<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    class: &str,
) -> Vec<AssignedService> {
    let views: Vec<ServiceView> = services.into_iter().map(service_view).collect();
    assigned_views(&views, class)
}
