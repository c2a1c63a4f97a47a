//! L2Advertisement and BGPAdvertisement objects, applied to the pools they select: by name
//! (`ipAddressPools`), by the pools' labels (`ipAddressPoolSelectors`), or every pool when they
//! name and select none, as MetalLB documents it. A pool no advertisement selects is not
//! announced.
//!
//! Must not: read pools or peers themselves (they are read before, in `pools` and `bgp`).

use serde_yaml::Value;

use crate::errors::Problems;
use crate::model::{BgpAdvertisement, L2Advertisement};
use crate::pools::{aggregation, interface_names, parse_community, parse_large_community};
use crate::yamlx::{Names, Obj};

use super::bgp::Communities;
use super::pools::{selectors, Draft};
use super::{non_default, unsupported, Object, Unsupported};

const L2_KEYS: &[&str] = &[
    "ipAddressPools",
    "ipAddressPoolSelectors",
    "node-selectors",
    "interfaces",
    "serviceSelectors",
    "preferredNodeSelectors",
];

const BGP_KEYS: &[&str] = &[
    "aggregation-length",
    "aggregation-length-v6",
    "localpref",
    "communities",
    "ipAddressPools",
    "ipAddressPoolSelectors",
    "node-selectors",
    "peers",
    "serviceSelectors",
];

const SERVICE_SELECTORS: Unsupported = Unsupported {
    name: "serviceSelectors",
    set: non_default,
    why: "an advertisement announces every Service of its pools; split the pool instead",
};

const L2_UNSUPPORTED: &[Unsupported] = &[
    SERVICE_SELECTORS,
    Unsupported {
        name: "preferredNodeSelectors",
        set: non_default,
        why: "the announcing node is chosen among the selected nodes by MetalLB's hash alone",
    },
];

/// Applies every L2Advertisement to the pools it selects (`known`: as for [`bgp`]).
pub fn layer2<'a>(
    objects: impl Iterator<Item = &'a Object>,
    pools: &mut [Draft],
    known: &[&str],
    p: &mut Problems,
) {
    for o in objects {
        let path = o.spec_path();
        let before = p.len();
        unsupported(&o.spec, &path, L2_UNSUPPORTED, p);
        let Some(s) = Obj::named(&o.spec, &path, L2_KEYS, Names::Crd, None, p) else {
            continue;
        };
        let selected = selected_pools(&s, pools, known, p);
        let node_selectors = selectors(&s, "node-selectors", p);
        let interfaces = interface_names(s.string_list("interfaces", p), p);
        if p.len() != before {
            continue;
        }
        let ad = L2Advertisement {
            interfaces,
            node_selectors,
        };
        for i in selected {
            if !pools[i].layer2.contains(&ad) {
                pools[i].layer2.push(ad.clone());
            }
        }
    }
}

