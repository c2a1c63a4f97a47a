//! BGPPeer, Community and BFDProfile objects. A BGPPeer's fields are the ConfigMap peer's, read by
//! the same rules; what only the CRD has is settled first: `dynamicASN: internal` (the peer's AS
//! is ours), `passwordSecret` (the password from a `kubernetes.io/basic-auth` Secret), a
//! `keepaliveTime` without `holdTime` (hold time three times it, as MetalLB does).
//!
//! Must not: read pools or advertisements (see `pools`, `ads`).

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_go_duration;
use crate::errors::Problems;
use crate::model::{BfdProfile, Community, Config, LargeCommunity};
use crate::peers::{read_peer, PEER_KEYS};
use crate::pools::{parse_community, parse_large_community};
use crate::validate::{bfd_profile_named, peer_bfd_profile};
use crate::yamlx::{describe, get, get_str, index, join, untag, Names, Obj};

use super::{non_default, unsupported, Cluster, Object, Unsupported};

/// BGPPeer fields that only the CRD has, read here before the shared peer rules.
const PEER_EXTRAS: &[&str] = &["dynamicASN", "passwordSecret"];

const PEER_UNSUPPORTED: &[Unsupported] = &[
    Unsupported {
        name: "localASN",
        set: non_default,
        why: "set myASN to the AS number the peer should see",
    },
    Unsupported {
        name: "interface",
        set: non_default,
        why: "unnumbered BGP peering is not available; give peerAddress",
    },
    Unsupported {
        name: "vrf",
        set: non_default,
        why: "sessions are opened in the node's default VRF only",
    },
    Unsupported {
        name: "connectTime",
        set: non_default,
        why: "reconnects use ferrolb's own backoff; remove connectTime",
    },
    Unsupported {
        name: "disableMP",
        set: non_default,
        why: "each session carries its own address family only",
    },
    Unsupported {
        name: "dualStackAddressFamily",
        set: non_default,
        why: "each session carries its own address family only",
    },
    Unsupported {
        name: "enableGracefulRestart",
        set: non_default,
        why: "graceful restart is not available",
    },
];

/// Every BGPPeer that is valid, named, into `cfg.peers` (object order); problems reported.
pub fn peers<'a>(
    objects: impl Iterator<Item = &'a Object>,
    cluster: &Cluster,
    cfg: &mut Config,
    p: &mut Problems,
) {
    let mut ids: Vec<String> = Vec::new();
    for o in objects {
        let path = o.spec_path();
        let before = p.len();
        // A field the shared rules read is no longer unsupported (e.g. once graceful restart is).
        let unsupported_here: Vec<Unsupported> = PEER_UNSUPPORTED
            .iter()
            .filter(|u| !PEER_KEYS.iter().any(|k| Names::Crd.of(k) == u.name))
            .copied()
            .collect();
        unsupported(&o.spec, &path, &unsupported_here, p);
        let spec = settle(o, &path, cluster, p);
        let mut keys: Vec<&str> = PEER_KEYS.to_vec();
        keys.extend(PEER_EXTRAS);
        keys.extend(unsupported_here.iter().map(|u| u.name));
        let Some(s) = Obj::named(&spec, &path, &keys, Names::Crd, None, p) else {
            continue;
        };
        let parsed = read_peer(&s, p);
        if let Some(name) = parsed.bfd_profile {
            peer_bfd_profile(&name, &s.field("bfd-profile"), cfg, p);
        }
        let Some(mut peer) = parsed.peer else {
            continue;
        };
        if p.len() != before {
            continue;
        }
        if let Some(j) = cfg.peers.iter().position(|x| *x == peer) {
            p.push(
                &path,
                None,
                format!("the same settings as {} (a duplicate session)", ids[j]),
            );
            continue;
        }
        peer.name = Some(o.name.clone());
        cfg.peers.push(peer);
        ids.push(o.id());
    }
}

/// The spec with what only the CRD says turned into the shared peer fields: `dynamicASN`,
/// `passwordSecret`, and a hold time from a lone `keepaliveTime`.
fn settle(o: &Object, path: &str, cluster: &Cluster, p: &mut Problems) -> Value {
    let Value::Mapping(m) = untag(&o.spec) else {
        return o.spec.clone();
    };
    let mut m: Mapping = m.clone();
    let has = |m: &Mapping, k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if let Some(mode) = m.get("dynamicASN").filter(|v| !v.is_null()).cloned() {
        let at = join(path, "dynamicASN");
        match untag(&mode).as_str() {
            Some(_) if has(&m, "peerASN") => p.push(
                &at,
                Some(describe(&mode)),
                "peerASN and dynamicASN are mutually exclusive: give one",
            ),
            Some("internal") => {
                if let Some(mine) = m.get("myASN").cloned() {
                    m.insert("peerASN".into(), mine);
                }
            }
            Some("external") => p.push(
                &at,
                Some("external".into()),
                "ferrolb does not implement dynamicASN external: give the peer's peerASN",
            ),
            _ => p.push(&at, Some(describe(&mode)), "must be internal or external"),
        }
    }
    if let Some(secret) = m.get("passwordSecret").filter(|v| !v.is_null()).cloned() {
        let at = join(path, "passwordSecret");
        if has(&m, "password") {
            p.push(
                &at,
                None,
                "password and passwordSecret are mutually exclusive: give one",
            );
        } else if let Some(pw) = secret_password(&secret, &o.namespace, &at, cluster, p) {
            m.insert("password".into(), pw.into());
        }
    }
    if !has(&m, "holdTime") {
        let ka = m.get("keepaliveTime").and_then(|v| untag(v).as_str());
        if let Some(nanos) = ka.and_then(|k| parse_go_duration(k).ok()) {
            m.insert("holdTime".into(), format!("{}ns", nanos * 3).into());
        }
    }
    Value::Mapping(m)
}

