//! IPAddressPool objects: addresses (the ConfigMap's entry syntax and overlap rule),
//! `autoAssign`, `avoidBuggyIPs`, `serviceAllocation` (namespace selectors matched against the
//! cluster's Namespaces here); and [`Draft`], a pool waiting for the advertisements that select it.
//!
//! Must not: decide how a pool is announced (the advertisements do, see `ads`).

use std::collections::{BTreeMap, BTreeSet};

use crate::cidr::{parse_entry, AddressEntry};
use crate::errors::Problems;
use crate::model::{
    BgpAdvertisement, L2Advertisement, NodeSelector, Pool, Protocol, ServiceAllocation,
};
use crate::peers::node_selector;
use crate::validate::AddressEntries;
use crate::yamlx::{index, Names, Obj};

use super::{Cluster, Object};

const POOL_KEYS: &[&str] = &[
    "addresses",
    "auto-assign",
    "avoid-buggy-ips",
    "serviceAllocation",
];

const ALLOCATION_KEYS: &[&str] = &[
    "priority",
    "namespaces",
    "namespaceSelectors",
    "serviceSelectors",
];

/// A valid IPAddressPool before the advertisements are applied.
#[derive(Debug)]
pub struct Draft {
    pub name: String,
    /// `Kind namespace/name`, to name the pool in messages.
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// `(path, text, entry)` of every address entry.
    pub entries: Vec<(String, String, AddressEntry)>,
    pub avoid_buggy_ips: bool,
    pub auto_assign: bool,
    pub service_allocation: Option<ServiceAllocation>,
    /// The L2Advertisements that select the pool, in object order.
    pub layer2: Vec<L2Advertisement>,
    /// The BGPAdvertisements that select the pool, in object order.
    pub bgp: Vec<BgpAdvertisement>,
}

impl Draft {
    /// The pool, announced as its advertisements say. L2Advertisements that select every node
    /// fold into the pool's `interfaces` (every interface if one of them names none), so a pool
    /// announced from every node reads exactly as the ConfigMap's layer2 pool.
    pub fn finish(self) -> Pool {
        let protocol = match (self.layer2.is_empty(), self.bgp.is_empty()) {
            (false, true) => Protocol::Layer2,
            (true, false) => Protocol::Bgp,
            (false, false) => Protocol::Layer2AndBgp,
            (true, true) => Protocol::Unannounced,
        };
        let everywhere = self.layer2.iter().all(|a| a.node_selectors.is_empty());
        let (interfaces, l2_advertisements) = if everywhere {
            let mut names: Vec<String> = Vec::new();
            if self.layer2.iter().all(|a| !a.interfaces.is_empty()) {
                for i in self.layer2.iter().flat_map(|a| &a.interfaces) {
                    if !names.contains(i) {
                        names.push(i.clone());
                    }
                }
            }
            (names, Vec::new())
        } else {
            (Vec::new(), self.layer2)
        };
        Pool {
            name: self.name,
            protocol,
            ranges: self.entries.iter().map(|(_, _, e)| e.range).collect(),
            avoid_buggy_ips: self.avoid_buggy_ips,
            auto_assign: self.auto_assign,
            bgp_advertisements: self.bgp,
            interfaces,
            l2_advertisements,
            service_allocation: self.service_allocation,
        }
    }
}

/// Every valid IPAddressPool (in object order), overlaps across pools reported.
pub fn pools<'a>(
    objects: impl Iterator<Item = &'a Object>,
    cluster: &Cluster,
    p: &mut Problems,
) -> Vec<Draft> {
    let mut seen = AddressEntries::default();
    let mut out = Vec::new();
    for (i, o) in objects.enumerate() {
        let path = o.spec_path();
        let before = p.len();
        let Some(s) = Obj::named(&o.spec, &path, POOL_KEYS, Names::Crd, None, p) else {
            continue;
        };
        let addresses = s.string_list("addresses", p);
        if addresses.is_empty() && p.len() == before {
            p.push(
                &s.field("addresses"),
                None,
                "required: at least one CIDR or start-end range",
            );
        }
        let mut entries = Vec::new();
        for (apath, text) in addresses {
            match parse_entry(&text) {
                Ok(e) => {
                    seen.add(&apath, &text, (i, &o.name), e.range, p);
                    entries.push((apath, text, e));
                }
                Err(why) => p.push(&apath, Some(text), why),
            }
        }
        let avoid_buggy_ips = s.boolean("avoid-buggy-ips", p).unwrap_or(false);
        let auto_assign = s.boolean("auto-assign", p).unwrap_or(true);
        let service_allocation = s
            .get("serviceAllocation")
            .and_then(|v| allocation(&s, v, cluster, p));
        if p.len() == before {
            out.push(Draft {
                name: o.name.clone(),
                id: o.id(),
                labels: o.labels.clone(),
                entries,
                avoid_buggy_ips,
                auto_assign,
                service_allocation,
                layer2: Vec::new(),
                bgp: Vec::new(),
            });
        }
    }
    out
}

/// `serviceAllocation`: priority, namespaces (by name and by selector), service selectors.
fn allocation(
    s: &Obj<'_>,
    v: &serde_yaml::Value,
    cluster: &Cluster,
    p: &mut Problems,
) -> Option<ServiceAllocation> {
    let path = s.field("serviceAllocation");
    let a = s.child(v, &path, ALLOCATION_KEYS, p)?;
    let before = p.len();
    let priority = a
        .uint("priority", u64::from(i32::MAX.unsigned_abs()), p)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let mut namespaces = BTreeSet::new();
    for (npath, ns) in a.string_list("namespaces", p) {
        if !namespaces.insert(ns.clone()) {
            p.push(&npath, Some(ns), "namespace listed twice");
        }
    }
    let ns_selectors = selectors(&a, "namespaceSelectors", p);
    let service_selectors = selectors(&a, "serviceSelectors", p);
    let restricts = !namespaces.is_empty() || !ns_selectors.is_empty();
    for (ns, labels) in &cluster.namespaces {
        if ns_selectors.iter().any(|sel| sel.matches(labels)) {
            namespaces.insert(ns.clone());
        }
    }
    (p.len() == before).then_some(ServiceAllocation {
        priority,
        namespaces: restricts.then_some(namespaces),
        service_selectors,
    })
}

/// A list of label selectors under `key` of `o`, each once.
pub(super) fn selectors(o: &Obj<'_>, key: &str, p: &mut Problems) -> Vec<NodeSelector> {
    let mut out: Vec<NodeSelector> = Vec::new();
    for (i, v) in o.list(key, p).into_iter().flatten().enumerate() {
        let at = index(&o.field(key), i);
        if let Some(sel) = node_selector(o, v, &at, p) {
            if out.contains(&sel) {
                p.push(&at, None, "the same selector is listed twice");
            } else {
                out.push(sel);
            }
        }
    }
    out
}
