//! The validated configuration model: what the rest of ferrolb consumes.
//!
//! Values here have passed every validation rule, so consumers never re-check them. Built only by
//! the parser/validator in this crate; everything is ordered as the user wrote it (pools in config
//! order matter to the allocator).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Serialize;

use crate::addr::{IpFamily, IpRange};

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Config {
    pub peers: Vec<Peer>,
    /// Address pools in the order the config lists them.
    pub pools: Vec<Pool>,
    /// `bgp-communities`: alias -> community.
    pub communities: BTreeMap<String, Community>,
    pub bfd_profiles: Vec<BfdProfile>,
    /// Aliases of large communities (MetalLB's Community objects; the ConfigMap has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub large_communities: BTreeMap<String, LargeCommunity>,
}

impl Config {
    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pools that give addresses to a Service (in `namespace`, with `labels`) that asks for
    /// none, in the order they are tried (MetalLB's order): the auto-assign pools whose
    /// `serviceAllocation` admits the Service, lower priority first (no priority last; ties in
    /// config order), then the auto-assign pools without one, in config order. Indices into
    /// `pools`.
    pub fn unasked_pools(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let mut pinned: Vec<(u32, usize)> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            if !p.serves_unasked(namespace, labels) {
                continue;
            }
            match &p.service_allocation {
                Some(a) => pinned.push((
                    if a.priority == 0 {
                        u32::MAX
                    } else {
                        a.priority
                    },
                    i,
                )),
                None => rest.push(i),
            }
        }
        pinned.sort();
        pinned.into_iter().map(|(_, i)| i).chain(rest).collect()
    }

    /// True when some pool has a `serviceAllocation` (pools then depend on the Service).
    pub fn allocates_by_service(&self) -> bool {
        self.pools.iter().any(|p| p.service_allocation.is_some())
    }

    /// The pool whose addresses contain `ip`, if any (pools never overlap, so at most one).
    pub fn pool_containing(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.contains(ip))
    }
}

/// How a pool's addresses are announced: `protocol:` of a ConfigMap pool (`bgp` or `layer2`). A
/// pool read from MetalLB's CRDs is announced by the advertisements that select it, which may be
/// both kinds or none: [`Protocol::Layer2AndBgp`] and [`Protocol::Unannounced`] exist only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Bgp,
    Layer2,
    /// Selected by an L2Advertisement and by a BGPAdvertisement.
    #[serde(rename = "layer2+bgp")]
    Layer2AndBgp,
    /// Selected by no advertisement: addresses are assigned but nobody announces them.
    Unannounced,
}

impl Protocol {
    /// Announced by layer2 (ARP/NDP).
    pub fn layer2(self) -> bool {
        matches!(self, Protocol::Layer2 | Protocol::Layer2AndBgp)
    }

    /// Announced by BGP.
    pub fn bgp(self) -> bool {
        matches!(self, Protocol::Bgp | Protocol::Layer2AndBgp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Bgp => "bgp",
            Protocol::Layer2 => "layer2",
            Protocol::Layer2AndBgp => "layer2+bgp",
            Protocol::Unannounced => "unannounced",
        })
    }
}

/// One entry of `address-pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub name: String,
    pub protocol: Protocol,
    /// One range per `addresses` entry, in the order written (a CIDR becomes its whole block).
    pub ranges: Vec<IpRange>,
    /// Skip IPv4 addresses ending in .0 and .255.
    pub avoid_buggy_ips: bool,
    /// When false, the pool serves only Services that ask for it (by IP or by pool name).
    pub auto_assign: bool,
    /// BGP pools only; never empty for a BGP pool (a default advertisement is filled in).
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// ferrolb extension (layer2 pools): announce only on these interfaces; empty = all usable ones.
    /// Applies when `l2_advertisements` is empty.
    pub interfaces: Vec<String>,
    /// Layer2 pools from MetalLB's CRDs whose L2Advertisements select nodes: announce only from
    /// the nodes some advertisement selects, on that node's interfaces
    /// ([`Pool::layer2_interfaces_on`]). Empty: every node, on `interfaces` (always so for a
    /// ConfigMap pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l2_advertisements: Vec<L2Advertisement>,
    /// MetalLB's `serviceAllocation`: which Services the pool serves when it picks addresses by
    /// itself, and before which other pools. `None`: every Service, after the pools that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

