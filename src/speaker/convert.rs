//! Kubernetes objects to the speaker's [`World`]: pure functions, no I/O.
//!
//! The watchers in `speaker/mod.rs` keep the latest Services, EndpointSlices and Nodes; every
//! change turns them into a new world here. The same functions decide which Services this node
//! newly announces by layer2 (for the `nodeAssigned` Event).
//!
//! Must not: talk to the apiserver, read clocks, or decide announcements (the announcers do).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ferrolb_config::is_ours;
use ferrolb_config::{Config, ServiceKey, ServiceView};
use ferrolb_runtime::service::{service_view, ServiceMeta};
use ferrolb_speaker::layer2::election::elections;
use ferrolb_speaker::world::{AssignedService, NodeInfo, Readiness, World};
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, NodeAddress, NodeCondition, NodeStatus, ObjectReference, Service, ServiceSpec,
    ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ObjectMeta;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

// What the speaker keeps of each watched object. The caches hold something of every Service,
// EndpointSlice and Node in the cluster for as long as it exists, and a full object carries much
// the speaker never reads: `metadata.managedFields` (one JSON tree per field manager), `kubectl
// apply`'s last-applied-configuration annotation (a second copy of the object), a Node's image
// list, and the k8s-openapi structs themselves are large (a Service with empty fields is ~1 KiB).
// So each watch event's object is turned into what the speaker reads before it is cached:
// Services into a small view and the Event reference, EndpointSlices into their Service and
// ready nodes, Nodes and the ConfigMap cut down. The tests below convert objects both ways and
// compare. A new read of a field must be added here too.

/// What the speaker keeps of a Service: the view its decisions read and what its `nodeAssigned`
/// Event refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedService {
    pub view: ServiceView,
    pub meta: ServiceMeta,
}

impl CachedService {
    /// The Event reference `Resource::object_ref` would give for the Service.
    pub fn object_ref(&self) -> ObjectReference {
        self.meta.object_ref(&self.view.key)
    }
}

/// A Service as the speaker keeps it. Its view has only what the speaker reads (the key,
/// `spec.type`, `spec.loadBalancerClass`, `spec.externalTrafficPolicy` and the ingress IPs of
/// the status: [`assigned_views`], the announcers' elections and advertisements, the config
/// gate's breakage check); the other fields of the view are empty. Those fields are converted
/// by [`service_view`](ferrolb_runtime::service::service_view) itself, so they mean
/// what they mean to the controller.
pub fn cached_service(svc: Service) -> CachedService {
    let Service {
        metadata,
        spec,
        status,
    } = svc;
    let spec = spec.map(|s| ServiceSpec {
        type_: s.type_,
        load_balancer_class: s.load_balancer_class,
        external_traffic_policy: s.external_traffic_policy,
        ..ServiceSpec::default()
    });
    let status = status.map(|s| ServiceStatus {
        load_balancer: s.load_balancer,
        ..ServiceStatus::default()
    });
    let meta = ServiceMeta {
        uid: metadata.uid,
        resource_version: metadata.resource_version,
    };
    let small = Service {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            ..ObjectMeta::default()
        },
        spec,
        status,
    };
    CachedService {
        view: service_view(&small),
        meta,
    }
}

/// What the speaker keeps of an EndpointSlice: its Service (the `kubernetes.io/service-name`
/// label; none without it) and the nodes of its endpoints that count for [`readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSlice {
    pub service: Option<ServiceKey>,
    pub ready_nodes: Vec<String>,
}

/// An EndpointSlice as the speaker keeps it: an endpoint counts when its `conditions.ready` is
/// not false (nil means ready) and it names a node.
pub fn cached_slice(slice: EndpointSlice) -> CachedSlice {
    let EndpointSlice {
        metadata,
        endpoints,
        ..
    } = slice;
    let service = metadata
        .labels
        .and_then(|mut l| l.remove(SERVICE_NAME_LABEL))
        .map(|name| ServiceKey::new(metadata.namespace.unwrap_or_default(), name));
    let mut ready_nodes: Vec<String> = endpoints
        .into_iter()
        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|ep| ep.node_name)
        .collect();
    ready_nodes.sort();
    ready_nodes.dedup();
    ready_nodes.shrink_to_fit();
    CachedSlice {
        service,
        ready_nodes,
    }
}

/// A Node as the speaker keeps it: cut down to what [`node_info`], [`ready_nodes`] and [`node_join_addresses`] read:
/// name, labels, the `Ready` condition's type and status, and the `InternalIP` addresses (in
/// order). Spec, images, capacities and the other conditions go.
pub fn cached_node(mut node: Node) -> Node {
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
    node
}

/// The config ConfigMap as the speaker keeps it: its name, namespace and `data` (where
/// `config` is read).
pub fn cached_config_map(mut cm: ConfigMap) -> ConfigMap {
    let meta = std::mem::take(&mut cm.metadata);
    cm.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        ..ObjectMeta::default()
    };
    cm.binary_data = None;
    cm
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
        .map(|v| AssignedService::of(v, v.ingress_ips.clone()))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Per Service, the nodes hosting at least one ready endpoint ([`cached_slice`]): slices are
