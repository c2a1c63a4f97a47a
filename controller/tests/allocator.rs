//! Allocator behaviour through its public API: order, exhaustion, requests, sharing, dual-stack,
//! class filtering, restore, config changes, plus property tests (no double assignment except
//! legal sharing, determinism, restored addresses never stolen).

// Test helpers outside #[test] functions unwrap fixed, known-good inputs.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::service::annotations;
use ferrolb_config::{
    Config, IpFamily, IpFamilyPolicy, ServiceKey, ServicePort, ServiceView, TrafficPolicy,
};
use ferrolb_controller::allocator::sharing::{compatible, SharingInfo};
use ferrolb_controller::allocator::{AllocError, Allocator};
use ferrolb_controller::reconcile::{plan, Allocation};
use proptest::prelude::*;

const CLASS: &str = "ferrolb";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(yaml: &str) -> Config {
    ferrolb_config::parse(yaml).unwrap()
}

fn svc(name: &str) -> ServiceView {
    ServiceView::new_load_balancer(ServiceKey::new("ns", name))
}

fn with_ann(mut v: ServiceView, k: &str, val: &str) -> ServiceView {
    v.annotations.insert(k.into(), val.into());
    v
}

fn with_port(mut v: ServiceView, port: u16) -> ServiceView {
    v.ports.push(ServicePort {
        protocol: "TCP".into(),
        port,
    });
    v
}

const TWO_POOLS: &str = "address-pools:
- name: first
  protocol: layer2
  addresses: [192.0.2.10-192.0.2.11]
- name: second
  protocol: layer2
  addresses: [198.51.100.0/30]
";

#[test]
fn pools_in_config_order_lowest_first_then_exhausted() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let got: Vec<(IpAddr, String)> = (0..6)
        .map(|i| {
            let r = a.allocate(&svc(&format!("s{i}"))).unwrap();
            (r.ips.first().unwrap(), r.pool.to_string())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ip("192.0.2.10"), "first".to_string()),
            (ip("192.0.2.11"), "first".to_string()),
            (ip("198.51.100.0"), "second".to_string()),
            (ip("198.51.100.1"), "second".to_string()),
            (ip("198.51.100.2"), "second".to_string()),
            (ip("198.51.100.3"), "second".to_string()),
        ]
    );
    let e = a.allocate(&svc("s6")).unwrap_err();
    assert_eq!(
        e,
        AllocError::PoolExhausted {
            pools: "first, second".into(),
            family: IpFamily::V4
        }
    );
    assert!(e.to_string().contains("pool exhausted"));
    // Release frees the address for the next one, lowest first.
    a.release(&ServiceKey::new("ns", "s1"));
    assert_eq!(a.allocate(&svc("s6")).unwrap().ips, vec![ip("192.0.2.11")]);
    let usage = a.usage();
    assert_eq!(usage[0].pool, "first");
    assert_eq!((usage[0].addresses_total, usage[0].in_use), (2, 2));
    assert_eq!((usage[1].addresses_total, usage[1].in_use), (4, 4));
}

#[test]
fn allocate_is_idempotent_for_a_served_service() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let first = a.allocate(&svc("a")).unwrap();
    assert_eq!(a.allocate(&svc("a")).unwrap(), first);
    assert_eq!(a.usage()[0].in_use, 1);
}

