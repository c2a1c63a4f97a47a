//! The churn soak's pure parts: a deterministic plan of create/delete waves and the Services it
//! leaves, BIRD route-table parsing, and the agreement check between what should exist and what
//! the cluster, the controller's metrics and BIRD show ([`disagreements`]).
//!
//! The plan keeps the number of live Services bounded (pools are finite) while the total number
//! of creates grows: each wave creates `wave` Services (every `recreate_every`-th one re-creates
//! a name deleted in an earlier wave, with its old pool) and deletes as many of the live ones as
//! it takes to come back to `live` at the end of the wave. The first `keep` Services are never
//! deleted. Deletes only pick Services that existed before the wave, re-creates only names
//! deleted before the wave, so every wave's operations may run concurrently.
//!
//! Must not: talk to the apiserver or the network (the test does).

use std::collections::{BTreeMap, BTreeSet};

/// Which pool a churned Service asks for (`metallb.universe.tf/address-pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    Layer2,
    Bgp,
}

impl Pool {
    /// The pool's name in the test's config.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Layer2 => "l2",
            Pool::Bgp => "bgp",
        }
    }
}

/// One API operation of a wave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a Service (`recreate`: the name existed before and was deleted).
    Create {
        name: String,
        pool: Pool,
        recreate: bool,
    },
    /// Delete a Service.
    Delete { name: String },
}

/// The shape of a churn run.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Creates over the whole run (re-creates included).
    pub total_creates: usize,
    /// Live Services at the end of every full wave.
    pub live: usize,
    /// Creates per wave.
    pub wave: usize,
    /// Every n-th new Service goes to the layer2 pool, the others to the bgp pool.
    pub layer2_every: usize,
    /// The first `keep` Services are never deleted.
    pub keep: usize,
    /// Every n-th create of a wave re-creates a deleted name (when one is available).
    pub recreate_every: usize,
}

/// Waves of operations and what they leave behind.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub waves: Vec<Vec<Op>>,
    /// The Services that exist after the last wave, with their pools.
    pub final_live: BTreeMap<String, Pool>,
    pub creates: usize,
    pub recreates: usize,
    pub deletes: usize,
    /// The most Services that can exist at once (during a wave, deletes and creates overlap).
    pub peak_live: usize,
    /// The most Services of each pool that can exist at once.
    pub peak_per_pool: BTreeMap<Pool, usize>,
}

/// xorshift64*: a small deterministic generator, so a failing run can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Builds the waves for `size` (see the module comment).
pub fn plan(size: &Size, seed: u64) -> Plan {
    assert!(size.wave > 0 && size.live >= size.keep && size.layer2_every > 0);
    let mut rng = Rng::new(seed);
    let mut out = Plan::default();
    // Live Services in creation order, their pools, the names that may be re-created.
    let mut live: Vec<String> = Vec::new();
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut gone: Vec<String> = Vec::new();
    let mut serial = 0usize;
    while out.creates < size.total_creates {
        let n_create = size.wave.min(size.total_creates - out.creates);
        let n_delete = (live.len() + n_create).saturating_sub(size.live);
        let mut ops = Vec::with_capacity(n_create + n_delete);
        // Deletes: random live Services that are not kept.
        let mut deleted_now = Vec::new();
        for _ in 0..n_delete {
            let candidates: Vec<usize> = (0..live.len())
                .filter(|&i| !kept.contains(&live[i]))
                .collect();
            if candidates.is_empty() {
                break;
            }
            let name = live.remove(candidates[rng.below(candidates.len())]);
            ops.push(Op::Delete { name: name.clone() });
            deleted_now.push(name);
        }
        let live_before_creates = live.len() + deleted_now.len();
        // Creates: new names, and every `recreate_every`-th a name deleted in an earlier wave.
        let mut created_now = Vec::new();
        for j in 0..n_create {
            let recreate =
                size.recreate_every > 0 && j % size.recreate_every == 0 && !gone.is_empty();
            let name = if recreate {
                gone.swap_remove(rng.below(gone.len()))
            } else {
                let name = format!("c{serial}");
                let pool = if serial % size.layer2_every == 0 {
                    Pool::Layer2
                } else {
                    Pool::Bgp
                };
                pools.insert(name.clone(), pool);
                if serial < size.keep {
                    kept.insert(name.clone());
                }
                serial += 1;
                name
            };
            ops.push(Op::Create {
                name: name.clone(),
                pool: pools[&name],
                recreate,
            });
            created_now.push(name);
            out.creates += 1;
            out.recreates += usize::from(recreate);
        }
        // Peak during this wave: everything before it plus everything it creates.
        let mut in_wave: BTreeMap<Pool, usize> = BTreeMap::new();
        for name in live.iter().chain(&deleted_now).chain(&created_now) {
            *in_wave.entry(pools[name]).or_default() += 1;
        }
        out.peak_live = out.peak_live.max(live_before_creates + created_now.len());
        for (pool, n) in in_wave {
            let e = out.peak_per_pool.entry(pool).or_default();
            *e = (*e).max(n);
        }
        out.deletes += deleted_now.len();
        live.extend(created_now);
        gone.extend(deleted_now);
        // Interleave deletes and creates so that both run throughout the wave.
        let (mut d, mut c): (Vec<Op>, Vec<Op>) = ops
            .into_iter()
            .partition(|o| matches!(o, Op::Delete { .. }));
        let mut mixed = Vec::with_capacity(d.len() + c.len());
        d.reverse();
        c.reverse();
        while !d.is_empty() || !c.is_empty() {
            if let Some(o) = d.pop() {
                mixed.push(o);
            }
            if let Some(o) = c.pop() {
                mixed.push(o);
            }
        }
        out.waves.push(mixed);
    }
    out.final_live = live.into_iter().map(|n| (n.clone(), pools[&n])).collect();
    out
}

