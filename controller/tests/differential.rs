//! The allocator against the naive model of its rules (`tests/model`): random sequences of
//! allocations, restores, releases, config changes and restarts, on random valid configs and
//! Services with every kind of request, sharing key, family policy and status, must give the same
//! addresses and pools to every Service, fail in the same places, refuse the same config changes
//! for the same held addresses, and count the same usage per pool.

// Test helpers outside #[test] functions unwrap fixed, known-good inputs.
#![allow(clippy::unwrap_used)]

mod model;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::service::annotations;
use ferrolb_config::{
    Config, IpFamily, IpFamilyPolicy, ServiceKey, ServicePort, ServiceView, TrafficPolicy,
};
use ferrolb_controller::allocator::{AllocError, Allocator, Assigned};
use model::{Held, Model, Outcome};
use proptest::prelude::*;

const CLASS: &str = "ferrolb";

/// Disjoint ranges (documentation prefixes) that random configs spread over their pools: with
/// `.255`/`.0` inside, single addresses, IPv4 and IPv6.
const RANGES: [&str; 9] = [
    "198.51.100.254-198.51.101.1",
    "2001:db8:1::/126",
    "203.0.113.0/30",
    "192.0.2.8/30",
    "192.0.2.0/30",
    "2001:db8:2::/127",
    "192.0.2.64/31",
    "2001:db8:3::/127",
    "192.0.2.16/32",
];

const POOLS: [&str; 5] = ["small", "manual", "v4", "v6", "dual"];

/// Addresses Services ask for or hold: in the ranges (some buggy), outside them, malformed.
const ADDRESSES: [&str; 22] = [
    "192.0.2.0",
    "192.0.2.1",
    "192.0.2.3",
    "192.0.2.8",
    "192.0.2.9",
    "192.0.2.16",
    "192.0.2.64",
    "192.0.2.65",
    "198.51.100.254",
    "198.51.100.255",
    "198.51.101.0",
    "198.51.101.1",
    "203.0.113.0",
    "203.0.113.3",
    "2001:db8:1::",
    "2001:db8:1::3",
    "2001:db8:2::1",
    "2001:db8:3::",
    "2001:db8:3::1",
    "192.0.2.100",
    "2001:db8:9::1",
    "banana",
];

/// A valid config: each range in pool `slots[i]` (5 and up: in none), pools in `order`, each with
/// its `auto-assign` and `avoid-buggy-ips`.
fn config(slots: &[usize], flags: &[(bool, bool)], order: &[usize]) -> Config {
    let mut yaml = String::from("address-pools:\n");
    for &p in order {
        let ranges: Vec<&str> = RANGES
            .iter()
            .zip(slots)
            .filter(|(_, s)| **s == p)
            .map(|(r, _)| *r)
            .collect();
        if ranges.is_empty() {
            continue;
        }
        let (auto, avoid) = flags[p];
        yaml.push_str(&format!(
            "- name: {}\n  protocol: layer2\n  auto-assign: {auto}\n  avoid-buggy-ips: {avoid}\n  addresses: ['{}']\n",
            POOLS[p],
            ranges.join("', '")
        ));
    }
    ferrolb_config::parse(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e:?}"))
}

