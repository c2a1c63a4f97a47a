//! `peers` entries: MetalLB v0.12's `parsePeer` rules, every problem reported, defaults filled.
//!
//! Must not: resolve BFD profiles or compare peers with each other (the top-level validator does).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_yaml::Value;

use crate::duration::{parse_go_duration, secs, whole_seconds};
use crate::errors::Problems;
use crate::labels;
use crate::model::{MatchExpression, NodeSelector, Peer, SelectorOperator};
use crate::yamlx::{describe, index, Obj};

pub const PEER_KEYS: &[&str] = &[
    "my-asn",
    "peer-asn",
    "peer-address",
    "source-address",
    "peer-port",
    "hold-time",
    "keepalive-time",
    "router-id",
    "node-selectors",
    "password",
    "bfd-profile",
    "ebgp-multihop",
];

fn peer_hint(key: &str) -> Option<&'static str> {
    (key == "bfdProfile").then_some(
        "(MetalLB's example-config.yaml spells it `bfdProfile`, but MetalLB rejects that key too; the field is `bfd-profile`)",
    )
}

/// A peer as read, with the `bfd-profile` name kept for the cross-check.
#[derive(Debug)]
pub struct ParsedPeer {
    pub peer: Option<Peer>,
    pub bfd_profile: Option<String>,
}

/// Reads `peers[i]`.
pub fn parse_peer(v: &Value, path: &str, p: &mut Problems) -> ParsedPeer {
    let Some(o) = Obj::new(v, path, PEER_KEYS, Some(peer_hint), p) else {
        return ParsedPeer {
            peer: None,
            bfd_profile: None,
        };
    };
    read_peer(&o, p)
}

/// Reads a peer from `o`, whose keys were checked against [`PEER_KEYS`] (a ConfigMap `peers`
/// entry, or a BGPPeer's `spec` in CRD spelling).
pub fn read_peer(o: &Obj<'_>, p: &mut Problems) -> ParsedPeer {
    let before = p.len();
    let my_asn = asn(o, "my-asn", "local", p);
    let peer_asn = asn(o, "peer-asn", "peer", p);
    let ebgp_multihop = o.boolean("ebgp-multihop", p).unwrap_or(false);
    if ebgp_multihop && my_asn.is_some() && my_asn == peer_asn {
        p.push(
            &o.field("ebgp-multihop"),
            Some("true".to_string()),
            format!(
                "{} is not allowed for an iBGP peer ({} equals {})",
                o.name("ebgp-multihop"),
                o.name("my-asn"),
                o.name("peer-asn")
            ),
        );
    }
    let peer_address = match o.string("peer-address", p) {
        None if !o.has("peer-address") => {
            p.push(
                &o.field("peer-address"),
                None,
                "required: the peer's IP address",
            );
            None
        }
        None => None,
        Some(s) => ip(&o.field("peer-address"), &s, p),
    };
    let source_address = o
        .string("source-address", p)
        .filter(|s| !s.is_empty())
        .and_then(|s| ip(&o.field("source-address"), &s, p));
    let peer_port = match o.uint("peer-port", u64::from(u16::MAX), p) {
        None | Some(0) => 179,
        Some(n) => u16::try_from(n).unwrap_or(179),
    };
    let hold_time = hold_time(o, p);
    // With an invalid hold-time the keepalive-time is still checked on its own.
    let keepalive_time = keepalive_time(o, hold_time, p);
    let router_id = o
        .string("router-id", p)
        .filter(|s| !s.is_empty())
        .and_then(|s| router_id(&o.field("router-id"), &s, p));
    let password = o.string("password", p).filter(|s| !s.is_empty());
    let bfd_profile = o.string("bfd-profile", p).filter(|s| !s.is_empty());
    let mut node_selectors = Vec::new();
    for (i, sel) in o
        .list("node-selectors", p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(s) = node_selector(o, sel, &index(&o.field("node-selectors"), i), p) {
            node_selectors.push(s);
        }
    }
    // An empty selector selects every node, so a list holding one is the same as no list.
    if node_selectors.iter().any(|s| *s == NodeSelector::default()) {
        node_selectors.clear();
    }
    let peer = match (my_asn, peer_asn, peer_address, hold_time, keepalive_time) {
        (Some(my_asn), Some(peer_asn), Some(peer_address), Some(hold), Some(ka))
            if p.len() == before =>
        {
            Some(Peer {
                name: None,
                my_asn,
                peer_asn,
                peer_address,
                peer_port,
                source_address,
                hold_time: hold,
                keepalive_time: ka,
                router_id,
                password,
                ebgp_multihop,
                node_selectors,
            })
        }
        _ => None,
    };
    ParsedPeer { peer, bfd_profile }
}

fn asn(o: &Obj<'_>, key: &str, which: &str, p: &mut Problems) -> Option<u32> {
    if !o.has(key) {
        p.push(
            &o.field(key),
            None,
            format!("required: the {which} AS number (1 to 4294967295)"),
        );
        return None;
    }
    match o.uint(key, u64::from(u32::MAX), p) {
        Some(0) => {
            p.push(
                &o.field(key),
                Some("0".into()),
                format!("the {which} AS number must not be 0"),
            );
            None
        }
        other => other.and_then(|n| u32::try_from(n).ok()),
    }
}

fn ip(path: &str, s: &str, p: &mut Problems) -> Option<IpAddr> {
    match s.trim().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.push(path, Some(s.to_string()), "not an IP address");
            None
        }
    }
}

