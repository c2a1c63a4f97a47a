//! STOPGAP until the allocator (controller/src/allocator) and the config parser
//! (`ferrolb_config::parse`) land: a minimal lowest-free-address plan (restore existing addresses
//! first, then assign; no sharing, no requests) and a parser for `address-pools` only.
//!
//! Must not: be used once the real allocator and parser exist; `k8s/mod.rs` then calls them.

use std::net::IpAddr;

use ferrolb_config::{Config, ServiceView};

use crate::reconcile::{is_ours, Allocation, Plan};

pub fn plan(config: &Config, class: &str, views: &[ServiceView]) -> Plan {
    use std::collections::BTreeSet;
    let mut used: BTreeSet<IpAddr> = BTreeSet::new();
    let mut out = Plan::default();
    for v in views {
        if !is_ours(v, class) {
            out.allocations.insert(v.key.clone(), Allocation::NotOurs);
        }
    }
    for v in views
        .iter()
        .filter(|v| is_ours(v, class) && !v.ingress_ips.is_empty())
    {
        if let Some(pool) = v
            .ingress_ips
            .iter()
            .map(|ip| config.pools.iter().find(|p| p.may_assign(ip)))
            .next()
            .flatten()
        {
            if v.ingress_ips.iter().all(|ip| !used.contains(ip)) {
                used.extend(v.ingress_ips.iter().copied());
                out.allocations.insert(
                    v.key.clone(),
                    Allocation::Assigned {
                        ips: v.ingress_ips.clone(),
                        pool: pool.name.clone(),
                    },
                );
            }
        }
    }
    for v in views.iter().filter(|v| is_ours(v, class)) {
        if out.allocations.contains_key(&v.key) {
            continue;
        }
        let mut got = None;
        'pools: for p in config.pools.iter().filter(|p| p.auto_assign) {
            for r in &p.ranges {
                let (a, b) = (
                    ferrolb_config::addr::to_u128(&r.first()),
                    ferrolb_config::addr::to_u128(&r.last()),
                );
                let mut x = a;
                while x <= b {
                    if let Some(ip) = ferrolb_config::addr::from_u128(r.family(), x) {
                        if p.may_assign(&ip) && !used.contains(&ip) {
                            got = Some((ip, p.name.clone()));
                            break 'pools;
                        }
                    }
                    x += 1;
                }
            }
        }
        match got {
            Some((ip, pool)) => {
                used.insert(ip);
                out.allocations.insert(
                    v.key.clone(),
                    Allocation::Assigned {
                        ips: vec![ip],
                        pool,
                    },
                );
            }
            None => {
                out.allocations.insert(
                    v.key.clone(),
                    Allocation::Failed {
                        reason: "no available IPs".into(),
                    },
                );
            }
        }
    }
    for p in &config.pools {
        let n = used.iter().filter(|ip| p.contains(ip)).count() as u64;
        out.pools
            .insert(p.name.clone(), (n, p.ranges.iter().map(|r| r.len()).sum()));
    }
    out
}

pub fn parse_config(text: &str) -> Result<Config, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "address-pools", default)]
        pools: Vec<RawPool>,
    }
    #[derive(serde::Deserialize)]
    struct RawPool {
        name: String,
        addresses: Vec<String>,
        #[serde(rename = "auto-assign", default = "yes")]
        auto_assign: bool,
    }
    fn yes() -> bool {
        true
    }
    let raw: Raw = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut c = Config::default();
    for p in raw.pools {
        let mut ranges = Vec::new();
        for a in p.addresses {
            if let Some((x, y)) = a.split_once('-') {
                let r = ferrolb_config::IpRange::new(
                    x.trim().parse().map_err(|_| format!("bad {a}"))?,
                    y.trim().parse().map_err(|_| format!("bad {a}"))?,
                )
                .ok_or(format!("bad {a}"))?;
                ranges.push(r);
            } else {
                let n: ipnet::IpNet = a.parse().map_err(|_| format!("bad {a}"))?;
                ranges.push(ferrolb_config::IpRange::from_net(&n));
            }
        }
        c.pools.push(ferrolb_config::Pool {
            name: p.name,
            protocol: ferrolb_config::Protocol::Layer2,
            ranges,
            avoid_buggy_ips: false,
            auto_assign: p.auto_assign,
            bgp_advertisements: vec![],
            interfaces: vec![],
        });
    }
    Ok(c)
}
