//! Which prefixes, with which attributes, one BGP session announces (pure).
//!
//! Input: the [`World`], the peer, and the session's local address (the NEXT_HOP). Only addresses
//! in pools announced by BGP count, with the advertisements that apply to this node and peer
//! (MetalLB's BGPAdvertisement `nodeSelectors` and `peers`); `externalTrafficPolicy: Local` needs a ready endpoint on this node,
//! `Cluster` one anywhere; a node the peer's node-selectors do not match announces nothing.
//! Must not: do I/O or encode anything (pack.rs does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_config::{BgpAdvertisement, Peer, ServiceKey, TrafficPolicy};
use ipnet::IpNet;

use super::pack::{Attrs, RouteSet};
use crate::world::{AssignedService, World};

/// One advertisement of a pool with its attributes for the peer.
type AdvAttrs<'a> = (&'a BgpAdvertisement, Arc<Attrs>);

/// The routes this node should hold at `peer` over a session whose local address is `local`.
/// Prefixes of the other address family than the session are left out (no next hop for them).
/// Routes of one advertisement share one [`Attrs`]; a prefix two advertisements produce keeps
/// the first one's attributes (Service order, then advertisement order).
pub fn routes_for(world: &World, peer: &Peer, local: IpAddr) -> RouteSet {
    if !peer.selects_node(&world.node.labels) {
        return RouteSet::new();
    }
    let default_adv = [BgpAdvertisement::default()];
    // Per pool: its advertisements with their attributes for this peer (None: not a bgp pool).
    let pools: Vec<Option<Vec<AdvAttrs>>> = world
        .config
        .pools
        .iter()
        .map(|pool| {
            pool.protocol.bgp().then(|| {
                let advs: &[BgpAdvertisement] = if pool.bgp_advertisements.is_empty() {
                    &default_adv
                } else {
                    &pool.bgp_advertisements
                };
                advs.iter()
                    .filter(|adv| adv.applies_to(peer, &world.node.labels))
                    .map(|adv| (adv, Arc::new(attrs(peer, adv, local))))
                    .collect()
            })
        })
        .collect();
    let mut routes: Vec<(IpNet, Arc<Attrs>)> = Vec::new();
    for svc in &world.services {
        if !ready_here(world, svc) {
            continue;
        }
        for ip in &svc.ips {
            if ip.is_ipv4() != local.is_ipv4() {
                continue;
            }
            // The first pool containing the address (as `Config::pool_containing`).
            let Some(advs) = world
                .config
                .pools
                .iter()
                .position(|p| p.contains(ip))
                .and_then(|i| pools[i].as_ref())
            else {
                continue;
            };
            for (adv, attrs) in advs {
                let len = if ip.is_ipv4() {
                    adv.aggregation_length
                } else {
                    adv.aggregation_length_v6
                };
                let Ok(net) = IpNet::new(*ip, len) else {
                    continue;
                };
                routes.push((net.trunc(), attrs.clone()));
            }
        }
    }
    // Stable sort, then the first of equal prefixes stays (the bulk build keeps the last).
    routes.sort_by_key(|(p, _)| *p);
    routes.dedup_by_key(|(p, _)| *p);
    routes.into_iter().collect()
}

/// True when this node may announce `svc` by BGP: with `externalTrafficPolicy: Local` a ready
/// endpoint here, with `Cluster` one anywhere.
fn ready_here(world: &World, svc: &AssignedService) -> bool {
    match svc.external_traffic_policy {
        TrafficPolicy::Local => world.readiness.ready_on(&svc.key, &world.node.name),
        TrafficPolicy::Cluster => world.readiness.ready_anywhere(&svc.key),
    }
}

/// Per Service this node announces by BGP, the peers it is announced to (each by its BGPPeer
/// name, else its address): what ServiceBGPStatus says. A peer counts when it selects this node
/// and some advertisement of the address's pool applies to it from here; whether the session
/// is up is not said (as in MetalLB).
pub fn announced_to(world: &World) -> BTreeMap<ServiceKey, BTreeSet<String>> {
    let mut out: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    let peers: Vec<&Peer> = world
        .config
        .peers
        .iter()
        .filter(|p| p.selects_node(&world.node.labels))
        .collect();
    for svc in world.services.iter().filter(|s| ready_here(world, s)) {
        for ip in &svc.ips {
            let Some(pool) = world
                .config
                .pool_containing(ip)
                .filter(|p| p.protocol.bgp())
            else {
                continue;
            };
            for peer in &peers {
                let applies = pool.bgp_advertisements.is_empty()
                    || pool
                        .bgp_advertisements
                        .iter()
                        .any(|a| a.applies_to(peer, &world.node.labels));
                if applies {
                    let label = peer
                        .name
                        .clone()
                        .unwrap_or_else(|| peer.peer_address.to_string());
                    out.entry(svc.key.clone()).or_default().insert(label);
                }
            }
        }
    }
    out
}