fn router_id(path: &str, s: &str, p: &mut Problems) -> Option<Ipv4Addr> {
    match ip(path, s, p)? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => {
            p.push(
                path,
                Some(s.to_string()),
                "the BGP router ID is 32 bits: give an IPv4 address",
            );
            None
        }
    }
}

/// `hold-time`: default 90s; rounded down to whole seconds; 0 or at least 3s.
fn hold_time(o: &Obj<'_>, p: &mut Problems) -> Option<Duration> {
    let Some(s) = o.string("hold-time", p) else {
        return (!o.has("hold-time")).then_some(Duration::from_secs(90));
    };
    if s.is_empty() {
        return Some(Duration::from_secs(90));
    }
    let path = o.field("hold-time");
    match parse_go_duration(&s) {
        Err(why) => {
            p.push(
                &path,
                Some(s),
                format!("not a duration ({why}); write e.g. 90s or 1m30s"),
            );
            None
        }
        Ok(n) => {
            let whole = whole_seconds(n);
            if whole != 0 && whole < 3 {
                p.push(
                    &path,
                    Some(s),
                    format!(
                        "must be 0 or at least 3s (rounded down to whole seconds it is {whole}s)"
                    ),
                );
                None
            } else {
                Some(secs(whole))
            }
        }
    }
}

/// `keepalive-time`: default hold-time / 3; rounded down to whole seconds; at most hold-time.
fn keepalive_time(o: &Obj<'_>, hold: Option<Duration>, p: &mut Problems) -> Option<Duration> {
    let Some(s) = o.string("keepalive-time", p) else {
        return hold.filter(|_| !o.has("keepalive-time")).map(|h| h / 3);
    };
    if s.is_empty() {
        return hold.map(|h| h / 3);
    }
    let path = o.field("keepalive-time");
    match parse_go_duration(&s) {
        Err(why) => {
            p.push(
                &path,
                Some(s),
                format!("not a duration ({why}); write e.g. 30s"),
            );
            None
        }
        Ok(n) if n < 0 => {
            p.push(&path, Some(s), "must not be negative");
            None
        }
        Ok(n) => {
            let ka = secs(whole_seconds(n));
            let hold = hold?;
            if ka > hold {
                p.push(
                    &path,
                    Some(s),
                    format!(
                        "must not exceed {} ({}s)",
                        o.name("hold-time"),
                        hold.as_secs()
                    ),
                );
                None
            } else {
                Some(ka)
            }
        }
    }
}

/// A label selector (`match-labels`, `match-expressions`) nested in `parent`, spelled as it is.
pub fn node_selector(
    parent: &Obj<'_>,
    v: &Value,
    path: &str,
    p: &mut Problems,
) -> Option<NodeSelector> {
    let o = parent.child(v, path, &["match-labels", "match-expressions"], p)?;
    let before = p.len();
    let match_labels = o.string_map("match-labels", p);
    for (k, val) in &match_labels {
        let at = format!("{}.{k}", o.field("match-labels"));
        if let Some(why) = labels::key_problem(k) {
            p.push(&at, Some(k.clone()), why);
        }
        if let Some(why) = labels::value_problem(val) {
            p.push(&at, Some(val.clone()), why);
        }
    }
    let mut match_expressions = Vec::new();
    for (i, e) in o
        .list("match-expressions", p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let epath = index(&o.field("match-expressions"), i);
        if let Some(m) = expression(&o, e, &epath, p) {
            match_expressions.push(m);
        }
    }
    (p.len() == before).then_some(NodeSelector {
        match_labels,
        match_expressions,
    })
}

fn expression(
    parent: &Obj<'_>,
    v: &Value,
    path: &str,
    p: &mut Problems,
) -> Option<MatchExpression> {
    let o = parent.child(v, path, &["key", "operator", "values"], p)?;
    let before = p.len();
    let key = o.string("key", p).unwrap_or_default();
    if key.is_empty() {
        p.push(&o.field("key"), None, "required: a label key");
    } else if let Some(why) = labels::key_problem(&key) {
        p.push(&o.field("key"), Some(key.clone()), why);
    }
    let values: Vec<String> = o
        .string_list("values", p)
        .into_iter()
        .map(|(vpath, s)| {
            if let Some(why) = labels::value_problem(&s) {
                p.push(&vpath, Some(s.clone()), why);
            }
            s
        })
        .collect();
    let op_text = o.string("operator", p);
    let operator = match op_text.as_deref() {
        Some("In") => Some(SelectorOperator::In),
        Some("NotIn") => Some(SelectorOperator::NotIn),
        Some("Exists") => Some(SelectorOperator::Exists),
        Some("DoesNotExist") => Some(SelectorOperator::DoesNotExist),
        None if !o.has("operator") => {
            p.push(
                &o.field("operator"),
                None,
                "required: In, NotIn, Exists or DoesNotExist",
            );
            None
        }
        None => None,
        Some(other) => {
            p.push(
                &o.field("operator"),
                Some(other.to_string()),
                "unknown operator (In, NotIn, Exists, DoesNotExist)",
            );
            None
        }
    };
    match operator {
        Some(SelectorOperator::In | SelectorOperator::NotIn) if values.is_empty() => p.push(
            &o.field("values"),
            None,
            format!(
                "operator {} needs at least one value",
                op_text.unwrap_or_default()
            ),
        ),
        Some(SelectorOperator::Exists | SelectorOperator::DoesNotExist) if !values.is_empty() => p
            .push(
                &o.field("values"),
                o.get("values").map(describe),
                format!("operator {} takes no values", op_text.unwrap_or_default()),
            ),
        _ => {}
    }
    let operator = operator?;
    (p.len() == before).then_some(MatchExpression {
        key,
        operator,
        values,
    })
}
