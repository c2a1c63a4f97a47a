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
use ferrolb_controller::k8s::convert::ALLOCATOR_ANNOTATION_PREFIX;
use ferrolb_controller::reconcile::is_ours;
use ferrolb_speaker::layer2::election::elections;
use ferrolb_speaker::world::{AssignedService, NodeInfo, Readiness, World};
use k8s_openapi::api::core::v1::{
    ConfigMap, LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition,
    NodeStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::ObjectMeta;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

// What the speaker keeps of each watched object. The caches hold the latest object of every
// Service, EndpointSlice and Node in the cluster for as long as it exists, and a full object
// carries much the speaker never reads: `metadata.managedFields` (one JSON tree per field
// manager), `kubectl apply`'s last-applied-configuration annotation (a second copy of the
// object), a Node's image list and capacities. Each watch event's object is cut down to what the
// conversions here and `ferrolb_controller::k8s::convert::service_view` read before it is
// cached (the tests below convert objects before and after and compare). A new read of a field
// in those conversions must keep that field here too.

/// Cuts a Service down to what [`service_view`](ferrolb_controller::k8s::convert::service_view)
/// and `Resource::object_ref` (the `nodeAssigned` Event) read: name, namespace, uid,
/// resourceVersion, labels, the `metallb.universe.tf/` annotations (the only ones any ferrolb
/// decision reads; the controller keeps the same), the spec fields the view is made of, each
/// port's protocol and number, and the ingress IPs of the status.
pub fn strip_service(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    let annotations = meta.annotations.map(|mut a| {
        a.retain(|k, _| k.starts_with(ALLOCATOR_ANNOTATION_PREFIX));
        a
    });
    svc.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        annotations: annotations.filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    };
    svc.spec = svc.spec.take().map(|s| ServiceSpec {
        // The view reads `clusterIP` only when `clusterIPs` is missing.
        cluster_ip: if s.cluster_ips.is_none() {
            s.cluster_ip
        } else {
            None
        },
        cluster_ips: s.cluster_ips,
        type_: s.type_,
        load_balancer_class: s.load_balancer_class,
        ip_families: s.ip_families,
        ip_family_policy: s.ip_family_policy,
        load_balancer_ip: s.load_balancer_ip,
        ports: s.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    port: p.port,
                    protocol: p.protocol,
                    ..ServicePort::default()
                })
                .collect()
        }),
        external_traffic_policy: s.external_traffic_policy,
        selector: s.selector,
        ..ServiceSpec::default()
    });
    let ingress: Vec<LoadBalancerIngress> = svc
        .status
        .take()
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.ip.is_some())
        .map(|i| LoadBalancerIngress {
            ip: i.ip,
            ..LoadBalancerIngress::default()
        })
        .collect();
    if !ingress.is_empty() {
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        });
    }
}

/// Cuts an EndpointSlice down to what [`readiness`] reads: name and namespace, the
/// `kubernetes.io/service-name` label, and the node name of each endpoint that counts (ready or
/// nil, on a node); other endpoints, addresses, ports and hints go.
pub fn strip_endpoint_slice(slice: &mut EndpointSlice) {
    let meta = std::mem::take(&mut slice.metadata);
    let labels = meta.labels.map(|mut l| {
        l.retain(|k, _| k == SERVICE_NAME_LABEL);
        l
    });
    slice.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: labels.filter(|l| !l.is_empty()),
        ..ObjectMeta::default()
    };
    slice.ports = None;
    slice.endpoints = std::mem::take(&mut slice.endpoints)
        .into_iter()
        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|ep| {
            Some(Endpoint {
                node_name: Some(ep.node_name?),
                ..Endpoint::default()
            })
        })
        .collect();
}

/// Cuts a Node down to what [`node_info`], [`ready_nodes`] and [`node_join_addresses`] read:
/// name, labels, the `Ready` condition's type and status, and the `InternalIP` addresses (in
/// order). Spec, images, capacities and the other conditions go.
pub fn strip_node(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    node.metadata = ObjectMeta {
        name: meta.name,
        labels: meta.labels,
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = node.status.take().map(|s| NodeStatus {
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..NodeCondition::default()
                })
                .collect()
        }),
        addresses: s.addresses.map(|addrs| {
            addrs
                .into_iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| NodeAddress {
                    type_: a.type_,
                    address: a.address,
                })
                .collect()
        }),
        ..NodeStatus::default()
    });
}

