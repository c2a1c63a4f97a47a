//! The configuration root: strict top-level keys, `bgp-communities`, `bfd-profiles`, and the rules
//! that span entries (duplicate peers and pool names, BFD references, address overlaps).
//! Turns a YAML value into the validated [`Config`] or every problem found.
//!
//! Must not: guess the input form (see `forms`), or do I/O.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::errors::{ConfigErrors, Problems};
use crate::model::{BfdProfile, Config};
use crate::peers::parse_peer;
use crate::pools::{parse_community, parse_pool};
use crate::yamlx::{index, Names, Obj};

const ROOT_KEYS: &[&str] = &["peers", "bgp-communities", "address-pools", "bfd-profiles"];

const BFD_KEYS: &[&str] = &[
    "name",
    "receive-interval",
    "transmit-interval",
    "detect-multiplier",
    "echo-interval",
    "echo-mode",
    "passive-mode",
    "minimum-ttl",
];

/// Validates a whole configuration given as a YAML value (null = empty configuration).
/// `root` prefixes every field path (empty for a raw config file).
pub fn validate(v: &Value, root: &str) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    let Some(o) = Obj::new(v, root, ROOT_KEYS, None, &mut p) else {
        return p.into_result(Config::default());
    };
    let mut cfg = Config::default();

    // bfd-profiles
    for (i, b) in o
        .list("bfd-profiles", &mut p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = index(&o.field("bfd-profiles"), i);
        if let Some(prof) = bfd_profile(b, &path, &mut p) {
            if cfg.bfd_profiles.iter().any(|x| x.name == prof.name) {
                p.push(
                    &format!("{path}.name"),
                    Some(prof.name),
                    "duplicate bfd profile name",
                );
            } else {
                cfg.bfd_profiles.push(prof);
            }
        }
    }

    // peers
    let mut peer_paths: Vec<String> = Vec::new();
    for (i, v) in o.list("peers", &mut p).into_iter().flatten().enumerate() {
        let path = index(&o.field("peers"), i);
        let parsed = parse_peer(v, &path, &mut p);
        if let Some(name) = parsed.bfd_profile {
            peer_bfd_profile(&name, &format!("{path}.bfd-profile"), &cfg, &mut p);
        }
        if let Some(peer) = parsed.peer {
            if let Some(j) = cfg.peers.iter().position(|x| *x == peer) {
                p.push(
                    &path,
                    None,
                    format!("duplicate of {} (same settings)", peer_paths[j]),
                );
            } else {
                cfg.peers.push(peer);
                peer_paths.push(path);
            }
        }
    }

    // bgp-communities
    let mut bad_aliases = Vec::new();
    for (alias, text) in o.string_map("bgp-communities", &mut p) {
        match parse_community(&text) {
            Ok(c) => {
                cfg.communities.insert(alias, c);
            }
            Err(why) => {
                p.push(
                    &format!("{}.{alias}", o.field("bgp-communities")),
                    Some(text),
                    why,
                );
                bad_aliases.push(alias);
            }
        }
    }

    // address-pools
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = AddressEntries::default();
    for (i, v) in o
        .list("address-pools", &mut p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = index(&o.field("address-pools"), i);
        let parsed = parse_pool(v, &path, &cfg.communities, &bad_aliases, &mut p);
        let mut ok = true;
        if !parsed.name.is_empty() {
            if let Some(first) = names.get(&parsed.name) {
                p.push(
                    &format!("{path}.name"),
                    Some(parsed.name.clone()),
                    format!("duplicate pool name (already used by {first})"),
                );
                ok = false;
            } else {
                names.insert(parsed.name.clone(), path.clone());
            }
        }
        for (epath, text, e) in &parsed.entries {
            ok &= seen.add(epath, text, (i, &parsed.name), e.range, &mut p);
        }
        if let (Some(pool), true) = (parsed.pool, ok) {
            cfg.pools.push(pool);
        }
    }

    p.into_result(cfg)
}