fn config_strategy() -> impl Strategy<Value = Config> {
    (
        proptest::collection::vec(0usize..7, RANGES.len()),
        proptest::collection::vec(
            (
                proptest::bool::weighted(0.75),
                proptest::bool::weighted(0.4),
            ),
            POOLS.len(),
        ),
        Just((0..POOLS.len()).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(mut slots, flags, order)| {
            // At least one range in a pool.
            if slots.iter().all(|s| *s >= POOLS.len()) {
                slots[0] = 0;
            }
            config(&slots, &flags, &order)
        })
}

/// Everything about a Service the rules look at, as small numbers.
#[derive(Debug, Clone)]
struct Shape {
    n: u8,
    families: u8,
    policy: u8,
    ports: Vec<(bool, u16)>,
    local: Option<u8>,
    share: u8,
    request: u8,
    first: usize,
    second: usize,
    pool: u8,
    class: u8,
    status: Vec<usize>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        (0u8..16, 0u8..7, 0u8..3),
        proptest::collection::vec((proptest::bool::weighted(0.3), 80u16..83), 0..3),
        proptest::option::weighted(0.2, 0u8..2),
        (0u8..6, 0u8..8),
        (0..ADDRESSES.len(), 0..ADDRESSES.len(), 0u8..8),
        0u8..20,
        proptest::collection::vec(0..ADDRESSES.len() - 1, 0..4),
    )
        .prop_map(
            |(
                (n, families, policy),
                ports,
                local,
                (share, request),
                (first, second, pool),
                class,
                status,
            )| Shape {
                n,
                families,
                policy,
                ports,
                local,
                share,
                request,
                first,
                second,
                pool,
                class,
                status,
            },
        )
}

fn key(n: u8) -> ServiceKey {
    ServiceKey::new(["a", "b"][usize::from(n % 2)], format!("s{}", n / 2))
}

fn view(s: &Shape) -> ServiceView {
    let mut v = ServiceView::new_load_balancer(key(s.n));
    let (v4, v6) = (IpFamily::V4, IpFamily::V6);
    v.ip_families = match s.families {
        0..=2 => Vec::new(),
        3 => vec![v4],
        4 => vec![v6],
        5 => vec![v4, v6],
        _ => vec![v6, v4],
    };
    // Without families the cluster IPs decide.
    v.cluster_ips = match s.families {
        1 => vec!["2001:db8:ff::1".parse().unwrap()],
        2 => vec!["192.0.2.200".parse().unwrap()],
        _ => Vec::new(),
    };
    v.ip_family_policy = [
        IpFamilyPolicy::SingleStack,
        IpFamilyPolicy::PreferDualStack,
        IpFamilyPolicy::RequireDualStack,
    ][usize::from(s.policy)];
    v.ports = s
        .ports
        .iter()
        .map(|&(udp, port)| ServicePort {
            protocol: if udp { "UDP" } else { "TCP" }.into(),
            port,
        })
        .collect();
    if let Some(app) = s.local {
        v.external_traffic_policy = TrafficPolicy::Local;
        if app > 0 {
            v.selector.insert("app".into(), format!("a{app}"));
        }
    }
    let share = ["", "k", " k ", "j", " "][usize::from(s.share % 5)];
    if s.share < 5 {
        v.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), share.into());
    }
    let (first, second) = (ADDRESSES[s.first], ADDRESSES[s.second]);
    let pool = ["small", "manual", "v4", "v6", "dual", "nope", "", " dual "][usize::from(s.pool)];
    match s.request {
        0 | 1 => {}
        2 => v.load_balancer_ip = Some(format!(" {first}")),
        3 => {
            v.annotations.insert(
                annotations::LOAD_BALANCER_IPS.into(),
                format!("{first},{second}"),
            );
        }
        4 => {
            v.annotations.insert(
                annotations::LOAD_BALANCER_IPS.into(),
                format!(" {first} , "),
            );
        }
        5 => {
            v.annotations
                .insert(annotations::ADDRESS_POOL.into(), pool.into());
        }
        6 => {
            v.load_balancer_ip = Some(first.into());
            v.annotations
                .insert(annotations::ADDRESS_POOL.into(), pool.into());
        }
        _ => {
            v.load_balancer_ip = Some(first.into());
            v.annotations
                .insert(annotations::LOAD_BALANCER_IPS.into(), second.into());
        }
    }
    match s.class {
        0 => v.load_balancer_class = Some("other".into()),
        1 => v.load_balancer_class = Some(CLASS.into()),
        2 => v.is_load_balancer = false,
        _ => {}
    }
    v.ingress_ips = s
        .status
        .iter()
        .map(|i| ADDRESSES[*i].parse().unwrap())
        .collect();
    v
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(Shape),
    Release(u8),
    Restore(Shape),
    SetConfig(Config),
    /// A restart with this config; `true`: the Services' statuses say what the allocator holds
    /// (a clean restart), `false`: what each view last said.
    Fresh(Config, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => shape().prop_map(Op::Allocate),
        3 => (0u8..16).prop_map(Op::Release),
        3 => shape().prop_map(Op::Restore),
        1 => config_strategy().prop_map(Op::SetConfig),
        1 => (config_strategy(), proptest::bool::ANY).prop_map(|(c, b)| Op::Fresh(c, b)),
    ]
}