fn attrs(peer: &Peer, adv: &BgpAdvertisement, local: IpAddr) -> Attrs {
    let ebgp = peer.is_ebgp();
    Attrs {
        as_path: if ebgp { vec![peer.my_asn] } else { vec![] },
        next_hop_v4: match local {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        },
        next_hop_v6: match local {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        },
        local_pref: if ebgp { None } else { adv.local_pref },
        communities: adv
            .communities
            .iter()
            .map(|c| c.0)
            .collect::<BTreeSet<u32>>(),
        large_communities: adv
            .large_communities
            .iter()
            .map(|c| (c.global_admin, c.local_data1, c.local_data2))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{AssignedService, NodeInfo, Readiness};
    use ferrolb_config::ServiceKey;
    use std::collections::BTreeMap;

    const CFG: &str = r#"
peers:
- my-asn: 64512
  peer-asn: 64513
  peer-address: 192.0.2.1
- my-asn: 64512
  peer-asn: 64512
  peer-address: 192.0.2.1
  node-selectors:
  - match-labels:
      rack: a
bgp-communities:
  lo: 64512:7
address-pools:
- name: b
  protocol: bgp
  addresses: [198.51.100.0/24, "2001:db8:100::/64"]
  bgp-advertisements:
  - localpref: 150
    communities: [lo, "65000:1"]
  - aggregation-length: 24
- name: l2
  protocol: layer2
  addresses: [203.0.113.0/24]
"#;

    fn world(etp: TrafficPolicy, readiness: Readiness) -> World {
        let config = ferrolb_config::parse(CFG).unwrap();
        World {
            config,
            node: NodeInfo {
                name: "n1".into(),
                labels: BTreeMap::new(),
            },
            services: vec![AssignedService {
                key: ServiceKey::new("ns", "web"),
                external_traffic_policy: etp,
                ips: vec![
                    "198.51.100.10".parse().unwrap(),
                    "2001:db8:100::10".parse().unwrap(),
                    "203.0.113.5".parse().unwrap(),
                ],
            }],
            readiness,
            live_nodes: ["n1".to_string()].into_iter().collect(),
            node_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn ebgp_gets_path_next_hop_communities_and_aggregate_no_local_pref() {
        let w = world(TrafficPolicy::Cluster, Readiness::AllReady);
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        let r = routes_for(&w, &w.config.peers[0], local);
        let keys: Vec<String> = r.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, vec!["198.51.100.0/24", "198.51.100.10/32"]);
        let a = &r[&"198.51.100.10/32".parse().unwrap()];
        assert_eq!(a.as_path, vec![64512]);
        assert_eq!(a.next_hop_v4, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(a.local_pref, None);
        let want: BTreeSet<u32> = [(64512 << 16) | 7, (65000 << 16) | 1].into_iter().collect();
        assert_eq!(a.communities, want);
    }

    #[test]
    fn ibgp_gets_local_pref_and_empty_path_only_on_selected_nodes() {
        let mut w = world(TrafficPolicy::Cluster, Readiness::AllReady);
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(routes_for(&w, &w.config.peers[1], local).is_empty());
        w.node.labels.insert("rack".into(), "a".into());
        let r = routes_for(&w, &w.config.peers[1], local);
        let a = &r[&"198.51.100.10/32".parse().unwrap()];
        assert!(a.as_path.is_empty());
        assert_eq!(a.local_pref, Some(150));
    }

    #[test]
    fn ipv6_session_gets_ipv6_prefixes_with_v6_next_hop() {
        let w = world(TrafficPolicy::Cluster, Readiness::AllReady);
        let local: IpAddr = "2001:db8::2".parse().unwrap();
        let r = routes_for(&w, &w.config.peers[0], local);
        let keys: Vec<String> = r.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, vec!["2001:db8:100::10/128"]);
        assert_eq!(
            r.values().next().unwrap().next_hop_v6,
            Some("2001:db8::2".parse().unwrap())
        );
    }

    #[test]
    fn traffic_policy_local_needs_a_ready_endpoint_here() {
        let key = ServiceKey::new("ns", "web");
        let elsewhere = Readiness::Nodes(
            [(key.clone(), ["n2".to_string()].into_iter().collect())]
                .into_iter()
                .collect(),
        );
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        let w = world(TrafficPolicy::Local, elsewhere.clone());
        assert!(routes_for(&w, &w.config.peers[0], local).is_empty());
        let w = world(TrafficPolicy::Cluster, elsewhere);
        assert_eq!(routes_for(&w, &w.config.peers[0], local).len(), 2);
        let here = Readiness::Nodes(
            [(key, ["n1".to_string()].into_iter().collect())]
                .into_iter()
                .collect(),
        );
        let w = world(TrafficPolicy::Local, here);
        assert_eq!(routes_for(&w, &w.config.peers[0], local).len(), 2);
        let w = world(TrafficPolicy::Cluster, Readiness::Nodes(BTreeMap::new()));
        assert!(routes_for(&w, &w.config.peers[0], local).is_empty());
    }

    #[test]
    fn routes_of_one_advertisement_share_attributes_and_the_first_duplicate_wins() {
        let mut w = world(TrafficPolicy::Cluster, Readiness::AllReady);
        let mut second = w.services[0].clone();
        second.key = ServiceKey::new("ns", "other");
        second.ips = vec![
            "198.51.100.11".parse().unwrap(),
            "198.51.100.10".parse().unwrap(),
        ];
        w.services.push(second);
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        let r = routes_for(&w, &w.config.peers[0], local);
        let keys: Vec<String> = r.keys().map(|k| k.to_string()).collect();
        assert_eq!(
            keys,
            vec!["198.51.100.0/24", "198.51.100.10/32", "198.51.100.11/32"]
        );
        let a = &r[&"198.51.100.10/32".parse().unwrap()];
        let b = &r[&"198.51.100.11/32".parse().unwrap()];
        assert!(Arc::ptr_eq(a, b));
        // The /24 comes from the second advertisement (its own attributes: no communities).
        let agg = &r[&"198.51.100.0/24".parse().unwrap()];
        assert!(!Arc::ptr_eq(a, agg));
        assert!(agg.communities.is_empty() && !a.communities.is_empty());
        // Identical worlds give identical sets (equal attributes, not the same allocations).
        assert_eq!(routes_for(&w, &w.config.peers[0], local), r);
    }

    /// MetalLB's "Advanced BGP configuration": an advertisement for one peer from one node,
    /// another with a large community for every peer.
    const CRDS: &str = "
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: peer-a}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: peer-b}
spec: {myASN: 64512, peerASN: 64514, peerAddress: 192.0.2.9}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: [198.51.100.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: everyone}
spec:
  communities: [large:64512:1:2]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: only-a-from-rack-1}
