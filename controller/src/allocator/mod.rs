//! The allocator: gives each `LoadBalancer` Service ferrolb serves one address per IP family, from
//! one pool, and keeps it. Pure and deterministic: the same config and the same sequence of calls
//! give the same addresses (pools in config order, lowest free address first).
//!
//! Rules (MetalLB 0.12 plus fixes):
//! - Requests: `spec.loadBalancerIP` or annotation `metallb.universe.tf/loadBalancerIPs` (one
//!   address per family; both at once is an error), annotation `metallb.universe.tf/address-pool`.
//!   `auto-assign: false` pools serve only explicit requests (an address or the pool annotation).
//! - Without a request, pools are tried in config order; within a pool the lowest free address
//!   (`avoid-buggy-ips` skips IPv4 `.0`/`.255`).
//! - Sharing (`allow-shared-ip`, see [`sharing`]): an address already in use may be used by
//!   another Service only when it is compatible with every holder. Reuse happens (a) when the
//!   Service requests that address, or (b) without an address request, when a compatible Service
//!   with the same sharing key already holds an address of the needed family in the candidate
//!   pool: the lowest such address is reused before any free one (so Services with one key land
//!   on one address, as in MetalLB).
//! - Dual-stack: `RequireDualStack` needs one address per family from one pool;
//!   `PreferDualStack` tries that and falls back to the primary family alone when no candidate
//!   pool can give both.
//! - `spec.loadBalancerClass`: only Services with no class or our class are served.
//! - Restart safety: [`Allocator::restore`] records addresses Services already hold (call it for
//!   every Service before any [`Allocator::allocate`]); an allocation never takes a restored
//!   address unless sharing allows it.
//! - Config changes: [`Allocator::set_config`] refuses a config that puts a held address outside
//!   every pool (returns the breakages, keeps the old config); [`Allocator::fresh`] is the
//!   restarted-controller path (new config unconditionally, restore, re-assign misfits).
//!
//! Must not: do I/O, read clocks, or know about kube-rs types.

pub mod family;
pub mod pool;
pub mod request;
pub mod sharing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::{Breakage, Config, IpFamily, ServiceKey, ServiceView};

use crate::reconcile::{is_ours, Allocation, Plan};
use family::families;
use pool::PoolIndex;
use request::{parse_request, Request};
use sharing::{compatible, SharingInfo};

/// Why a Service got no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("bad request: {field} = {value:?}: {reason}")]
    BadRequest {
        field: String,
        value: String,
        reason: String,
    },
    #[error("unknown address pool {pool:?} (annotation metallb.universe.tf/address-pool)")]
    UnknownPool { pool: String },
    #[error("requested address {ip} is not in any address pool")]
    NotInAnyPool { ip: IpAddr },
    #[error(
        "requested address {ip} is in pool {actual:?}, not in the requested pool {requested:?}"
    )]
    WrongPool {
        ip: IpAddr,
        actual: String,
        requested: String,
    },
    #[error("addresses {first} and {second} are in different pools ({first_pool:?}, {second_pool:?}); one pool must serve all families")]
    SplitPools {
        first: IpAddr,
        second: IpAddr,
        first_pool: String,
        second_pool: String,
    },
    #[error("pool exhausted: no free {family} address in pool(s) {pools}")]
    PoolExhausted { pools: String, family: IpFamily },
    #[error("no address pool serves {families} for this Service (auto-assign pools with these families: none)")]
    NoPoolForFamilies { families: String },
    #[error("pool {pool:?} has no {family} addresses")]
    PoolLacksFamily { pool: String, family: IpFamily },
    #[error("address family mismatch: {ip} is {family} but the Service's families are {wanted}")]
    FamilyMismatch {
        ip: IpAddr,
        family: IpFamily,
        wanted: String,
    },
    #[error("sharing conflict on {ip} with service {other}: {why}")]
    SharingConflict {
        ip: IpAddr,
        other: ServiceKey,
        why: String,
    },
    #[error("requested address {ip} is not assignable in pool {pool:?} (avoid-buggy-ips)")]
    BuggyIp { ip: IpAddr, pool: String },
    #[error(
        "not served by ferrolb (not type LoadBalancer, or loadBalancerClass is not {class:?})"
    )]
    NotOurs { class: String },
}

/// The addresses a Service holds and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub ips: Vec<IpAddr>,
    pub pool: String,
}

/// Usage of one pool, for metrics (`metallb_allocator_addresses_{total,in_use_total}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub pool: String,
    /// Addresses the pool may hand out.
    pub addresses_total: u128,
    /// Distinct addresses in use (a shared address counts once).
    pub in_use: u64,
}

#[derive(Debug, Clone)]
struct Held {
    assigned: Assigned,
    info: SharingInfo,
}

