//! STOPGAP until the allocator (controller/src/allocator)
//! lands. A small allocation plan with MetalLB's rules: existing
//! addresses are restored first, then Services without one are assigned in key order; requests
//! (`spec.loadBalancerIP`, `metallb.universe.tf/loadBalancerIPs`, `.../address-pool`), sharing
//! (`allow-shared-ip`: same key, no port overlap, same traffic policy, same selector when Local),
//! one address per family from one pool, lowest free address first (the scan skips only used
//! addresses, so it does not grow with the pool).
//!
//! Must not: be used once the real allocator exists; `k8s/mod.rs` then calls it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::service::annotations;
use ferrolb_config::{Config, IpFamily, IpFamilyPolicy, Pool, ServiceView, TrafficPolicy};

use crate::reconcile::{is_ours, Allocation, Plan};

/// Who holds an address.
type Holders<'a> = BTreeMap<IpAddr, Vec<&'a ServiceView>>;

fn sharing_key(v: &ServiceView) -> Option<&str> {
    v.annotations
        .get(annotations::ALLOW_SHARED_IP)
        .map(String::as_str)
        .filter(|k| !k.is_empty())
}

/// May `v` use `ip` given its current holders?
fn can_use(holders: &Holders<'_>, ip: &IpAddr, v: &ServiceView) -> bool {
    let Some(hs) = holders.get(ip) else {
        return true;
    };
    hs.iter().all(|h| {
        h.key == v.key
            || (sharing_key(v).is_some()
                && sharing_key(v) == sharing_key(h)
                && !h.ports.iter().any(|p| v.ports.contains(p))
                && h.external_traffic_policy == v.external_traffic_policy
                && (v.external_traffic_policy == TrafficPolicy::Cluster
                    || h.selector == v.selector))
    })
}

