//! `address-pools` entries: MetalLB v0.12's `parseAddressPool` / `parseBGPAdvertisements` rules
//! plus ferrolb's `interfaces` extension, every problem reported, defaults filled.
//!
//! Must not: compare pools with each other (names, overlaps: the top-level validator does).

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::cidr::{parse_entry, AddressEntry};
use crate::errors::Problems;
use crate::model::{BgpAdvertisement, Community, LargeCommunity, Pool, Protocol};
use crate::yamlx::{index, Obj};

const POOL_KEYS: &[&str] = &[
    "name",
    "protocol",
    "addresses",
    "avoid-buggy-ips",
    "auto-assign",
    "bgp-advertisements",
    "interfaces",
];

const ADV_KEYS: &[&str] = &[
    "aggregation-length",
    "aggregation-length-v6",
    "localpref",
    "communities",
];

/// A pool as read: the model (when the pool itself is valid) and what the cross-pool rules need.
#[derive(Debug)]
pub struct ParsedPool {
    pub pool: Option<Pool>,
    /// `name` as written (may be empty).
    pub name: String,
    /// `(path, text, entry)` for every address entry that parsed.
    pub entries: Vec<(String, String, AddressEntry)>,
}

/// Reads `address-pools[i]`. `communities` are the valid `bgp-communities` aliases;
/// `bad_aliases` those whose value was invalid (already reported).
pub fn parse_pool(
    v: &Value,
    path: &str,
    communities: &BTreeMap<String, Community>,
    bad_aliases: &[String],
    p: &mut Problems,
) -> ParsedPool {
    let mut out = ParsedPool {
        pool: None,
        name: String::new(),
        entries: Vec::new(),
    };
    let Some(o) = Obj::new(v, path, POOL_KEYS, None, p) else {
        return out;
    };
    let before = p.len();
    let name = o.string("name", p);
    out.name = name.clone().unwrap_or_default();
    // A name of the wrong type was reported already.
    if out.name.is_empty() && (name.is_some() || !o.has("name")) {
        p.push(&o.field("name"), None, "required: a pool name");
    }
    let protocol = match o.string("protocol", p).as_deref() {
        Some("bgp") => Some(Protocol::Bgp),
        Some("layer2") => Some(Protocol::Layer2),
        None | Some("") => {
            p.push(&o.field("protocol"), None, "required: bgp or layer2");
            None
        }
        Some(other) => {
            p.push(
                &o.field("protocol"),
                Some(other.to_string()),
                "unknown protocol (bgp or layer2)",
            );
            None
        }
    };
    let missing = match o.get("addresses") {
        None => true,
        Some(Value::Sequence(s)) => s.is_empty(),
        Some(_) => false,
    };
    if missing {
        p.push(
            &o.field("addresses"),
            None,
            "required: at least one CIDR or start-end range",
        );
    }
    let addresses = o.string_list("addresses", p);
    for (apath, text) in addresses {
        match parse_entry(&text) {
            Ok(e) => out.entries.push((apath, text, e)),
            Err(why) => p.push(&apath, Some(text), why),
        }
    }
    let avoid_buggy_ips = o.boolean("avoid-buggy-ips", p).unwrap_or(false);
    let auto_assign = o.boolean("auto-assign", p).unwrap_or(true);
    let raw_ads = o.list("bgp-advertisements", p);
    let mut bgp_advertisements = Vec::new();
    match protocol {
        Some(Protocol::Layer2) if raw_ads.is_some_and(|a| !a.is_empty()) => {
            p.push(
                &o.field("bgp-advertisements"),
                None,
                "only bgp pools have bgp-advertisements (this pool is layer2)",
            );
        }
        Some(Protocol::Layer2 | Protocol::Layer2AndBgp | Protocol::Unannounced) => {}
        Some(Protocol::Bgp) => {
            bgp_advertisements = advertisements(
                &o,
                raw_ads.map(Vec::as_slice).unwrap_or(&[]),
                &out.entries,
                communities,
                bad_aliases,
                p,
            );
        }
        None => {}
    }
    let interfaces = interfaces(&o, protocol, p);
    if p.len() == before {
        if let Some(protocol) = protocol {
            out.pool = Some(Pool {
                name: out.name.clone(),
                protocol,
                ranges: out.entries.iter().map(|(_, _, e)| e.range).collect(),
                avoid_buggy_ips,
                auto_assign,
                bgp_advertisements,
                interfaces,
                l2_advertisements: Vec::new(),
                service_allocation: None,
            });
        }
    }
    out
}

/// The raw form of one advertisement, compared for MetalLB's "no two identical" rule.
type RawAd = (Option<i64>, Option<i64>, Option<u64>, Vec<String>);