impl Pool {
    /// True when `ip` lies in one of the pool's ranges (ignores `avoid_buggy_ips`).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// True when the pool may hand out `ip`: inside a range and not excluded by `avoid_buggy_ips`.
    pub fn may_assign(&self, ip: &IpAddr) -> bool {
        self.contains(ip) && !(self.avoid_buggy_ips && crate::addr::is_buggy_ip(ip))
    }

    /// The interfaces to answer on for this pool's addresses on a node with `labels`: `None` when
    /// the node may not announce them by layer2 (not a layer2 pool, or no L2Advertisement selects
    /// the node); `Some(empty)` for every usable interface.
    pub fn layer2_interfaces_on(&self, labels: &BTreeMap<String, String>) -> Option<Vec<String>> {
        if !self.protocol.layer2() {
            return None;
        }
        if self.l2_advertisements.is_empty() {
            return Some(self.interfaces.clone());
        }
        let mut selecting = self
            .l2_advertisements
            .iter()
            .filter(|a| selects(&a.node_selectors, labels))
            .peekable();
        selecting.peek()?;
        let mut out: Vec<String> = Vec::new();
        for a in selecting {
            if a.interfaces.is_empty() {
                return Some(Vec::new());
            }
            for i in &a.interfaces {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
        }
        Some(out)
    }

    /// True when a Service (namespace, labels) may get addresses from this pool without asking
    /// for it, by MetalLB's `serviceAllocation` rules.
    pub fn serves_unasked(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.auto_assign
            && self
                .service_allocation
                .as_ref()
                .is_none_or(|a| a.admits(namespace, labels))
    }

    /// The families this pool has addresses of, IPv4 first.
    pub fn families(&self) -> Vec<IpFamily> {
        let mut f: Vec<IpFamily> = self.ranges.iter().map(|r| r.family()).collect();
        f.sort();
        f.dedup();
        f
    }
}

/// One `bgp-advertisements` entry, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpAdvertisement {
    /// Prefix length IPv4 addresses are announced with (default 32).
    pub aggregation_length: u8,
    /// Prefix length IPv6 addresses are announced with (default 128).
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF sent to iBGP peers; `None` when not configured (MetalLB sends 0).
    pub local_pref: Option<u32>,
    /// Communities with aliases resolved, in the order written.
    pub communities: Vec<Community>,
    /// Large communities (RFC 8092) with aliases resolved, in the order written (CRDs only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<LargeCommunity>,
    /// Announce only from nodes one of these selects; empty: every node (CRDs only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<NodeSelector>,
    /// Announce only to the peers of these names ([`Peer::name`]); empty: every peer (CRDs only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

impl Default for BgpAdvertisement {
    fn default() -> Self {
        BgpAdvertisement {
            aggregation_length: 32,
            aggregation_length_v6: 128,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            node_selectors: Vec::new(),
            peers: Vec::new(),
        }
    }
}

impl BgpAdvertisement {
    /// True when this advertisement applies to the session with `peer` from a node with `labels`.
    pub fn applies_to(&self, peer: &Peer, labels: &BTreeMap<String, String>) -> bool {
        selects(&self.node_selectors, labels)
            && (self.peers.is_empty()
                || peer
                    .name
                    .as_ref()
                    .is_some_and(|n| self.peers.iter().any(|p| p == n)))
    }
}

/// One L2Advertisement as it applies to a pool: the nodes that announce and their interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct L2Advertisement {
    /// Announce only on these interfaces; empty: every usable interface.
    pub interfaces: Vec<String>,
    /// Nodes one of these selects announce; empty: every node.
    pub node_selectors: Vec<NodeSelector>,
}

