//! Rebuilding and restoring: recording the addresses Services already hold
//! ([`Allocator::restore`]), the restarted-controller path ([`Allocator::fresh`],
//! [`Allocator::rebuild`]: restore every Service, then allocate every Service, in key order),
//! making room for a known set of Services first ([`Allocator::reserve`], [`Demand`]), and a
//! change of config ([`Allocator::set_config`]: refused when a held address would fall outside
//! every pool, else every holding re-homed).
//!
//! Must not: choose new addresses itself (it calls [`Allocator::allocate`] for that) or hold
//! addresses without the sharing checks picking uses.

use std::net::IpAddr;

use ferrolb_config::{Breakage, Config, IpFamily, ServiceKey, ServiceView};

use super::family::fams;
use super::index::RangeTable;
use super::pool::PoolIndex;
use super::request::{parse_request, sharing_key};
use super::{keyorder, AllocError, Allocator, Assigned, Id, Ips};

/// What a set of Services will hold once restored and allocated, counted view by view
/// ([`Demand::add`]) for [`Allocator::reserve`]: their keys, the addresses their statuses name
/// and, for those without a status, one address per family they require.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    services: usize,
    key_bytes: usize,
    v4: usize,
    v6: usize,
}

impl Demand {
    /// Counts `v`.
    pub fn add(&mut self, v: &ServiceView) {
        self.services += 1;
        self.key_bytes += v.key.namespace.len() + v.key.name.len();
        let mut count = |f: IpFamily| match f {
            IpFamily::V4 => self.v4 += 1,
            IpFamily::V6 => self.v6 += 1,
        };
        if v.ingress_ips.is_empty() {
            fams(v).required.iter().for_each(|f| count(*f));
        } else {
            v.ingress_ips.iter().for_each(|ip| count(IpFamily::of(ip)));
        }
    }
}

/// One Service's outcome from [`Allocator::fresh`]: its key and what it got.
pub type Outcome<'a> = (&'a ServiceKey, Result<Assigned, AllocError>);

impl Allocator {
    /// The restarted-controller path: load `config` unconditionally, restore every Service's
    /// current addresses (in key order; those that no longer fit are dropped), then allocate every
    /// Service we serve (in key order). Returns the outcome per served Service, in key order, one
    /// per key: of served views with one key, only the last one counts (the others are neither
    /// restored nor allocated).
    pub fn fresh(
        config: Config,
        class: impl Into<String>,
        views: &[ServiceView],
    ) -> (Allocator, Vec<Outcome<'_>>) {
        let mut a = Allocator::new(config, class);
        // One pass over the views: which are ours, their keys' order, and what they will hold.
        let mut demand = Demand::default();
        let sorted = keyorder::in_key_order(views, |v| {
            let ours = a.serves(v);
            if ours {
                demand.add(v);
            }
            ours
        });
        a.reserve(demand);
        let out = sorted
            .iter()
            .map(|v| &v.key)
            .zip(a.rebuild_reserved(&sorted))
            .collect();
        (a, out)
    }