fn held(a: &Assigned) -> Held {
    (a.ips.to_vec(), a.pool.to_string())
}

fn outcome(r: Result<Assigned, AllocError>) -> Result<Held, ()> {
    r.as_ref().map(held).map_err(|_| ())
}

fn same_state(a: &Allocator, m: &Model) -> Result<(), TestCaseError> {
    let got: BTreeMap<ServiceKey, Held> = a
        .assignments()
        .iter()
        .map(|(k, x)| (k.clone(), held(x)))
        .collect();
    let want = m.assignments();
    let pairs: Vec<(ServiceKey, IpAddr)> = want
        .iter()
        .flat_map(|(k, (ips, _))| ips.iter().map(move |ip| (k.clone(), *ip)))
        .collect();
    prop_assert_eq!(a.held(), pairs);
    prop_assert_eq!(a.len(), want.len());
    prop_assert_eq!(got, want);
    let usage: Vec<(String, u128, u64)> = a
        .usage()
        .into_iter()
        .map(|u| (u.pool, u.addresses_total, u.in_use))
        .collect();
    prop_assert_eq!(usage, m.usage());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_allocator_follows_the_model(
        first in config_strategy(),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        let mut a = Allocator::new(first.clone(), CLASS);
        let mut m = Model::new(first, CLASS);
        // The last view of each Service, for restarts.
        let mut seen: BTreeMap<ServiceKey, ServiceView> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate(s) => {
                    let mut v = view(&s);
                    v.ingress_ips.clear();
                    prop_assert_eq!(outcome(a.allocate(&v)), m.allocate(&v), "allocate {:?}", v);
                    seen.insert(v.key.clone(), v);
                }
                Op::Release(n) => {
                    let k = key(n);
                    prop_assert_eq!(a.release(&k).as_ref().map(held), m.release(&k));
                }
                Op::Restore(s) => {
                    let v = view(&s);
                    let got = a.restore(&v).map(|r| r.as_ref().map(held)).map_err(|_| ());
                    prop_assert_eq!(got, m.restore(&v), "restore {:?}", v);
                    seen.insert(v.key.clone(), v);
                }
                Op::SetConfig(c) => {
                    let got = a
                        .set_config(c.clone())
                        .map_err(|b| b.into_iter().map(|b| (b.service, b.ip)).collect::<Vec<_>>());
                    prop_assert_eq!(got, m.set_config(c));
                }
                Op::Fresh(c, clean) => {
                    let views: Vec<ServiceView> = seen
                        .values()
                        .map(|v| {
                            let mut v = v.clone();
                            if clean {
                                v.ingress_ips = a.assignment(&v.key).map(|x| x.ips.to_vec()).unwrap_or_default();
                            }
                            v
                        })
                        .collect();
                    let (fresh, got) = Allocator::fresh(c.clone(), CLASS, &views);
                    let got: Vec<Outcome> =
                        got.into_iter().map(|(k, r)| (k.clone(), outcome(r))).collect();
                    let (fresh_model, want) = Model::fresh(c, CLASS, &views);
                    prop_assert_eq!(got, want);
                    a = fresh;
                    m = fresh_model;
                }
            }
            same_state(&a, &m)?;
        }
    }
}