#[test]
fn auto_assign_false_only_for_explicit_requests() {
    let c = cfg("address-pools:
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [192.0.2.0/30]
- name: auto
  protocol: layer2
  addresses: [198.51.100.8/30]
");
    let mut a = Allocator::new(c, CLASS);
    assert_eq!(a.allocate(&svc("plain")).unwrap().pool, "auto");
    let by_pool = with_ann(svc("bypool"), annotations::ADDRESS_POOL, "manual");
    assert_eq!(a.allocate(&by_pool).unwrap().ips, vec![ip("192.0.2.0")]);
    let mut by_ip = svc("byip");
    by_ip.load_balancer_ip = Some("192.0.2.3".into());
    let r = a.allocate(&by_ip).unwrap();
    assert_eq!(
        (r.ips.to_vec(), r.pool.as_str()),
        (vec![ip("192.0.2.3")], "manual")
    );
}

#[test]
fn avoid_buggy_ips() {
    let c = cfg("address-pools:
- name: p
  protocol: layer2
  avoid-buggy-ips: true
  addresses: [192.0.2.254/31, 198.51.100.0/31]
");
    let mut a = Allocator::new(c, CLASS);
    assert_eq!(a.allocate(&svc("a")).unwrap().ips, vec![ip("192.0.2.254")]);
    assert_eq!(a.allocate(&svc("b")).unwrap().ips, vec![ip("198.51.100.1")]);
    assert!(matches!(
        a.allocate(&svc("c")),
        Err(AllocError::PoolExhausted { .. })
    ));
    let mut bad = svc("d");
    bad.load_balancer_ip = Some("192.0.2.255".into());
    assert_eq!(
        a.allocate(&bad).unwrap_err(),
        AllocError::BuggyIp {
            ip: ip("192.0.2.255"),
            pool: "p".into()
        }
    );
    assert_eq!(a.usage()[0].addresses_total, 2);
}

#[test]
fn requests_and_their_errors() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let by_ann = with_ann(svc("a"), annotations::LOAD_BALANCER_IPS, "198.51.100.2");
    let r = a.allocate(&by_ann).unwrap();
    assert_eq!(
        (r.ips.to_vec(), r.pool.as_str()),
        (vec![ip("198.51.100.2")], "second")
    );

    let mut both = with_ann(svc("b"), annotations::LOAD_BALANCER_IPS, "198.51.100.3");
    both.load_balancer_ip = Some("198.51.100.3".into());
    assert!(matches!(
        a.allocate(&both),
        Err(AllocError::BadRequest { .. })
    ));

    let mut outside = svc("c");
    outside.load_balancer_ip = Some("203.0.113.1".into());
    assert_eq!(
        a.allocate(&outside).unwrap_err(),
        AllocError::NotInAnyPool {
            ip: ip("203.0.113.1")
        }
    );

    let unknown = with_ann(svc("d"), annotations::ADDRESS_POOL, "gold");
    let e = a.allocate(&unknown).unwrap_err();
    assert_eq!(
        e,
        AllocError::UnknownPool {
            pool: "gold".into()
        }
    );
    assert!(e.to_string().contains("gold"));

    let mut wrong = with_ann(svc("e"), annotations::ADDRESS_POOL, "first");
    wrong.load_balancer_ip = Some("198.51.100.1".into());
    assert!(matches!(
        a.allocate(&wrong),
        Err(AllocError::WrongPool { .. })
    ));

    // A requested address held by a Service that does not share is a conflict naming it.
    let mut taken = svc("f");
    taken.load_balancer_ip = Some("198.51.100.2".into());
    match a.allocate(&taken).unwrap_err() {
        AllocError::SharingConflict { ip: got, other, .. } => {
            assert_eq!(got, ip("198.51.100.2"));
            assert_eq!(other, ServiceKey::new("ns", "a"));
        }
        e => panic!("unexpected {e:?}"),
    }

    // Changing the request moves the Service; the old address is freed.
    let moved = with_ann(svc("a"), annotations::LOAD_BALANCER_IPS, "192.0.2.11");
    assert_eq!(a.allocate(&moved).unwrap().ips, vec![ip("192.0.2.11")]);
    assert_eq!(a.allocate(&taken).unwrap().ips, vec![ip("198.51.100.2")]);

    // An IPv6 request for an IPv4 single-stack Service is a family mismatch.
    let mut v6 = svc("g");
    v6.load_balancer_ip = Some("2001:db8::1".into());
    assert!(matches!(
        a.allocate(&v6),
        Err(AllocError::FamilyMismatch { .. })
    ));
}

#[test]
fn sharing_rules() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let s1 = with_port(with_ann(svc("web"), annotations::ALLOW_SHARED_IP, "k"), 80);
    let s2 = with_port(with_ann(svc("tls"), annotations::ALLOW_SHARED_IP, "k"), 443);
    let s3 = with_port(with_ann(svc("dup"), annotations::ALLOW_SHARED_IP, "k"), 80);
    let ip1 = a.allocate(&s1).unwrap().ips;
    // Same key, disjoint ports: lands on the same address without asking for it.
    assert_eq!(a.allocate(&s2).unwrap().ips, ip1);
    assert_eq!(a.usage()[0].in_use, 1);
    // Overlapping port: gets another address.
    let ip3 = a.allocate(&s3).unwrap().ips;
    assert_ne!(ip3, ip1);
    // Asking for the shared address with an overlapping port is a conflict that names why.
    let mut s4 = with_port(
        with_ann(svc("dup2"), annotations::ALLOW_SHARED_IP, "k"),
        443,
    );
    s4.load_balancer_ip = Some(ip1.first().unwrap().to_string());
    let e = a.allocate(&s4).unwrap_err();
    assert!(e.to_string().contains("443"), "{e}");
    // Local vs Cluster may not share.
    let mut local = with_port(
        with_ann(svc("loc"), annotations::ALLOW_SHARED_IP, "k"),
        8080,
    );
    local.external_traffic_policy = TrafficPolicy::Local;
    local.load_balancer_ip = Some(ip1.first().unwrap().to_string());
    assert!(matches!(
        a.allocate(&local),
        Err(AllocError::SharingConflict { .. })
    ));
    // Releasing one holder keeps the address taken for the other.
    a.release(&ServiceKey::new("ns", "web"));
    assert_eq!(
        a.assignment(&ServiceKey::new("ns", "tls")).unwrap().ips,
        ip1
    );
    let next = a.allocate(&svc("other")).unwrap().ips;
    assert_ne!(next, ip1);
}

