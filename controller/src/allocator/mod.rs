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

mod assigned;
pub mod family;
mod hasher;
mod holders;
mod keyorder;
#[cfg(test)]
mod oracle;
pub mod pool;
pub mod request;
mod services;
pub mod sharing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_config::addr::to_u128;
use ferrolb_config::{Breakage, Config, IpFamily, ServiceKey, ServiceView, TrafficPolicy};

use crate::reconcile::{is_ours, Allocation, Plan};
pub use assigned::{Assigned, Ips, IpsIter, PoolName};
use family::{fams, FamList, Fams};
use holders::HolderMap;
use pool::{fam_idx, PoolIndex};
use request::{parse_request, Request};
use services::Services;
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

/// Usage of one pool, for metrics (`metallb_allocator_addresses_{total,in_use_total}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub pool: String,
    /// Addresses the pool may hand out.
    pub addresses_total: u128,
    /// Distinct addresses in use (a shared address counts once).
    pub in_use: u64,
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
    #[cfg(test)]
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

/// A Service's id inside the allocator: an index into the slots of [`Services`], given out when
/// a Service first holds addresses and reused after it releases them. Below 2^31 (a holder entry
/// keeps the top bit, see [`holders`]), so at most 2^31 Services hold addresses at once.
type Id = u32;

/// What the allocator keeps per Service holding addresses (80 bytes; the key is in [`Services`]).
#[derive(Debug, Clone)]
struct Slot {
    assigned: Assigned,
    /// Sharing rules' view of the Service; `None` without a sharing key (then it cannot share
    /// with anyone and nothing else about it matters for sharing).
    share: Option<Box<SharingInfo>>,
    /// Where [`Services`] keeps the key.
    name: services::NameAt,
    /// The first pool named `assigned.pool` (what a by-name lookup gives), kept in step with
    /// the config so the "does it still fit" check needs no lookup; [`NO_POOL`] when none is.
    named_pool: u32,
}

// The slot chunks' size and the memory figures assume slots of at most 80 bytes.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Option<Slot>>() <= 80);

/// [`Slot::named_pool`] when no pool has the name.
const NO_POOL: u32 = u32::MAX;

impl Slot {
    fn new(assigned: Assigned, share: Option<Box<SharingInfo>>, named_pool: Option<usize>) -> Slot {
        let mut s = Slot {
            assigned,
            share,
            name: services::NameAt::default(),
            named_pool: NO_POOL,
        };
        s.set_named_pool(named_pool);
        s
    }

    fn named_pool(&self) -> Option<usize> {
        (self.named_pool != NO_POOL).then_some(self.named_pool as usize)
    }

    fn set_named_pool(&mut self, pool: Option<usize>) {
        self.named_pool = pool
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != NO_POOL)
            .unwrap_or(NO_POOL);
    }

    #[cfg(test)]
    fn for_tests() -> Slot {
        Slot::new(
            Assigned {
                ips: Ips::new(),
                pool: PoolName::from("p"),
            },
            None,
            None,
        )
    }
}

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
    /// Per pool: the index of the first pool with its name.
    first_of_name: Vec<usize>,
    /// Per family: `auto-assign` pools that have a free address of that family.
    auto_free: [PoolBits; 2],
    services: Services,
    /// Address -> the Services holding it.
    holders: HolderMap,
    /// sharing key -> addresses held by Services with that key.
    by_sharing_key: BTreeMap<String, BTreeSet<IpAddr>>,
    /// While set, commits and releases leave the pools' free indexes alone;
    /// [`Allocator::retake_held`] then takes every held address in address order.
    defer_takes: bool,
    /// Tests only: take the slow paths (full pool scan, linear pool lookup) to compare with.
    #[cfg(test)]
    naive: bool,
}

