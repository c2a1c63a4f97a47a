//! Picking: [`Allocator::allocate`] keeps what a Service holds while it still fits, else chooses
//! its addresses: the requested ones, an address its sharing key already uses, or the lowest
//! free one, pools in config order (with MetalLB's `serviceAllocation`: the pools that admit the
//! Service, by priority), one pool for every family ([`Allocator::pick`]; the common
//! case without a request or a sharing key takes the shortcut [`Allocator::pick_auto`] over the
//! free-pool bits). The sharing checks ([`Allocator::check_sharing`]) live here too.
//!
//! Must not: record or free addresses itself (`hold` does, keeping every index in step), or
//! scan the pools to find where an address belongs (`index` answers that).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::{IpFamily, ServiceKey, ServiceView, TrafficPolicy};

use super::family::{fams, FamList, Fams};
use super::holders;
use super::index::PoolBits;
use super::pool::fam_idx;
use super::request::{parse_request, Request};
use super::sharing::{compatible, SharingInfo};
use super::{AllocError, Allocator, Assigned, Id, Ips, Slot};

/// The sharing view of a Service without a sharing key ([`compatible`] refuses it first).
static NO_SHARING: SharingInfo = SharingInfo {
    key: ServiceKey {
        namespace: String::new(),
        name: String::new(),
    },
    sharing_key: None,
    ports: Vec::new(),
    policy: TrafficPolicy::Cluster,
    selector: BTreeMap::new(),
};