const DUAL: &str = "address-pools:
- name: v4only
  protocol: layer2
  addresses: [192.0.2.0/30]
- name: dual
  protocol: layer2
  addresses: [198.51.100.0/30, '2001:db8::/64']
";

#[test]
fn dual_stack_from_one_pool() {
    let mut a = Allocator::new(cfg(DUAL), CLASS);
    let mut d = svc("d");
    d.ip_families = vec![IpFamily::V6, IpFamily::V4];
    d.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let r = a.allocate(&d).unwrap();
    assert_eq!(r.pool, "dual");
    assert_eq!(r.ips, vec![ip("2001:db8::"), ip("198.51.100.0")]);

    let mut p = svc("p");
    p.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    assert_eq!(a.allocate(&p).unwrap().ips.len(), 2);

    // No pool with both families: PreferDualStack falls back, RequireDualStack fails.
    let mut only4 = Allocator::new(
        cfg("address-pools:\n- name: v4\n  protocol: layer2\n  addresses: [192.0.2.0/30]\n"),
        CLASS,
    );
    assert_eq!(only4.allocate(&p).unwrap().ips, vec![ip("192.0.2.0")]);
    let e = only4.allocate(&d).unwrap_err();
    assert!(matches!(e, AllocError::NoPoolForFamilies { .. }), "{e:?}");
    // Asking the v4-only pool for IPv6 names the pool and the family.
    let pinned = with_ann(d.clone(), annotations::ADDRESS_POOL, "v4");
    assert_eq!(
        only4.allocate(&pinned).unwrap_err(),
        AllocError::PoolLacksFamily {
            pool: "v4".into(),
            family: IpFamily::V6
        }
    );
    // A dual request split over two pools is refused.
    let mut split = svc("split");
    split.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    split.annotations.insert(
        annotations::LOAD_BALANCER_IPS.into(),
        "192.0.2.1,2001:db8::9".into(),
    );
    assert!(matches!(
        a.allocate(&split),
        Err(AllocError::SplitPools { .. })
    ));
}

#[test]
fn class_filtering() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let mut other = svc("other");
    other.load_balancer_class = Some("example.com/lb".into());
    assert!(matches!(
        a.allocate(&other),
        Err(AllocError::NotOurs { .. })
    ));
    let mut mine = svc("mine");
    mine.load_balancer_class = Some(CLASS.into());
    assert!(a.allocate(&mine).is_ok());
    let mut cluster_ip = svc("cip");
    cluster_ip.is_load_balancer = false;
    assert!(a.allocate(&cluster_ip).is_err());
    // Class change releases.
    mine.load_balancer_class = Some("example.com/lb".into());
    assert!(a.allocate(&mine).is_err());
    assert!(a.assignment(&mine.key).is_none());
    assert_eq!(a.usage()[0].in_use, 0);
}

#[test]
fn restore_then_allocate_never_steals() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let mut old = svc("zzz");
    old.ingress_ips = vec![ip("192.0.2.10")];
    assert_eq!(
        a.restore(&old).unwrap().unwrap().ips,
        vec![ip("192.0.2.10")]
    );
    assert_eq!(a.allocate(&svc("aaa")).unwrap().ips, vec![ip("192.0.2.11")]);
    assert_eq!(a.allocate(&old).unwrap().ips, vec![ip("192.0.2.10")]);
    // A second Service claiming the same address without sharing is refused on restore.
    let mut dup = svc("dup");
    dup.ingress_ips = vec![ip("192.0.2.10")];
    assert!(matches!(
        a.restore(&dup),
        Err(AllocError::SharingConflict { .. })
    ));
}

