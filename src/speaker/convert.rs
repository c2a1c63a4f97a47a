//! Kubernetes objects to the speaker's [`World`]: pure functions, no I/O.
//!
//! The watchers in `speaker/mod.rs` keep the latest Services, EndpointSlices and Nodes; every
//! change turns them into a new world here. The same functions decide which Services this node
//! newly announces by layer2 (for the `nodeAssigned` Event).
//!
//! Must not: talk to the apiserver, read clocks, or decide announcements (the announcers do).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ferrolb_config::{Config, ServiceKey, ServiceView};
#[cfg(test)]
use ferrolb_controller::k8s::convert::service_view;
use ferrolb_controller::reconcile::is_ours;
use ferrolb_speaker::layer2::election::elections;
use ferrolb_speaker::world::{AssignedService, NodeInfo, Readiness, World};
use k8s_openapi::api::core::v1::Node;
#[cfg(test)]
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// [`assigned_views`] straight from Services (converting every one).
#[cfg(test)]
pub fn assigned_services<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    class: &str,
) -> Vec<AssignedService> {
    let views: Vec<ServiceView> = services.into_iter().map(service_view).collect();
    assigned_views(&views, class)
}

/// The Services this speaker announces: `type: LoadBalancer`, ours by class, with at least one
/// address in `status.loadBalancer.ingress`. In `namespace/name` order.
/// Takes Services already converted to views (the speaker keeps them between rebuilds).
pub fn assigned_views<'a>(
    views: impl IntoIterator<Item = &'a ServiceView>,
    class: &str,
) -> Vec<AssignedService> {
    let mut out: Vec<AssignedService> = views
        .into_iter()
        .filter(|v| is_ours(v, class) && !v.ingress_ips.is_empty())
        .map(|v| AssignedService {
            ips: v.ingress_ips.clone(),
            service: v.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.service.key.cmp(&b.service.key));
    out
}

/// Per Service, the nodes hosting at least one ready endpoint: EndpointSlices are matched to
/// their Service by the `kubernetes.io/service-name` label; an endpoint counts when its
/// `conditions.ready` is not false (nil means ready) and it names a node.
pub fn readiness<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Readiness {
    let mut ready: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let nodes = ready
            .entry(ServiceKey::new(ns, service.clone()))
            .or_default();
        for ep in &slice.endpoints {
            let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(node)) = (is_ready, ep.node_name.as_ref()) {
                nodes.insert(node.clone());
            }
        }
    }
    ready.retain(|_, nodes| !nodes.is_empty());
    Readiness::Nodes(ready)
}

/// This node as the announcers see it: its name and, once its Node object is known, its labels.
pub fn node_info<'a>(name: &str, nodes: impl IntoIterator<Item = &'a Node>) -> NodeInfo {
    let labels = nodes
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    NodeInfo {
        name: name.to_string(),
        labels,
    }
}