/// What the Service asks for: exact addresses and/or a pool.
fn request(config: &Config, v: &ServiceView) -> Result<(Vec<IpAddr>, Option<String>), String> {
    let annotated = v.annotations.get(annotations::LOAD_BALANCER_IPS);
    let raw: Vec<&str> = match (&v.load_balancer_ip, annotated) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "both spec.loadBalancerIP and annotation {} are set",
                annotations::LOAD_BALANCER_IPS
            ))
        }
        (Some(ip), None) => vec![ip.as_str()],
        (None, Some(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        (None, None) => Vec::new(),
    };
    let ips = raw
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("requested address {s:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pool = v.annotations.get(annotations::ADDRESS_POOL).cloned();
    if let Some(name) = &pool {
        if config.pool(name).is_none() {
            return Err(format!("pool {name:?} does not exist"));
        }
    }
    Ok((ips, pool))
}

/// The families to allocate, primary first.
fn families(v: &ServiceView) -> Vec<IpFamily> {
    let mut f = v.ip_families.clone();
    if f.is_empty() {
        f = v.cluster_ips.iter().map(IpFamily::of).collect();
    }
    if f.is_empty() {
        f.push(IpFamily::V4);
    }
    if v.ip_family_policy == IpFamilyPolicy::SingleStack {
        f.truncate(1);
    }
    f
}

/// Lowest address of `family` in `pool` that `v` may use; prefers an address already shared
/// under `v`'s sharing key.
fn pick(pool: &Pool, family: IpFamily, holders: &Holders<'_>, v: &ServiceView) -> Option<IpAddr> {
    if sharing_key(v).is_some() {
        if let Some(ip) = holders
            .keys()
            .find(|ip| IpFamily::of(ip) == family && pool.may_assign(ip) && can_use(holders, ip, v))
        {
            return Some(*ip);
        }
    }
    for r in pool.ranges.iter().filter(|r| r.family() == family) {
        let last = ferrolb_config::addr::to_u128(&r.last());
        let mut x = ferrolb_config::addr::to_u128(&r.first());
        loop {
            let ip = ferrolb_config::addr::from_u128(family, x)?;
            if pool.may_assign(&ip) && !holders.contains_key(&ip) {
                return Some(ip);
            }
            if x >= last {
                break;
            }
            x += 1;
        }
    }
    None
}

fn assign<'a>(config: &Config, v: &'a ServiceView, holders: &mut Holders<'a>) -> Allocation {
    let (requested, pool_name) = match request(config, v) {
        Ok(r) => r,
        Err(reason) => return Allocation::Failed { reason },
    };
    let (ips, pool) = if !requested.is_empty() {
        let Some(pool) = config
            .pool_containing(&requested[0])
            .filter(|p| requested.iter().all(|ip| p.may_assign(ip)))
        else {
            return Allocation::Failed {
                reason: format!(
                    "requested address {} is not in one address pool",
                    crate::reconcile::join_ips(&requested)
                ),
            };
        };
        if pool_name.as_deref().is_some_and(|n| n != pool.name) {
            return Allocation::Failed {
                reason: format!(
                    "requested address is in pool {:?}, not the requested pool",
                    pool.name
                ),
            };
        }
        if let Some(ip) = requested.iter().find(|ip| !can_use(holders, ip, v)) {
            let owner = holders
                .get(ip)
                .and_then(|h| h.first())
                .map(|h| h.key.to_string())
                .unwrap_or_default();
            return Allocation::Failed {
                reason: format!("requested address {ip} is already in use by {owner}"),
            };
        }
        (requested, pool)
    } else {
        let fams = families(v);
        let candidates: Vec<&Pool> = match &pool_name {
            Some(n) => config.pool(n).into_iter().collect(),
            None => config.pools.iter().filter(|p| p.auto_assign).collect(),
        };
        let found = candidates.into_iter().find_map(|p| {
            let ips: Option<Vec<IpAddr>> = fams.iter().map(|f| pick(p, *f, holders, v)).collect();
            ips.map(|ips| (ips, p))
        });
        let Some(found) = found else {
            let what = pool_name.map_or("any address pool".to_string(), |n| format!("pool {n:?}"));
            return Allocation::Failed {
                reason: format!("no available IPs in {what}"),
            };
        };
        found
    };
    for ip in &ips {
        holders.entry(*ip).or_default().push(v);
    }
    Allocation::Assigned {
        ips,
        pool: pool.name.clone(),
    }
}

/// Keep `v`'s current addresses if they are still valid under `config`.
fn restore<'a>(
    config: &Config,
    v: &'a ServiceView,
    holders: &mut Holders<'a>,
) -> Option<Allocation> {
    let (requested, pool_name) = request(config, v).ok()?;
    let pool = config.pool_containing(&v.ingress_ips[0])?;
    let valid = v
        .ingress_ips
        .iter()
        .all(|ip| pool.may_assign(ip) && can_use(holders, ip, v))
        && (requested.is_empty() || requested == v.ingress_ips)
        && pool_name.as_deref().is_none_or(|n| n == pool.name);
    if !valid {
        return None;
    }
    for ip in &v.ingress_ips {
        holders.entry(*ip).or_default().push(v);
    }
    Some(Allocation::Assigned {
        ips: v.ingress_ips.clone(),
        pool: pool.name.clone(),
    })
}