spec:
  aggregationLength: 24
  peers: [peer-a]
  nodeSelectors: [{matchLabels: {rack: '1'}}]
";

    #[test]
    fn crd_advertisements_apply_per_node_and_per_peer_with_large_communities() {
        let mut w = world(TrafficPolicy::Cluster, Readiness::AllReady);
        w.config = ferrolb_config::parse(CRDS).unwrap();
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        let (a, b) = (w.config.peers[0].clone(), w.config.peers[1].clone());
        assert_eq!(a.name.as_deref(), Some("peer-a"));
        let keys = |w: &World, p: &Peer| -> Vec<String> {
            routes_for(w, p, local)
                .keys()
                .map(|k| k.to_string())
                .collect()
        };
        // Not on rack 1: only the advertisement for everyone.
        assert_eq!(keys(&w, &a), vec!["198.51.100.10/32"]);
        w.node.labels.insert("rack".into(), "1".into());
        assert_eq!(keys(&w, &a), vec!["198.51.100.0/24", "198.51.100.10/32"]);
        assert_eq!(
            keys(&w, &b),
            vec!["198.51.100.10/32"],
            "peer-b is not listed"
        );
        let r = routes_for(&w, &b, local);
        let attrs = &r[&"198.51.100.10/32".parse().unwrap()];
        assert_eq!(
            attrs.large_communities,
            [(64512, 1, 2)].into_iter().collect()
        );
        let to = announced_to(&w);
        let web = ServiceKey::new("ns", "web");
        assert_eq!(
            to.get(&web)
                .map(|p| p.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["peer-a", "peer-b"])
        );
        w.node.labels.clear();
        w.config.pools[0].bgp_advertisements.remove(0);
        assert!(announced_to(&w).is_empty(), "no advertisement applies here");
    }
}