/// True when the Node's `Ready` condition is `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The live nodes when membership is off: every Node whose `Ready` condition is `True`.
/// (Every speaker computes the same set, so they agree on the winners.)
pub fn ready_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> BTreeSet<String> {
    nodes
        .into_iter()
        .filter(|n| node_ready(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

/// Memberlist join addresses from the Node objects: each other Node's `InternalIP` at `port`
/// (speakers run on the host network, so a Node's address is its speaker's).
pub fn node_join_addresses<'a>(
    me: &str,
    nodes: impl IntoIterator<Item = &'a Node>,
    port: u16,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = nodes
        .into_iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| a.address.parse::<IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The world every announcer decides from.
pub fn world(
    config: Config,
    node: NodeInfo,
    services: Vec<AssignedService>,
    readiness: Readiness,
    live_nodes: BTreeSet<String>,
) -> World {
    World {
        config,
        node,
        services,
        readiness,
        live_nodes,
    }
}

/// The Services this node wins by layer2 in `world`: at least one of its addresses is in a
/// `layer2` pool and elected to `world.node`.
pub fn layer2_won(world: &World) -> BTreeSet<ServiceKey> {
    let won: BTreeSet<IpAddr> = elections(world)
        .into_iter()
        .filter(|(_, e)| e.winner.as_deref() == Some(world.node.name.as_str()))
        .map(|(ip, _)| ip)
        .collect();
    world
        .services
        .iter()
        .filter(|s| s.ips.iter().any(|ip| won.contains(ip)))
        .map(|s| s.service.key.clone())
        .collect()
}

/// The Services to send a `nodeAssigned` Event for: won now, not won in the previous world.
pub fn newly_won(before: &BTreeSet<ServiceKey>, now: &BTreeSet<ServiceKey>) -> Vec<ServiceKey> {
    now.difference(before).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeCondition, NodeStatus,
        ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::ObjectMeta;

    fn svc(name: &str, ips: &[&str], policy: &str) -> Service {
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

    fn slice(service: &str, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
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

    fn node(name: &str, ready: &str, ip: Option<&str>, labels: &[(&str, &str)]) -> Node {
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

    fn config() -> Config {
        ferrolb_config::parse(
            "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [192.0.2.100-192.0.2.110]\n- name: b\n  protocol: bgp\n  addresses: [203.0.113.0/28]\n",
        )
        .unwrap()
    }

    #[test]
    fn only_our_load_balancers_with_addresses() {
        let mut other_class = svc("other", &["192.0.2.101"], "Cluster");
        other_class.spec.as_mut().unwrap().load_balancer_class = Some("someone-else".into());
        let mut cluster_ip = svc("cip", &["192.0.2.102"], "Cluster");
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let mut mine = svc("mine", &["192.0.2.103"], "Cluster");
        mine.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb".into());
        let all = [
            svc("web", &["192.0.2.100", "2001:db8::1"], "Local"),
            svc("pending", &[], "Cluster"),
            other_class,
            cluster_ip,
            mine,
        ];
        let got = assigned_services(&all, "ferrolb");
        let names: Vec<&str> = got.iter().map(|s| s.service.key.name.as_str()).collect();
        assert_eq!(names, vec!["mine", "web"]);
        assert_eq!(got[1].ips.len(), 2);
        assert_eq!(got[1].service.ingress_ips, got[1].ips);
    }

    #[test]
    fn readiness_by_node_from_slices() {
        let mut unlabelled = slice("x", &[("node-c", None)]);
        unlabelled.metadata.labels = None;
        let r = readiness(&[
            slice("web", &[("node-a", Some(true)), ("node-b", Some(false))]),
            // A second slice of the same Service; nil `ready` means ready.
            slice("web", &[("node-c", None)]),
            slice("idle", &[("node-a", Some(false))]),
            unlabelled,
        ]);
        let web = ServiceKey::new("default", "web");
        assert!(r.ready_on(&web, "node-a"));
        assert!(!r.ready_on(&web, "node-b"));
        assert!(r.ready_on(&web, "node-c"));
        let idle = ServiceKey::new("default", "idle");
        assert!(!r.ready_anywhere(&idle));
        assert!(!r.ready_anywhere(&ServiceKey::new("default", "x")));
    }

    #[test]
    fn nodes_labels_readiness_and_join_addresses() {
        let nodes = [
            node("a", "True", Some("192.0.2.11"), &[("zone", "z1")]),
            node("b", "False", Some("192.0.2.12"), &[]),
            node("c", "Unknown", None, &[]),
            node("d", "True", Some("2001:db8::14"), &[]),
        ];
        let me = node_info("a", &nodes);
        assert_eq!(me.labels.get("zone").map(String::as_str), Some("z1"));
        assert!(node_info("zz", &nodes).labels.is_empty());
        assert_eq!(
            ready_nodes(&nodes),
            BTreeSet::from(["a".to_string(), "d".to_string()])
        );
        assert_eq!(
            node_join_addresses("a", &nodes, 7946),
            vec![
                "192.0.2.12:7946".parse::<SocketAddr>().unwrap(),
                "[2001:db8::14]:7946".parse().unwrap()
            ]
        );
    }

    #[test]
    fn local_policy_winner_is_the_node_with_the_endpoint_and_events_only_on_change() {
        let services = assigned_services(
            &[
                svc("web", &["192.0.2.100"], "Local"),
                svc("bgp", &["203.0.113.1"], "Cluster"),
            ],
            "ferrolb",
        );
        let live = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let w = |me: &str, ready_on: &str| {
            world(
                config(),
                NodeInfo {
                    name: me.into(),
                    labels: BTreeMap::new(),
                },
                services.clone(),
                readiness(&[
                    slice("web", &[(ready_on, Some(true))]),
                    slice("bgp", &[("a", Some(true)), ("b", Some(true))]),
                ]),
                live.clone(),
            )
        };
        let web = ServiceKey::new("default", "web");
        // Only b has the endpoint: b wins, a does not; the bgp Service never counts.
        assert_eq!(layer2_won(&w("b", "b")), BTreeSet::from([web.clone()]));
        assert!(layer2_won(&w("a", "b")).is_empty());
        // The endpoint moves to a: a now wins; one event for a, none repeated.
        let before = layer2_won(&w("a", "b"));
        let now = layer2_won(&w("a", "a"));
        assert_eq!(newly_won(&before, &now), vec![web.clone()]);
        assert!(newly_won(&now, &now).is_empty());
        // No endpoint anywhere: nobody wins.
        let mut none = w("a", "a");
        none.readiness = readiness(&[slice("web", &[("a", Some(false))])]);
        assert!(layer2_won(&none).is_empty());
    }

    #[test]
    fn cluster_policy_winner_is_the_same_on_every_node() {
        let services = assigned_services(&[svc("web", &["192.0.2.104"], "Cluster")], "ferrolb");
        let live: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let winners: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|me| {
                let w = world(
                    config(),
                    NodeInfo {
                        name: (*me).into(),
                        labels: BTreeMap::new(),
                    },
                    services.clone(),
                    readiness(&[slice("web", &[("c", Some(true))])]),
                    live.clone(),
                );
                !layer2_won(&w).is_empty()
            })
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    }
}