/// MetalLB's `serviceAllocation` of an IPAddressPool, namespace selectors already resolved to
/// names (they are matched against the Namespaces when the configuration is read).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ServiceAllocation {
    /// Lower first; 0: no priority, after every pool that has one.
    pub priority: u32,
    /// `Some`: only Services in these namespaces (`namespaces` and the namespaces that
    /// `namespaceSelectors` matched); `None`: any namespace.
    pub namespaces: Option<std::collections::BTreeSet<String>>,
    /// Only Services one of these selects; empty: any Service.
    pub service_selectors: Vec<NodeSelector>,
}

impl ServiceAllocation {
    /// True when a Service in `namespace` with `labels` may use the pool.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.contains(namespace))
            && selects(&self.service_selectors, labels)
    }
}

/// OR across selectors; no selector selects everything.
fn selects(selectors: &[NodeSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

/// A large BGP community (RFC 8092) `large:GA:LD1:LD2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "large:{}:{}:{}",
            self.global_admin, self.local_data1, self.local_data2
        )
    }
}

/// A standard BGP community `AA:NN`, stored as `AA << 16 | NN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Community(pub u32);

impl Community {
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
    pub fn asn(&self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub fn value(&self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.asn(), self.value())
    }
}

/// One entry of `peers`, defaults filled in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// The BGPPeer's name (CRDs only), which BGPAdvertisements' `peers` refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub my_asn: u32,
    pub peer_asn: u32,
    pub peer_address: IpAddr,
    /// Default 179.
    pub peer_port: u16,
    pub source_address: Option<IpAddr>,
    /// Default 90 s; zero disables keepalives and the hold timer.
    pub hold_time: Duration,
    /// Default `hold_time / 3`; never above `hold_time`.
    pub keepalive_time: Duration,
    /// Default: chosen by the speaker from the session's local address.
    pub router_id: Option<Ipv4Addr>,
    /// TCP MD5 signature key (RFC 2385). Never log it.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    pub ebgp_multihop: bool,
    /// OR across selectors; empty = every node.
    pub node_selectors: Vec<NodeSelector>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("my_asn", &self.my_asn)
            .field("peer_asn", &self.peer_asn)
            .field("peer_address", &self.peer_address)
            .field("peer_port", &self.peer_port)
            .field("source_address", &self.source_address)
            .field("hold_time", &self.hold_time)
            .field("keepalive_time", &self.keepalive_time)
            .field("router_id", &self.router_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ebgp_multihop", &self.ebgp_multihop)
            .field("node_selectors", &self.node_selectors)
            .finish()
    }
}

impl Peer {
    /// True for eBGP sessions (the ASNs differ).
    pub fn is_ebgp(&self) -> bool {
        self.my_asn != self.peer_asn
    }

    /// True when a node with these labels should peer: any selector matches, or there is none.
    pub fn selects_node(&self, labels: &BTreeMap<String, String>) -> bool {
        selects(&self.node_selectors, labels)
    }
}

/// A Kubernetes-style label selector (`match-labels` AND `match-expressions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NodeSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<MatchExpression>,
}

impl NodeSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchExpression {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

impl MatchExpression {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => got.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => got.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => got.is_some(),
            SelectorOperator::DoesNotExist => got.is_none(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One entry of `bfd-profiles` (parsed and range-checked; ferrolb has no BFD yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval_ms: Option<u32>,
    pub transmit_interval_ms: Option<u32>,
    pub detect_multiplier: Option<u32>,
    pub echo_interval_ms: Option<u32>,
    pub echo_mode: bool,
    pub passive_mode: bool,
    pub minimum_ttl: Option<u32>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_of_a_peer_and_its_config_hides_the_password() {
        let cfg = crate::parse(
            "peers:\n- peer-address: 192.0.2.1\n  peer-asn: 64513\n  my-asn: 64512\n  \
             password: hunter2-secret\n",
        )
        .expect("valid config");
        assert_eq!(cfg.peers[0].password.as_deref(), Some("hunter2-secret"));
        let shown = format!("{cfg:?} {:#?}", cfg.peers[0]);
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("192.0.2.1"), "{shown}");
    }
}