pub fn plan(config: &Config, class: &str, views: &[ServiceView]) -> Plan {
    let mut holders: Holders<'_> = BTreeMap::new();
    let mut out = Plan::default();
    let mut sorted: Vec<&ServiceView> = views.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for v in &sorted {
        if !is_ours(v, class) {
            out.allocations.insert(v.key.clone(), Allocation::NotOurs);
        } else if !v.ingress_ips.is_empty() {
            if let Some(a) = restore(config, v, &mut holders) {
                out.allocations.insert(v.key.clone(), a);
            }
        }
    }
    for v in sorted {
        if !out.allocations.contains_key(&v.key) {
            let a = assign(config, v, &mut holders);
            out.allocations.insert(v.key.clone(), a);
        }
    }
    for p in &config.pools {
        let in_use = holders.keys().filter(|ip| p.contains(ip)).count() as u64;
        let total = p.ranges.iter().map(|r| r.len()).sum();
        out.pools.insert(p.name.clone(), (in_use, total));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::{ServiceKey, ServicePort};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cfg() -> Config {
        ferrolb_config::parse("address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.10-192.0.2.12]\n- name: b\n  protocol: layer2\n  auto-assign: false\n  addresses: [203.0.113.0/30]\n").unwrap()
    }

    fn lb(name: &str, port: u16, proto: &str) -> ServiceView {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", name));
        v.ports = vec![ServicePort {
            protocol: proto.into(),
            port,
        }];
        v
    }

    fn ips_of(p: &Plan, name: &str) -> Vec<IpAddr> {
        match p.allocations.get(&ServiceKey::new("ns", name)) {
            Some(Allocation::Assigned { ips, .. }) => ips.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn restores_before_assigning_and_shares_and_honours_requests() {
        let mut held = lb("b-held", 80, "TCP");
        held.ingress_ips = vec![ip("192.0.2.11")];
        let new = lb("a-new", 80, "TCP");
        let mut req = lb("c-req", 80, "TCP");
        req.load_balancer_ip = Some("203.0.113.2".into());
        let mut s1 = lb("d-share", 53, "TCP");
        s1.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
        let mut s2 = lb("e-share", 53, "UDP");
        s2.annotations = s1.annotations.clone();
        let p = plan(&cfg(), "ferrolb", &[new, held, req, s1, s2]);
        assert_eq!(ips_of(&p, "b-held"), vec![ip("192.0.2.11")]);
        assert_eq!(ips_of(&p, "a-new"), vec![ip("192.0.2.10")]);
        assert_eq!(ips_of(&p, "c-req"), vec![ip("203.0.113.2")]);
        assert_eq!(ips_of(&p, "d-share"), vec![ip("192.0.2.12")]);
        assert_eq!(ips_of(&p, "e-share"), vec![ip("192.0.2.12")]);
        assert_eq!(p.pools.get("a"), Some(&(3, 3)));
    }

    #[test]
    fn exhaustion_conflicts_and_bad_requests_fail_with_a_reason() {
        let mut both = lb("both", 80, "TCP");
        both.load_balancer_ip = Some("192.0.2.10".into());
        both.annotations
            .insert(annotations::LOAD_BALANCER_IPS.into(), "192.0.2.10".into());
        let mut overlap1 = lb("o1", 53, "TCP");
        overlap1
            .annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
        overlap1.load_balancer_ip = Some("192.0.2.10".into());
        let mut overlap2 = overlap1.clone();
        overlap2.key = ServiceKey::new("ns", "o2");
        let views = [
            both,
            overlap1,
            overlap2,
            lb("x1", 1, "TCP"),
            lb("x2", 1, "TCP"),
            lb("x3", 1, "TCP"),
        ];
        let p = plan(&cfg(), "ferrolb", &views);
        let reason = |n: &str| match p.allocations.get(&ServiceKey::new("ns", n)) {
            Some(Allocation::Failed { reason }) => reason.clone(),
            other => panic!("{n}: {other:?}"),
        };
        assert!(reason("both").contains("both"));
        assert!(reason("o2").contains("in use by ns/o1"), "{}", reason("o2"));
        assert!(
            reason("x3").contains("no available IPs"),
            "{}",
            reason("x3")
        );
    }

    #[test]
    fn a_misfit_is_reassigned() {
        let mut v = lb("m", 80, "TCP");
        v.ingress_ips = vec![ip("198.51.100.1")];
        let p = plan(&cfg(), "ferrolb", &[v]);
        assert_eq!(ips_of(&p, "m"), vec![ip("192.0.2.10")]);
    }
}
