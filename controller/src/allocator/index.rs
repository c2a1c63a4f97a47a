//! The range and pool index: which pool may hand out an address ([`RangeTable`], a binary
//! search over every pool's ranges), which `auto-assign` pools still have a free address of a
//! family ([`PoolBits`]), the pools by name, and the allocator's bookkeeping of the per-pool free
//! indexes ([`super::pool::PoolIndex`]) as addresses are taken and given back.
//!
//! Must not: choose addresses for a Service, apply sharing or request rules, or know about
//! Services at all; it answers "where does this address belong" and "which pools have room".

use std::collections::HashMap;
use std::net::IpAddr;

use ferrolb_config::addr::to_u128;
use ferrolb_config::{Config, IpFamily};

use super::pool::{fam_idx, PoolIndex};
use super::{AllocError, Allocator};

/// Which pool holds an address: every range of every pool, per family, sorted by first address,
/// so finding the pool of an address is a binary search, not a scan of every pool. Validated
/// configs never overlap; for one that does (built by hand) lookups fall back to the scan in
/// config order, which gives the same answer.
#[derive(Debug, Clone, Default)]
pub(super) struct RangeTable {
    /// Per family: `(first, last, pool index)`, sorted by `first`.
    by_family: [Vec<(u128, u128, usize)>; 2],
    /// Some ranges overlap (only a config built by hand: validation refuses overlaps).
    pub(super) overlapping: bool,
}

