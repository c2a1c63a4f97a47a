//! Tests only: the allocator as it was before ids, interning and the end-keyed free index
//! (commit `de3387c`), kept verbatim apart from paths, as the oracle of a differential test: the
//! current allocator must give the same results for every sequence of calls.
#![allow(dead_code)]

mod pool;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_config::addr::to_u128;
use ferrolb_config::{Breakage, Config, IpFamily, ServiceKey, ServiceView};

use super::family::{self, families};
use super::request::{parse_request, Request};
use super::sharing::{compatible, SharingInfo};
use super::{AllocError, Assigned, Ips, PoolUsage};
use crate::reconcile::is_ours;
use pool::{fam_idx, PoolIndex};

#[derive(Debug, Clone)]
struct Held {
    assigned: Assigned,
    info: SharingInfo,
}

/// Which pool holds an address: every range of every pool, per family, sorted by first address,
/// so finding the pool of an address is a binary search, not a scan of every pool. Validated
/// configs never overlap; for one that does (built by hand) lookups fall back to the scan in
/// config order, which gives the same answer.
#[derive(Debug, Clone, Default)]
struct RangeTable {
    /// Per family: `(first, last, pool index)`, sorted by `first`.
    by_family: [Vec<(u128, u128, usize)>; 2],
    overlapping: bool,
}

impl RangeTable {
    fn new(config: &Config) -> RangeTable {
        let mut t = RangeTable::default();
        for (i, p) in config.pools.iter().enumerate() {
            for r in &p.ranges {
                t.by_family[fam_idx(r.family())].push((to_u128(&r.first()), to_u128(&r.last()), i));
            }
        }
        for v in &mut t.by_family {
            v.sort_unstable();
            t.overlapping |= v.windows(2).any(|w| w[1].0 <= w[0].1);
        }
        t
    }

    /// Tests only: a table that always scans the pools (the pre-index behaviour).
    fn naive() -> RangeTable {
        RangeTable {
            overlapping: true,
            ..RangeTable::default()
        }
    }

    /// The first pool (config order) that may hand out `ip`.
    fn pool_of(&self, pools: &[PoolIndex], ip: &IpAddr) -> Option<usize> {
        if self.overlapping {
            return pools.iter().position(|p| p.may_assign(ip));
        }
        let v = to_u128(ip);
        let ranges = &self.by_family[fam_idx(IpFamily::of(ip))];
        let after = ranges.partition_point(|r| r.0 <= v);
        let &(_, last, pool) = ranges.get(after.checked_sub(1)?)?;
        (v <= last && pools[pool].may_assign(ip)).then_some(pool)
    }
}

/// One bit per pool.
#[derive(Debug, Clone, Default)]
struct PoolBits(Vec<u64>);

impl PoolBits {
    fn set(&mut self, i: usize, on: bool) {
        let (w, b) = (i / 64, i % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        if on {
            self.0[w] |= 1 << b;
        } else {
            self.0[w] &= !(1 << b);
        }
    }

    /// The lowest pool index set in every one of `sets`.
    fn first_common(sets: &[&PoolBits]) -> Option<usize> {
        let words = sets.iter().map(|s| s.0.len()).min()?;
        (0..words).find_map(|w| {
            let x = sets.iter().fold(u64::MAX, |acc, s| acc & s.0[w]);
            (x != 0).then(|| w * 64 + x.trailing_zeros() as usize)
        })
    }
}

/// The allocator state: config in force, per-pool free space, who holds what.
///
/// Lookups by Service and by address use hash maps (never iterated where order could show:
/// every ordered output is sorted), so results stay deterministic.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: Config,
    class: String,
    pools: Vec<PoolIndex>,
    ranges: RangeTable,
    /// Pool name -> index (the first pool of that name).
    pool_names: HashMap<String, usize>,
    /// Per family: `auto-assign` pools that have a free address of that family.
    auto_free: [PoolBits; 2],
    services: HashMap<ServiceKey, Held>,
    /// Address -> the Services holding it, sorted by key.
    holders: HashMap<IpAddr, Vec<ServiceKey>>,
    /// sharing key -> addresses held by Services with that key.
    by_sharing_key: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Tests only: take the slow paths (full pool scan, linear pool lookup) to compare with.
    naive: bool,
}

