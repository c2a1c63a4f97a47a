//! Allocation cost versus pool size: an IPv6 /64 must allocate as fast as an IPv4 /24.
//! Run with `cargo bench -p ferrolb-controller --bench allocator`; prints ns per allocation.

use std::hint::black_box;
use std::time::Instant;

use ferrolb_config::{IpFamily, ServiceKey, ServiceView};
use ferrolb_controller::allocator::Allocator;

fn config(cidr: &str) -> ferrolb_config::Config {
    ferrolb_config::parse(&format!(
        "address-pools:\n- name: p\n  protocol: bgp\n  addresses: ['{cidr}']\n"
    ))
    .unwrap_or_default()
}

/// Allocates `n` Services (after `pre` restored ones), returns ns per allocation.
fn run(cidr: &str, family: IpFamily, n: usize, rounds: usize) -> f64 {
    let views: Vec<ServiceView> = (0..n)
        .map(|i| {
            let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", format!("s{i:06}")));
            v.ip_families = vec![family];
            v
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let mut a = Allocator::new(config(cidr), "ferrolb");
        let t = Instant::now();
        for v in &views {
            let _ = black_box(a.allocate(v));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        best = best.min(ns);
    }
    best
}

fn main() {
    let rounds = 20;
    for (label, cidr, family, n) in [
        ("IPv4 /24, 250 services", "192.0.2.0/24", IpFamily::V4, 250),
        ("IPv6 /64, 250 services", "2001:db8::/64", IpFamily::V6, 250),
        (
            "IPv4 /16, 10000 services",
            "10.0.0.0/16",
            IpFamily::V4,
            10_000,
        ),
        (
            "IPv6 /64, 10000 services",
            "2001:db8::/64",
            IpFamily::V6,
            10_000,
        ),
    ] {
        println!(
            "{label:28} {:8.0} ns/allocation (best of {rounds})",
            run(cidr, family, n, rounds)
        );
    }
}