/// `true` when `ip` (dotted IPv4) lies in `first..=last` (dotted IPv4).
pub fn ipv4_in(ip: &str, first: &str, last: &str) -> bool {
    let p = |s: &str| s.parse::<std::net::Ipv4Addr>().map(u32::from).ok();
    match (p(ip), p(first), p(last)) {
        (Some(ip), Some(a), Some(b)) => a <= ip && ip <= b,
        _ => false,
    }
}

/// The host addresses of `birdc show route [...]` output: the first word of every line that
/// starts a network (`198.51.100.7/32   unicast [from_a ...`), `/32` and `/128` dropped.
pub fn bird_prefixes(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_hexdigit()))
        .map(|w| {
            w.strip_suffix("/32")
                .or_else(|| w.strip_suffix("/128"))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

/// `(routes, networks)` from `birdc show route count` (`12 of 12 routes for 6 networks in
/// table master4`); summed over tables.
pub fn bird_route_count(out: &str) -> Option<(u64, u64)> {
    let mut found = None;
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // "<n> of <m> routes for <k> networks ..."
        if w.len() >= 6 && w[1] == "of" && w[3] == "routes" && w[4] == "for" {
            let routes: u64 = w[2].parse().ok()?;
            let networks: u64 = w[5].parse().ok()?;
            let (r, n) = found.unwrap_or((0, 0));
            found = Some((r + routes, n + networks));
        }
    }
    found
}

/// `(min, median, max)` of some durations in seconds (zeros when empty).
pub fn spread(secs: &[f64]) -> (f64, f64, f64) {
    if secs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = secs.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The memory bound of the soak: `baseline + max(20 %, 8 MiB)`, in KiB.
pub fn rss_bound_kib(baseline_kib: u64) -> u64 {
    baseline_kib + (baseline_kib / 5).max(8 * 1024)
}

/// The churn soak's layer2 pool (on the speaker lab's segment) and its bgp pool's two ranges.
pub const L2_RANGE: (&str, &str) = ("192.0.2.32", "192.0.2.191");
pub const BGP_RANGES: [(&str, &str); 2] = [
    ("198.51.100.0", "198.51.100.255"),
    ("203.0.113.0", "203.0.113.255"),
];

/// The churn soak's config: those two pools, and BIRD at 192.0.2.254 as the bgp peer.
pub const CONFIG: &str = "\
peers:
- peer-address: 192.0.2.254
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: l2
  protocol: layer2
  addresses:
  - 192.0.2.32-192.0.2.191
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.0/24
  - 203.0.113.0/24
";

/// Every address of the churn soak's layer2 pool.
pub fn l2_addresses() -> Vec<String> {
    let bound = |ip: &str| ip.parse::<std::net::Ipv4Addr>().map(u32::from).ok();
    match (bound(L2_RANGE.0), bound(L2_RANGE.1)) {
        (Some(first), Some(last)) => (first..=last)
            .map(|n| std::net::Ipv4Addr::from(n).to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// The pool `ip` belongs to, if any.
pub fn pool_of(ip: &str) -> Option<Pool> {
    if ipv4_in(ip, L2_RANGE.0, L2_RANGE.1) {
        Some(Pool::Layer2)
    } else if BGP_RANGES.iter().any(|(a, b)| ipv4_in(ip, a, b)) {
        Some(Pool::Bgp)
    } else {
        None
    }
}

/// `metallb_allocator_addresses_in_use_total{pool="POOL"}` from a /metrics page.
pub fn pool_in_use(metrics: &str, pool: &str) -> Option<u64> {
    let prefix = format!("metallb_allocator_addresses_in_use_total{{pool=\"{pool}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// What the churn soak compares: Service statuses, the controller's pool usage, BIRD's table.
#[derive(Debug)]
pub struct View {
    /// Ingress IPs per Service name (every Service in the test's namespace).
    pub ingress: BTreeMap<String, Vec<String>>,
    /// [`pool_in_use`] per pool.
    pub in_use: BTreeMap<Pool, Option<u64>>,
    /// [`bird_prefixes`] of `show route`.
    pub bird_networks: BTreeSet<String>,
    /// [`bird_route_count`] of `show route count`.
    pub bird_count: Option<(u64, u64)>,
}

/// Every disagreement between `view` and the Services that should exist (`want`), empty when
/// they agree: each Service exactly one IP, unique, from its pool, no other Service in `apps`;
/// pool usage equal to the Services per pool; BIRD holds exactly the bgp Services' addresses,
/// each from both speakers.
pub fn disagreements(view: &View, want: &BTreeMap<String, Pool>) -> Vec<String> {
    let mut bad = Vec::new();
    let mut holders: BTreeMap<&str, &str> = BTreeMap::new();
    let mut bgp_ips = BTreeSet::new();
    for (name, ips) in &view.ingress {
        let Some(pool) = want.get(name) else {
            bad.push(format!("{name} exists but was deleted"));
            continue;
        };
        if ips.len() != 1 {
            bad.push(format!("{name} holds {ips:?}"));
            continue;
        }
        let ip = ips[0].as_str();
        if pool_of(ip) != Some(*pool) {
            bad.push(format!("{name} ({pool:?}) holds {ip}, not from its pool"));
        }
        if let Some(other) = holders.insert(ip, name) {
            bad.push(format!("{ip} held by {other} and {name}"));
        }
        if *pool == Pool::Bgp {
            bgp_ips.insert(ip.to_string());
        }
    }
    for name in want.keys() {
        if !view.ingress.contains_key(name) {
            bad.push(format!("{name} missing"));
        }
    }
    for pool in [Pool::Layer2, Pool::Bgp] {
        let n = want.values().filter(|&&p| p == pool).count() as u64;
        if view.in_use.get(&pool).copied().flatten() != Some(n) {
            bad.push(format!(
                "pool {} in use {:?}, {n} Services",
                pool.name(),
                view.in_use.get(&pool).copied().flatten()
            ));
        }
    }
    if view.bird_networks != bgp_ips {
        let stale: Vec<_> = view.bird_networks.difference(&bgp_ips).take(5).collect();
        let missing: Vec<_> = bgp_ips.difference(&view.bird_networks).take(5).collect();
        bad.push(format!(
            "BIRD has {} networks, {} bgp Services; stale e.g. {stale:?}, missing e.g. {missing:?}",
            view.bird_networks.len(),
            bgp_ips.len()
        ));
    }
    let n = bgp_ips.len() as u64;
    let want_count = if n == 0 { None } else { Some((2 * n, n)) };
    if view.bird_count.filter(|&c| c != (0, 0)) != want_count {
        bad.push(format!(
            "BIRD route count (routes, networks) {:?}, want {want_count:?}",
            view.bird_count
        ));
    }
    bad
}

/// How many Services exist after wave `w` of `plan`.
pub fn live_after_wave(plan: &Plan, w: usize) -> usize {
    plan.waves[..=w]
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Create { .. } => 1i64,
            Op::Delete { .. } => -1,
        })
        .sum::<i64>() as usize
}

/// Up to `n` items spread evenly over `items`.
pub fn sample<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(p: &Plan) -> BTreeMap<String, Pool> {
        let mut live = BTreeMap::new();
        for wave in &p.waves {
            let before = live.clone();
            for op in wave {
                match op {
                    Op::Create { name, pool, .. } => {
                        assert!(!before.contains_key(name), "{name} created while live");
                        assert!(live.insert(name.clone(), *pool).is_none());
                    }
                    Op::Delete { name } => {
                        assert!(
                            before.contains_key(name),
                            "{name} deleted before it existed"
                        );
                        assert!(live.remove(name).is_some());
                    }
                }
            }
        }
        live
    }

    #[test]
    fn plan_counts_and_final_state_agree_with_a_replay() {
        let size = Size {
            total_creates: 400,
            live: 120,
            wave: 60,
            layer2_every: 5,
            keep: 24,
            recreate_every: 4,
        };
        let p = plan(&size, 7);
        assert_eq!(p.creates, 400);
        let ops: usize = p.waves.iter().map(Vec::len).sum();
        assert_eq!(ops, p.creates + p.deletes);
        assert_eq!(p.creates - p.deletes, p.final_live.len());
        assert_eq!(replay(&p), p.final_live);
        assert_eq!(p.final_live.len(), 120);
        assert!(p.recreates > 0, "some names come back");
        assert!(p.peak_live <= size.live + size.wave);
        for k in 0..size.keep {
            assert!(p.final_live.contains_key(&format!("c{k}")), "c{k} is kept");
        }
        assert!(p.final_live.values().any(|&x| x == Pool::Layer2));
        assert!(p.final_live.values().any(|&x| x == Pool::Bgp));
        assert!(p.peak_per_pool[&Pool::Layer2] <= p.peak_live);
        // Deterministic.
        assert_eq!(plan(&size, 7).waves, p.waves);
    }

    #[test]
    fn a_recreated_name_keeps_its_pool() {
        let size = Size {
            total_creates: 1000,
            live: 50,
            wave: 20,
            layer2_every: 3,
            keep: 5,
            recreate_every: 2,
        };
        let p = plan(&size, 1);
        let mut pools = BTreeMap::new();
        for op in p.waves.iter().flatten() {
            if let Op::Create { name, pool, .. } = op {
                assert_eq!(*pools.entry(name.clone()).or_insert(*pool), *pool);
            }
        }
        assert_eq!(replay(&p), p.final_live);
    }

    #[test]
    fn bird_output_parses() {
        let out = "BIRD 2.0.12 ready.\nTable master4:\n198.51.100.7/32      unicast [from_a 20:30:01.123] * (100) [AS64512i]\n\tvia 192.0.2.11 on eth0\n                     unicast [from_b 20:30:01.456] (100) [AS64512i]\n\tvia 192.0.2.12 on eth0\n203.0.113.1/32       unicast [from_a 20:30:01.123] * (100) [AS64512i]\n\tvia 192.0.2.11 on eth0\n";
        let set = bird_prefixes(out);
        assert_eq!(
            set,
            BTreeSet::from(["198.51.100.7".to_string(), "203.0.113.1".to_string()])
        );
        assert!(bird_prefixes("BIRD 2.0.12 ready.\n").is_empty());
        let count = "BIRD 2.0.12 ready.\n3 of 3 routes for 2 networks in table master4\n0 of 0 routes for 0 networks in table master6\nTotal: 3 of 3 routes for 2 networks in 2 tables\n";
        assert_eq!(bird_route_count(count), Some((3, 2)));
        assert_eq!(bird_route_count("BIRD 2.0.12 ready.\n"), None);
    }

    #[test]
    fn ranges_and_bounds() {
        assert!(ipv4_in("192.0.2.40", "192.0.2.32", "192.0.2.191"));
        assert!(!ipv4_in("192.0.2.192", "192.0.2.32", "192.0.2.191"));
        assert!(!ipv4_in("2001:db8::1", "192.0.2.32", "192.0.2.191"));
        assert_eq!(rss_bound_kib(10 * 1024), 18 * 1024);
        assert_eq!(rss_bound_kib(100 * 1024), 120 * 1024);
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        let me = crate::procfs::cpu_secs(std::process::id()).unwrap();
        assert!(me >= 0.0);
    }

    fn view(ingress: &[(&str, &str)], in_use: (u64, u64), bird: &[&str]) -> View {
        View {
            ingress: ingress
                .iter()
                .map(|(n, ip)| (n.to_string(), vec![ip.to_string()]))
                .collect(),
            in_use: BTreeMap::from([(Pool::Layer2, Some(in_use.0)), (Pool::Bgp, Some(in_use.1))]),
            bird_networks: bird.iter().map(|s| s.to_string()).collect(),
            bird_count: (!bird.is_empty()).then(|| (2 * bird.len() as u64, bird.len() as u64)),
        }
    }

    #[test]
    fn agreement_and_each_kind_of_disagreement() {
        let want = BTreeMap::from([
            ("a".to_string(), Pool::Layer2),
            ("b".to_string(), Pool::Bgp),
        ]);
        let good = view(
            &[("a", "192.0.2.40"), ("b", "198.51.100.7")],
            (1, 1),
            &["198.51.100.7"],
        );
        assert_eq!(disagreements(&good, &want), Vec::<String>::new());
        // Nothing wanted, nothing there (BIRD's count of an empty table reads as (0, 0)).
        let mut empty = view(&[], (0, 0), &[]);
        empty.bird_count = Some((0, 0));
        assert_eq!(
            disagreements(&empty, &BTreeMap::new()),
            Vec::<String>::new()
        );

        let wrong_pool = view(
            &[("a", "198.51.100.9"), ("b", "198.51.100.7")],
            (1, 1),
            &["198.51.100.7"],
        );
        let bad = disagreements(&wrong_pool, &want);
        assert!(
            bad.iter().any(|b| b.contains("not from its pool")),
            "{bad:?}"
        );
        let twice = view(&[("a", "192.0.2.40"), ("b", "192.0.2.40")], (1, 1), &[]);
        let bad = disagreements(
            &twice,
            &BTreeMap::from([("a".into(), Pool::Layer2), ("b".into(), Pool::Layer2)]),
        );
        assert!(bad.iter().any(|b| b.contains("held by a and b")), "{bad:?}");
        let deleted = view(
            &[
                ("a", "192.0.2.40"),
                ("b", "198.51.100.7"),
                ("gone", "192.0.2.41"),
            ],
            (1, 1),
            &["198.51.100.7"],
        );
        assert!(disagreements(&deleted, &want)
            .iter()
            .any(|b| b == "gone exists but was deleted"));
        let missing = view(&[("a", "192.0.2.40")], (1, 0), &[]);
        assert!(disagreements(&missing, &want)
            .iter()
            .any(|b| b == "b missing"));
        let usage = view(
            &[("a", "192.0.2.40"), ("b", "198.51.100.7")],
            (2, 1),
            &["198.51.100.7"],
        );
        assert!(disagreements(&usage, &want)
            .iter()
            .any(|b| b.starts_with("pool l2 in use Some(2)")));
        let stale = view(
            &[("a", "192.0.2.40"), ("b", "198.51.100.7")],
            (1, 1),
            &["198.51.100.7", "198.51.100.8"],
        );
        assert!(disagreements(&stale, &want)
            .iter()
            .any(|b| b.contains("stale e.g. [\"198.51.100.8\"]")));
        let mut one_speaker = good;
        one_speaker.bird_count = Some((1, 1));
        assert!(disagreements(&one_speaker, &want)
            .iter()
            .any(|b| b.starts_with("BIRD route count")));
    }

    #[test]
    fn pools_metrics_samples_and_live_counts() {
        let l2 = l2_addresses();
        assert_eq!(l2.len(), 160);
        assert_eq!((l2[0].as_str(), l2[159].as_str()), L2_RANGE);
        assert_eq!(pool_of("192.0.2.32"), Some(Pool::Layer2));
        assert_eq!(pool_of("203.0.113.255"), Some(Pool::Bgp));
        assert_eq!(pool_of("192.0.2.1"), None);
        let metrics = "# HELP x\nmetallb_allocator_addresses_in_use_total{pool=\"l2\"} 7\n";
        assert_eq!(pool_in_use(metrics, "l2"), Some(7));
        assert_eq!(pool_in_use(metrics, "bgp"), None);
        assert_eq!(sample(&[1, 2, 3], 5), vec![1, 2, 3]);
        assert_eq!(
            sample(&(0..100).collect::<Vec<_>>(), 4),
            vec![0, 25, 50, 75]
        );
        let size = Size {
            total_creates: 100,
            live: 30,
            wave: 20,
            layer2_every: 5,
            keep: 5,
            recreate_every: 4,
        };
        let p = plan(&size, 3);
        assert_eq!(live_after_wave(&p, 0), 20);
        assert_eq!(live_after_wave(&p, p.waves.len() - 1), p.final_live.len());
    }
}