/// The model itself on the README's examples, so a disagreement points at the right side.
#[test]
fn the_model_follows_the_documented_rules() {
    let flags = [
        (true, true),
        (false, false),
        (true, false),
        (true, false),
        (true, false),
    ];
    let c = config(&[0, 0, 1, 2, 2, 3, 4, 4, 5], &flags, &[0, 1, 2, 3, 4]);
    let mut m = Model::new(c, CLASS);
    let svc = |n: u8| ServiceView::new_load_balancer(key(n));
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    // Pools in config order, lowest first, .255 and .0 skipped in an avoid-buggy-ips pool.
    let got: Vec<Result<Held, ()>> = (0..3).map(|n| m.allocate(&svc(n))).collect();
    assert_eq!(
        got,
        [
            Ok((vec![ip("198.51.100.254")], "small".into())),
            Ok((vec![ip("198.51.101.1")], "small".into())),
            Ok((vec![ip("192.0.2.0")], "v4".into())),
        ]
    );
    // auto-assign: false pools only by request.
    let mut by_pool = svc(3);
    by_pool
        .annotations
        .insert(annotations::ADDRESS_POOL.into(), "manual".into());
    assert_eq!(
        m.allocate(&by_pool),
        Ok((vec![ip("203.0.113.0")], "manual".into()))
    );
    // Sharing: same key, other port, lands on the key's address even though lower ones are free.
    let shared = |n: u8, port: u16, at: Option<&str>| {
        let mut v = svc(n);
        v.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
        v.ports = vec![ServicePort {
            protocol: "TCP".into(),
            port,
        }];
        v.load_balancer_ip = at.map(String::from);
        v
    };
    assert_eq!(
        m.allocate(&shared(4, 80, Some("192.0.2.3"))),
        Ok((vec![ip("192.0.2.3")], "v4".into()))
    );
    assert_eq!(
        m.allocate(&shared(5, 443, None)),
        Ok((vec![ip("192.0.2.3")], "v4".into()))
    );
    // The same port cannot share: the lowest free address instead; asking for it fails.
    assert_eq!(
        m.allocate(&shared(6, 80, None)),
        Ok((vec![ip("192.0.2.1")], "v4".into()))
    );
    assert_eq!(m.allocate(&shared(7, 443, Some("192.0.2.3"))), Err(()));
    // Dual-stack from one pool; PreferDualStack falls back to the primary family.
    let mut dual = svc(8);
    dual.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    assert_eq!(
        m.allocate(&dual),
        Ok((vec![ip("192.0.2.64"), ip("2001:db8:3::")], "dual".into()))
    );
    let mut v6 = svc(9);
    v6.ip_families = vec![IpFamily::V6];
    v6.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    assert_eq!(
        m.allocate(&v6),
        Ok((vec![ip("2001:db8:3::1"), ip("192.0.2.65")], "dual".into()))
    );
    assert_eq!(
        m.allocate(&dual),
        Ok((vec![ip("192.0.2.64"), ip("2001:db8:3::")], "dual".into()))
    );
    let mut v6b = v6.clone();
    v6b.key = key(10);
    assert_eq!(
        m.allocate(&v6b),
        Ok((vec![ip("2001:db8:1::")], "small".into()))
    );
    // A restored address must be in a pool; restored, it is never handed to another Service.
    let mut old = svc(11);
    old.ingress_ips = vec![ip("192.0.2.16")];
    assert_eq!(m.restore(&old), Err(()));
    old.ingress_ips = vec![ip("192.0.2.2")];
    assert_eq!(
        m.restore(&old),
        Ok(Some((vec![ip("192.0.2.2")], "v4".into())))
    );
    assert_eq!(
        m.allocate(&svc(12)),
        Ok((vec![ip("192.0.2.8")], "v4".into()))
    );
    // A config without the v4 pool is refused for each of its six held addresses.
    let flags = [
        (true, true),
        (false, false),
        (true, false),
        (true, false),
        (true, false),
    ];
    let smaller = config(&[0, 0, 1, 5, 5, 3, 4, 4, 5], &flags, &[0, 1, 2, 3, 4]);
    assert_eq!(m.set_config(smaller).map_err(|b| b.len()), Err(6));
    assert_eq!(
        m.allocate(&svc(13)),
        Ok((vec![ip("192.0.2.9")], "v4".into()))
    );
}
