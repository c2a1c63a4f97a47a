//! Per-pool free-space index: which addresses of a pool are free, and the lowest free one.
//!
//! Each range keeps a `BTreeMap` of free intervals (keyed by end, inclusive, as integers), so
//! taking the lowest free address, taking a given address and giving one back are `O(log n)` in
//! the number of intervals, never in the size of the range: an IPv6 /64 costs what an IPv4 /24
//! costs. With `avoid-buggy-ips`, IPv4 `.0`/`.255` addresses are dropped from the free set when
//! they reach the front of an interval (at most two steps each) and are never handed out.
//!
//! Must not: know about Services or sharing; it only tracks taken/free addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::addr::{from_u128, is_buggy_ip, to_u128};
use ferrolb_config::{IpFamily, Pool};

use super::PoolName;

/// One range of a pool and its free intervals.
#[derive(Debug, Clone)]
struct RangeIndex {
    family: IpFamily,
    first: u128,
    last: u128,
    /// Free intervals keyed by their END: end -> start (inclusive), disjoint, non-adjacent.
    /// Keyed by end so that taking the lowest address of an interval (the common case) only
    /// moves its start, in place, without a remove and an insert.
    free: BTreeMap<u128, u128>,
}

impl RangeIndex {
    fn contains(&self, v: u128) -> bool {
        self.first <= v && v <= self.last
    }

    /// The interval holding `v` as `(start, end)`, if `v` is free.
    fn interval_of(&self, v: u128) -> Option<(u128, u128)> {
        let (&e, &s) = self.free.range(v..).next()?;
        (s <= v).then_some((s, e))
    }

    /// The lowest free value.
    fn lowest(&self) -> Option<u128> {
        self.free.first_key_value().map(|(_, &s)| s)
    }

    /// Removes `v` from the free set; false if it was not free.
    fn take(&mut self, v: u128) -> bool {
        // The usual case, taking the lowest free value, changes the first interval only.
        if let Some(mut first) = self.free.first_entry() {
            if *first.get() == v {
                if *first.key() == v {
                    first.remove();
                } else {
                    *first.get_mut() = v + 1;
                }
                return true;
            }
        }
        let Some((&e, s)) = self.free.range_mut(v..).next() else {
            return false;
        };
        let start = *s;
        if start > v {
            return false;
        }
        if v < e {
            // The interval keeps its end: it now starts after `v`.
            *s = v + 1;
            if start < v {
                self.free.insert(v - 1, start);
            }
        } else {
            self.free.remove(&e);
            if start < v {
                self.free.insert(v - 1, start);
            }
        }
        true
    }

    /// Returns `v` to the free set, merging with neighbours.
    fn give_back(&mut self, v: u128) {
        if self.interval_of(v).is_some() {
            return;
        }
        // The interval ending just below `v`, removed (its start is the merged start).
        let left = v.checked_sub(1).and_then(|below| self.free.remove(&below));
        let start = left.unwrap_or(v);
        // The interval starting just above `v` keeps its end: extend it down in place.
        if let Some(above) = v.checked_add(1) {
            if let Some((_, s)) = self.free.range_mut(above..).next() {
                if *s == above {
                    *s = start;
                    return;
                }
            }
        }
        self.free.insert(v, start);
    }
}

/// The free-space index of one pool.
#[derive(Debug, Clone)]
pub struct PoolIndex {
    name: PoolName,
    avoid_buggy: bool,
    /// Ranges sorted by first address (so "lowest free" is lowest in address order per family).
    ranges: Vec<RangeIndex>,
    usable: u128,
    in_use: u64,
    /// Per family (`[IPv4, IPv6]`): assignable addresses and how many are taken, so "has a free
    /// address of this family" is one comparison.
    usable_by_family: [u128; 2],
    in_use_by_family: [u64; 2],
}

/// Index of a family in per-family arrays.
/// [`is_buggy_ip`] of the address of `family` whose value ([`to_u128`]) is `v`: an IPv4 address
/// ending in .0 or .255.
fn is_buggy_value(family: IpFamily, v: u128) -> bool {
    family == IpFamily::V4 && matches!(v & 0xff, 0 | 0xff)
}

