//! Kubernetes Nodes to what the speaker reads of them: the Node cut down as it arrives, this
//! node's labels, the Nodes whose `Ready` condition is True (the live nodes without membership)
//! and the memberlist join addresses of the other Nodes. Pure functions, no I/O.
//!
//! Must not: talk to the apiserver, or keep a field the speaker does not read.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use kube::api::ObjectMeta;

use crate::membership::MemberlistConfig;
use crate::world::NodeInfo;

/// A Node as the speaker keeps it: cut down to what [`node_info`], [`ready_nodes`] and
/// [`node_join_addresses`] read: name, labels, the `Ready` condition's type and status, and the
/// `InternalIP` addresses (in order). Spec, images, capacities and the other conditions go.
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

/// Every Node's labels, by name (for L2Advertisements that select nodes).
pub fn labels<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    nodes
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            Some((name, n.metadata.labels.clone().unwrap_or_default()))
        })
        .collect()
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

/// The memberlist settings to start with: `cfg`, and with `join_from_nodes` also each other
/// Node's `InternalIP` at the bind port ([`node_join_addresses`]), skipping this node's own
/// bind address and addresses already listed.
pub fn membership_config<'a>(
    mut cfg: MemberlistConfig,
    me: &str,
    join_from_nodes: bool,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> MemberlistConfig {
    if join_from_nodes {
        for a in node_join_addresses(me, nodes, cfg.bind.port()) {
            if a != cfg.bind && !cfg.join.contains(&a) {
                cfg.join.push(a);
            }
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::node;
    use super::*;

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
    fn membership_joins_the_other_nodes_once_when_asked() {
        let nodes = [
            node("a", "True", Some("192.0.2.11"), &[]),
            node("b", "True", Some("192.0.2.12"), &[]),
            node("c", "False", Some("192.0.2.13"), &[]),
        ];
        let cfg = |join: &[&str]| MemberlistConfig {
            join: join.iter().map(|a| a.parse().unwrap()).collect(),
            ..MemberlistConfig::new("a", "192.0.2.11:7946".parse().unwrap())
        };
        let addrs =
            |c: MemberlistConfig| -> Vec<String> { c.join.iter().map(|a| a.to_string()).collect() };
        assert_eq!(
            addrs(membership_config(
                cfg(&["192.0.2.12:7946"]),
                "a",
                true,
                &nodes
            )),
            vec!["192.0.2.12:7946", "192.0.2.13:7946"],
            "listed once, every other Node, ready or not"
        );
        assert_eq!(
            addrs(membership_config(cfg(&[]), "a", false, &nodes)),
            Vec::<String>::new()
        );
        // A Node named differently on this node's own address is not joined.
        assert_eq!(
            addrs(membership_config(cfg(&[]), "x", true, &nodes[..1])),
            Vec::<String>::new()
        );
    }
}