/// The allocator state: config in force, per-pool free space, who holds what.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: Config,
    class: String,
    pools: Vec<PoolIndex>,
    services: BTreeMap<ServiceKey, Held>,
    holders: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// sharing key -> addresses held by Services with that key.
    by_sharing_key: BTreeMap<String, BTreeSet<IpAddr>>,
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
        let pools = config.pools.iter().map(PoolIndex::new).collect();
        Allocator {
            config,
            class: class.into(),
            pools,
            services: BTreeMap::new(),
            holders: BTreeMap::new(),
            by_sharing_key: BTreeMap::new(),
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
                let _ = a.restore(v);
            }
        }
        let mut out = BTreeMap::new();
        for v in sorted {
            if a.serves(v) {
                out.insert(v.key.clone(), a.allocate(v));
            }
        }
        (a, out)
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
        self.services
            .iter()
            .flat_map(|(k, h)| h.assigned.ips.iter().map(move |ip| (k.clone(), *ip)))
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
        let broken = ferrolb_config::breaking(&new, &self.held());
        if !broken.is_empty() {
            return Err(broken);
        }
        self.pools = new.pools.iter().map(PoolIndex::new).collect();
        self.config = new;
        let ips: Vec<IpAddr> = self.holders.keys().copied().collect();
        for ip in &ips {
            if let Some(i) = self.pool_of(ip) {
                self.pools[i].take(ip);
            }
        }
        let names: BTreeMap<ServiceKey, String> = self
            .services
            .iter()
            .filter_map(|(k, h)| {
                let first = h.assigned.ips.first()?;
                let i = self.pool_of(first)?;
                Some((k.clone(), self.pools[i].name().to_string()))
            })
            .collect();
        for (k, name) in names {
            if let Some(h) = self.services.get_mut(&k) {
                h.assigned.pool = name;
            }
        }
        Ok(())
    }

    /// Records the addresses `v` already holds (`status.loadBalancer.ingress`). `Ok(None)` when it
    /// holds none. Fails (recording nothing) when an address is outside every pool, the addresses
    /// span pools or repeat a family, or sharing forbids it.
    pub fn restore(&mut self, v: &ServiceView) -> Result<Option<Assigned>, AllocError> {
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
            return Ok(None);
        };
        self.release(&v.key);
        let sharing_key = v
            .annotations
            .get(ferrolb_config::service::annotations::ALLOW_SHARED_IP)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let info = SharingInfo::of(v, sharing_key);
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
            ips,
            pool: self.pools[pool].name().to_string(),
        };
        self.commit(info, assigned.clone());
        Ok(Some(assigned))
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
        let info = SharingInfo::of(v, req.sharing_key.clone());
        let fams = families(v);
        if let Some(held) = self.services.get(&v.key) {
            let current = held.assigned.clone();
            if self.still_fits(&current, &req, &fams, &info) {
                let old_key = held.info.sharing_key.clone();
                if let Some(h) = self.services.get_mut(&v.key) {
                    h.info = info.clone();
                }
                if old_key != info.sharing_key {
                    self.reindex_sharing_key(old_key.as_deref(), &current, &info);
                }
                return Ok(current);
            }
        }
        self.release(&v.key);
        let (picked, pool) = self.pick(&req, &fams, &info)?;
        let assigned = Assigned {
            ips: picked,
            pool: self.pools[pool].name().to_string(),
        };
        self.commit(info, assigned.clone());
        Ok(assigned)
    }

    /// Frees what `key` holds (deleted, type or class changed). Returns what it held.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assigned> {
        let held = self.services.remove(key)?;
        for ip in &held.assigned.ips {
            let empty = self.holders.get_mut(ip).is_some_and(|hs| {
                hs.remove(key);
                hs.is_empty()
            });
            if empty {
                self.holders.remove(ip);
                if let Some(i) = self.pool_of(ip) {
                    self.pools[i].release(ip);
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
            for ip in &assigned.ips {
                self.drop_from_sharing_index(k, ip);
            }
        }
        if let Some(k) = &info.sharing_key {
            for ip in &assigned.ips {
                self.by_sharing_key
                    .entry(k.clone())
                    .or_default()
                    .insert(*ip);
            }
        }
    }

    /// The first pool (config order) that may hand out `ip`.
    fn pool_of(&self, ip: &IpAddr) -> Option<usize> {
        self.pools.iter().position(|p| p.may_assign(ip))
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name() == name)
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
        if !current.ips.iter().all(|ip| self.pools[pool].may_assign(ip)) {
            return false;
        }
        if !req.ips.iter().all(|ip| current.ips.contains(ip)) {
            return false;
        }
        if req.pool.as_ref().is_some_and(|p| *p != current.pool) {
            return false;
        }
        let have: BTreeSet<IpFamily> = current.ips.iter().map(IpFamily::of).collect();
        let set = |f: &[IpFamily]| f.iter().copied().collect::<BTreeSet<_>>();
        let families_ok =
            have == set(&fams.required) || fams.preferred.as_ref().is_some_and(|p| have == set(p));
        families_ok
            && current
                .ips
                .iter()
                .all(|ip| self.check_sharing(ip, info).is_ok())
    }

    /// Chooses addresses for a Service that holds none.
    fn pick(
        &mut self,
        req: &Request,
        fams: &family::Families,
        info: &SharingInfo,
    ) -> Result<(Vec<IpAddr>, usize), AllocError> {
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
        for ip in &assigned.ips {
            let hs = self.holders.entry(*ip).or_default();
            if hs.is_empty() {
                if let Some(i) = self.pools.iter().position(|p| p.may_assign(ip)) {
                    self.pools[i].take(ip);
                }
            }
            hs.insert(info.key.clone());
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

/// The fresh-start plan in the form the Kubernetes shell uses: every Service's outcome (restore
/// first, then allocate, in key order) and pool usage.
pub fn plan(config: &Config, class: &str, views: &[ServiceView]) -> Plan {
    let (a, results) = Allocator::fresh(config.clone(), class, views);
    let mut out = Plan::default();
    for v in views {
        if !a.serves(v) {
            out.allocations.insert(v.key.clone(), Allocation::NotOurs);
        }
    }
    for (k, r) in results {
        let alloc = match r {
            Ok(Assigned { ips, pool }) => Allocation::Assigned { ips, pool },
            Err(e) => Allocation::Failed {
                reason: e.to_string(),
            },
        };
        out.allocations.insert(k, alloc);
    }
    for u in a.usage() {
        out.pools.insert(u.pool, (u.in_use, u.addresses_total));
    }
    out
}