    /// The restart path on an allocator holding nothing: restores every view's addresses, then
    /// allocates every view (as [`Allocator::restore`] on each, then [`Allocator::allocate`] on
    /// each, would) and returns each view's outcome. `views` must be served by us, in key order,
    /// each key once (debug-asserted).
    ///
    /// Done in one pass where it can: a Service whose restored addresses still satisfy it gets
    /// its outcome while its view is at hand. That outcome is final, because whatever comes
    /// after (restores and allocations of other Services) only adds holders that are compatible
    /// with every holder already there, and compatibility is symmetric. The rest (nothing to
    /// restore, a failed restore, or addresses that no longer fit) are allocated after every
    /// restore, in key order, as before. Not so with overlapping ranges (a config built by hand;
    /// validation refuses them), where every Service is allocated after every restore.
    ///
    /// The outcomes come lazily, in the order of `views`: consume the iterator whole (the
    /// Services that are not kept are allocated as it reaches them), before anything else is
    /// asked of the allocator.
    pub(crate) fn rebuild<'a>(
        &'a mut self,
        views: &'a [&'a ServiceView],
    ) -> impl Iterator<Item = Result<Assigned, AllocError>> + 'a {
        self.reserve_for(views.iter().copied());
        self.rebuild_reserved(views)
    }

    /// [`Allocator::rebuild`] with room for `views` already made.
    fn rebuild_reserved<'a>(
        &'a mut self,
        views: &'a [&'a ServiceView],
    ) -> impl Iterator<Item = Result<Assigned, AllocError>> + 'a {
        // A key restored twice would get two ids: cheap to rule out here, unlike the order.
        assert!(self.is_empty(), "rebuild on an allocator holding addresses");
        debug_assert!(views.iter().all(|v| self.serves(v)));
        debug_assert!(
            views.windows(2).all(|w| w[0].key < w[1].key),
            "views not in key order, or a key twice"
        );
        // Restores decide only from the holders (sharing) and the pools' ranges, never from the
        // free indexes, so those are built once at the end, in address order.
        self.defer_takes = true;
        // Per view: the id it keeps (its outcome is what that id holds), or `LATER`. Ids, not
        // copies of the assignments: 4 bytes per Service where a restart is at its peak.
        const LATER: Id = Id::MAX;
        // With overlapping ranges (a config built by hand) a restored address is taken in the
        // first pool holding it only, so another pool may still hand it out: nothing is final
        // until every Service has been allocated, as before.
        let may_keep = !self.ranges.overlapping;
        let kept: Vec<Id> = views
            .iter()
            // Each key once, on an empty allocator: nothing to release first.
            .map(|v| match self.restore_quiet(v, false) {
                Ok(Some(id)) if may_keep && self.keeps(id, v) => id,
                _ => LATER,
            })
            .collect();
        self.defer_takes = false;
        self.retake_held();
        kept.into_iter().zip(views).map(move |(id, v)| {
            if id == LATER {
                self.allocate(v)
            } else {
                // Final: nothing after its restore takes a kept Service's addresses away.
                Ok(self.services.get(id).assigned.clone())
            }
        })
    }

    /// True when [`Allocator::allocate`] would keep what `v`, just restored as `id`, holds
    /// (otherwise it gives it what fits).
    fn keeps(&self, id: Id, v: &ServiceView) -> bool {
        let Ok(req) = parse_request(v) else {
            return false;
        };
        let slot = self.services.get(id);
        // The slot's sharing view was just made from `v`, as `allocate` would make it.
        debug_assert_eq!(
            slot.share.as_ref().and_then(|s| s.sharing_key.as_deref()),
            req.sharing_key.as_deref()
        );
        self.still_fits(slot, id, &req, &fams(v), slot.share.as_deref())
    }

    /// Makes room for `views` holding addresses (see [`Demand`]), so restoring and allocating a
    /// known set of Services (a restart) grows no table on the way: no re-hashing, no copying of
    /// key text, no half-empty tables left from doubling.
    pub fn reserve_for<'a>(&mut self, views: impl IntoIterator<Item = &'a ServiceView>) {
        let mut d = Demand::default();
        views.into_iter().for_each(|v| d.add(v));
        self.reserve(d);
    }

    /// Makes room for what `d` counted.
    pub fn reserve(&mut self, d: Demand) {
        self.services.reserve(d.services, d.key_bytes);
        self.holders.reserve(d.v4, d.v6);
    }

    /// Loads `new` if no held address falls outside it; otherwise returns the breakages and keeps
    /// the old config. On success every held address is re-homed to the pool that now contains it.
    pub fn set_config(&mut self, new: Config) -> Result<(), Vec<Breakage>> {
        // Every held address is a key of `holders`: check them against the new pools first and
        // build the (sorted, per Service) breakage list only when something breaks.
        let new_pools: Vec<PoolIndex> = new.pools.iter().map(PoolIndex::new).collect();
        let new_ranges = RangeTable::new(&new);
        if !self
            .holders
            .ips()
            .all(|ip| new_ranges.pool_of(&new_pools, &ip).is_some())
        {
            let broken = self.breakages(&new, |ip| new_ranges.pool_of(&new_pools, ip).is_some());
            if !broken.is_empty() {
                return Err(broken);
            }
        }
        self.load_pools(new);
        self.retake_held();
        let (ranges, pools, first_of_name, names) = (
            &self.ranges,
            &self.pools,
            &self.first_of_name,
            &self.pool_names,
        );
        for slot in self.services.slots_mut() {
            let home = slot
                .assigned
                .ips
                .first()
                .and_then(|ip| ranges.pool_of(pools, &ip));
            match home {
                Some(i) => {
                    if slot.assigned.pool != pools[i].name() {
                        slot.assigned.pool = pools[i].shared_name().clone();
                    }
                    slot.set_named_pool(Some(first_of_name[i]));
                }
                None => {
                    let named = names.get(slot.assigned.pool.as_str()).copied();
                    slot.set_named_pool(named);
                }
            }
        }
        Ok(())
    }

    /// What [`ferrolb_config::breaking`] says of `new` and [`Allocator::held`], without
    /// copying every key first: each held address that `allowed` refuses, with its holder, in
    /// key then address order (`allowed` is `new`'s range table; the reason comes from `new`).
    fn breakages(&self, new: &Config, allowed: impl Fn(&IpAddr) -> bool) -> Vec<Breakage> {
        let services = &self.services;
        let mut broken: Vec<(Id, IpAddr)> = services
            .iter()
            .flat_map(|(id, s)| s.assigned.ips.iter().map(move |ip| (id, ip)))
            .filter(|(_, ip)| !allowed(ip))
            .collect();
        broken.sort_unstable_by(|(x, a), (y, b)| {
            services
                .key_parts(*x)
                .cmp(&services.key_parts(*y))
                .then(a.cmp(b))
        });
        // The reason comes from `new` itself, which has the last word (as in `breaking`).
        broken
            .into_iter()
            .filter_map(|(id, ip)| {
                let reason = ferrolb_config::compat::why_broken(new, &ip)?;
                Some(Breakage {
                    service: services.key(id),
                    ip,
                    reason,
                })
            })
            .collect()
    }

    /// Records the addresses `v` already holds (`status.loadBalancer.ingress`). `Ok(None)` when it
    /// holds none. Fails (recording nothing) when an address is outside every pool, the addresses
    /// span pools or repeat a family, or sharing forbids it.
    pub fn restore(&mut self, v: &ServiceView) -> Result<Option<Assigned>, AllocError> {
        Ok(self
            .restore_quiet(v, true)?
            .map(|id| self.services.get(id).assigned.clone()))
    }

    /// [`Allocator::restore`] without handing back a copy of what was recorded: `Ok(Some(id))`
    /// when it recorded addresses, `Ok(None)` when the Service holds none.
    /// `may_hold`: whether `v`'s key may hold addresses already (they are released first).
    fn restore_quiet(&mut self, v: &ServiceView, may_hold: bool) -> Result<Option<Id>, AllocError> {
        if !self.serves(v) {
            return Err(AllocError::NotOurs {
                class: self.class.clone(),
            });
        }
        let Some(&first) = v.ingress_ips.first() else {
            return Ok(None);
        };
        // The distinct addresses, in order: inline for the usual one or two, a list otherwise
        // (more than two always fail below, but with the errors the checks give in order).
        let mut few = [first; 2];
        let mut few_len = 0;
        let mut many: Vec<IpAddr> = Vec::new();
        if v.ingress_ips.len() <= 2 {
            for ip in &v.ingress_ips {
                if !few[..few_len].contains(ip) {
                    few[few_len] = *ip;
                    few_len += 1;
                }
            }
        } else {
            for ip in &v.ingress_ips {
                if !many.contains(ip) {
                    many.push(*ip);
                }
            }
        }
        let distinct: &[IpAddr] = if many.is_empty() {
            &few[..few_len]
        } else {
            &many
        };
        let h = self.services.hashed(&v.key);
        if may_hold {
            if let Some(id) = self.services.find(&v.key, h) {
                self.release_id(id);
            }
        } else {
            debug_assert!(
                self.services.id(&v.key).is_none(),
                "{} holds addresses",
                v.key
            );
        }
        let share = Self::share_of(v, sharing_key(v));
        let pool = self.pool_for_ips(distinct, first)?;
        let repeated = |ip: &IpAddr| AllocError::FamilyMismatch {
            ip: *ip,
            family: IpFamily::of(ip),
            wanted: "one address per family".into(),
        };
        for (i, ip) in distinct.iter().enumerate() {
            if distinct[..i]
                .iter()
                .any(|o| IpFamily::of(o) == IpFamily::of(ip))
            {
                return Err(repeated(ip));
            }
            self.check_sharing(ip, share.as_deref(), None)?;
        }
        // One address per family (checked above): at most two.
        let Some(ips) = Ips::from_slice(distinct) else {
            unreachable!("more than two addresses passed the one-per-family check");
        };
        let assigned = Assigned {
            ips,
            pool: self.pools[pool].shared_name().clone(),
        };
        Ok(Some(self.commit(&v.key, h, share, assigned, pool)))
    }
}