/// The password a `passwordSecret` (`{name, namespace}`) points to.
fn secret_password(
    v: &Value,
    default_ns: &str,
    at: &str,
    cluster: &Cluster,
    p: &mut Problems,
) -> Option<String> {
    let before = p.len();
    let o = Obj::new(v, at, &["name", "namespace"], None, p)?;
    let name = o.string("name", p).unwrap_or_default();
    let ns = o
        .string("namespace", p)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_ns.to_string());
    if name.is_empty() {
        p.push(&o.field("name"), None, "required: the Secret's name");
    }
    if p.len() != before {
        return None;
    }
    let Some(secret) = cluster.secrets.get(&(ns.clone(), name.clone())) else {
        p.push(
            at,
            Some(format!("{ns}/{name}")),
            "no such Secret (it must be in the namespace of ferrolb's configuration)",
        );
        return None;
    };
    if secret.type_.as_deref() != Some("kubernetes.io/basic-auth") {
        p.push(
            at,
            Some(format!("{ns}/{name}")),
            format!(
                "the Secret's type is {:?}; it must be kubernetes.io/basic-auth",
                secret.type_.as_deref().unwrap_or("")
            ),
        );
        return None;
    }
    match &secret.password {
        Some(pw) if !pw.is_empty() => Some(pw.clone()),
        _ => {
            p.push(
                at,
                Some(format!("{ns}/{name}")),
                "the Secret has no password key",
            );
            None
        }
    }
}

/// The aliases of every Community object.
#[derive(Debug, Default)]
pub struct Communities {
    pub standard: BTreeMap<String, Community>,
    pub large: BTreeMap<String, LargeCommunity>,
    /// Aliases whose value is invalid (reported on their Community).
    pub bad: Vec<String>,
}

/// Reads the aliases of every Community object; an alias defined twice is reported.
pub fn communities<'a>(objects: impl Iterator<Item = &'a Object>, p: &mut Problems) -> Communities {
    let mut out = Communities::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for o in objects {
        let path = o.spec_path();
        let Some(s) = Obj::named(&o.spec, &path, &["communities"], Names::Crd, None, p) else {
            continue;
        };
        for (i, v) in s.list("communities", p).into_iter().flatten().enumerate() {
            let at = index(&s.field("communities"), i);
            let Some(c) = s.child(v, &at, &["name", "value"], p) else {
                continue;
            };
            let name = c.string("name", p).unwrap_or_default();
            let value = c.string("value", p).unwrap_or_default();
            if name.is_empty() {
                p.push(&c.field("name"), None, "required: the alias");
                continue;
            }
            if let Some(first) = seen.get(&name) {
                p.push(
                    &c.field("name"),
                    Some(name),
                    format!("alias already defined at {first}"),
                );
                continue;
            }
            seen.insert(name.clone(), at.clone());
            let parsed = if value.starts_with("large:") {
                parse_large_community(&value).map(|l| {
                    out.large.insert(name.clone(), l);
                })
            } else {
                parse_community(&value).map(|c| {
                    out.standard.insert(name.clone(), c);
                })
            };
            if let Err(why) = parsed {
                p.push(
                    &c.field("value"),
                    Some(value),
                    format!("{why} (or large:GA:LD1:LD2)"),
                );
                out.bad.push(name);
            }
        }
    }
    out
}

/// A BFDProfile, read by the ConfigMap's `bfd-profiles` rules, named after the object.
pub fn bfd_profile(o: &Object, p: &mut Problems) -> Option<BfdProfile> {
    let path = o.spec_path();
    let mut m = match untag(&o.spec) {
        Value::Mapping(m) => m.clone(),
        Value::Null => Mapping::new(),
        other => {
            p.push(&path, Some(describe(other)), "expected a mapping");
            return None;
        }
    };
    if get(&o.spec, "name").is_some() || get_str(&o.spec, "name").is_some() {
        p.push(
            &join(&path, "name"),
            None,
            "unknown field (a BFDProfile is named by metadata.name)",
        );
        return None;
    }
    m.insert("name".into(), o.name.clone().into());
    bfd_profile_named(&Value::Mapping(m), &path, Names::Crd, p)
}
