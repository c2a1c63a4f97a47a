//! The compatibility check: which addresses that Services hold today would a new configuration
//! no longer allow? That is what "breaking" means (as in MetalLB v0.12's `SetPools`): an address
//! outside every pool, or a .0/.255 address that the pool holding it excludes with
//! `avoid-buggy-ips`. Moving an address to another pool, protocol or auto-assign changes, and
//! peer changes are not breaking.
//!
//! Must not: decide what to do about a breakage (the controller refuses; the CLI reports).

use std::net::IpAddr;

use serde::Serialize;

use crate::model::Config;
use crate::service::{is_ours, ServiceKey, ServiceView};

/// One held address that the configuration would no longer allow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Breakage {
    pub service: ServiceKey,
    pub ip: IpAddr,
    /// Why, in words.
    pub reason: String,
}

impl std::fmt::Display for Breakage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} ip {}: {}",
            self.service, self.ip, self.reason
        )
    }
}

/// Every held `(service, address)` that `config` would break, sorted by service then address.
pub fn breaking(config: &Config, held: &[(ServiceKey, IpAddr)]) -> Vec<Breakage> {
    let mut out: Vec<Breakage> = held
        .iter()
        .filter_map(|(service, ip)| {
            let reason = why_broken(config, ip)?;
            Some(Breakage {
                service: service.clone(),
                ip: *ip,
                reason,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `None` when some pool of `config` may hand out `ip`; otherwise why not, in words (the
/// [`Breakage::reason`]).
pub fn why_broken(config: &Config, ip: &IpAddr) -> Option<String> {
    if config.pools.iter().any(|p| p.may_assign(ip)) {
        return None;
    }
    Some(match config.pool_containing(ip) {
        Some(pool) => format!(
            "pool {:?} has avoid-buggy-ips, which excludes addresses ending in .0 and .255",
            pool.name
        ),
        None => "outside every address pool of the new configuration".to_string(),
    })
}

/// The addresses Services hold: `status.loadBalancer.ingress` IPs of the Services ferrolb
/// serves under `our_class` ([`is_ours`]).
pub fn held_addresses<'a>(
    services: impl IntoIterator<Item = &'a ServiceView>,
    our_class: &str,
) -> Vec<(ServiceKey, IpAddr)> {
    services
        .into_iter()
        .filter(|s| is_ours(s, our_class))
        .flat_map(|s| s.ingress_ips.iter().map(|ip| (s.key.clone(), *ip)))
        .collect()
}

/// The addresses that `candidate` would no longer allow among the Services ferrolb serves
/// under `our_class`: [`breaking`] over their [`held_addresses`].
pub fn breakages_of<'a>(
    candidate: &Config,
    our_class: &str,
    services: impl IntoIterator<Item = &'a ServiceView>,
) -> Vec<Breakage> {
    breaking(candidate, &held_addresses(services, our_class))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn key(n: &str) -> ServiceKey {
        ServiceKey::new("default", n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const OLD: &str = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/24]\n- name: b\n  protocol: bgp\n  addresses: ['2001:db8::/120']\n";

    #[test]
    fn same_config_breaks_nothing() {
        let cfg = parse(OLD).unwrap();
        let held = vec![(key("x"), ip("192.0.2.0")), (key("y"), ip("2001:db8::ff"))];
        assert!(breaking(&cfg, &held).is_empty());
    }

    #[test]
    fn address_outside_every_pool_breaks() {
        let cfg =
            parse("address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/25]\n")
                .unwrap();
        let held = vec![
            (key("in"), ip("192.0.2.10")),
            (key("out"), ip("192.0.2.200")),
            (key("v6"), ip("2001:db8::1")),
        ];
        let b = breaking(&cfg, &held);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].service, key("out"));
        assert_eq!(b[0].ip, ip("192.0.2.200"));
        assert_eq!(
            b[0].reason,
            "outside every address pool of the new configuration"
        );
        assert_eq!(b[1].service, key("v6"));
    }

    #[test]
    fn avoid_buggy_ips_breaks_dot_zero_and_255_only() {
        let cfg = parse("address-pools:\n- name: a\n  protocol: layer2\n  avoid-buggy-ips: true\n  addresses: [192.0.2.0/24]\n").unwrap();
        let held = vec![
            (key("zero"), ip("192.0.2.0")),
            (key("mid"), ip("192.0.2.7")),
            (key("top"), ip("192.0.2.255")),
        ];
        let b = breaking(&cfg, &held);
        let got: Vec<(String, IpAddr)> = b.iter().map(|b| (b.service.name.clone(), b.ip)).collect();
        assert_eq!(
            got,
            vec![
                ("top".into(), ip("192.0.2.255")),
                ("zero".into(), ip("192.0.2.0"))
            ]
        );
        assert!(b[0].reason.contains("pool \"a\" has avoid-buggy-ips"));
    }

    #[test]
    fn moving_to_another_pool_or_protocol_is_not_breaking() {
        let cfg = parse("address-pools:\n- name: other\n  protocol: bgp\n  auto-assign: false\n  addresses: [192.0.2.0-192.0.2.20]\n").unwrap();
        assert!(breaking(&cfg, &[(key("x"), ip("192.0.2.20"))]).is_empty());
    }

    #[test]
    fn held_addresses_only_from_served_load_balancers() {
        let mut a = ServiceView::new_load_balancer(key("a"));
        a.ingress_ips = vec![ip("192.0.2.1"), ip("2001:db8::1")];
        let mut b = ServiceView::new_load_balancer(key("b"));
        b.is_load_balancer = false;
        b.ingress_ips = vec![ip("192.0.2.2")];
        let mut c = ServiceView::new_load_balancer(key("c"));
        c.load_balancer_class = Some("other".into());
        c.ingress_ips = vec![ip("192.0.2.3")];
        let held = held_addresses(&[a, b, c], crate::service::DEFAULT_CLASS);
        assert_eq!(
            held,
            vec![(key("a"), ip("192.0.2.1")), (key("a"), ip("2001:db8::1"))]
        );
    }

    #[test]
    fn empty_config_breaks_everything_held() {
        let cfg = parse("").unwrap();
        let b = breaking(&cfg, &[(key("a"), ip("198.51.100.1"))]);
        assert_eq!(b.len(), 1);
    }
}
