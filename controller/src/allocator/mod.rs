//! The allocator: gives each `LoadBalancer` Service ferrolb serves one address per IP family, from
//! one pool, and keeps it. Pure and deterministic: the same config and the same sequence of calls
//! give the same addresses (pools in config order, lowest free address first).
//!
//! Rules (MetalLB 0.12 plus fixes):
//! - Requests: `spec.loadBalancerIP` or annotation `metallb.universe.tf/loadBalancerIPs` (one
//!   address per family; both at once is an error), annotation `metallb.universe.tf/address-pool`.
//!   `auto-assign: false` pools serve only explicit requests (an address or the pool annotation).
//! - Without a request, pools are tried in config order (MetalLB's CRDs: the pools whose
//!   `serviceAllocation` admits the Service first, by priority, see
//!   [`ferrolb_config::Config::unasked_pools`]); within a pool the lowest free address
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
//! Layout: this module is the facade: [`Allocator`] owns the state and answers questions about
//! it; each job is in its own module, as `impl Allocator` blocks:
//! - `pick`: [`Allocator::allocate`] (keep what still fits, else choose addresses) and the
//!   sharing checks;
//! - `hold`: [`Allocator::release`] and the commit of a choice, with every index kept in step;
//! - `index`: which pool may hand out an address, which pools have room, pools by name;
//! - `rebuild`: [`Allocator::restore`], [`Allocator::fresh`] / `rebuild` (the restart path),
//!   [`Allocator::reserve`], [`Allocator::set_config`];
//! - plain parts beside them: requests ([`request`]), families ([`family`]), sharing rules
//!   ([`sharing`]), one pool's free space ([`pool`]), the per-address holders, the interned
//!   Services, key order and the keyed hash.
//!
//! Must not: do I/O, read clocks, know about kube-rs types, or use the layers above it
//! (`reconcile`, `incremental`): they turn its results into their own types.

mod assigned;
mod error;
pub mod family;
mod hasher;
mod hold;
mod holders;
mod index;
mod keyorder;
mod pick;
pub mod pool;
mod rebuild;
pub mod request;
mod services;
pub mod sharing;
#[cfg(test)]
mod testkit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_config::{is_ours, Config, ServiceKey, ServiceView};

pub use assigned::{Assigned, Ips, IpsIter, PoolName};
pub use error::AllocError;
use holders::HolderMap;
use index::{PoolBits, RangeTable};
use pool::PoolIndex;
pub use rebuild::{Demand, Outcome};
use services::Services;
use sharing::SharingInfo;

/// Usage of one pool, for metrics (`metallb_allocator_addresses_{total,in_use_total}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub pool: String,
    /// Addresses the pool may hand out.
    pub addresses_total: u128,
    /// Distinct addresses in use (a shared address counts once).
    pub in_use: u64,
    /// `(usable, in use)` per family, IPv4 then IPv6 (IPAddressPool status).
    pub by_family: [(u128, u64); 2],
}

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
    #[inline]
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

    #[inline]
    fn named_pool(&self) -> Option<usize> {
        (self.named_pool != NO_POOL).then_some(self.named_pool as usize)
    }

    #[inline]
    fn set_named_pool(&mut self, pool: Option<usize>) {
        self.named_pool = pool
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != NO_POOL)
            .unwrap_or(NO_POOL);
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
    /// Some pool has a `serviceAllocation`: the pools tried depend on the Service (kept with
    /// the config, so the common case pays no scan of the pools).
    by_service: bool,
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
            by_service: false,
        };
        a.load_pools(config);
        a
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
    #[inline]
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
                by_family: [p.by_family(0), p.by_family(1)],
            })
            .collect()
    }
}