fn join_families(f: &[IpFamily]) -> String {
    f.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

impl Allocator {
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
        let share = Self::share_of(v, req.sharing_key.clone());
        let fams = fams(v);
        let h = self.services.hashed(&v.key);
        if let Some(id) = self.services.find(&v.key, h) {
            let slot = self.services.get(id);
            if self.still_fits(slot, id, &req, &fams, share.as_deref()) {
                let current = slot.assigned.clone();
                let old_key = slot.share.as_ref().and_then(|s| s.sharing_key.clone());
                let new_key = share.as_ref().and_then(|s| s.sharing_key.clone());
                self.services.get_mut(id).share = share;
                if old_key != new_key {
                    self.reindex_sharing_key(old_key.as_deref(), &current, new_key);
                }
                return Ok(current);
            }
            self.release_id(id);
        }
        let (picked, pool) = self.pick(v, &req, &fams, share.as_deref())?;
        let assigned = Assigned {
            ips: picked,
            pool: self.pools[pool].shared_name().clone(),
        };
        let out = assigned.clone();
        self.commit(&v.key, h, share, assigned, pool);
        Ok(out)
    }

    /// What sharing decisions need of `v`: nothing without a sharing key ([`compatible`] refuses
    /// first), else its ports, traffic policy and selector.
    pub(super) fn share_of(
        v: &ServiceView,
        sharing_key: Option<String>,
    ) -> Option<Box<SharingInfo>> {
        sharing_key.map(|k| {
            let mut info = SharingInfo::of(v, Some(k));
            // Slots carry the key; the copy here would only cost.
            info.key = ServiceKey {
                namespace: String::new(),
                name: String::new(),
            };
            Box::new(info)
        })
    }

    /// `Ok` when a Service with sharing view `share` (`None`: no sharing key) may use `ip` given
    /// its holders other than `me`.
    pub(super) fn check_sharing(
        &self,
        ip: &IpAddr,
        share: Option<&SharingInfo>,
        me: Option<Id>,
    ) -> Result<(), AllocError> {
        let holding = self.holders.get(ip);
        for &other in holding.ids() {
            if Some(other) == me {
                continue;
            }
            let o = self.services.get(other);
            compatible(
                share.unwrap_or(&NO_SHARING),
                o.share.as_deref().unwrap_or(&NO_SHARING),
            )
            .map_err(|why| AllocError::SharingConflict {
                ip: *ip,
                other: self.services.key(other),
                why,
            })?;
        }
        Ok(())
    }

    /// True when `slot` (Service `id`'s) still satisfies a Service asking `req`, in families
    /// `fams`, with sharing view `share`: so [`Allocator::allocate`] keeps it.
    pub(super) fn still_fits(
        &self,
        slot: &Slot,
        id: Id,
        req: &Request,
        fams: &Fams,
        share: Option<&SharingInfo>,
    ) -> bool {
        let current = &slot.assigned;
        let Some(pool) = slot.named_pool() else {
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
        // A Service without a sharing key is the only holder of its addresses (nobody can share
        // with it), so there is no one to check against. Not so with overlapping ranges (a config
        // built by hand: validation refuses them), where one pool's free index may hand out an
        // address taken through another; the check then finds and moves the second holder.
        let alone = slot.share.is_none() && !self.ranges.overlapping;
        debug_assert!(
            !alone
                || current
                    .ips
                    .iter()
                    .all(|ip| self.holders.get(&ip) == holders::Holding::One(id)),
            "a Service without a sharing key shares an address"
        );
        families_ok
            && (alone
                || current
                    .ips
                    .iter()
                    .all(|ip| self.check_sharing(&ip, share, Some(id)).is_ok()))
    }

    /// Chooses addresses for Service `v` (asking `req`), which holds none. The shortcut serves
    /// only configs without `serviceAllocation` (which makes the pools depend on the Service).
    fn pick(
        &mut self,
        v: &ServiceView,
        req: &Request,
        fams: &Fams,
        share: Option<&SharingInfo>,
    ) -> Result<(Ips, usize), AllocError> {
        if !self.by_service {
            if let Some(found) = self.pick_auto(req, fams, share) {
                return Ok(found);
            }
        }
        self.pick_scan(v, req, fams, share)
    }

    /// [`Allocator::pick`] without the shortcut: every candidate pool in turn, and the error
    /// that explains a failure.
    fn pick_scan(
        &mut self,
        v: &ServiceView,
        req: &Request,
        fams: &Fams,
        share: Option<&SharingInfo>,
    ) -> Result<(Ips, usize), AllocError> {
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
            self.admitted(p, v)?;
            vec![p]
        } else if let Some(want) = &req.pool {
            let p = self
                .pool_index(want)
                .ok_or_else(|| AllocError::UnknownPool { pool: want.clone() })?;
            self.admitted(p, v)?;
            vec![p]
        } else if self.by_service {
            let pools = self.config.unasked_pools(&v.key.namespace, &v.labels);
            if pools.is_empty() {
                return Err(AllocError::NoPoolAdmits);
            }
            pools
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
        let mut attempts: Vec<FamList> = Vec::with_capacity(2);
        if let Some(p) = fams.preferred {
            attempts.push(p);
        }
        let mut required = fams.required;
        for ip in &req.ips {
            required.add(IpFamily::of(ip));
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
                match self.try_pool(c, fam_list, req, share) {
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
        fams: &Fams,
        share: Option<&SharingInfo>,
    ) -> Option<(Ips, usize)> {
        if req.is_explicit() || share.is_some_and(|s| s.sharing_key.is_some()) {
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
            let mut ips = Ips::new();
            for f in fam_list.iter() {
                let stored = ips.push_value(*f, self.pools[c].lowest_free_value(*f)?);
                debug_assert!(stored, "a third address");
            }
            return Some((ips, c));
        }
        None
    }

    /// `Ok` when pool `p`, asked for by address or name, may serve `v`: MetalLB leaves a Service
    /// pending that asks for a pool whose `serviceAllocation` excludes it.
    fn admitted(&self, p: usize, v: &ServiceView) -> Result<(), AllocError> {
        let excluded = self.config.pools[p]
            .service_allocation
            .as_ref()
            .is_some_and(|a| !a.admits(&v.key.namespace, &v.labels));
        if excluded {
            return Err(AllocError::PoolExcludes {
                pool: self.pools[p].name().to_string(),
            });
        }
        Ok(())
    }

    /// One address per family of `fam_list` from pool `c`, without taking them yet.
    fn try_pool(
        &mut self,
        c: usize,
        fam_list: &[IpFamily],
        req: &Request,
        share: Option<&SharingInfo>,
    ) -> Result<Ips, AllocError> {
        // `fam_list` names each family at most once, so `out` never overflows.
        let mut out = Ips::new();
        for &f in fam_list {
            if let Some(ip) = req.ips.iter().find(|ip| IpFamily::of(ip) == f) {
                if !self.pools[c].may_assign(ip) {
                    return Err(AllocError::BuggyIp {
                        ip: *ip,
                        pool: self.pools[c].name().to_string(),
                    });
                }
                self.check_sharing(ip, share, None)?;
                out.push_family(*ip);
                continue;
            }
            let shared = share.and_then(|s| s.sharing_key.as_ref()).and_then(|k| {
                self.by_sharing_key.get(k).and_then(|ips| {
                    ips.iter().copied().find(|ip| {
                        IpFamily::of(ip) == f
                            && self.pools[c].may_assign(ip)
                            && self.check_sharing(ip, share, None).is_ok()
                    })
                })
            });
            if let Some(ip) = shared {
                out.push_family(ip);
                continue;
            }
            match self.pools[c].lowest_free(f) {
                Some(ip) => out.push_family(ip),
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
}

#[cfg(test)]
mod tests {
    //! The shortcut against the full search it skips: for a Service that asks for nothing and
    //! shares nothing, [`Allocator::pick_auto`] must give what [`Allocator::pick_scan`] gives,
    //! whatever the allocator holds.

    use super::*;
    use crate::allocator::testkit::{config, view};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pick_auto_gives_what_the_full_search_gives(
            held in proptest::collection::vec((0u8..40, 0u8..2, 0u8..3, proptest::bool::weighted(0.3), proptest::option::weighted(0.3, 0u8..12), proptest::bool::weighted(0.2)), 0..40),
            asks in proptest::collection::vec((0u8..2, 0u8..3), 1..6),
        ) {
            let mut a = Allocator::new(config(), "ferrolb");
            for (n, fam, policy, share, request, release) in held {
                let v = view(n, fam, policy, share, request);
                if release {
                    a.release(&v.key);
                } else {
                    let _ = a.allocate(&v);
                }
            }
            for (fam, policy) in asks {
                let v = view(100, fam, policy, false, None);
                let req = parse_request(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let fams = fams(&v);
                let shortcut = a.pick_auto(&req, &fams, None);
                let full = a.pick_scan(&v, &req, &fams, None).ok();
                prop_assert_eq!(shortcut, full, "{:?}", v);
            }
        }
    }
}
