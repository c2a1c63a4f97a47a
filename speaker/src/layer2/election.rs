//! Which node answers for which layer2 address: a pure function of the [`World`].
//!
//! Every speaker computes the same answer without talking to the others. For each address in a
//! layer2 pool the usable nodes are the live speakers (membership) that may serve it: with
//! `externalTrafficPolicy: Local` only nodes with a ready endpoint of the Service; with `Cluster`
//! every live node, provided the Service has a ready endpoint somewhere (none anywhere: nobody
//! announces). Services that share an address must all be servable on the chosen node, so their
//! usable sets are intersected. The winner is the usable node with the lowest
//! `sha256(node + "#" + ip)` (MetalLB's key, so the same node wins as under MetalLB). That is
//! rendezvous hashing: adding a node moves only the addresses the new node now wins.
//!
//! Must not: do I/O, look at interfaces, or keep state between calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::TrafficPolicy;
use sha2::{Digest, Sha256};

use crate::world::{AssignedService, World};

/// The election score of `node` for `ip`: `sha256(node + "#" + ip)`; lowest wins.
pub fn score(node: &str, ip: &IpAddr) -> [u8; 32] {
    let digest = Sha256::digest(format!("{node}#{ip}").as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// The winner for `ip` among `candidates` (ties, which need a hash collision, go to the lower name).
pub fn winner<'a, I>(candidates: I, ip: &IpAddr) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    candidates.into_iter().min_by_key(|n| (score(n, ip), *n))
}

/// The live nodes that may serve `svc` (see the module doc).
pub fn usable_nodes<'a>(world: &'a World, svc: &AssignedService) -> BTreeSet<&'a str> {
    let key = &svc.key;
    let live = world.live_nodes.iter().map(String::as_str);
    match svc.external_traffic_policy {
        TrafficPolicy::Local => live.filter(|n| world.readiness.ready_on(key, n)).collect(),
        TrafficPolicy::Cluster if world.readiness.ready_anywhere(key) => live.collect(),
        TrafficPolicy::Cluster => BTreeSet::new(),
    }
}

/// One layer2 address: who may announce it and who does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// Nodes every Service on this address can be served from.
    pub usable: BTreeSet<String>,
    /// The elected node, `None` when nobody is usable.
    pub winner: Option<String>,
    /// The pool's interface restriction (empty: every usable interface).
    pub interfaces: Vec<String>,
}

/// Elections for every address of every Service that lies in a layer2 pool, by address. A pool
/// whose L2Advertisements select nodes is announced only from those nodes, on the interfaces
/// the advertisements give the winner.
pub fn elections(world: &World) -> BTreeMap<IpAddr, Election> {
    let mut usable: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for svc in &world.services {
        let nodes = usable_nodes(world, svc);
        for ip in &svc.ips {
            let Some(pool) = world
                .config
                .pool_containing(ip)
                .filter(|p| p.protocol.layer2())
            else {
                continue;
            };
            let mut nodes = nodes.clone();
            if !pool.l2_advertisements.is_empty() {
                nodes.retain(|n| pool.layer2_interfaces_on(world.labels_of(n)).is_some());
            }
            usable
                .entry(*ip)
                .and_modify(|u| u.retain(|n| nodes.contains(n)))
                .or_insert(nodes);
        }
    }
    usable
        .into_iter()
        .map(|(ip, nodes)| {
            let elected = winner(nodes.iter().copied(), &ip).map(str::to_owned);
            let interfaces = world
                .config
                .pool_containing(&ip)
                .and_then(|p| match &elected {
                    Some(w) => p.layer2_interfaces_on(world.labels_of(w)),
                    None => Some(p.interfaces.clone()),
                })
                .unwrap_or_default();
            let e = Election {
                usable: nodes.into_iter().map(str::to_owned).collect(),
                winner: elected,
                interfaces,
            };
            (ip, e)
        })
        .collect()
}

