//! A naive model of the allocation rules, written from MetalLB's documentation of them and
//! ferrolb's README ("Allocation rules"), as the other side of the differential test in
//! `tests/differential.rs`. It shares no code with the allocator: it reads requests, families and
//! sharing keys from the Service view itself, decides pool membership from the config's ranges,
//! and keeps its state as one map of holdings that every question scans. Only the config types,
//! the Service view and `is_ours` (the one copy of the class rule, in `ferrolb_config`) come
//! from elsewhere.
//!
//! Where ferrolb deliberately differs from MetalLB 0.12, the model follows ferrolb and says so
//! (look for "ferrolb:"):
//! - pools are tried in config order (MetalLB iterates a Go map: random order);
//! - families come from `spec.ipFamilies` / `spec.ipFamilyPolicy` (MetalLB derives them from
//!   `spec.clusterIPs`), and `PreferDualStack` falls back to the primary family alone;
//! - a Service with a sharing key reuses the lowest compatible address its key already uses
//!   before any free one (MetalLB walks up from the lowest address and takes the first one that is
//!   free or compatible);
//! - `spec.loadBalancerClass` is honoured (MetalLB 0.12 ignores it; 0.13.2 added it);
//! - a restart restores every status before it allocates anything (MetalLB PR #2004, 0.14.2).
//!
//! Must not: import anything from `ferrolb_controller`, or be clever: every rule is a scan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_config::service::annotations;
use ferrolb_config::{
    is_ours, Config, IpFamily, IpFamilyPolicy, Pool, ServiceKey, ServicePort, ServiceView,
    TrafficPolicy,
};

/// What a Service holds: its addresses in order and the name of their pool.
pub type Held = (Vec<IpAddr>, String);

/// One Service's outcome of a restart: what it holds, or that it failed.
pub type Outcome = (ServiceKey, Result<Held, ()>);