/// matched to their Service by the `kubernetes.io/service-name` label.
pub fn readiness<'a>(slices: impl IntoIterator<Item = &'a CachedSlice>) -> Readiness {
    let mut ready: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        let (Some(service), false) = (&slice.service, slice.ready_nodes.is_empty()) else {
            continue;
        };
        ready
            .entry(service.clone())
            .or_default()
            .extend(slice.ready_nodes.iter().cloned());
    }
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
        .map(|s| s.key.clone())
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

    /// [`readiness`] straight from EndpointSlice objects.
    fn ready(slices: &[EndpointSlice]) -> Readiness {
        let cached: Vec<CachedSlice> = slices.iter().cloned().map(cached_slice).collect();
        readiness(&cached)
    }

    #[test]
    fn a_cached_service_keeps_what_the_speaker_reads_and_its_event_reference() {
        use kube::Resource;
        let mut variants = vec![full_service(true), full_service(false)];
        let mut other = full_service(true);
        other.spec.as_mut().unwrap().load_balancer_class = Some("someone-else".into());
        other.spec.as_mut().unwrap().external_traffic_policy = None;
        variants.push(other);
        let mut cip = full_service(false);
        cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        cip.status = None;
        variants.push(cip);
        let mut bare = svc("bare", &[], "Cluster");
        bare.spec = None;
        variants.push(bare);
        for full in variants {
            let want = service_view(&full);
            let got = cached_service(full.clone());
            let v = &got.view;
            // What the speaker reads is what the controller's conversion gives ...
            assert_eq!(v.key, want.key);
            assert_eq!(v.is_load_balancer, want.is_load_balancer);
            assert_eq!(v.load_balancer_class, want.load_balancer_class);
            assert_eq!(v.external_traffic_policy, want.external_traffic_policy);
            assert_eq!(v.ingress_ips, want.ingress_ips);
            for class in ["ferrolb", "someone-else", ""] {
                assert_eq!(is_ours(v, class), is_ours(&want, class));
                let ips = |a: Vec<AssignedService>| -> Vec<(ServiceKey, Vec<IpAddr>)> {
                    a.into_iter().map(|s| (s.key, s.ips)).collect()
                };
                assert_eq!(
                    ips(assigned_views([v], class)),
                    ips(assigned_views([&want], class))
                );
            }
            // ... and the Event points at the same object.
            assert_eq!(got.object_ref(), full.object_ref(&()));
            // The rest is not kept.
            assert!(v.annotations.is_empty() && v.labels.is_empty() && v.selector.is_empty());
            assert!(v.ports.is_empty() && v.cluster_ips.is_empty() && v.ip_families.is_empty());
            assert_eq!(v.load_balancer_ip, None);
        }
        let full = full_service(true);
        let got = cached_service(full.clone());
        assert_eq!(
            got.view.ingress_ips.len(),
            2,
            "the hostname entry has no IP"
        );
        assert_eq!(got.meta.resource_version.as_deref(), Some("4711"));
        assert_eq!(
            assigned_views([&got.view], "ferrolb")[0].ips,
            service_view(&full).ingress_ips
        );
    }

    #[test]
    fn a_cached_slice_keeps_its_service_and_the_nodes_that_count() {
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
                {"addresses": ["198.51.100.1"], "nodeName": "node-c",
                 "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
                 "zone": "z1"},
                {"addresses": ["198.51.100.2"], "nodeName": "node-b",
                 "conditions": {"ready": false}},
                {"addresses": ["198.51.100.3"], "nodeName": "node-a"},
                {"addresses": ["198.51.100.5"], "nodeName": "node-a"},
                {"addresses": ["198.51.100.4"], "conditions": {"ready": true}}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let web = ServiceKey::new("shop", "web");
        assert_eq!(
            cached_slice(full.clone()),
            CachedSlice {
                service: Some(web.clone()),
                ready_nodes: vec!["node-a".into(), "node-c".into()],
            }
        );
        let mut unlabelled = full.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(cached_slice(unlabelled.clone()).service, None);
        let mut none_ready = full.clone();
        none_ready.metadata.labels = Some(BTreeMap::from([(
            SERVICE_NAME_LABEL.to_string(),
            "idle".to_string(),
        )]));
        none_ready
            .endpoints
            .retain(|e| e.node_name.as_deref() == Some("node-b"));
        let r = ready(&[
            full,
            unlabelled,
            none_ready,
            slice("web", &[("node-d", Some(true))]),
        ]);
        assert!(["node-a", "node-c"].iter().all(|n| r.ready_on(&web, n)));
        assert!(!r.ready_on(&web, "node-b"));
        assert!(!r.ready_on(&web, "node-d"), "another namespace's slice");
        assert!(r.ready_on(&ServiceKey::new("default", "web"), "node-d"));
        assert!(!r.ready_anywhere(&ServiceKey::new("shop", "idle")));
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
        let stripped: Vec<Node> = all.iter().cloned().map(cached_node).collect();
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
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "config", "namespace": "metallb-system",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "data": {"config": "address-pools: []\n"}
        }))
        .unwrap();
        let cm = cached_config_map(cm);
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
        let names: Vec<&str> = got.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(names, vec!["mine", "web"]);
        assert_eq!(
            got[1].ips,
            vec![
                "192.0.2.100".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(
            got[1].external_traffic_policy,
            ferrolb_config::TrafficPolicy::Local
        );
    }

    #[test]
    fn readiness_by_node_from_slices() {
        let mut unlabelled = slice("x", &[("node-c", None)]);
        unlabelled.metadata.labels = None;
        let r = ready(&[
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
                ready(&[
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
        none.readiness = ready(&[slice("web", &[("a", Some(false))])]);
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
                    ready(&[slice("web", &[("c", Some(true))])]),
                    live.clone(),
                );
                !layer2_won(&w).is_empty()
            })
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    }
}