/// Every pool's address entries read so far, to report an entry that overlaps an earlier one.
#[derive(Debug, Default)]
pub(crate) struct AddressEntries(Vec<(String, String, (usize, String), crate::IpRange)>);

impl AddressEntries {
    /// Records the entry at `path` (written `text`) of pool `pool` (index, name). False, after
    /// reporting it, when it overlaps an entry seen before.
    pub fn add(
        &mut self,
        path: &str,
        text: &str,
        pool: (usize, &str),
        range: crate::IpRange,
        p: &mut Problems,
    ) -> bool {
        let mut ok = true;
        if let Some((opath, otext, (opool_idx, opool), _)) =
            self.0.iter().find(|(_, _, _, r)| r.overlaps(&range))
        {
            let whose = if *opool_idx == pool.0 {
                "of the same pool".to_string()
            } else {
                format!("of pool {opool:?}")
            };
            p.push(
                path,
                Some(text.to_string()),
                format!("overlaps {opath} ({otext:?}) {whose}"),
            );
            ok = false;
        }
        self.0.push((
            path.to_string(),
            text.to_string(),
            (pool.0, pool.1.to_string()),
            range,
        ));
        ok
    }
}

/// A peer's `bfd-profile` (ConfigMap) or `bfdProfile` (BGPPeer), at `path`, against the
/// profiles of `cfg`.
pub(crate) fn peer_bfd_profile(name: &str, path: &str, cfg: &Config, p: &mut Problems) {
    let known = cfg.bfd_profiles.iter().any(|b| b.name == name);
    let why = if known {
        "ferrolb has no BFD yet: remove bfd-profile from this peer"
    } else {
        "no bfd-profiles entry has this name (and ferrolb has no BFD yet: remove bfd-profile from this peer)"
    };
    p.push(path, Some(name.to_string()), why);
}

fn bfd_profile(v: &Value, path: &str, p: &mut Problems) -> Option<BfdProfile> {
    bfd_profile_named(v, path, Names::Kebab, p)
}

/// A `bfd-profiles` entry, or a BFDProfile's `spec` with its name put in (`names`: [`Names::Crd`]).
pub(crate) fn bfd_profile_named(
    v: &Value,
    path: &str,
    names: Names,
    p: &mut Problems,
) -> Option<BfdProfile> {
    let o = Obj::named(v, path, BFD_KEYS, names, None, p)?;
    let before = p.len();
    let name = o.string("name", p).unwrap_or_default();
    if name.is_empty() {
        p.push(&o.field("name"), None, "required: a bfd profile name");
    }
    let mut ranged = |key: &str, min: u32, max: u32, unit: &str| -> Option<u32> {
        let n = o.uint(key, u64::from(u32::MAX), p)?;
        let n = u32::try_from(n).ok()?;
        if n < min || n > max {
            p.push(
                &o.field(key),
                Some(n.to_string()),
                format!("must be from {min} to {max}{unit}"),
            );
            return None;
        }
        Some(n)
    };
    let receive_interval_ms = ranged("receive-interval", 10, 60000, " (milliseconds)");
    let transmit_interval_ms = ranged("transmit-interval", 10, 60000, " (milliseconds)");
    let detect_multiplier = ranged("detect-multiplier", 2, 255, "");
    let echo_interval_ms = ranged("echo-interval", 10, 60000, " (milliseconds)");
    let minimum_ttl = ranged("minimum-ttl", 1, 254, "");
    let echo_mode = o.boolean("echo-mode", p).unwrap_or(false);
    let passive_mode = o.boolean("passive-mode", p).unwrap_or(false);
    (p.len() == before && !name.is_empty()).then_some(BfdProfile {
        name,
        receive_interval_ms,
        transmit_interval_ms,
        detect_multiplier,
        echo_interval_ms,
        echo_mode,
        passive_mode,
        minimum_ttl,
    })
}
