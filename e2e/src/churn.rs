//! The churn soak's pure parts: a deterministic plan of create/delete waves and the Services it
//! leaves, BIRD route-table parsing, and a sampler of processes' resident memory.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// `VmHWM` (peak resident set) of a process in KiB.
pub fn hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?
        .parse()?)
}

/// User + system CPU time a process has used so far, in seconds (`/proc/PID/stat`, assuming
/// the usual 100 clock ticks per second).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name: state is the 1st, utime the 12th, stime the 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(f.len() > 13, "short /proc/{pid}/stat");
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
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

/// Samples the `VmRSS` of some processes every `every` on a thread, keeping the highest seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RssSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RssSampler")
            .field("peaks", &self.peaks())
            .finish()
    }
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(vec![0u64; pids.len()]));
        let thread = {
            let stop = stop.clone();
            let peaks = peaks.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (i, pid) in pids.iter().enumerate() {
                        if let Ok(kib) = rss_kib(*pid) {
                            let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                            p[i] = p[i].max(kib);
                        }
                    }
                    std::thread::sleep(every);
                }
            })
        };
        RssSampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// The highest `VmRSS` seen so far per process, in KiB (in the order given to `start`).
    pub fn peaks(&self) -> Vec<u64> {
        self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
        let me = cpu_secs(std::process::id()).unwrap();
        assert!(me >= 0.0);
    }
}