/// What the sharing rules look at.
#[derive(Debug, Clone)]
struct Sharing {
    /// `metallb.universe.tf/allow-shared-ip`, trimmed; empty means none.
    key: Option<String>,
    ports: Vec<ServicePort>,
    /// `None` for `externalTrafficPolicy: Cluster`, the selector for `Local`.
    local_selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
struct Holding {
    ips: Vec<IpAddr>,
    pool: String,
    sharing: Sharing,
}

/// An exact request: addresses and/or a pool.
struct Request {
    ips: Vec<IpAddr>,
    pool: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    class: String,
    held: BTreeMap<ServiceKey, Holding>,
}

fn family(ip: &IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

/// `avoid-buggy-ips`: IPv4 addresses ending in .0 or .255.
fn buggy(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

/// True when `pool` may hand out `ip`.
fn assignable(pool: &Pool, ip: &IpAddr) -> bool {
    pool.ranges.iter().any(|r| r.contains(ip)) && !(pool.avoid_buggy_ips && buggy(ip))
}

fn as_number(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_number(f: IpFamily, n: u128) -> IpAddr {
    match f {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Every address of `pool` of family `f` (the test configs are small).
fn addresses(pool: &Pool, f: IpFamily) -> impl Iterator<Item = IpAddr> + '_ {
    pool.ranges
        .iter()
        .filter(move |r| r.family() == f)
        .flat_map(move |r| {
            let (first, last) = (as_number(&r.first()), as_number(&r.last()));
            assert!(
                last - first < 1 << 16,
                "the model walks ranges: keep them small"
            );
            (first..=last).map(move |n| from_number(f, n))
        })
}

fn other(f: IpFamily) -> IpFamily {
    match f {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

/// The families a Service needs, and with `PreferDualStack` the pair it tries first.
/// ferrolb: from `spec.ipFamilies` (else the cluster IPs, else IPv4) and the policy.
fn families(v: &ServiceView) -> (Vec<IpFamily>, Option<Vec<IpFamily>>) {
    let primary = v
        .ip_families
        .first()
        .copied()
        .or(v.cluster_ips.first().map(family))
        .unwrap_or(IpFamily::V4);
    let both = vec![primary, other(primary)];
    match v.ip_family_policy {
        IpFamilyPolicy::SingleStack => (vec![primary], None),
        IpFamilyPolicy::RequireDualStack => (both, None),
        IpFamilyPolicy::PreferDualStack => (vec![primary], Some(both)),
    }
}

/// The request of `v`; `None` when it is malformed: `spec.loadBalancerIP` and the
/// `loadBalancerIPs` annotation both set, something that is not an address, two addresses of one
/// family, or an empty pool name.
fn request(v: &ServiceView) -> Option<Request> {
    let lb_ip = v
        .load_balancer_ip
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let texts: Vec<&str> = match (lb_ip, v.annotations.get(annotations::LOAD_BALANCER_IPS)) {
        (Some(_), Some(_)) => return None,
        (Some(ip), None) => vec![ip],
        (None, Some(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for t in texts {
        let ip: IpAddr = t.parse().ok()?;
        if ips.iter().any(|o| family(o) == family(&ip)) {
            return None;
        }
        ips.push(ip);
    }
    let pool = match v.annotations.get(annotations::ADDRESS_POOL) {
        Some(p) if p.trim().is_empty() => return None,
        Some(p) => Some(p.trim().to_string()),
        None => None,
    };
    Some(Request { ips, pool })
}

fn sharing(v: &ServiceView) -> Sharing {
    Sharing {
        key: v
            .annotations
            .get(annotations::ALLOW_SHARED_IP)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()),
        ports: v.ports.clone(),
        local_selector: (v.external_traffic_policy == TrafficPolicy::Local)
            .then(|| v.selector.clone()),
    }
}

/// MetalLB's sharing rule: the same non-empty key, no protocol and port in common, and the same
/// backend: both `Cluster`, or both `Local` with the same selector.
fn may_share(a: &Sharing, b: &Sharing) -> bool {
    a.key.is_some()
        && a.key == b.key
        && !a.ports.iter().any(|p| b.ports.contains(p))
        && a.local_selector == b.local_selector
}

impl Model {
    pub fn new(config: Config, class: &str) -> Model {
        Model {
            config,
            class: class.to_string(),
            held: BTreeMap::new(),
        }
    }

    /// The first pool (config order) that may hand out `ip`.
    fn home(&self, ip: &IpAddr) -> Option<usize> {
        self.config.pools.iter().position(|p| assignable(p, ip))
    }

    fn is_held(&self, ip: &IpAddr) -> bool {
        self.held.values().any(|h| h.ips.contains(ip))
    }

    /// True when every Service but `me` that holds `ip` may share it with `s`.
    fn fits_holders(&self, ip: &IpAddr, s: &Sharing, me: &ServiceKey) -> bool {
        self.held
            .iter()
            .filter(|(k, h)| *k != me && h.ips.contains(ip))
            .all(|(_, h)| may_share(s, &h.sharing))
    }

    fn held_as(h: &Holding) -> Held {
        (h.ips.clone(), h.pool.clone())
    }

    /// Every Service's addresses and pool.
    pub fn assignments(&self) -> BTreeMap<ServiceKey, Held> {
        self.held
            .iter()
            .map(|(k, h)| (k.clone(), Model::held_as(h)))
            .collect()
    }

    /// Per pool in config order: name, addresses it may hand out, distinct addresses held.
    pub fn usage(&self) -> Vec<(String, u128, u64)> {
        let held: BTreeSet<IpAddr> = self.held.values().flat_map(|h| h.ips.clone()).collect();
        self.config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let total = [IpFamily::V4, IpFamily::V6]
                    .into_iter()
                    .flat_map(|f| addresses(p, f))
                    .filter(|ip| assignable(p, ip))
                    .count();
                let in_use = held.iter().filter(|ip| self.home(ip) == Some(i)).count();
                (p.name.clone(), total as u128, in_use as u64)
            })
            .collect()
    }

    pub fn release(&mut self, key: &ServiceKey) -> Option<Held> {
        self.held.remove(key).map(|h| Model::held_as(&h))
    }

    /// Records what `v`'s status says it holds. Nothing to record is `Ok(None)` (and keeps what
    /// it held); otherwise what it held is let go first, and the status must name addresses of
    /// one pool, one per family, each shareable with its other holders.
    pub fn restore(&mut self, v: &ServiceView) -> Result<Option<Held>, ()> {
        if !is_ours(v, &self.class) {
            return Err(());
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in &v.ingress_ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        if ips.is_empty() {
            return Ok(None);
        }
        self.held.remove(&v.key);
        let homes: BTreeSet<Option<usize>> = ips.iter().map(|ip| self.home(ip)).collect();
        let families: BTreeSet<IpFamily> = ips.iter().map(family).collect();
        let s = sharing(v);
        let Some(&Some(pool)) = homes.iter().next() else {
            return Err(());
        };
        if homes.len() > 1
            || families.len() < ips.len()
            || !ips.iter().all(|ip| self.fits_holders(ip, &s, &v.key))
        {
            return Err(());
        }
        let h = Holding {
            ips,
            pool: self.config.pools[pool].name.clone(),
            sharing: s,
        };
        let out = Model::held_as(&h);
        self.held.insert(v.key.clone(), h);
        Ok(Some(out))
    }

    /// Gives `v` its addresses: what it holds while that still satisfies it, else a new choice.
    /// On failure it holds nothing.
    pub fn allocate(&mut self, v: &ServiceView) -> Result<Held, ()> {
        let req = match request(v) {
            Some(r) if is_ours(v, &self.class) => r,
            _ => {
                self.held.remove(&v.key);
                return Err(());
            }
        };
        let s = sharing(v);
        let (required, preferred) = families(v);
        if let Some(h) = self.held.get(&v.key) {
            if self.still_fits(&v.key, h, &req, &required, preferred.as_deref(), &s) {
                let h = self.held.get_mut(&v.key).ok_or(())?;
                h.sharing = s;
                return Ok(Model::held_as(h));
            }
            self.held.remove(&v.key);
        }
        let (ips, pool) = self
            .pick(&v.key, &req, &required, preferred.as_deref(), &s)
            .ok_or(())?;
        let h = Holding {
            ips,
            pool: self.config.pools[pool].name.clone(),
            sharing: s,
        };
        let out = Model::held_as(&h);
        self.held.insert(v.key.clone(), h);
        Ok(out)
    }

    /// A held assignment is kept when its pool still hands out its addresses, it has every
    /// requested address and the requested pool, one address per needed family, and its other
    /// holders may still share with it.
    fn still_fits(
        &self,
        me: &ServiceKey,
        h: &Holding,
        req: &Request,
        required: &[IpFamily],
        preferred: Option<&[IpFamily]>,
        s: &Sharing,
    ) -> bool {
        let Some(pool) = self.config.pools.iter().find(|p| p.name == h.pool) else {
            return false;
        };
        let have: BTreeSet<IpFamily> = h.ips.iter().map(family).collect();
        let set = |l: &[IpFamily]| l.iter().copied().collect::<BTreeSet<IpFamily>>();
        h.ips.iter().all(|ip| assignable(pool, ip))
            && req.ips.iter().all(|ip| h.ips.contains(ip))
            && req.pool.as_ref().is_none_or(|p| *p == h.pool)
            && (have == set(required) || preferred.is_some_and(|p| have == set(p)))
            && h.ips.iter().all(|ip| self.fits_holders(ip, s, me))
    }

    /// A new choice: the candidate pools (the requested addresses' pool, the requested pool, or
    /// every `auto-assign` pool in config order), the family lists to try (with
    /// `PreferDualStack` both families first), and the first pool and list that work.
    fn pick(
        &self,
        me: &ServiceKey,
        req: &Request,
        required: &[IpFamily],
        preferred: Option<&[IpFamily]>,
        s: &Sharing,
    ) -> Option<(Vec<IpAddr>, usize)> {
        let wanted = preferred.unwrap_or(required);
        if req.ips.iter().any(|ip| !wanted.contains(&family(ip))) {
            return None;
        }
        let pools = &self.config.pools;
        let candidates: Vec<usize> = if let Some(first) = req.ips.first() {
            let p = self.home(first)?;
            if req.ips.iter().any(|ip| self.home(ip) != Some(p))
                || req.pool.as_ref().is_some_and(|name| pools[p].name != *name)
            {
                return None;
            }
            vec![p]
        } else if let Some(name) = &req.pool {
            vec![pools.iter().position(|p| p.name == *name)?]
        } else {
            (0..pools.len()).filter(|i| pools[*i].auto_assign).collect()
        };
        // The needed families, plus those of the requested addresses.
        let mut needed = required.to_vec();
        for ip in &req.ips {
            if !needed.contains(&family(ip)) {
                needed.push(family(ip));
            }
        }
        for list in preferred.into_iter().chain([needed.as_slice()]) {
            for &c in &candidates {
                if !list
                    .iter()
                    .all(|f| pools[c].ranges.iter().any(|r| r.family() == *f))
                {
                    continue;
                }
                let ips: Option<Vec<IpAddr>> = list
                    .iter()
                    .map(|f| self.one_address(me, c, *f, req, s))
                    .collect();
                if let Some(ips) = ips {
                    return Some((ips, c));
                }
            }
        }
        None
    }

    /// The address of family `f` from pool `c`: the requested one (if shareable), else the lowest
    /// address held under the Service's sharing key that every holder may share, else the lowest
    /// free one.
    fn one_address(
        &self,
        me: &ServiceKey,
        c: usize,
        f: IpFamily,
        req: &Request,
        s: &Sharing,
    ) -> Option<IpAddr> {
        let pool = &self.config.pools[c];
        if let Some(ip) = req.ips.iter().find(|ip| family(ip) == f) {
            return (assignable(pool, ip) && self.fits_holders(ip, s, me)).then_some(*ip);
        }
        let held: BTreeSet<IpAddr> = self.held.values().flat_map(|h| h.ips.clone()).collect();
        // ferrolb: the key's address first, even when a lower one is free.
        let shared = held.into_iter().find(|ip| {
            s.key.is_some()
                && family(ip) == f
                && assignable(pool, ip)
                && self.fits_holders(ip, s, me)
        });
        shared.or_else(|| {
            addresses(pool, f)
                .filter(|ip| assignable(pool, ip) && !self.is_held(ip))
                .min()
        })
    }

    /// Loads `new` unless a held address would be outside every pool (then the Services and
    /// addresses that break, in key then address order, and the old config stays). Each holding
    /// then belongs to the pool of its first address.
    pub fn set_config(&mut self, new: Config) -> Result<(), Vec<(ServiceKey, IpAddr)>> {
        let mut broken = Vec::new();
        for (k, h) in &self.held {
            let mut ips = h.ips.clone();
            ips.sort();
            for ip in ips {
                if !new.pools.iter().any(|p| assignable(p, &ip)) {
                    broken.push((k.clone(), ip));
                }
            }
        }
        if !broken.is_empty() {
            return Err(broken);
        }
        self.config = new;
        let homes: Vec<Option<usize>> = self.held.values().map(|h| self.home(&h.ips[0])).collect();
        for (h, home) in self.held.values_mut().zip(homes) {
            if let Some(p) = home {
                h.pool = self.config.pools[p].name.clone();
            }
        }
        Ok(())
    }

    /// A restarted controller: the Services we serve (the last view of each key), every status
    /// restored in key order, then every Service allocated in key order.
    pub fn fresh(config: Config, class: &str, views: &[ServiceView]) -> (Model, Vec<Outcome>) {
        let mut m = Model::new(config, class);
        let served: BTreeMap<&ServiceKey, &ServiceView> = views
            .iter()
            .filter(|v| is_ours(v, class))
            .map(|v| (&v.key, v))
            .collect();
        for v in served.values() {
            let _ = m.restore(v);
        }
        let out = served
            .values()
            .map(|v| (v.key.clone(), m.allocate(v)))
            .collect();
        (m, out)
    }
}