fn advertisements(
    o: &Obj<'_>,
    raw: &[Value],
    entries: &[(String, String, AddressEntry)],
    communities: &BTreeMap<String, Community>,
    bad_aliases: &[String],
    p: &mut Problems,
) -> Vec<BgpAdvertisement> {
    if raw.is_empty() {
        return vec![BgpAdvertisement::default()];
    }
    let mut seen: Vec<(String, RawAd)> = Vec::new();
    let mut out = Vec::new();
    for (j, v) in raw.iter().enumerate() {
        let apath = index(&o.field("bgp-advertisements"), j);
        let Some(a) = Obj::new(v, &apath, ADV_KEYS, None, p) else {
            continue;
        };
        let agg = a.int("aggregation-length", p);
        let agg6 = a.int("aggregation-length-v6", p);
        let localpref = a.uint("localpref", u64::from(u32::MAX), p);
        let comms = a.string_list("communities", p);
        let key: RawAd = (
            agg,
            agg6,
            localpref,
            comms.iter().map(|(_, c)| c.clone()).collect(),
        );
        if let Some((first, _)) = seen.iter().find(|(_, k)| *k == key) {
            p.push(
                &apath,
                None,
                format!("duplicate of {first} (advertisements must differ)"),
            );
        }
        seen.push((apath.clone(), key));

        let v4 = aggregation(&a, "aggregation-length", agg, 32, entries, false, None, p);
        let v6 = aggregation(
            &a,
            "aggregation-length-v6",
            agg6,
            128,
            entries,
            true,
            None,
            p,
        );
        let mut resolved = Vec::new();
        for (k, (cpath, c)) in comms.iter().enumerate() {
            if comms[..k].iter().any(|(_, prev)| prev == c) {
                p.push(
                    cpath,
                    Some(c.clone()),
                    "community listed twice in this advertisement",
                );
                continue;
            }
            if let Some(v) = communities.get(c) {
                resolved.push(*v);
            } else if bad_aliases.contains(c) {
                // The alias's own value is wrong; reported under bgp-communities.
            } else {
                match parse_community(c) {
                    Ok(v) => resolved.push(v),
                    Err(why) => p.push(
                        cpath,
                        Some(c.clone()),
                        format!("not a bgp-communities alias, and {why}"),
                    ),
                }
            }
        }
        if let (Some(v4), Some(v6)) = (v4, v6) {
            out.push(BgpAdvertisement {
                aggregation_length: v4,
                aggregation_length_v6: v6,
                local_pref: localpref.and_then(|l| u32::try_from(l).ok()),
                communities: resolved,
                ..BgpAdvertisement::default()
            });
        }
    }
    out
}

/// `aggregation-length(-v6)`: within 0..=max and not shorter than any entry's prefix. `pool`
/// names the pool of `entries` in messages when the advertisement is not inside it (CRDs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn aggregation(
    a: &Obj<'_>,
    key: &str,
    raw: Option<i64>,
    max: u8,
    entries: &[(String, String, AddressEntry)],
    v6: bool,
    pool: Option<&str>,
    p: &mut Problems,
) -> Option<u8> {
    let len = match raw {
        None if a.has(key) => return None, // not an integer: reported
        None => max,
        Some(n) => match u8::try_from(n).ok().filter(|n| *n <= max) {
            Some(n) => n,
            None => {
                p.push(
                    &a.field(key),
                    Some(n.to_string()),
                    format!("must be from 0 to {max}"),
                );
                return None;
            }
        },
    };
    let mut ok = true;
    for (epath, text, e) in entries {
        let is_v6 = e.range.family() == crate::IpFamily::V6;
        if is_v6 != v6 {
            continue;
        }
        let lowest = e.lowest_prefix();
        if len < lowest {
            ok = false;
            let last = epath.rsplit('.').next().unwrap_or(epath);
            let entry = match pool {
                Some(pool) => format!("IPAddressPool {pool} {last}"),
                None => last.to_string(),
            };
            p.push(
                &a.field(key),
                Some(len.to_string()),
                format!(
                    "shorter than the /{lowest} prefix of {entry} ({text:?}): it must be at least {lowest}, so that the aggregate covers only this pool's addresses"
                ),
            );
        }
    }
    ok.then_some(len)
}

/// `large:GA:LD1:LD2`, each part 0..=4294967295 (MetalLB's CRD spelling of a large community).
pub fn parse_large_community(s: &str) -> Result<LargeCommunity, String> {
    let Some(rest) = s.strip_prefix("large:") else {
        return Err("not a large community of the form large:GA:LD1:LD2".to_string());
    };
    let parse = |x: &str| x.parse::<u32>().ok().filter(|_| !x.starts_with('+'));
    match rest.split(':').map(parse).collect::<Vec<_>>().as_slice() {
        [Some(a), Some(b), Some(c)] => Ok(LargeCommunity {
            global_admin: *a,
            local_data1: *b,
            local_data2: *c,
        }),
        _ => Err(
            "not a large community of the form large:GA:LD1:LD2 (each part 0 to 4294967295)"
                .to_string(),
        ),
    }
}

/// `AA:NN`, each part 0..=65535.
pub fn parse_community(s: &str) -> Result<Community, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [a, b] = parts.as_slice() else {
        return Err("not a community of the form AA:NN".to_string());
    };
    let parse = |x: &str| x.parse::<u16>().ok().filter(|_| !x.starts_with('+'));
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => Ok(Community::new(a, b)),
        _ => Err("not a community of the form AA:NN (each part 0 to 65535)".to_string()),
    }
}

/// ferrolb extension: `interfaces` (layer2 pools only).
fn interfaces(o: &Obj<'_>, protocol: Option<Protocol>, p: &mut Problems) -> Vec<String> {
    let list = o.string_list("interfaces", p);
    if protocol == Some(Protocol::Bgp) && !list.is_empty() {
        p.push(
            &o.field("interfaces"),
            None,
            "only layer2 pools have interfaces (a ferrolb extension)",
        );
        return Vec::new();
    }
    interface_names(list, p)
}

/// `interfaces` as read (`(path, name)`): Linux interface names, each once.
pub(crate) fn interface_names(list: Vec<(String, String)>, p: &mut Problems) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (path, name) in list {
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control());
        if bad {
            p.push(
                &path,
                Some(name),
                "not a Linux interface name (1 to 15 characters, no '/' or spaces)",
            );
        } else if out.contains(&name) {
            p.push(&path, Some(name), "interface listed twice");
        } else {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities() {
        assert_eq!(
            parse_community("65535:65281"),
            Ok(Community::new(65535, 65281))
        );
        assert!(parse_community("65536:1").is_err());
        assert!(parse_community("1:2:3").is_err());
        assert!(parse_community("no-export").is_err());
        assert!(parse_community("+1:2").is_err());
    }
}