#[test]
fn set_config_refuses_breaking_and_rehomes() {
    let mut a = Allocator::new(cfg(TWO_POOLS), CLASS);
    let held = a.allocate(&svc("a")).unwrap();
    assert_eq!(held.ips, vec![ip("192.0.2.10")]);
    let breaking =
        cfg("address-pools:\n- name: other\n  protocol: layer2\n  addresses: [203.0.113.0/30]\n");
    let b = a.set_config(breaking.clone()).unwrap_err();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].service, ServiceKey::new("ns", "a"));
    assert_eq!(b[0].ip, ip("192.0.2.10"));
    assert_eq!(a.config(), &cfg(TWO_POOLS));
    // Moving the address to a renamed pool is fine: the allocation is re-homed.
    let renamed =
        cfg("address-pools:\n- name: renamed\n  protocol: bgp\n  addresses: [192.0.2.0/24]\n");
    a.set_config(renamed).unwrap();
    assert_eq!(
        a.assignment(&ServiceKey::new("ns", "a")).unwrap().pool,
        "renamed"
    );
    assert_eq!(a.allocate(&svc("a")).unwrap().ips, vec![ip("192.0.2.10")]);
    assert_eq!(a.allocate(&svc("b")).unwrap().ips, vec![ip("192.0.2.0")]);
    assert_eq!(a.usage()[0].in_use, 2);

    // Fresh start with the breaking config: the misfit gets a new address.
    let mut a_view = svc("a");
    a_view.ingress_ips = vec![ip("192.0.2.10")];
    let views = [a_view];
    let (_, out) = Allocator::fresh(breaking, CLASS, &views);
    assert_eq!(out.len(), 1);
    assert_eq!(*out[0].0, ServiceKey::new("ns", "a"));
    assert_eq!(out[0].1.as_ref().unwrap().ips, vec![ip("203.0.113.0")]);
}

#[test]
fn plan_reports_every_service() {
    let mut kept = svc("kept");
    kept.ingress_ips = vec![ip("198.51.100.3")];
    let mut other = svc("other");
    other.load_balancer_class = Some("x".into());
    let p = plan(&cfg(TWO_POOLS), CLASS, &[svc("new"), kept, other]);
    assert_eq!(
        p.allocations[&ServiceKey::new("ns", "kept")],
        Allocation::Assigned {
            ips: vec![ip("198.51.100.3")],
            pool: "second".into()
        }
    );
    assert_eq!(
        p.allocations[&ServiceKey::new("ns", "new")],
        Allocation::Assigned {
            ips: vec![ip("192.0.2.10")],
            pool: "first".into()
        }
    );
    assert_eq!(
        p.allocations[&ServiceKey::new("ns", "other")],
        Allocation::NotOurs
    );
    assert_eq!(p.pools["first"], (1, 2));
    assert_eq!(p.pools["second"], (1, 4));
}

#[test]
fn ipv6_slash_64_pool_allocates_lowest() {
    let mut a = Allocator::new(
        cfg("address-pools:\n- name: big\n  protocol: bgp\n  addresses: ['2001:db8::/64']\n"),
        CLASS,
    );
    for i in 0..100u32 {
        let mut v = svc(&format!("s{i:03}"));
        v.ip_families = vec![IpFamily::V6];
        let got = a.allocate(&v).unwrap().ips.first().unwrap();
        assert_eq!(got, ip(&format!("2001:db8::{i:x}")));
    }
    assert_eq!(a.usage()[0].addresses_total, 1u128 << 64);
}

// ---------- property tests ----------

/// One operation on a small pool.
#[derive(Debug, Clone)]
enum Op {
    Allocate {
        svc: u8,
        share: Option<u8>,
        port: u16,
        request: Option<u8>,
    },
    Release(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, proptest::option::of(0u8..2), 80u16..83, proptest::option::weighted(0.2, 0u8..8))
            .prop_map(|(svc, share, port, request)| Op::Allocate { svc, share, port, request }),
        1 => (0u8..12).prop_map(Op::Release),
    ]
}

fn view(n: u8, share: Option<u8>, port: u16, request: Option<u8>) -> ServiceView {
    let mut v = with_port(svc(&format!("s{n:02}")), port);
    if let Some(k) = share {
        v = with_ann(v, annotations::ALLOW_SHARED_IP, &format!("key{k}"));
    }
    if let Some(r) = request {
        v.load_balancer_ip = Some(format!("192.0.2.{}", 8 + r));
    }
    v
}