/// The addresses this node (`world.node.name`) must answer for, each with its pool's interface
/// restriction (empty: every usable interface).
pub fn my_addresses(world: &World) -> BTreeMap<IpAddr, Vec<String>> {
    elections(world)
        .into_iter()
        .filter(|(_, e)| e.winner.as_deref() == Some(world.node.name.as_str()))
        .map(|(ip, e)| (ip, e.interfaces))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{NodeInfo, Readiness};
    use ferrolb_config::{Config, IpRange, Pool, Protocol, ServiceKey};

    fn pool(name: &str, protocol: Protocol, first: &str, last: &str) -> Pool {
        Pool {
            name: name.into(),
            protocol,
            ranges: vec![IpRange::new(first.parse().unwrap(), last.parse().unwrap()).unwrap()],
            avoid_buggy_ips: false,
            auto_assign: true,
            bgp_advertisements: Vec::new(),
            interfaces: Vec::new(),
            l2_advertisements: Vec::new(),
            service_allocation: None,
        }
    }

    fn config() -> Config {
        let mut l2v6 = pool("l2v6", Protocol::Layer2, "2001:db8::100", "2001:db8::1ff");
        l2v6.interfaces = vec!["eth1".into()];
        Config {
            pools: vec![
                pool("l2", Protocol::Layer2, "192.0.2.0", "192.0.2.255"),
                l2v6,
                pool("bgp", Protocol::Bgp, "198.51.100.0", "198.51.100.255"),
            ],
            ..Config::default()
        }
    }

    fn svc(name: &str, ips: &[&str], policy: TrafficPolicy) -> AssignedService {
        AssignedService {
            key: ServiceKey::new("default", name),
            external_traffic_policy: policy,
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn world(me: &str, live: &[&str], services: Vec<AssignedService>) -> World {
        World {
            config: config(),
            node: NodeInfo {
                name: me.into(),
                labels: BTreeMap::new(),
            },
            services,
            readiness: Readiness::AllReady,
            live_nodes: live.iter().map(|s| s.to_string()).collect(),
            node_labels: BTreeMap::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ready(entries: &[(&str, &[&str])]) -> Readiness {
        Readiness::Nodes(
            entries
                .iter()
                .map(|(svc, nodes)| {
                    (
                        ServiceKey::new("default", *svc),
                        nodes.iter().map(|n| n.to_string()).collect(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn score_is_sha256_of_node_hash_ip() {
        // Expected digests from Python's hashlib.
        assert_eq!(
            hex(&score("node-a", &ip("192.0.2.1"))),
            "9028b03eebd9c50f45e3cb24b507db170990cd5f206b44ba22be4e1dc2acad0a"
        );
        assert_eq!(
            hex(&score("node-b", &ip("2001:db8::1"))),
            "1aee61dde2bd8a0c8b0177a52ced9e0a52e8108284e6e3f14220d9f9d98cbc2e"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn every_node_computes_the_same_winner() {
        let services = vec![svc(
            "a",
            &["192.0.2.10", "2001:db8::100"],
            TrafficPolicy::Cluster,
        )];
        let live = ["n1", "n2", "n3"];
        let mut winners = BTreeMap::new();
        for me in live {
            let w = world(me, &live, services.clone());
            for (addr, e) in elections(&w) {
                let win = e.winner.clone().unwrap();
                assert_eq!(winners.entry(addr).or_insert(win.clone()), &win);
            }
        }
        // Exactly one node claims each address.
        for addr in winners.keys() {
            let claims = live
                .iter()
                .filter(|me| my_addresses(&world(me, &live, services.clone())).contains_key(addr))
                .count();
            assert_eq!(claims, 1, "{addr}");
        }
        // The winner does not depend on the order candidates arrive in.
        let a = winner(["n1", "n2", "n3"], &ip("192.0.2.10"));
        let b = winner(["n3", "n1", "n2"], &ip("192.0.2.10"));
        assert_eq!(a, b);
    }

    #[test]
    fn only_layer2_pools_count_and_interfaces_come_from_the_pool() {
        let w = world(
            "n1",
            &["n1"],
            vec![svc(
                "a",
                &["192.0.2.10", "198.51.100.7", "2001:db8::100", "203.0.113.1"],
                TrafficPolicy::Cluster,
            )],
        );
        let mine = my_addresses(&w);
        assert_eq!(
            mine,
            BTreeMap::from([
                (ip("192.0.2.10"), vec![]),
                (ip("2001:db8::100"), vec!["eth1".to_string()]),
            ])
        );
    }

    #[test]
    fn dead_nodes_never_win() {
        let services = vec![svc("a", &["192.0.2.10"], TrafficPolicy::Cluster)];
        let all = ["n1", "n2", "n3"];
        let w = world("n1", &all, services.clone());
        let first = elections(&w)[&ip("192.0.2.10")].winner.clone().unwrap();
        let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != first).collect();
        let w = world("n1", &survivors, services);
        let e = &elections(&w)[&ip("192.0.2.10")];
        let second = e.winner.clone().unwrap();
        assert_ne!(first, second);
        assert!(!e.usable.contains(&first));
    }

    #[test]
    fn shared_ip_has_one_winner_across_services() {
        let services = vec![
            svc("a", &["192.0.2.10"], TrafficPolicy::Cluster),
            svc("b", &["192.0.2.10"], TrafficPolicy::Cluster),
        ];
        let e = elections(&world("n1", &["n1", "n2", "n3"], services));
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[&ip("192.0.2.10")].winner.as_deref(),
            winner(["n1", "n2", "n3"], &ip("192.0.2.10"))
        );
    }

    #[test]
    fn local_policy_only_nodes_with_ready_endpoints_and_moving_the_endpoint_moves_the_winner() {
        let services = vec![svc("a", &["192.0.2.10"], TrafficPolicy::Local)];
        let live = ["n1", "n2", "n3"];
        for holder in live {
            let mut w = world("n1", &live, services.clone());
            w.readiness = ready(&[("a", &[holder])]);
            let e = &elections(&w)[&ip("192.0.2.10")];
            assert_eq!(e.winner.as_deref(), Some(holder));
            assert_eq!(e.usable, BTreeSet::from([holder.to_string()]));
        }
        // A ready endpoint on a dead node does not count.
        let mut w = world("n1", &["n1", "n2"], services.clone());
        w.readiness = ready(&[("a", &["n3"])]);
        assert_eq!(elections(&w)[&ip("192.0.2.10")].winner, None);
        // Two nodes with endpoints: the hash picks between them.
        let mut w = world("n1", &live, services);
        w.readiness = ready(&[("a", &["n2", "n3"])]);
        assert_eq!(
            elections(&w)[&ip("192.0.2.10")].winner.as_deref(),
            winner(["n2", "n3"], &ip("192.0.2.10"))
        );
    }

    #[test]
    fn no_ready_endpoint_anywhere_means_nobody_announces() {
        for policy in [TrafficPolicy::Cluster, TrafficPolicy::Local] {
            let mut w = world("n1", &["n1", "n2"], vec![svc("a", &["192.0.2.10"], policy)]);
            w.readiness = ready(&[("other", &["n1"])]);
            let e = &elections(&w)[&ip("192.0.2.10")];
            assert_eq!(e.winner, None, "{policy:?}");
            assert!(my_addresses(&w).is_empty());
        }
        // Cluster with an endpoint on any node: every live node is usable.
        let mut w = world(
            "n1",
            &["n1", "n2"],
            vec![svc("a", &["192.0.2.10"], TrafficPolicy::Cluster)],
        );
        w.readiness = ready(&[("a", &["n2"])]);
        assert_eq!(elections(&w)[&ip("192.0.2.10")].usable.len(), 2);
    }

    #[test]
    fn shared_ip_with_local_policy_goes_where_all_services_are_ready() {
        let services = vec![
            svc("a", &["192.0.2.10"], TrafficPolicy::Local),
            svc("b", &["192.0.2.10"], TrafficPolicy::Cluster),
        ];
        let mut w = world("n1", &["n1", "n2", "n3"], services);
        w.readiness = ready(&[("a", &["n3"]), ("b", &["n1"])]);
        assert_eq!(
            elections(&w)[&ip("192.0.2.10")].winner.as_deref(),
            Some("n3")
        );
    }

    fn many_ips() -> Vec<String> {
        (1..=250).map(|i| format!("192.0.2.{i}")).collect()
    }

    fn owners(live: &[&str]) -> BTreeMap<IpAddr, String> {
        let ips = many_ips();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let w = world("n1", live, vec![svc("a", &refs, TrafficPolicy::Cluster)]);
        elections(&w)
            .into_iter()
            .map(|(ip, e)| (ip, e.winner.unwrap()))
            .collect()
    }

    #[test]
    fn adding_a_node_moves_only_the_addresses_it_now_wins() {
        let before = owners(&["n1", "n2", "n3"]);
        let after = owners(&["n1", "n2", "n3", "n4"]);
        let moved: Vec<_> = before
            .iter()
            .filter(|(ip, owner)| &after[*ip] != *owner)
            .collect();
        for (ip, _) in &moved {
            assert_eq!(after[*ip], "n4", "{ip} moved to an old node");
        }
        // Rendezvous hashing gives the newcomer about a quarter, not a reshuffle.
        assert!(
            (30..=95).contains(&moved.len()),
            "moved {} of 250",
            moved.len()
        );
        // Removing it again restores the old owners exactly.
        assert_eq!(owners(&["n1", "n2", "n3"]), before);
        // Load spreads over all nodes.
        for n in ["n1", "n2", "n3", "n4"] {
            let count = after.values().filter(|o| o.as_str() == n).count();
            assert!(count > 30, "{n} owns only {count}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_addresses() {
        let before = owners(&["n1", "n2", "n3"]);
        let after = owners(&["n1", "n3"]);
        for (ip, owner) in &before {
            if owner != "n2" {
                assert_eq!(&after[ip], owner, "{ip} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn l2_advertisements_with_node_selectors_limit_the_candidates_and_give_the_interfaces() {
        let crds = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: l2}
spec: {addresses: [192.0.2.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: edge}
spec:
  interfaces: [eth1]
  nodeSelectors: [{matchLabels: {edge: 'true'}}]
";
        let ips = many_ips();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let services = vec![svc("a", &refs, TrafficPolicy::Cluster)];
        let live = ["n1", "n2", "n3"];
        let mut w = world("n1", &live, services);
        w.config = ferrolb_config::parse(crds).unwrap();
        let edge: BTreeMap<String, String> = [("edge".to_string(), "true".to_string())].into();
        w.node_labels.insert("n2".into(), edge.clone());
        w.node_labels.insert("n3".into(), edge);
        let e = elections(&w);
        assert_eq!(e.len(), many_ips().len());
        for (ip, el) in &e {
            let usable: Vec<&str> = el.usable.iter().map(String::as_str).collect();
            assert_eq!(usable, vec!["n2", "n3"], "{ip}: n1 is not an edge node");
            assert_eq!(el.interfaces, vec!["eth1".to_string()]);
        }
        assert!(my_addresses(&w).is_empty(), "n1 announces nothing");
        // Every election is won by n2 or n3, and both win some.
        let winners: BTreeSet<&str> = e.values().filter_map(|el| el.winner.as_deref()).collect();
        assert_eq!(winners, ["n2", "n3"].into_iter().collect());
    }
}