fn join_families(f: &[IpFamily]) -> String {
    f.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

impl Allocator {
    /// An empty allocator serving Services with no class or class `class`.
    pub fn new(config: Config, class: impl Into<String>) -> Allocator {
        let mut a = Allocator {
            config: Config::default(),
            class: class.into(),
            pools: Vec::new(),
            ranges: RangeTable::default(),
            pool_names: HashMap::new(),
            auto_free: Default::default(),
            services: HashMap::new(),
            holders: HashMap::new(),
            by_sharing_key: BTreeMap::new(),
            naive: false,
        };
        a.load_pools(config);
        a
    }

    /// Installs `config` with every address free (the caller re-takes held ones).
    fn load_pools(&mut self, config: Config) {
        self.pools = config.pools.iter().map(PoolIndex::new).collect();
        self.ranges = RangeTable::new(&config);
        if self.naive {
            self.ranges = RangeTable::naive();
        }
        self.pool_names = HashMap::with_capacity(config.pools.len());
        for (i, p) in config.pools.iter().enumerate() {
            self.pool_names.entry(p.name.clone()).or_insert(i);
        }
        self.config = config;
        self.auto_free = Default::default();
        for i in 0..self.pools.len() {
            self.refresh_free_bits(i);
        }
    }

    /// Updates pool `i`'s bits in `auto_free` after a take or release.
    fn refresh_free_bits(&mut self, i: usize) {
        let auto = self.config.pools.get(i).is_some_and(|p| p.auto_assign);
        for f in [IpFamily::V4, IpFamily::V6] {
            let on = auto && self.pools[i].has_free(f);
            self.auto_free[fam_idx(f)].set(i, on);
        }
    }

    fn take_in(&mut self, i: usize, ip: &IpAddr) {
        if self.pools[i].take(ip) {
            self.refresh_free_bits(i);
        }
    }

    fn release_in(&mut self, i: usize, ip: &IpAddr) {
        self.pools[i].release(ip);
        self.refresh_free_bits(i);
    }

    /// What sharing decisions need of `v`. Without a sharing key nothing can share with it
    /// ([`compatible`] refuses first), so ports and selector are not kept.
    fn sharing_info(v: &ServiceView, sharing_key: Option<String>) -> SharingInfo {
        if sharing_key.is_some() {
            SharingInfo::of(v, sharing_key)
        } else {
            SharingInfo {
                key: v.key.clone(),
                sharing_key: None,
                ports: Vec::new(),
                policy: v.external_traffic_policy,
                selector: BTreeMap::new(),
            }
        }
    }

    /// The restarted-controller path: load `config` unconditionally, restore every Service's
    /// current addresses (in key order; those that no longer fit are dropped), then allocate every
    /// Service we serve (in key order). Returns the outcome per served Service.
    pub fn fresh(
        config: Config,
        class: impl Into<String>,
        views: &[ServiceView],
    ) -> (
        Allocator,
        BTreeMap<ServiceKey, Result<Assigned, AllocError>>,
    ) {
        let mut a = Allocator::new(config, class);
        let mut sorted: Vec<&ServiceView> = views.iter().collect();
        sorted.sort_by(|x, y| x.key.cmp(&y.key));
        for v in &sorted {
            if a.serves(v) {
                let _ = a.restore_quiet(v);
            }
        }
        // Built from key order in one go (later duplicates win, as with repeated inserts).
        let mut out = Vec::with_capacity(sorted.len());
        for v in sorted {
            if a.serves(v) {
                out.push((v.key.clone(), a.allocate(v)));
            }
        }
        (a, out.into_iter().collect())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The class name we serve.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// True when ferrolb serves `v` (type LoadBalancer, no class or ours).
    pub fn serves(&self, v: &ServiceView) -> bool {
        is_ours(v, &self.class)
    }

    /// What `key` holds now.
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assigned> {
        self.services.get(key).map(|h| &h.assigned)
    }

    /// Every assignment, by Service.
    pub fn assignments(&self) -> BTreeMap<ServiceKey, Assigned> {
        self.services
            .iter()
            .map(|(k, h)| (k.clone(), h.assigned.clone()))
            .collect()
    }

    /// Every held `(service, address)`, in key order.
    pub fn held(&self) -> Vec<(ServiceKey, IpAddr)> {
        let mut by_key: Vec<(&ServiceKey, &Held)> = self.services.iter().collect();
        by_key.sort_unstable_by(|a, b| a.0.cmp(b.0));
        by_key
            .into_iter()
            .flat_map(|(k, h)| h.assigned.ips.iter().map(move |ip| (k.clone(), ip)))
            .collect()
    }

    /// Usage of every pool in config order.
    pub fn usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|p| PoolUsage {
                pool: p.name().to_string(),
                addresses_total: p.usable(),
                in_use: p.in_use(),
            })
            .collect()
    }

    /// Loads `new` if no held address falls outside it; otherwise returns the breakages and keeps
    /// the old config. On success every held address is re-homed to the pool that now contains it.
    pub fn set_config(&mut self, new: Config) -> Result<(), Vec<Breakage>> {
        // Every held address is a key of `holders`: check them against the new pools first and
        // build the (sorted, per Service) breakage list only when something breaks.
        let new_pools: Vec<PoolIndex> = new.pools.iter().map(PoolIndex::new).collect();
        let new_ranges = RangeTable::new(&new);
        let new_ranges = if self.naive {
            RangeTable::naive()
        } else {
            new_ranges
        };
        if !self
            .holders
            .keys()
            .all(|ip| new_ranges.pool_of(&new_pools, ip).is_some())
        {
            let broken = ferrolb_config::breaking(&new, &self.held());
            if !broken.is_empty() {
                return Err(broken);
            }
        }
        self.load_pools(new);
        // In address order, so each take trims the front of a free interval instead of
        // splitting intervals all over the range.
        let mut ips: Vec<IpAddr> = self.holders.keys().copied().collect();
        ips.sort_unstable();
        for ip in &ips {
            if let Some(i) = self.pool_of(ip) {
                self.pools[i].take(ip);
            }
        }
        for i in 0..self.pools.len() {
            self.refresh_free_bits(i);
        }
        let (ranges, pools) = (&self.ranges, &self.pools);
        for h in self.services.values_mut() {
            let Some(i) = h
                .assigned
                .ips
                .first()
                .and_then(|ip| ranges.pool_of(pools, &ip))
            else {
                continue;
            };
            if h.assigned.pool != pools[i].name() {
                h.assigned.pool = pools[i].name().into();
            }
        }
        Ok(())
    }

    /// Records the addresses `v` already holds (`status.loadBalancer.ingress`). `Ok(None)` when it
    /// holds none. Fails (recording nothing) when an address is outside every pool, the addresses
    /// span pools or repeat a family, or sharing forbids it.
    pub fn restore(&mut self, v: &ServiceView) -> Result<Option<Assigned>, AllocError> {
        if !self.restore_quiet(v)? {
            return Ok(None);
        }
        Ok(self.services.get(&v.key).map(|h| h.assigned.clone()))
    }

    /// [`Allocator::restore`] without handing back a copy of what was recorded: `Ok(true)` when
    /// it recorded addresses, `Ok(false)` when the Service holds none.
    fn restore_quiet(&mut self, v: &ServiceView) -> Result<bool, AllocError> {
        if !self.serves(v) {
            return Err(AllocError::NotOurs {
                class: self.class.clone(),
            });
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in &v.ingress_ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        let Some(first) = ips.first().copied() else {
            return Ok(false);
        };
        self.release(&v.key);
        let sharing_key = v
            .annotations
            .get(ferrolb_config::service::annotations::ALLOW_SHARED_IP)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let info = Self::sharing_info(v, sharing_key);
        let pool = self.pool_for_ips(&ips, first)?;
        for (i, ip) in ips.iter().enumerate() {
            if ips[..i].iter().any(|o| IpFamily::of(o) == IpFamily::of(ip)) {
                return Err(AllocError::FamilyMismatch {
                    ip: *ip,
                    family: IpFamily::of(ip),
                    wanted: "one address per family".into(),
                });
            }
            self.check_sharing(ip, &info)?;
        }
        let assigned = Assigned {
            ips: Ips::from_slice(&ips).expect("one address per family"),
            pool: self.pools[pool].name().into(),
        };
        self.commit(info, assigned);
        Ok(true)
    }

    /// Gives `v` its addresses: keeps the current ones when they still satisfy the Service
    /// (request, pool, families, sharing), else releases them and allocates anew. On error the
    /// Service holds nothing.
    pub fn allocate(&mut self, v: &ServiceView) -> Result<Assigned, AllocError> {
        if !self.serves(v) {
            self.release(&v.key);
            return Err(AllocError::NotOurs {
                class: self.class.clone(),
            });
        }
        let req = match parse_request(v) {
            Ok(r) => r,
            Err(e) => {
                self.release(&v.key);
                return Err(e);
            }
        };
        let info = Self::sharing_info(v, req.sharing_key.clone());
        let fams = families(v);
        if let Some(held) = self.services.get(&v.key) {
            if self.still_fits(&held.assigned, &req, &fams, &info) {
                let current = held.assigned.clone();
                let old_key = held.info.sharing_key.clone();
                let reindex = (old_key != info.sharing_key).then(|| info.clone());
                if let Some(h) = self.services.get_mut(&v.key) {
                    h.info = info;
                }
                if let Some(info) = reindex {
                    self.reindex_sharing_key(old_key.as_deref(), &current, &info);
                }
                return Ok(current);
            }
            self.release(&v.key);
        }
        let (picked, pool) = self.pick(&req, &fams, &info)?;
        let assigned = Assigned {
            ips: Ips::from_slice(&picked).expect("one address per family"),
            pool: self.pools[pool].name().into(),
        };
        self.commit(info, assigned.clone());
        Ok(assigned)
    }

    /// Frees what `key` holds (deleted, type or class changed). Returns what it held.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assigned> {
        let held = self.services.remove(key)?;
        for ip in &held.assigned.ips.to_vec() {
            let empty = self.holders.get_mut(ip).is_some_and(|hs| {
                if let Ok(at) = hs.binary_search(key) {
                    hs.remove(at);
                }
                hs.is_empty()
            });
            if empty {
                self.holders.remove(ip);
                if let Some(i) = self.pool_of(ip) {
                    self.release_in(i, ip);
                }
            }
            if let Some(k) = &held.info.sharing_key {
                self.drop_from_sharing_index(k, ip);
            }
        }
        Some(held.assigned)
    }

    fn drop_from_sharing_index(&mut self, sk: &str, ip: &IpAddr) {
        let still_used = self.holders.get(ip).is_some_and(|hs| {
            hs.iter().any(|k| {
                self.services
                    .get(k)
                    .is_some_and(|h| h.info.sharing_key.as_deref() == Some(sk))
            })
        });
        if !still_used {
            let empty = self.by_sharing_key.get_mut(sk).is_some_and(|s| {
                s.remove(ip);
                s.is_empty()
            });
            if empty {
                self.by_sharing_key.remove(sk);
            }
        }
    }

    /// A kept assignment whose sharing key changed: move its addresses to the new key's index.
    fn reindex_sharing_key(&mut self, old: Option<&str>, assigned: &Assigned, info: &SharingInfo) {
        if let Some(k) = old {
            for ip in &assigned.ips.to_vec() {
                self.drop_from_sharing_index(k, ip);
            }
        }
        if let Some(k) = &info.sharing_key {
            for ip in &assigned.ips.to_vec() {
                self.by_sharing_key
                    .entry(k.clone())
                    .or_default()
                    .insert(*ip);
            }
        }
    }

    /// The first pool (config order) that may hand out `ip`.
    fn pool_of(&self, ip: &IpAddr) -> Option<usize> {
        self.ranges.pool_of(&self.pools, ip)
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.pool_names.get(name).copied()
    }

    /// The one pool holding every address of `ips`.
    fn pool_for_ips(&self, ips: &[IpAddr], first: IpAddr) -> Result<usize, AllocError> {
        let not_assignable = |ip: &IpAddr| match self.config.pool_containing(ip) {
            Some(p) => AllocError::BuggyIp {
                ip: *ip,
                pool: p.name.clone(),
            },
            None => AllocError::NotInAnyPool { ip: *ip },
        };
        let pool = self.pool_of(&first).ok_or_else(|| not_assignable(&first))?;
        for ip in ips {
            let p = self.pool_of(ip).ok_or_else(|| not_assignable(ip))?;
            if p != pool {
                return Err(AllocError::SplitPools {
                    first,
                    second: *ip,
                    first_pool: self.pools[pool].name().to_string(),
                    second_pool: self.pools[p].name().to_string(),
                });
            }
        }
        Ok(pool)
    }

    /// `Ok` when `info`'s Service may use `ip` given its other holders.
    fn check_sharing(&self, ip: &IpAddr, info: &SharingInfo) -> Result<(), AllocError> {
        for other in self.holders.get(ip).into_iter().flatten() {
            if *other == info.key {
                continue;
            }
            if let Some(h) = self.services.get(other) {
                compatible(info, &h.info).map_err(|why| AllocError::SharingConflict {
                    ip: *ip,
                    other: other.clone(),
                    why,
                })?;
            }
        }
        Ok(())
    }

    fn still_fits(
        &self,
        current: &Assigned,
        req: &Request,
        fams: &family::Families,
        info: &SharingInfo,
    ) -> bool {
        let Some(pool) = self.pool_index(&current.pool) else {
            return false;
        };
        if !current
            .ips
            .iter()
            .all(|ip| self.pools[pool].may_assign(&ip))
        {
            return false;
        }
        if !req.ips.iter().all(|ip| current.ips.contains(ip)) {
            return false;
        }
        if req.pool.as_ref().is_some_and(|p| current.pool != *p) {
            return false;
        }
        let set = |f: &mut dyn Iterator<Item = IpFamily>| f.fold(0u8, |m, f| m | 1 << fam_idx(f));
        let have = set(&mut current.ips.iter().map(|ip| IpFamily::of(&ip)));
        let families_ok = have == set(&mut fams.required.iter().copied())
            || fams
                .preferred
                .as_ref()
                .is_some_and(|p| have == set(&mut p.iter().copied()));
        families_ok
            && current
                .ips
                .iter()
                .all(|ip| self.check_sharing(&ip, info).is_ok())
    }

    /// Chooses addresses for a Service that holds none.
    fn pick(
        &mut self,
        req: &Request,
        fams: &family::Families,
        info: &SharingInfo,
    ) -> Result<(Vec<IpAddr>, usize), AllocError> {
        if let Some(found) = self.pick_auto(req, fams, info) {
            return Ok(found);
        }
        let wanted_all: BTreeSet<IpFamily> = fams
            .preferred
            .as_ref()
            .unwrap_or(&fams.required)
            .iter()
            .copied()
            .collect();
        for ip in &req.ips {
            if !wanted_all.contains(&IpFamily::of(ip)) {
                return Err(AllocError::FamilyMismatch {
                    ip: *ip,
                    family: IpFamily::of(ip),
                    wanted: join_families(&wanted_all.iter().copied().collect::<Vec<_>>()),
                });
            }
        }
        let candidates: Vec<usize> = if let Some(first) = req.ips.first() {
            let p = self.pool_for_ips(&req.ips, *first)?;
            if let Some(want) = &req.pool {
                if self.pools[p].name() != want {
                    if self.pool_index(want).is_none() {
                        return Err(AllocError::UnknownPool { pool: want.clone() });
                    }
                    return Err(AllocError::WrongPool {
                        ip: *first,
                        actual: self.pools[p].name().to_string(),
                        requested: want.clone(),
                    });
                }
            }
            vec![p]
        } else if let Some(want) = &req.pool {
            vec![self
                .pool_index(want)
                .ok_or_else(|| AllocError::UnknownPool { pool: want.clone() })?]
        } else {
            self.config
                .pools
                .iter()
                .enumerate()
                .filter(|(_, p)| p.auto_assign)
                .map(|(i, _)| i)
                .collect()
        };
        // Families of explicitly requested addresses must all be served.
        let mut attempts: Vec<Vec<IpFamily>> = Vec::new();
        if let Some(p) = &fams.preferred {
            attempts.push(p.clone());
        }
        let mut required = fams.required.clone();
        for ip in &req.ips {
            if !required.contains(&IpFamily::of(ip)) {
                required.push(IpFamily::of(ip));
            }
        }
        attempts.push(required);
        let mut last_err: Option<AllocError> = None;
        for fam_list in &attempts {
            last_err = None;
            let mut exhausted: Vec<String> = Vec::new();
            let mut exhausted_family = None;
            let mut any_has_families = false;
            for &c in &candidates {
                if let Some(f) = fam_list.iter().find(|f| !self.pools[c].has_family(**f)) {
                    if req.is_explicit() && fams.preferred.as_ref() != Some(fam_list) {
                        last_err = Some(AllocError::PoolLacksFamily {
                            pool: self.pools[c].name().to_string(),
                            family: *f,
                        });
                    }
                    continue;
                }
                any_has_families = true;
                match self.try_pool(c, fam_list, req, info) {
                    Ok(ips) => return Ok((ips, c)),
                    Err(AllocError::PoolExhausted { pools, family }) => {
                        exhausted.push(pools);
                        exhausted_family = Some(family);
                    }
                    Err(e) => {
                        if candidates.len() == 1 {
                            return Err(e);
                        }
                        last_err = Some(e);
                    }
                }
            }
            if let Some(family) = exhausted_family {
                last_err = Some(AllocError::PoolExhausted {
                    pools: exhausted.join(", "),
                    family,
                });
            } else if !any_has_families && last_err.is_none() {
                last_err = Some(AllocError::NoPoolForFamilies {
                    families: join_families(fam_list),
                });
            }
        }
        Err(last_err.unwrap_or(AllocError::NoPoolForFamilies {
            families: join_families(&fams.required),
        }))
    }

    /// The common case of [`Allocator::pick`] without its scan: no address or pool requested and
    /// no sharing key, so the answer is the first `auto-assign` pool (config order) with a free
    /// address of every family of the first family list that any pool can serve, and there its
    /// lowest free addresses. `None` means "ask the full search" (which also explains failures).
    fn pick_auto(
        &mut self,
        req: &Request,
        fams: &family::Families,
        info: &SharingInfo,
    ) -> Option<(Vec<IpAddr>, usize)> {
        if self.naive {
            return None;
        }
        if req.is_explicit() || info.sharing_key.is_some() {
            return None;
        }
        for fam_list in fams.preferred.iter().chain([&fams.required]) {
            let sets = [
                &self.auto_free[fam_idx(*fam_list.first()?)],
                &self.auto_free[fam_idx(*fam_list.last()?)],
            ];
            let Some(c) = PoolBits::first_common(&sets) else {
                continue;
            };
            let ips = fam_list
                .iter()
                .map(|f| self.pools[c].lowest_free(*f))
                .collect::<Option<Vec<IpAddr>>>()?;
            return Some((ips, c));
        }
        None
    }

    /// One address per family of `fam_list` from pool `c`, without taking them yet.
    fn try_pool(
        &mut self,
        c: usize,
        fam_list: &[IpFamily],
        req: &Request,
        info: &SharingInfo,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let mut out = Vec::new();
        for &f in fam_list {
            if let Some(ip) = req.ips.iter().find(|ip| IpFamily::of(ip) == f) {
                if !self.pools[c].may_assign(ip) {
                    return Err(AllocError::BuggyIp {
                        ip: *ip,
                        pool: self.pools[c].name().to_string(),
                    });
                }
                self.check_sharing(ip, info)?;
                out.push(*ip);
                continue;
            }
            let shared = info.sharing_key.as_ref().and_then(|k| {
                self.by_sharing_key.get(k).and_then(|ips| {
                    ips.iter().copied().find(|ip| {
                        IpFamily::of(ip) == f
                            && self.pools[c].may_assign(ip)
                            && self.check_sharing(ip, info).is_ok()
                    })
                })
            });
            if let Some(ip) = shared {
                out.push(ip);
                continue;
            }
            match self.pools[c].lowest_free(f) {
                Some(ip) => out.push(ip),
                None => {
                    return Err(AllocError::PoolExhausted {
                        pools: self.pools[c].name().to_string(),
                        family: f,
                    })
                }
            }
        }
        Ok(out)
    }

    fn commit(&mut self, info: SharingInfo, assigned: Assigned) {
        for ip in &assigned.ips.to_vec() {
            let hs = self.holders.entry(*ip).or_default();
            let first_holder = hs.is_empty();
            if let Err(at) = hs.binary_search(&info.key) {
                hs.insert(at, info.key.clone());
            }
            if first_holder {
                if let Some(i) = self.pool_of(ip) {
                    self.take_in(i, ip);
                }
            }
            if let Some(k) = &info.sharing_key {
                self.by_sharing_key
                    .entry(k.clone())
                    .or_default()
                    .insert(*ip);
            }
        }
        self.services
            .insert(info.key.clone(), Held { assigned, info });
    }
}