const DUAL_SMALL: &str = "address-pools:
- name: v4
  protocol: layer2
  addresses: [192.0.2.0/30]
- name: dual
  protocol: layer2
  addresses: [198.51.100.0/30, '2001:db8::/126']
";

const SMALL: &str = "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [192.0.2.8/29]\n";

fn run(ops: &[Op]) -> (Allocator, BTreeMap<ServiceKey, ServiceView>) {
    let mut a = Allocator::new(cfg(SMALL), CLASS);
    let mut views = BTreeMap::new();
    for o in ops {
        match o {
            Op::Allocate {
                svc,
                share,
                port,
                request,
            } => {
                let v = view(*svc, *share, *port, *request);
                if a.allocate(&v).is_ok() {
                    views.insert(v.key.clone(), v);
                } else {
                    views.remove(&v.key);
                }
            }
            Op::Release(n) => {
                let k = ServiceKey::new("ns", format!("s{n:02}"));
                a.release(&k);
                views.remove(&k);
            }
        }
    }
    (a, views)
}

fn info(v: &ServiceView) -> SharingInfo {
    SharingInfo::of(v, v.annotations.get(annotations::ALLOW_SHARED_IP).cloned())
}

proptest! {
    #[test]
    fn no_double_assignment_except_legal_sharing(ops in proptest::collection::vec(op(), 1..60)) {
        let (a, views) = run(&ops);
        let mut by_ip: BTreeMap<IpAddr, Vec<ServiceKey>> = BTreeMap::new();
        for (k, asg) in a.assignments() {
            prop_assert!(views.contains_key(&k));
            for ip in asg.ips {
                by_ip.entry(ip).or_default().push(k.clone());
            }
        }
        for holders in by_ip.values() {
            for (i, x) in holders.iter().enumerate() {
                for y in &holders[i + 1..] {
                    prop_assert!(compatible(&info(&views[x]), &info(&views[y])).is_ok(),
                        "{x} and {y} share illegally");
                }
            }
        }
        prop_assert_eq!(a.usage()[0].in_use, by_ip.len() as u64);
        prop_assert_eq!(a.assignments().len(), views.len());
    }

    #[test]
    fn deterministic(ops in proptest::collection::vec(op(), 1..60)) {
        let (a, _) = run(&ops);
        let (b, _) = run(&ops);
        prop_assert_eq!(a.assignments(), b.assignments());
        prop_assert_eq!(a.usage(), b.usage());
    }

    #[test]
    fn restore_then_allocate_never_steals_restored(
        restored in proptest::collection::btree_map(0u8..8, 0u8..8, 0..6),
        fresh in 0usize..10,
    ) {
        let mut a = Allocator::new(cfg(SMALL), CLASS);
        let mut kept: BTreeMap<ServiceKey, IpAddr> = BTreeMap::new();
        let mut used: BTreeSet<u8> = BTreeSet::new();
        for (n, off) in &restored {
            let mut v = svc(&format!("old{n}"));
            v.ingress_ips = vec![ip(&format!("192.0.2.{}", 8 + off))];
            let r = a.restore(&v);
            if used.insert(*off) {
                prop_assert!(r.is_ok());
                kept.insert(v.key.clone(), v.ingress_ips[0]);
            } else {
                prop_assert!(r.is_err());
            }
        }
        for i in 0..fresh {
            if let Ok(asg) = a.allocate(&svc(&format!("new{i}"))) {
                prop_assert!(!kept.values().any(|ip| asg.ips.contains(ip)));
            }
        }
        for (k, ip) in kept {
            prop_assert_eq!(&a.assignment(&k).unwrap().ips, &vec![ip]);
        }
    }

    #[test]
    fn dual_stack_addresses_come_from_one_pool_one_per_family(
        specs in proptest::collection::vec((0u8..3, 0u8..2, proptest::option::of(0u8..2), 80u16..82), 1..30),
    ) {
        let c = cfg(DUAL_SMALL);
        let mut a = Allocator::new(c.clone(), CLASS);
        let mut views = BTreeMap::new();
        for (i, (policy, primary, share, port)) in specs.into_iter().enumerate() {
            let mut v = with_port(svc(&format!("d{i:02}")), port);
            v.ip_family_policy = [IpFamilyPolicy::SingleStack, IpFamilyPolicy::PreferDualStack, IpFamilyPolicy::RequireDualStack][policy as usize];
            v.ip_families = if primary == 0 { vec![IpFamily::V4] } else { vec![IpFamily::V6] };
            if let Some(k) = share {
                v = with_ann(v, annotations::ALLOW_SHARED_IP, &format!("key{k}"));
            }
            if a.allocate(&v).is_ok() {
                views.insert(v.key.clone(), v);
            }
        }
        let mut by_ip: BTreeMap<IpAddr, Vec<ServiceKey>> = BTreeMap::new();
        for (k, asg) in a.assignments() {
            let pool = c.pool(&asg.pool).unwrap();
            let fams: BTreeSet<IpFamily> = asg.ips.iter().map(|ip| IpFamily::of(&ip)).collect();
            prop_assert_eq!(fams.len(), asg.ips.len(), "one address per family: {:?}", asg.ips);
            prop_assert!(asg.ips.iter().all(|ip| pool.may_assign(&ip)));
            let v = &views[&k];
            match v.ip_family_policy {
                IpFamilyPolicy::SingleStack => prop_assert_eq!(asg.ips.len(), 1),
                IpFamilyPolicy::RequireDualStack => prop_assert_eq!(asg.ips.len(), 2),
                IpFamilyPolicy::PreferDualStack => {}
            }
            prop_assert_eq!(IpFamily::of(&asg.ips.first().unwrap()), v.ip_families[0]);
            for ip in asg.ips {
                by_ip.entry(ip).or_default().push(k.clone());
            }
        }
        for holders in by_ip.values() {
            for (i, x) in holders.iter().enumerate() {
                for y in &holders[i + 1..] {
                    prop_assert!(compatible(&info(&views[x]), &info(&views[y])).is_ok());
                }
            }
        }
    }
}

