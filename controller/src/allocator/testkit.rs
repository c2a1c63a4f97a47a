//! Tests only: a config with every kind of pool and a compact way to write Services, shared by
//! the unit tests of the allocator's modules.
//!
//! Must not: be used outside `#[cfg(test)]` code.

use ferrolb_config::service::annotations;
use ferrolb_config::{IpFamily, IpFamilyPolicy, ServiceKey, ServicePort, ServiceView};

/// Pools with avoid-buggy-ips, without auto-assign, single-family and dual-stack.
pub(super) const CONFIG: &str = "address-pools:
- name: small
  protocol: layer2
  avoid-buggy-ips: true
  addresses: [198.51.100.254-198.51.101.1, 2001:db8:1::/126]
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [203.0.113.0/30]
- name: v4
  protocol: layer2
  addresses: [192.0.2.8/30, 192.0.2.0/30]
- name: v6
  protocol: layer2
  addresses: [2001:db8:2::/127]
- name: dual
  protocol: layer2
  addresses: [192.0.2.64/31, 2001:db8:3::/127]
";

/// [`CONFIG`] parsed.
pub(super) fn config() -> ferrolb_config::Config {
    ferrolb_config::parse(CONFIG).expect("the test config parses")
}

/// Service `ns/s{n}`: primary family IPv4 (`fam` 0) or IPv6, policy single (0), prefer (1) or
/// require (2+) dual-stack, one TCP port `80 + n % 3`, sharing key `k` when `share`, and a
/// request: the pool `manual` (`Some(0)`) or the address `192.0.2.{r % 12}`.
pub(super) fn view(n: u8, fam: u8, policy: u8, share: bool, request: Option<u8>) -> ServiceView {
    let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", format!("s{n}")));
    v.ip_families = vec![if fam == 0 { IpFamily::V4 } else { IpFamily::V6 }];
    v.ip_family_policy = match policy {
        0 => IpFamilyPolicy::SingleStack,
        1 => IpFamilyPolicy::PreferDualStack,
        _ => IpFamilyPolicy::RequireDualStack,
    };
    v.ports = vec![ServicePort {
        protocol: "TCP".into(),
        port: 80 + u16::from(n % 3),
    }];
    if share {
        v.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
    }
    match request {
        Some(0) => {
            v.annotations
                .insert(annotations::ADDRESS_POOL.into(), "manual".into());
        }
        Some(r) => v.load_balancer_ip = Some(format!("192.0.2.{}", r % 12)),
        None => {}
    }
    v
}