impl RangeTable {
    pub(super) fn new(config: &Config) -> RangeTable {
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

    /// The first pool (config order) that may hand out `ip`. Deliberately without `#[inline]`:
    /// inlined into `set_config`'s loops it made refusing a change at 10k Services 7-9% slower.
    pub(super) fn pool_of(&self, pools: &[PoolIndex], ip: &IpAddr) -> Option<usize> {
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
pub(super) struct PoolBits(Vec<u64>);

impl PoolBits {
    #[inline]
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
    #[inline]
    pub(super) fn first_common(sets: &[&PoolBits]) -> Option<usize> {
        let words = sets.iter().map(|s| s.0.len()).min()?;
        (0..words).find_map(|w| {
            let x = sets.iter().fold(u64::MAX, |acc, s| acc & s.0[w]);
            (x != 0).then(|| w * 64 + x.trailing_zeros() as usize)
        })
    }
}

impl Allocator {
    /// Installs `config` with every address free (the caller re-takes held ones).
    pub(super) fn load_pools(&mut self, config: Config) {
        self.pools = config.pools.iter().map(PoolIndex::new).collect();
        self.ranges = RangeTable::new(&config);
        self.pool_names = HashMap::with_capacity(config.pools.len());
        for (i, p) in config.pools.iter().enumerate() {
            self.pool_names.entry(p.name.clone()).or_insert(i);
        }
        self.first_of_name = config
            .pools
            .iter()
            .map(|p| self.pool_names.get(&p.name).copied().unwrap_or_default())
            .collect();
        self.by_service = config.allocates_by_service();
        self.config = config;
        self.auto_free = Default::default();
        for i in 0..self.pools.len() {
            self.refresh_free_bits(i);
        }
    }

    /// Updates pool `i`'s bits in `auto_free` after a take or release.
    #[inline]
    fn refresh_free_bits(&mut self, i: usize) {
        let auto = self.config.pools.get(i).is_some_and(|p| p.auto_assign);
        for f in [IpFamily::V4, IpFamily::V6] {
            let on = auto && self.pools[i].has_free(f);
            self.auto_free[fam_idx(f)].set(i, on);
        }
    }

    /// Takes the address of `family` whose value ([`to_u128`]) is `value` in pool `i`.
    #[inline]
    pub(super) fn take_in(&mut self, i: usize, family: IpFamily, value: u128) {
        // A take can only clear the bit of the address's family, and only by taking the last
        // free one.
        if self.pools[i].take_value(family, value) && !self.pools[i].has_free(family) {
            self.refresh_free_bits(i);
        }
    }

    pub(super) fn release_in(&mut self, i: usize, ip: &IpAddr) {
        self.pools[i].release(ip);
        self.refresh_free_bits(i);
    }

    /// With every pool's free index empty of takes: takes every held address, in address order
    /// (so each take trims the front of a free interval instead of splitting intervals all over
    /// the range), and refreshes the free-pool bits.
    pub(super) fn retake_held(&mut self) {
        for ip in self.holders.sorted_ips() {
            if let Some(i) = self.pool_of(&ip) {
                self.pools[i].take(&ip);
            }
        }
        for i in 0..self.pools.len() {
            self.refresh_free_bits(i);
        }
    }

    /// The first pool (config order) that may hand out `ip`.
    #[inline]
    pub(super) fn pool_of(&self, ip: &IpAddr) -> Option<usize> {
        self.ranges.pool_of(&self.pools, ip)
    }

    /// The first pool named `name`.
    pub(super) fn pool_index(&self, name: &str) -> Option<usize> {
        self.pool_names.get(name).copied()
    }

    /// The one pool holding every address of `ips`.
    pub(super) fn pool_for_ips(&self, ips: &[IpAddr], first: IpAddr) -> Result<usize, AllocError> {
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
}

#[cfg(test)]
mod tests {
    //! The indexes against the plain scans they replace: the range table against "the first pool
    //! in config order that may hand out the address", the free-pool bits against "the lowest
    //! pool in every set".

    use super::*;
    use ferrolb_config::{IpRange, Pool, Protocol};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Address `o` of a family's test span: IPv4 from 198.51.100.200 (so `.255` and `.0` are
    /// inside), IPv6 from 2001:db8::f0.
    fn addr(v6: bool, o: u32) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xf0)) + u128::from(o),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(198, 51, 100, 200)) + o,
            ))
        }
    }

    /// Pools built by hand (so they may overlap, which validation would refuse): each range
    /// `(v6, start, len, pool)` goes to pool `pool % pools`.
    fn pools_of(ranges: &[(bool, u32, u32, usize)], flags: &[(bool, bool)]) -> Config {
        let mut config = Config::default();
        for (i, (avoid, auto)) in flags.iter().enumerate() {
            config.pools.push(Pool {
                name: format!("p{i}"),
                protocol: Protocol::Layer2,
                ranges: Vec::new(),
                avoid_buggy_ips: *avoid,
                auto_assign: *auto,
                bgp_advertisements: Vec::new(),
                interfaces: Vec::new(),
                l2_advertisements: Vec::new(),
                service_allocation: None,
            });
        }
        for &(v6, start, len, pool) in ranges {
            if let Some(r) = IpRange::new(addr(v6, start), addr(v6, start + len)) {
                config.pools[pool % flags.len()].ranges.push(r);
            }
        }
        config
    }

    /// Ranges laid out one after another with gaps (never overlapping), in a random pool each.
    fn disjoint() -> impl Strategy<Value = Vec<(bool, u32, u32, usize)>> {
        proptest::collection::vec((proptest::bool::ANY, 0u32..4, 0u32..6, 0usize..4), 1..8)
            .prop_map(|spans| {
                let mut next = [0u32; 2];
                spans
                    .into_iter()
                    .map(|(v6, gap, len, pool)| {
                        let at = &mut next[usize::from(v6)];
                        let start = *at + gap;
                        *at = start + len + 1;
                        (v6, start, len, pool)
                    })
                    .collect()
            })
    }

    fn check_pool_of(config: &Config, probes: &[(bool, u32)]) -> Result<(), TestCaseError> {
        let pools: Vec<PoolIndex> = config.pools.iter().map(PoolIndex::new).collect();
        let table = RangeTable::new(config);
        for &(v6, o) in probes {
            let ip = addr(v6, o);
            // The plain rule, from the config itself: the first pool that may hand it out.
            let scan = config.pools.iter().position(|p| p.may_assign(&ip));
            prop_assert_eq!(table.pool_of(&pools, &ip), scan, "{}", ip);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn range_table_finds_the_first_pool_that_may_hand_out_an_address(
            ranges in disjoint(),
            flags in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 1..4),
            probes in proptest::collection::vec((proptest::bool::ANY, 0u32..70), 1..40),
        ) {
            let config = pools_of(&ranges, &flags);
            prop_assert!(!RangeTable::new(&config).overlapping);
            check_pool_of(&config, &probes)?;
        }

        #[test]
        fn overlapping_ranges_are_found_in_config_order(
            ranges in proptest::collection::vec((proptest::bool::ANY, 0u32..30, 0u32..20, 0usize..4), 1..8),
            flags in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 1..4),
            probes in proptest::collection::vec((proptest::bool::ANY, 0u32..60), 1..40),
        ) {
            check_pool_of(&pools_of(&ranges, &flags), &probes)?;
        }

        #[test]
        fn first_common_is_the_lowest_pool_in_every_set(
            a in proptest::collection::vec((0usize..200, proptest::bool::weighted(0.7)), 0..60),
            b in proptest::collection::vec((0usize..200, proptest::bool::weighted(0.7)), 0..60),
        ) {
            let (mut bits, mut sets) = ([PoolBits::default(), PoolBits::default()], [BTreeSet::new(), BTreeSet::new()]);
            for (k, ops) in [a, b].into_iter().enumerate() {
                for (i, on) in ops {
                    bits[k].set(i, on);
                    if on {
                        sets[k].insert(i);
                    } else {
                        sets[k].remove(&i);
                    }
                }
            }
            let both = sets[0].intersection(&sets[1]).next().copied();
            prop_assert_eq!(PoolBits::first_common(&[&bits[0], &bits[1]]), both);
            prop_assert_eq!(PoolBits::first_common(&[&bits[0], &bits[0]]), sets[0].first().copied());
        }
    }

    #[test]
    fn a_table_without_ranges_finds_nothing() {
        let config = Config::default();
        let table = RangeTable::new(&config);
        assert_eq!(table.pool_of(&[], &addr(false, 1)), None);
        assert_eq!(PoolBits::first_common(&[]), None);
    }
}