#[test]
fn fresh_reports_each_key_once_in_key_order_only_the_last_view_of_a_key_counting() {
    // "b" twice: its first view holds .10, its second asks for the second pool.
    let mut b1 = svc("b");
    b1.ingress_ips = vec![ip("192.0.2.10")];
    let b2 = with_ann(svc("b"), "metallb.universe.tf/address-pool", "second");
    let views = [b1, svc("a"), b2];
    let (a, out) = Allocator::fresh(cfg(TWO_POOLS), CLASS, &views);
    let keys: Vec<&str> = out.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    // Only b's last view counts: its first view's .10 is not restored, so "a" gets it; "b" ends
    // as its last view asks.
    assert_eq!(out[0].1.as_ref().unwrap().ips, vec![ip("192.0.2.10")]);
    let b = out[1].1.as_ref().unwrap();
    assert_eq!(b.ips, vec![ip("198.51.100.0")]);
    assert_eq!(b.pool.as_str(), "second");
    assert_eq!(a.assignment(&ServiceKey::new("ns", "b")), Some(b));

    // A last view that is not ours (another class) does not replace the outcome of the view
    // before it that is.
    let mut held = svc("c");
    held.ingress_ips = vec![ip("192.0.2.11")];
    let mut other = svc("c");
    other.load_balancer_class = Some("someone-else".into());
    let views = [held, other];
    let (_, out) = Allocator::fresh(cfg(TWO_POOLS), CLASS, &views);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.as_ref().unwrap().ips, vec![ip("192.0.2.11")]);
}

#[test]
fn fresh_with_overlapping_ranges_gives_what_restore_all_then_allocate_all_gives() {
    // Only a hand-built config can overlap (validation refuses it): pool "a" is .10 alone, pool
    // "b" is .10-.11. The restored address .10 is taken in "a" only, so "b" can still hand it out;
    // a Service kept right after its restore is not final here.
    let mut c =
        cfg("address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.10/32]\n");
    c.pools.extend(
        cfg(
            "address-pools:\n- name: b\n  protocol: layer2\n  addresses: [192.0.2.10-192.0.2.11]\n",
        )
        .pools,
    );
    let mut x = svc("x");
    x.load_balancer_ip = Some("192.0.2.10".into());
    x.ingress_ips = vec![ip("192.0.2.10")];
    let views = [svc("w"), x];

    let mut two_pass = Allocator::new(c.clone(), CLASS);
    for v in &views {
        let _ = two_pass.restore(v);
    }
    let want: Vec<_> = views.iter().map(|v| two_pass.allocate(v)).collect();
    let (a, got) = Allocator::fresh(c, CLASS, &views);
    let got: Vec<_> = got.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, want);
    assert_eq!(a.assignments(), two_pass.assignments());
    // And no address is held twice by Services that may not share it.
    assert!(
        matches!(got[1], Err(AllocError::SharingConflict { .. })),
        "{got:?}"
    );
}