/// Applies every BGPAdvertisement to the pools it selects. `known`: every IPAddressPool's name
/// (an invalid one is reported on its own object); `peers`: the BGPPeers' names.
pub fn bgp<'a>(
    objects: impl Iterator<Item = &'a Object>,
    pools: &mut [Draft],
    known: &[&str],
    communities: &Communities,
    peers: &[&str],
    p: &mut Problems,
) {
    let mut specs: Vec<(&Value, String)> = Vec::new();
    for o in objects {
        let path = o.spec_path();
        let before = p.len();
        unsupported(&o.spec, &path, &[SERVICE_SELECTORS], p);
        let Some(s) = Obj::named(&o.spec, &path, BGP_KEYS, Names::Crd, None, p) else {
            continue;
        };
        if let Some((_, first)) = specs.iter().find(|(spec, _)| **spec == o.spec) {
            p.push(
                &path,
                None,
                format!("the same spec as {first} (advertisements must differ)"),
            );
        }
        specs.push((&o.spec, o.id()));
        let selected = selected_pools(&s, pools, known, p);
        let node_selectors = selectors(&s, "node-selectors", p);
        let mut names: Vec<String> = Vec::new();
        for (ppath, name) in s.string_list("peers", p) {
            if names.contains(&name) {
                p.push(&ppath, Some(name), "peer listed twice");
            } else if !peers.contains(&name.as_str()) {
                p.push(&ppath, Some(name), "no BGPPeer has this name");
            } else {
                names.push(name);
            }
        }
        let (standard, large) = resolve_communities(&s, communities, p);
        let local_pref = s
            .uint("localpref", u64::from(u32::MAX), p)
            .and_then(|n| u32::try_from(n).ok());
        let agg = s.int("aggregation-length", p);
        let agg6 = s.int("aggregation-length-v6", p);
        let v4 = aggregation(&s, "aggregation-length", agg, 32, &[], false, None, p);
        let v6 = aggregation(&s, "aggregation-length-v6", agg6, 128, &[], true, None, p);
        let (Some(v4), Some(v6)) = (v4, v6) else {
            continue;
        };
        // Each selected pool's addresses must fit the aggregation lengths.
        let mut fits = true;
        for &i in &selected {
            let d = &pools[i];
            let name = Some(d.id.as_str());
            fits &= aggregation(
                &s,
                "aggregation-length",
                agg,
                32,
                &d.entries,
                false,
                name,
                p,
            )
            .is_some();
            fits &= aggregation(
                &s,
                "aggregation-length-v6",
                agg6,
                128,
                &d.entries,
                true,
                name,
                p,
            )
            .is_some();
        }
        if !fits || p.len() != before {
            continue;
        }
        let ad = BgpAdvertisement {
            aggregation_length: v4,
            aggregation_length_v6: v6,
            local_pref,
            communities: standard,
            large_communities: large,
            node_selectors,
            peers: names,
        };
        for i in selected {
            pools[i].bgp.push(ad.clone());
        }
    }
}

/// The pools an advertisement selects (indices into `pools`, in pool order): those named in
/// `ipAddressPools` and those `ipAddressPoolSelectors` select; every pool when both are empty.
fn selected_pools(s: &Obj<'_>, pools: &[Draft], known: &[&str], p: &mut Problems) -> Vec<usize> {
    let named = s.string_list("ipAddressPools", p);
    let by_label = selectors(s, "ipAddressPoolSelectors", p);
    if named.is_empty() && by_label.is_empty() {
        return (0..pools.len()).collect();
    }
    let mut chosen = vec![false; pools.len()];
    let mut seen: Vec<&str> = Vec::new();
    for (npath, name) in &named {
        if seen.contains(&name.as_str()) {
            p.push(npath, Some(name.clone()), "pool listed twice");
            continue;
        }
        seen.push(name);
        match pools.iter().position(|d| d.name == *name) {
            Some(i) => chosen[i] = true,
            None if known.contains(&name.as_str()) => {}
            None => p.push(npath, Some(name.clone()), "no IPAddressPool has this name"),
        }
    }
    for (i, d) in pools.iter().enumerate() {
        if by_label.iter().any(|sel| sel.matches(&d.labels)) {
            chosen[i] = true;
        }
    }
    (0..pools.len()).filter(|i| chosen[*i]).collect()
}

/// `communities`: standard (`AA:NN`), large (`large:GA:LD1:LD2`) or a Community alias.
fn resolve_communities(
    s: &Obj<'_>,
    communities: &Communities,
    p: &mut Problems,
) -> (
    Vec<crate::model::Community>,
    Vec<crate::model::LargeCommunity>,
) {
    let (mut standard, mut large) = (Vec::new(), Vec::new());
    let list = s.string_list("communities", p);
    for (k, (cpath, c)) in list.iter().enumerate() {
        if list[..k].iter().any(|(_, prev)| prev == c) {
            p.push(
                cpath,
                Some(c.clone()),
                "community listed twice in this advertisement",
            );
        } else if let Some(v) = communities.standard.get(c) {
            standard.push(*v);
        } else if let Some(v) = communities.large.get(c) {
            large.push(*v);
        } else if communities.bad.contains(c) {
            // The alias's own value is wrong; reported on its Community.
        } else if c.starts_with("large:") {
            match parse_large_community(c) {
                Ok(v) => large.push(v),
                Err(why) => p.push(cpath, Some(c.clone()), why),
            }
        } else {
            match parse_community(c) {
                Ok(v) => standard.push(v),
                Err(why) => p.push(
                    cpath,
                    Some(c.clone()),
                    format!("not an alias of a Community object, and {why}"),
                ),
            }
        }
    }
    (standard, large)
}