/// Cuts the config ConfigMap down to its name, namespace and `data` (where `config` is read).
pub fn strip_config_map(cm: &mut ConfigMap) {
    let meta = std::mem::take(&mut cm.metadata);
    cm.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        ..ObjectMeta::default()
    };
    cm.binary_data = None;
}

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

    /// A Service as the apiserver sends it after `kubectl apply` and a status write: managed
    /// fields of two managers, the last-applied annotation, every spec field set.
    fn full_service(cluster_ips: bool) -> Service {
        let mut v = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "8d0c7c2e-0000-4000-8000-000000000001",
                "resourceVersion": "4711",
                "generation": 3,
                "creationTimestamp": "2026-11-29T10:00:00Z",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"}}",
                    "metallb.universe.tf/address-pool": "l2",
                    "metallb.universe.tf/allow-shared-ip": "k1",
                    "example.com/owner": "team-a"
                },
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                     "time": "2026-11-29T10:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                                             "f:selector": {}, "f:type": {}}}},
                    {"manager": "ferrolb-controller", "operation": "Update", "apiVersion": "v1",
                     "time": "2026-11-29T10:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}}
                ]
            },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "ferrolb",
                "clusterIP": "198.51.100.9",
                "ipFamilies": ["IPv6", "IPv4"],
                "ipFamilyPolicy": "RequireDualStack",
                "loadBalancerIP": "192.0.2.100",
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Cluster",
                "healthCheckNodePort": 31000,
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "allocateLoadBalancerNodePorts": true,
                "externalIPs": ["203.0.113.7"],
                "loadBalancerSourceRanges": ["192.0.2.0/24"],
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080, "appProtocol": "http"},
                    {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns", "nodePort": 30053},
                    {"name": "noproto", "port": 8443, "targetPort": 8443}
                ]
            },
            "status": {
                "loadBalancer": {"ingress": [
                    {"ip": "192.0.2.100", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                    {"hostname": "lb.example.com"},
                    {"ip": "2001:db8::64"}
                ]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "x", "message": "y",
                                "lastTransitionTime": "2026-11-29T10:00:01Z"}]
            }
        });
        if cluster_ips {
            v["spec"]["clusterIPs"] = serde_json::json!(["2001:db8::1", "198.51.100.9"]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_stripped_service_converts_to_the_same_view_and_event_reference() {
        for cluster_ips in [true, false] {
            let full = full_service(cluster_ips);
            let mut stripped = full.clone();
            strip_service(&mut stripped);
            let mut want = service_view(&full);
            want.annotations
                .retain(|k, _| k.starts_with(ALLOCATOR_ANNOTATION_PREFIX));
            assert_eq!(
                want.annotations.len(),
                2,
                "the allocator's annotations stay"
            );
            assert_eq!(service_view(&stripped), want);
            assert_eq!(want.ports.len(), 3);
            assert_eq!(want.ingress_ips.len(), 2);
            assert_eq!(want.cluster_ips.len(), if cluster_ips { 2 } else { 1 });
            use kube::Resource;
            assert_eq!(stripped.object_ref(&()), full.object_ref(&()));
            assert_eq!(stripped.metadata.resource_version.as_deref(), Some("4711"));
            assert_eq!(
                assigned_services([&stripped], "ferrolb"),
                assigned_views([&want], "ferrolb")
            );
            assert_eq!(assigned_services([&stripped], "ferrolb").len(), 1);
            // What goes: the managers' field trees, the last-applied copy, the rest of the spec.
            assert!(stripped.metadata.managed_fields.is_none());
            assert!(stripped.metadata.finalizers.is_none());
            let json = serde_json::to_string(&stripped).unwrap();
            for gone in [
                "last-applied",
                "example.com/owner",
                "sessionAffinity",
                "nodePort",
                "targetPort",
                "lb.example.com",
                "conditions",
                "ipMode",
            ] {
                assert!(!json.contains(gone), "{gone} kept: {json}");
            }
            assert!(
                json.len() * 2 < serde_json::to_string(&full).unwrap().len(),
                "much smaller"
            );
        }
        // Nothing to strip: still the same view; a Service without status stays without one.
        let mut bare = svc("bare", &[], "Cluster");
        bare.status = None;
        let mut s = bare.clone();
        strip_service(&mut s);
        assert_eq!(service_view(&s), service_view(&bare));
        assert!(s.status.is_none());
    }

    #[test]
    fn a_stripped_endpoint_slice_gives_the_same_readiness() {
        let full: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-x1",
                "namespace": "shop",
                "resourceVersion": "12",
                "labels": {"kubernetes.io/service-name": "web",
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                     "uid": "8d0c7c2e-0000-4000-8000-000000000001"}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                   "apiVersion": "discovery.k8s.io/v1", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:endpoints": {}}}]
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.51.100.1"], "nodeName": "node-a",
                 "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
                 "zone": "z1"},
                {"addresses": ["198.51.100.2"], "nodeName": "node-b",
                 "conditions": {"ready": false}},
                {"addresses": ["198.51.100.3"], "nodeName": "node-c"},
                {"addresses": ["198.51.100.4"], "conditions": {"ready": true}}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let mut unlabelled = full.clone();
        unlabelled.metadata.labels = None;
        unlabelled.metadata.name = Some("other".into());
        let mut other = slice("db", &[("node-b", Some(true)), ("node-a", Some(false))]);
        other.metadata.managed_fields = full.metadata.managed_fields.clone();
        let all = [full, unlabelled, other];
        let mut stripped = all.clone();
        stripped.iter_mut().for_each(strip_endpoint_slice);
        let (before, after) = (readiness(&all), readiness(&stripped));
        assert_eq!(after, before);
        let web = ServiceKey::new("shop", "web");
        assert!(after.ready_on(&web, "node-a") && after.ready_on(&web, "node-c"));
        assert!(!after.ready_on(&web, "node-b"));
        assert_eq!(stripped[0].endpoints.len(), 2, "only endpoints that count");
        assert!(stripped[0].ports.is_none() && stripped[0].metadata.managed_fields.is_none());
        assert_eq!(
            stripped[0].metadata.labels.as_ref().map(BTreeMap::len),
            Some(1)
        );
        assert_eq!(stripped[0].metadata.name.as_deref(), Some("web-x1"));
    }

    #[test]
    fn a_stripped_node_gives_the_same_info_liveness_and_join_addresses() {
        let node_json = |name: &str, ready: &str, addrs: serde_json::Value| {
            serde_json::from_value::<Node>(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "uid": "u",
                    "resourceVersion": "9",
                    "labels": {"kubernetes.io/hostname": name, "zone": "z1"},
                    "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                    "managedFields": [{"manager": "kubelet", "operation": "Update",
                                       "apiVersion": "v1", "fieldsType": "FieldsV1",
                                       "fieldsV1": {"f:status": {"f:images": {}}}}]
                },
                "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
                "status": {
                    "addresses": addrs,
                    "conditions": [
                        {"type": "MemoryPressure", "status": "False"},
                        {"type": "Ready", "status": ready, "reason": "KubeletReady",
                         "message": "kubelet is posting ready status",
                         "lastHeartbeatTime": "2026-11-29T10:00:00Z"}
                    ],
                    "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                    "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                    "images": [{"names": ["registry.example/app@sha256:00", "registry.example/app:1"],
                                "sizeBytes": 123456}],
                    "nodeInfo": {"architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "c",
                                 "kernelVersion": "k", "kubeProxyVersion": "", "kubeletVersion": "v1.33",
                                 "machineID": "m", "operatingSystem": "linux", "osImage": "o",
                                 "systemUUID": "s"},
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
                }
            }))
            .unwrap()
        };
        let all = [
            node_json(
                "a",
                "True",
                serde_json::json!([{"type": "Hostname", "address": "a"},
                                   {"type": "InternalIP", "address": "192.0.2.11"}]),
            ),
            // The first InternalIP does not parse: the Node gives no join address (kept so).
            node_json(
                "b",
                "True",
                serde_json::json!([{"type": "InternalIP", "address": "not-an-ip"},
                                   {"type": "InternalIP", "address": "192.0.2.12"}]),
            ),
            node_json(
                "c",
                "False",
                serde_json::json!([{"type": "ExternalIP", "address": "203.0.113.5"},
                                   {"type": "InternalIP", "address": "2001:db8::13"}]),
            ),
            node("d", "True", None, &[]),
        ];
        let mut stripped = all.clone();
        stripped.iter_mut().for_each(strip_node);
        for me in ["a", "c", "zz"] {
            assert_eq!(node_info(me, &stripped), node_info(me, &all));
            assert_eq!(
                node_join_addresses(me, &stripped, 7946),
                node_join_addresses(me, &all, 7946)
            );
        }
        assert_eq!(node_info("a", &stripped).labels.len(), 2);
        assert_eq!(ready_nodes(&stripped), ready_nodes(&all));
        assert_eq!(node_join_addresses("a", &stripped, 7946).len(), 1);
        let json = serde_json::to_string(&stripped[0]).unwrap();
        for gone in [
            "images",
            "nodeInfo",
            "capacity",
            "podCIDR",
            "managedFields",
            "MemoryPressure",
            "Hostname",
        ] {
            assert!(!json.contains(gone), "{gone} kept: {json}");
        }
    }

    #[test]
    fn a_stripped_config_map_keeps_its_data() {
        let mut cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "config", "namespace": "metallb-system",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "data": {"config": "address-pools: []\n"}
        }))
        .unwrap();
        strip_config_map(&mut cm);
        assert_eq!(cm.metadata.name.as_deref(), Some("config"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("metallb-system"));
        assert!(cm.metadata.managed_fields.is_none() && cm.metadata.annotations.is_none());
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("config"))
                .map(String::as_str),
            Some("address-pools: []\n")
        );
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