fn join_families(f: &[IpFamily]) -> String {
    f.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// The `allow-shared-ip` key of `v` (trimmed; empty means none).
fn sharing_key_of(v: &ServiceView) -> Option<String> {
    v.annotations
        .get(ferrolb_config::service::annotations::ALLOW_SHARED_IP)
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
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
            first_of_name: Vec::new(),
            auto_free: Default::default(),
            services: Services::default(),
            holders: HolderMap::default(),
            by_sharing_key: BTreeMap::new(),
            defer_takes: false,
            #[cfg(test)]
            naive: false,
        };
        a.load_pools(config);
        a
    }

    /// Installs `config` with every address free (the caller re-takes held ones).
    fn load_pools(&mut self, config: Config) {
        self.pools = config.pools.iter().map(PoolIndex::new).collect();
        self.ranges = RangeTable::new(&config);
        #[cfg(test)]
        if self.naive {
            self.ranges = RangeTable::naive();
        }
        self.pool_names = HashMap::with_capacity(config.pools.len());
        for (i, p) in config.pools.iter().enumerate() {
            self.pool_names.entry(p.name.clone()).or_insert(i);
        }
        self.first_of_name = config
            .pools
            .iter()
            .map(|p| self.pool_names.get(&p.name).copied().unwrap_or_default())
            .collect();
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

    /// Takes the address of `family` whose value ([`to_u128`]) is `value` in pool `i`.
    fn take_in(&mut self, i: usize, family: IpFamily, value: u128) {
        // A take can only clear the bit of the address's family, and only by taking the last
        // free one.
        if self.pools[i].take_value(family, value) && !self.pools[i].has_free(family) {
            self.refresh_free_bits(i);
        }
    }

    fn release_in(&mut self, i: usize, ip: &IpAddr) {
        self.pools[i].release(ip);
        self.refresh_free_bits(i);
    }

    /// With every pool's free index empty of takes: takes every held address, in address order
    /// (so each take trims the front of a free interval instead of splitting intervals all over
    /// the range), and refreshes the free-pool bits.
    fn retake_held(&mut self) {
        for ip in self.holders.sorted_ips() {
            if let Some(i) = self.pool_of(&ip) {
                self.pools[i].take(&ip);
            }
        }
        for i in 0..self.pools.len() {
            self.refresh_free_bits(i);
        }
    }

    /// What sharing decisions need of `v`: nothing without a sharing key ([`compatible`] refuses
    /// first), else its ports, traffic policy and selector.
    fn share_of(v: &ServiceView, sharing_key: Option<String>) -> Option<Box<SharingInfo>> {
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
        let id = self.services.id(key)?;
        Some(&self.services.get(id).assigned)
    }

    /// How many Services hold addresses.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no Service holds an address.
    pub fn is_empty(&self) -> bool {
        self.services.len() == 0
    }

    /// Every assignment, by Service.
    pub fn assignments(&self) -> BTreeMap<ServiceKey, Assigned> {
        self.services
            .iter()
            .map(|(id, s)| (self.services.key(id), s.assigned.clone()))
            .collect()
    }

    /// Every held `(service, address)`, in key order.
    pub fn held(&self) -> Vec<(ServiceKey, IpAddr)> {
        let services = &self.services;
        let mut by_key: Vec<(Id, &Slot)> = services.iter().collect();
        by_key.sort_unstable_by(|a, b| services.key_parts(a.0).cmp(&services.key_parts(b.0)));
        by_key
            .into_iter()
            .flat_map(|(id, s)| s.assigned.ips.iter().map(move |ip| (services.key(id), ip)))
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
        #[cfg(test)]
        let new_ranges = if self.naive {
            RangeTable::naive()
        } else {
            new_ranges
        };
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
        let share = Self::share_of(v, sharing_key_of(v));
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
        let (picked, pool) = self.pick(&req, &fams, share.as_deref())?;
        let assigned = Assigned {
            ips: picked,
            pool: self.pools[pool].shared_name().clone(),
        };
        let out = assigned.clone();
        self.commit(&v.key, h, share, assigned, pool);
        Ok(out)
    }

    /// Frees what `key` holds (deleted, type or class changed). Returns what it held.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assigned> {
        let id = self.services.id(key)?;
        Some(self.release_id(id))
    }

    fn release_id(&mut self, id: Id) -> Assigned {
        let slot = self.services.remove(id);
        for ip in &slot.assigned.ips {
            // The last holder gone: the address is free again.
            if self.holders.remove(&ip, id) && !self.defer_takes {
                if let Some(i) = self.pool_of(&ip) {
                    self.release_in(i, &ip);
                }
            }
            if let Some(k) = slot.share.as_ref().and_then(|s| s.sharing_key.as_deref()) {
                self.drop_from_sharing_index(k, &ip);
            }
        }
        slot.assigned
    }

    fn drop_from_sharing_index(&mut self, sk: &str, ip: &IpAddr) {
        let still_used = self.holders.get(ip).ids().iter().any(|&other| {
            self.services
                .get(other)
                .share
                .as_ref()
                .is_some_and(|s| s.sharing_key.as_deref() == Some(sk))
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
    fn reindex_sharing_key(&mut self, old: Option<&str>, assigned: &Assigned, new: Option<String>) {
        if let Some(k) = old {
            for ip in &assigned.ips {
                self.drop_from_sharing_index(k, &ip);
            }
        }
        if let Some(k) = new {
            for ip in &assigned.ips {
                self.by_sharing_key.entry(k.clone()).or_default().insert(ip);
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
        for ip in ips.iter().filter(|ip| **ip != first) {
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

    /// `Ok` when a Service with sharing view `share` (`None`: no sharing key) may use `ip` given
    /// its holders other than `me`.
    fn check_sharing(
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

    fn still_fits(
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

    /// Chooses addresses for a Service that holds none.
    fn pick(
        &mut self,
        req: &Request,
        fams: &Fams,
        share: Option<&SharingInfo>,
    ) -> Result<(Ips, usize), AllocError> {
        if let Some(found) = self.pick_auto(req, fams, share) {
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
        #[cfg(test)]
        if self.naive {
            return None;
        }
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

    /// Records that `key` (hashed as `h`) holds `assigned` (from pool index `pool`), which it must
    /// not hold yet.
    fn commit(
        &mut self,
        key: &ServiceKey,
        h: services::Hashed,
        share: Option<Box<SharingInfo>>,
        assigned: Assigned,
        pool: usize,
    ) -> Id {
        let sharing_key = share.as_ref().and_then(|s| s.sharing_key.clone());
        let ips = assigned.ips;
        let named_pool = self.first_of_name.get(pool).copied();
        let id = self
            .services
            .insert(key, h, Slot::new(assigned, share, named_pool));
        // The addresses as values: no `IpAddr` is built or read on the common path.
        for n in 0..ips.len() {
            let (family, value) = ips.value(n).expect("n < len");
            let services = &self.services;
            let first_holder = self.holders.add_value(family, value, id, |ids| {
                let me = (key.namespace.as_str(), key.name.as_str());
                ids.partition_point(|&x| services.key_parts(x) < me)
            });
            if first_holder && !self.defer_takes {
                // Without overlapping ranges `pool` is the one pool that may hand out the address
                // (every path here checked that it may), so no lookup is needed.
                let home = if self.ranges.overlapping {
                    ips.get(n).and_then(|ip| self.pool_of(&ip))
                } else {
                    debug_assert_eq!(
                        ips.get(n).and_then(|ip| self.pool_of(&ip)),
                        Some(pool),
                        "{:?} is not from pool {pool}",
                        ips.get(n)
                    );
                    Some(pool)
                };
                if let Some(i) = home {
                    self.take_in(i, family, value);
                }
            }
            if let (Some(k), Some(ip)) = (&sharing_key, ips.get(n)) {
                self.by_sharing_key.entry(k.clone()).or_default().insert(ip);
            }
        }
        id
    }
}

impl From<Result<Assigned, AllocError>> for Allocation {
    /// An allocator outcome in the form the Kubernetes shell uses.
    fn from(r: Result<Assigned, AllocError>) -> Allocation {
        match r {
            Ok(Assigned { ips, pool }) => Allocation::Assigned {
                ips: ips.to_vec(),
                pool: pool.to_string(),
            },
            Err(e) => Allocation::Failed {
                reason: e.to_string(),
            },
        }
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
        out.allocations.insert(k.clone(), Allocation::from(r));
    }
    for u in a.usage() {
        out.pools.insert(u.pool, (u.in_use, u.addresses_total));
    }
    out
}

#[cfg(test)]
mod tests {
    //! The indexes (range table, free-pool bits, the `pick_auto` shortcut) against the plain
    //! scans they replace: the same calls must give the same results.

    use super::*;
    use ferrolb_config::{IpFamilyPolicy, ServicePort};
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    const CONFIG: &str = "address-pools:
- name: small
  protocol: layer2
  avoid-buggy-ips: true
  addresses: [198.51.100.254-198.51.101.1, 2001:db8:1::/126]
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [203.0.113.0/30]
- name: v4
  protocol: layer2
  addresses: [192.0.2.8/30, 192.0.2.0/30]
- name: v6
  protocol: layer2
  addresses: [2001:db8:2::/127]
- name: dual
  protocol: layer2
  addresses: [192.0.2.64/31, 2001:db8:3::/127]
";

    const NEW_CONFIG: &str = "address-pools:
- name: dual
  protocol: layer2
  addresses: [192.0.2.64/31, 2001:db8:3::/127, 192.0.2.0/28]
- name: small
  protocol: layer2
  addresses: [198.51.100.254-198.51.101.1, 2001:db8:1::/126, 2001:db8:2::/127]
- name: manual
  protocol: layer2
  addresses: [203.0.113.0/30]
";

    fn view(n: u8, fam: u8, policy: u8, share: bool, request: Option<u8>) -> ServiceView {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", format!("s{n}")));
        v.ip_families = vec![if fam == 0 { IpFamily::V4 } else { IpFamily::V6 }];
        v.ip_family_policy = match policy {
            0 => IpFamilyPolicy::SingleStack,
            1 => IpFamilyPolicy::PreferDualStack,
            _ => IpFamilyPolicy::RequireDualStack,
        };
        v.ports = vec![ServicePort {
            protocol: "TCP".into(),
            port: 80 + u16::from(n % 3),
        }];
        if share {
            v.annotations.insert(
                ferrolb_config::service::annotations::ALLOW_SHARED_IP.into(),
                "k".into(),
            );
        }
        match request {
            Some(0) => {
                v.annotations.insert(
                    ferrolb_config::service::annotations::ADDRESS_POOL.into(),
                    "manual".into(),
                );
            }
            Some(r) => v.load_balancer_ip = Some(format!("192.0.2.{}", r % 12)),
            None => {}
        }
        v
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u8, u8, u8, bool, Option<u8>),
        Release(u8),
        Restore(u8, u8),
        SetConfig(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..16, 0u8..2, 0u8..3, proptest::bool::weighted(0.2), proptest::option::weighted(0.15, 0u8..12))
                .prop_map(|(n, f, p, s, r)| Op::Allocate(n, f, p, s, r)),
            2 => (0u8..16).prop_map(Op::Release),
            1 => (0u8..16, 0u8..12).prop_map(|(n, o)| Op::Restore(n, o)),
            1 => proptest::bool::ANY.prop_map(Op::SetConfig),
        ]
    }

    proptest! {
        #[test]
        fn indexed_allocator_matches_the_plain_scans(ops in proptest::collection::vec(op(), 1..80)) {
            let config = ferrolb_config::parse(CONFIG).unwrap_or_default();
            let mut fast = Allocator::new(config.clone(), "ferrolb");
            let mut slow = Allocator {
                naive: true,
                ..Allocator::new(Config::default(), "ferrolb")
            };
            slow.load_pools(config);
            for op in ops {
                match op {
                    Op::Allocate(n, f, p, s, r) => {
                        let v = view(n, f, p, s, r);
                        prop_assert_eq!(fast.allocate(&v), slow.allocate(&v));
                    }
                    Op::Release(n) => {
                        let k = ServiceKey::new("ns", format!("s{n}"));
                        prop_assert_eq!(fast.release(&k), slow.release(&k));
                    }
                    Op::Restore(n, o) => {
                        let mut v = view(n, 0, 0, false, None);
                        v.ingress_ips = vec![format!("192.0.2.{o}").parse().unwrap_or(IpAddr::from([192, 0, 2, 1]))];
                        prop_assert_eq!(fast.restore(&v), slow.restore(&v));
                    }
                    Op::SetConfig(new) => {
                        let c = ferrolb_config::parse(if new { NEW_CONFIG } else { CONFIG }).unwrap_or_default();
                        prop_assert_eq!(fast.set_config(c.clone()), slow.set_config(c));
                    }
                }
                prop_assert_eq!(fast.assignments(), slow.assignments());
                prop_assert_eq!(fast.usage(), slow.usage());
                prop_assert_eq!(fast.held(), slow.held());
            }
        }
    }

    /// Services for the differential test against the pre-id allocator: families, policies,
    /// sharing keys and ports, requests (address, pair of addresses, pool), classes, statuses.
    fn rich_view(n: u8, shape: u8, share: u8, request: u8, status: u8) -> ServiceView {
        let mut v = view(n, shape % 2, (shape / 2) % 3, false, None);
        v.ports = vec![ServicePort {
            protocol: if shape % 5 == 0 { "UDP" } else { "TCP" }.into(),
            port: 80 + u16::from(n % 2),
        }];
        if shape % 7 == 6 {
            v.external_traffic_policy = TrafficPolicy::Local;
            v.selector.insert("app".into(), format!("a{}", n % 2));
        }
        match share % 4 {
            0 | 1 => {}
            2 => {
                v.annotations.insert(
                    ferrolb_config::service::annotations::ALLOW_SHARED_IP.into(),
                    "k".into(),
                );
            }
            _ => {
                v.annotations.insert(
                    ferrolb_config::service::annotations::ALLOW_SHARED_IP.into(),
                    " j ".into(),
                );
            }
        }
        let lbips = ferrolb_config::service::annotations::LOAD_BALANCER_IPS;
        match request % 10 {
            0 => v.load_balancer_ip = Some(format!("192.0.2.{}", request % 16)),
            1 => {
                v.annotations.insert(
                    lbips.into(),
                    format!("192.0.2.{}, 2001:db8:3::1", request % 4 + 64),
                );
            }
            2 => {
                v.annotations.insert(
                    ferrolb_config::service::annotations::ADDRESS_POOL.into(),
                    ["manual", "dual", "nope", "small"][usize::from(request / 10 % 4)].into(),
                );
            }
            3 => v.load_balancer_ip = Some(format!("2001:db8:{}::{}", request % 4, request % 3)),
            4 => v.load_balancer_ip = Some("banana".into()),
            _ => {}
        }
        match shape % 11 {
            9 => v.load_balancer_class = Some("other".into()),
            10 => v.is_load_balancer = false,
            _ => {}
        }
        let v6 = |s: String| s.parse().unwrap_or(IpAddr::from([0u8; 16]));
        v.ingress_ips = match status % 11 {
            0 => vec![IpAddr::from([192, 0, 2, status % 16])],
            1 => vec![
                IpAddr::from([192, 0, 2, 64 + status % 2]),
                format!("2001:db8:3::{}", status % 2)
                    .parse()
                    .unwrap_or(IpAddr::from([0u8; 16])),
            ],
            2 => vec![IpAddr::from([198, 51, 100, 254 + status % 2])],
            3 => vec![IpAddr::from([203, 0, 113, status % 4])],
            // Statuses a restore must refuse or clean up, with the errors of the old code:
            // one address twice, two of one family, three entries with two distinct, three
            // distinct, two families from different pools.
            6 => vec![IpAddr::from([192, 0, 2, status % 16]); 2],
            7 => vec![
                IpAddr::from([192, 0, 2, status % 16]),
                IpAddr::from([192, 0, 2, 1 + status % 8]),
            ],
            8 => vec![
                IpAddr::from([192, 0, 2, 64 + status % 2]),
                v6(format!("2001:db8:3::{}", status % 2)),
                IpAddr::from([192, 0, 2, 64 + status % 2]),
            ],
            9 => vec![
                IpAddr::from([192, 0, 2, 64]),
                v6(format!("2001:db8:3::{}", status % 2)),
                IpAddr::from([192, 0, 2, 65]),
            ],
            10 => vec![
                IpAddr::from([192, 0, 2, status % 8]),
                v6(format!("2001:db8:2::{}", status % 2)),
            ],
            _ => Vec::new(),
        };
        v
    }

    #[derive(Debug, Clone)]
    enum Rich {
        Allocate(u8, u8, u8, u8),
        Release(u8),
        Restore(u8, u8, u8, u8, u8),
        SetConfig(bool),
        Fresh(bool),
    }

    fn rich_op() -> impl Strategy<Value = Rich> {
        prop_oneof![
            8 => (0u8..24, 0u8..77, 0u8..4, 0u8..40).prop_map(|(n, s, h, r)| Rich::Allocate(n, s, h, r)),
            3 => (0u8..24).prop_map(Rich::Release),
            3 => (0u8..24, 0u8..77, 0u8..4, 0u8..40, 0u8..36).prop_map(|(n, s, h, r, st)| Rich::Restore(n, s, h, r, st)),
            1 => proptest::bool::ANY.prop_map(Rich::SetConfig),
            1 => proptest::bool::ANY.prop_map(Rich::Fresh),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// The allocator with interned ids, the keyed hash and the end-keyed free index gives
        /// exactly what the allocator before them gave, for every sequence of calls.
        #[test]
        fn same_results_as_the_pre_id_allocator(ops in proptest::collection::vec(rich_op(), 1..120)) {
            let config = ferrolb_config::parse(CONFIG).unwrap_or_default();
            let mut new = Allocator::new(config.clone(), "ferrolb");
            let mut old = oracle::Allocator::new(config, "ferrolb");
            let mut seen: BTreeMap<ServiceKey, ServiceView> = BTreeMap::new();
            for op in ops {
                match op {
                    Rich::Allocate(n, s, h, r) => {
                        let v = rich_view(n, s, h, r, 5);
                        prop_assert_eq!(new.allocate(&v), old.allocate(&v));
                        seen.insert(v.key.clone(), v);
                    }
                    Rich::Release(n) => {
                        let k = ServiceKey::new("ns", format!("s{n}"));
                        prop_assert_eq!(new.release(&k), old.release(&k));
                    }
                    Rich::Restore(n, s, h, r, st) => {
                        let v = rich_view(n, s, h, r, st);
                        prop_assert_eq!(new.restore(&v), old.restore(&v));
                        seen.insert(v.key.clone(), v);
                    }
                    Rich::SetConfig(b) => {
                        let c = ferrolb_config::parse(if b { NEW_CONFIG } else { CONFIG }).unwrap_or_default();
                        prop_assert_eq!(new.set_config(c.clone()), old.set_config(c));
                    }
                    Rich::Fresh(b) => {
                        // Restart from what the Services now hold (their statuses).
                        let views: Vec<ServiceView> = seen
                            .values()
                            .map(|v| {
                                let mut v = v.clone();
                                v.ingress_ips = new.assignment(&v.key).map(|a| a.ips.to_vec()).unwrap_or_default();
                                v
                            })
                            .collect();
                        let c = ferrolb_config::parse(if b { NEW_CONFIG } else { CONFIG }).unwrap_or_default();
                        let (a, got) = Allocator::fresh(c.clone(), "ferrolb", &views);
                        let (o, want) = oracle::Allocator::fresh(c, "ferrolb", &views);
                        let got: BTreeMap<ServiceKey, Result<Assigned, AllocError>> =
                            got.into_iter().map(|(k, r)| (k.clone(), r)).collect();
                        prop_assert_eq!(got, want);
                        new = a;
                        old = o;
                    }
                }
                prop_assert_eq!(new.assignments(), old.assignments());
                prop_assert_eq!(new.usage(), old.usage());
                prop_assert_eq!(new.held(), old.held());
                prop_assert_eq!(new.len(), old.assignments().len());
            }
            // Every id in use is live and every free id is empty.
            let live = new.services.iter().count();
            prop_assert_eq!(live, new.len());
            let (used, free) = new.services.ids_used();
            prop_assert_eq!(live + free.len(), used);
        }
    }

    #[test]
    fn ids_are_reused_after_release_and_keys_stay_distinct() {
        let config = ferrolb_config::parse(CONFIG).unwrap_or_default();
        let mut a = Allocator::new(config, "ferrolb");
        let (x, y) = (view(1, 0, 0, false, None), view(2, 0, 0, false, None));
        let ax = a.allocate(&x).ok();
        let ay = a.allocate(&y).ok();
        assert!(ax.is_some() && ay.is_some());
        assert_eq!(a.services.ids_used(), (2, &[][..]));
        assert_eq!(a.release(&x.key), ax);
        assert_eq!(a.services.ids_used(), (2, &[0][..]));
        assert_eq!(a.assignment(&x.key), None);
        // A new Service takes the freed id; the old key does not come back with it.
        let z = view(3, 0, 0, false, None);
        let az = a.allocate(&z).ok();
        assert!(az.is_some());
        assert_eq!(a.services.ids_used(), (2, &[][..]));
        assert_eq!(a.services.id(&z.key), Some(0));
        assert_eq!(a.assignment(&x.key), None);
        assert_eq!(a.assignment(&y.key), ay.as_ref());
        assert_eq!(a.assignment(&z.key), az.as_ref());
        assert_eq!(a.len(), 2);
        // Releasing what is not held changes nothing.
        assert_eq!(a.release(&x.key), None);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn many_holders_stay_sorted_by_key_as_ids_are_reused() {
        let config = ferrolb_config::parse(CONFIG).unwrap_or_default();
        let mut a = Allocator::new(config, "ferrolb");
        let share = |n: u8, port: u16| {
            let mut v = view(n, 0, 0, true, Some(8));
            v.ports[0].port = port;
            v
        };
        // s9 gets id 0, s3 id 1, s5 id 2: ids do not follow key order.
        for (n, port) in [(9, 1), (3, 2), (5, 3)] {
            assert!(a.allocate(&share(n, port)).is_ok());
        }
        let ip = IpAddr::from([192, 0, 2, 8]);
        let keys = |a: &Allocator| -> Vec<String> {
            a.holders
                .get(&ip)
                .ids()
                .iter()
                .map(|&i| a.services.key(i).name)
                .collect()
        };
        assert_eq!(keys(&a), ["s3", "s5", "s9"]);
        a.release(&ServiceKey::new("ns", "s3"));
        assert_eq!(keys(&a), ["s5", "s9"]);
        a.release(&ServiceKey::new("ns", "s9"));
        assert!(matches!(a.holders.get(&ip), holders::Holding::One(_)));
        // s1 reuses a freed id and sorts first; a conflicting Service names the first holder.
        assert!(a.allocate(&share(1, 4)).is_ok());
        assert_eq!(keys(&a), ["s1", "s5"]);
        let err = a.allocate(&share(7, 4)).map(|_| ());
        assert!(
            matches!(&err, Err(AllocError::SharingConflict { other, .. }) if other.name == "s1"),
            "{err:?}"
        );
    }
}