pub(crate) fn fam_idx(f: IpFamily) -> usize {
    match f {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// Number of IPv4 addresses `x <= n` with `x % 256` equal to 0 or 255.
fn buggy_upto(n: u128) -> u128 {
    (n / 256 + 1) + (n + 1) / 256
}

impl PoolIndex {
    /// An index with every address of `pool` free.
    pub fn new(pool: &Pool) -> PoolIndex {
        let mut ranges: Vec<RangeIndex> = pool
            .ranges
            .iter()
            .map(|r| {
                let (first, last) = (to_u128(&r.first()), to_u128(&r.last()));
                RangeIndex {
                    family: r.family(),
                    first,
                    last,
                    free: BTreeMap::from([(last, first)]),
                }
            })
            .collect();
        ranges.sort_by_key(|r| (r.family, r.first));
        let usable_of = |r: &RangeIndex| {
            let len = r.last - r.first + 1;
            if pool.avoid_buggy_ips && r.family == IpFamily::V4 {
                let below = if r.first == 0 {
                    0
                } else {
                    buggy_upto(r.first - 1)
                };
                len - (buggy_upto(r.last) - below)
            } else {
                len
            }
        };
        let mut usable_by_family = [0u128; 2];
        for r in &ranges {
            let f = fam_idx(r.family);
            usable_by_family[f] = usable_by_family[f].saturating_add(usable_of(r));
        }
        PoolIndex {
            name: pool.name.as_str().into(),
            avoid_buggy: pool.avoid_buggy_ips,
            ranges,
            usable: usable_by_family[0].saturating_add(usable_by_family[1]),
            in_use: 0,
            usable_by_family,
            in_use_by_family: [0; 2],
        }
    }

    /// True when the pool has a free assignable address of `family` (exactly when
    /// [`PoolIndex::lowest_free`] would return one).
    pub fn has_free(&self, family: IpFamily) -> bool {
        let f = fam_idx(family);
        u128::from(self.in_use_by_family[f]) < self.usable_by_family[f]
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as handed out in [`super::Assigned`] (shared, not copied).
    pub fn shared_name(&self) -> &PoolName {
        &self.name
    }

    /// Addresses this pool may hand out (excluding `.0`/`.255` with `avoid-buggy-ips`).
    pub fn usable(&self) -> u128 {
        self.usable
    }

    /// Addresses currently taken.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// `(usable, in use)` of the family at index `f` (0: IPv4, 1: IPv6).
    pub fn by_family(&self, f: usize) -> (u128, u64) {
        (
            self.usable_by_family.get(f).copied().unwrap_or(0),
            self.in_use_by_family.get(f).copied().unwrap_or(0),
        )
    }

    /// True when the pool has at least one range of `family`.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// True when the pool may hand out `ip` (in a range, not excluded as buggy).
    pub fn may_assign(&self, ip: &IpAddr) -> bool {
        let v = to_u128(ip);
        let fam = IpFamily::of(ip);
        !(self.avoid_buggy && is_buggy_ip(ip))
            && self.ranges.iter().any(|r| r.family == fam && r.contains(v))
    }

    /// True when `ip` is assignable and free.
    pub fn is_free(&self, ip: &IpAddr) -> bool {
        let v = to_u128(ip);
        let fam = IpFamily::of(ip);
        self.may_assign(ip)
            && self
                .ranges
                .iter()
                .any(|r| r.family == fam && r.interval_of(v).is_some())
    }

    /// Marks `ip` taken; false if it is not assignable here or already taken.
    pub fn take(&mut self, ip: &IpAddr) -> bool {
        self.take_value(IpFamily::of(ip), to_u128(ip))
    }

    /// [`PoolIndex::take`] of the address of `fam` whose value ([`to_u128`]) is `v`.
    pub(crate) fn take_value(&mut self, fam: IpFamily, v: u128) -> bool {
        if self.avoid_buggy && is_buggy_value(fam, v) {
            return false;
        }
        let taken = self
            .ranges
            .iter_mut()
            .find(|r| r.family == fam && r.contains(v))
            .is_some_and(|r| r.take(v));
        if taken {
            self.in_use += 1;
            self.in_use_by_family[fam_idx(fam)] += 1;
        }
        taken
    }

    /// Marks `ip` free again (no-op if it is not taken or not in the pool).
    pub fn release(&mut self, ip: &IpAddr) {
        if !self.may_assign(ip) {
            return;
        }
        let v = to_u128(ip);
        let fam = IpFamily::of(ip);
        if let Some(r) = self
            .ranges
            .iter_mut()
            .find(|r| r.family == fam && r.contains(v))
        {
            if r.interval_of(v).is_none() {
                r.give_back(v);
                self.in_use = self.in_use.saturating_sub(1);
                let f = &mut self.in_use_by_family[fam_idx(fam)];
                *f = f.saturating_sub(1);
            }
        }
    }

    /// The lowest free address of `family`, without taking it. Buggy addresses met at the front
    /// of an interval are dropped from the free set for good (they are never assignable).
    pub fn lowest_free(&mut self, family: IpFamily) -> Option<IpAddr> {
        from_u128(family, self.lowest_free_value(family)?)
    }

    /// [`PoolIndex::lowest_free`] as the address's value ([`to_u128`]).
    pub(crate) fn lowest_free_value(&mut self, family: IpFamily) -> Option<u128> {
        if !self.has_free(family) {
            return None;
        }
        let avoid = self.avoid_buggy;
        for r in self.ranges.iter_mut().filter(|r| r.family == family) {
            while let Some(s) = r.lowest() {
                if avoid && is_buggy_value(family, s) {
                    r.take(s);
                    continue;
                }
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::IpRange;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool(ranges: &[(&str, &str)], avoid: bool) -> Pool {
        Pool {
            name: "p".into(),
            protocol: ferrolb_config::Protocol::Layer2,
            ranges: ranges
                .iter()
                .map(|(a, b)| IpRange::new(ip(a), ip(b)).unwrap())
                .collect(),
            avoid_buggy_ips: avoid,
            auto_assign: true,
            bgp_advertisements: Vec::new(),
            interfaces: Vec::new(),
            l2_advertisements: Vec::new(),
            service_allocation: None,
        }
    }

    #[test]
    fn lowest_free_take_release() {
        let mut p = PoolIndex::new(&pool(&[("192.0.2.10", "192.0.2.12")], false));
        assert_eq!(p.usable(), 3);
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("192.0.2.10")));
        assert!(p.take(&ip("192.0.2.10")));
        assert!(!p.take(&ip("192.0.2.10")));
        assert!(p.take(&ip("192.0.2.12")));
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("192.0.2.11")));
        assert!(p.take(&ip("192.0.2.11")));
        assert_eq!(p.lowest_free(IpFamily::V4), None);
        assert_eq!(p.in_use(), 3);
        p.release(&ip("192.0.2.11"));
        p.release(&ip("192.0.2.11"));
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("192.0.2.11")));
        assert_eq!(p.lowest_free(IpFamily::V6), None);
        assert!(!p.take(&ip("192.0.2.13")));
    }

    #[test]
    fn avoid_buggy_skips_dot_zero_and_255() {
        let mut p = PoolIndex::new(&pool(&[("198.51.100.254", "198.51.101.1")], true));
        assert_eq!(p.usable(), 2);
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("198.51.100.254")));
        assert!(p.take(&ip("198.51.100.254")));
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("198.51.101.1")));
        assert!(!p.take(&ip("198.51.101.0")));
        let full = PoolIndex::new(&pool(&[("192.0.2.0", "192.0.2.255")], true));
        assert_eq!(full.usable(), 254);
    }

    #[test]
    fn ipv6_slash_64_has_2_pow_64_addresses() {
        let mut p = PoolIndex::new(&pool(
            &[("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")],
            true,
        ));
        assert_eq!(p.usable(), 1u128 << 64);
        assert_eq!(p.lowest_free(IpFamily::V6), Some(ip("2001:db8::")));
        assert!(p.take(&ip("2001:db8::")));
        assert_eq!(p.lowest_free(IpFamily::V6), Some(ip("2001:db8::1")));
    }

    #[test]
    fn ranges_are_searched_in_address_order() {
        let mut p = PoolIndex::new(&pool(
            &[("192.0.2.100", "192.0.2.100"), ("192.0.2.5", "192.0.2.5")],
            false,
        ));
        assert_eq!(p.lowest_free(IpFamily::V4), Some(ip("192.0.2.5")));
    }

    proptest::proptest! {
        /// The value form of the buggy-address rule agrees with `is_buggy_ip`.
        #[test]
        fn buggy_values_are_buggy_ips(v4 in proptest::num::u32::ANY, v6 in proptest::num::u128::ANY) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(v4));
            proptest::prop_assert_eq!(is_buggy_value(IpFamily::V4, u128::from(v4)), is_buggy_ip(&a));
            let b = IpAddr::V6(std::net::Ipv6Addr::from(v6));
            proptest::prop_assert!(!is_buggy_value(IpFamily::V6, v6) && !is_buggy_ip(&b));
        }

        /// The interval index agrees with a naive model: lowest free = lowest untaken non-buggy
        /// address; take/release keep `in_use` exact.
        #[test]
        fn matches_a_naive_model(
            avoid in proptest::bool::ANY,
            ops in proptest::collection::vec((proptest::bool::ANY, 0u32..40), 0..120),
        ) {
            let mut p = PoolIndex::new(&pool(&[("198.51.100.240", "198.51.101.15")], avoid));
            let base = u32::from(std::net::Ipv4Addr::new(198, 51, 100, 240));
            let addr = |o: u32| IpAddr::V4(std::net::Ipv4Addr::from(base + o));
            let usable: Vec<u32> = (0..32).filter(|o| !(avoid && is_buggy_ip(&addr(*o)))).collect();
            proptest::prop_assert_eq!(p.usable(), usable.len() as u128);
            let mut taken = std::collections::BTreeSet::new();
            for (take, o) in ops {
                if take {
                    let ok = p.take(&addr(o));
                    proptest::prop_assert_eq!(ok, usable.contains(&o) && taken.insert(o));
                } else {
                    p.release(&addr(o));
                    taken.remove(&o);
                }
                let naive = usable.iter().find(|o| !taken.contains(*o)).map(|o| addr(*o));
                proptest::prop_assert_eq!(p.has_free(IpFamily::V4), naive.is_some());
                proptest::prop_assert_eq!(p.lowest_free(IpFamily::V4), naive);
                proptest::prop_assert!(!p.has_free(IpFamily::V6));
                proptest::prop_assert_eq!(p.in_use(), taken.len() as u64);
            }
        }
    }
}
