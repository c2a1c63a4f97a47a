//! Which Services hold each address: address -> Service ids, in as little memory as the common
//! case allows. Most addresses have one holder; shared ones have several, kept in the order the
//! caller chooses (the allocator keeps them sorted by key).
//!
//! Each family has its own table keyed by the address itself (an IPv4 address as a `u32`), and
//! each entry is one `u32`: the holder's id, or, with the top bit set, the index of a list of
//! ids kept aside. An IPv4 entry is 8 bytes (plus the table's control byte and spare room) where
//! an `IpAddr -> enum` entry was 48, so a table for 100k addresses is about 1 MiB instead of 6,
//! and growing it touches a sixth of the pages.
//!
//! Must not: know about pools, keys or sharing rules; it only records ids per address.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use ferrolb_config::addr::to_u128;
use ferrolb_config::IpFamily;

use super::hasher::Keyed;
use super::Id;

/// Marks an entry that is an index into [`HolderMap::lists`] rather than an id.
const LIST: u32 = 1 << 31;

/// The largest id a holder entry can carry.
pub(super) const MAX_ID: Id = LIST - 1;

#[derive(Debug, Clone, Default)]
pub(super) struct HolderMap {
    v4: HashMap<u32, u32, Keyed>,
    v6: HashMap<Ipv6Addr, u32, Keyed>,
    /// The holders of shared addresses (two or more ids each).
    lists: Vec<Vec<Id>>,
    /// Indexes of `lists` that are unused, reused first.
    free_lists: Vec<u32>,
}

impl HolderMap {
    fn entry_of(&self, ip: &IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&u32::from(*a)).copied(),
            IpAddr::V6(a) => self.v6.get(a).copied(),
        }
    }

    fn entry_mut(&mut self, family: IpFamily, value: u128) -> Option<&mut u32> {
        match family {
            IpFamily::V4 => self.v4.get_mut(&(value as u32)),
            IpFamily::V6 => self.v6.get_mut(&Ipv6Addr::from(value)),
        }
    }

    /// The holders of `ip` (empty when none).
    pub(super) fn get(&self, ip: &IpAddr) -> Holding<'_> {
        match self.entry_of(ip) {
            None => Holding::None,
            Some(e) if e & LIST == 0 => Holding::One(e),
            Some(e) => Holding::Many(&self.lists[(e & !LIST) as usize]),
        }
    }

    /// Adds `id` as a holder of the address of `family` whose value ([`to_u128`]) is `value`.
    /// With holders already there, `at` says where in their list `id` goes. Returns true when
    /// `id` is the first holder.
    #[inline]
    pub(super) fn add_value(
        &mut self,
        family: IpFamily,
        value: u128,
        id: Id,
        at: impl FnOnce(&[Id]) -> usize,
    ) -> bool {
        debug_assert!(id <= MAX_ID, "id {id} does not fit a holder entry");
        let existing = match family {
            IpFamily::V4 => insert_or_get(&mut self.v4, value as u32, id),
            IpFamily::V6 => insert_or_get(&mut self.v6, Ipv6Addr::from(value), id),
        };
        let Some(existing) = existing else {
            return true;
        };
        if existing & LIST != 0 {
            let list = &mut self.lists[(existing & !LIST) as usize];
            let i = at(list);
            list.insert(i, id);
        } else {
            let mut list = vec![existing];
            let i = at(&list);
            list.insert(i, id);
            let index = match self.free_lists.pop() {
                Some(i) => {
                    self.lists[i as usize] = list;
                    i
                }
                None => {
                    self.lists.push(list);
                    u32::try_from(self.lists.len() - 1)
                        .ok()
                        .filter(|i| *i < LIST)
                        .expect("fewer than 2^31 shared addresses")
                }
            };
            *self.entry_mut(family, value).expect("the entry read above") = index | LIST;
        }
        false
    }

    /// Removes `id` from the holders of `ip`. Returns true when nobody holds `ip` any more.
    pub(super) fn remove(&mut self, ip: &IpAddr, id: Id) -> bool {
        let Some(e) = self.entry_of(ip) else {
            return false;
        };
        if e & LIST == 0 {
            if e != id {
                return false;
            }
            match ip {
                IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
                IpAddr::V6(a) => self.v6.remove(a),
            };
            return true;
        }
        let index = e & !LIST;
        let list = &mut self.lists[index as usize];
        list.retain(|x| *x != id);
        if let [only] = list[..] {
            // Back to one holder: the list is freed for reuse.
            self.lists[index as usize] = Vec::new();
            self.free_lists.push(index);
            *self
                .entry_mut(IpFamily::of(ip), to_u128(ip))
                .expect("the entry read above") = only;
        }
        false
    }

    /// Every held address, in no particular order.
    pub(super) fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self
            .v4
            .keys()
            .map(|a| IpAddr::from(std::net::Ipv4Addr::from(*a)));
        v4.chain(self.v6.keys().map(|a| IpAddr::V6(*a)))
    }

    /// Every held address in address order (IPv4 first), sorted as integers per family: several
    /// times cheaper than sorting `IpAddr`s.
    pub(super) fn sorted_ips(&self) -> impl Iterator<Item = IpAddr> {
        let mut v4: Vec<u32> = self.v4.keys().copied().collect();
        v4.sort_unstable();
        let mut v6: Vec<u128> = self.v6.keys().map(|a| u128::from(*a)).collect();
        v6.sort_unstable();
        let v4 = v4
            .into_iter()
            .map(|a| IpAddr::from(std::net::Ipv4Addr::from(a)));
        v4.chain(v6.into_iter().map(|a| IpAddr::V6(Ipv6Addr::from(a))))
    }

    /// Room for `v4` more IPv4 and `v6` more IPv6 held addresses.
    pub(super) fn reserve(&mut self, v4: usize, v6: usize) {
        self.v4.reserve(v4);
        self.v6.reserve(v6);
    }
}

/// Puts `id` under `key` when the table has no entry for it (`None`); otherwise changes nothing
/// and gives the entry there.
#[inline]
fn insert_or_get<K: Hash + Eq>(map: &mut HashMap<K, u32, Keyed>, key: K, id: Id) -> Option<u32> {
    match map.entry(key) {
        Entry::Vacant(v) => {
            v.insert(id);
            None
        }
        Entry::Occupied(o) => Some(*o.get()),
    }
}

/// The holders of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holding<'a> {
    None,
    One(Id),
    Many(&'a [Id]),
}

impl<'a> Holding<'a> {
    pub(super) fn ids(&self) -> &[Id] {
        match self {
            Holding::None => &[],
            Holding::One(id) => std::slice::from_ref(id),
            Holding::Many(ids) => ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::testkit::{config, view};
    use crate::allocator::{AllocError, Allocator};
    use ferrolb_config::ServiceKey;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Adds `id` as a holder of `ip`, where `at` says.
    fn add(h: &mut HolderMap, ip: &IpAddr, id: Id, at: impl FnOnce(&[Id]) -> usize) -> bool {
        h.add_value(IpFamily::of(ip), to_u128(ip), id, at)
    }

    /// Where `id` goes in a sorted list.
    fn sorted(id: Id) -> impl FnOnce(&[Id]) -> usize {
        move |ids| ids.partition_point(|x| *x < id)
    }

    #[test]
    fn one_holder_then_a_list_then_one_again() {
        let mut h = HolderMap::default();
        let a = ip("192.0.2.1");
        assert_eq!(h.get(&a), Holding::None);
        assert!(add(&mut h, &a, 7, sorted(7)));
        assert_eq!(h.get(&a), Holding::One(7));
        assert!(!add(&mut h, &a, 3, sorted(3)));
        assert!(!add(&mut h, &a, 5, sorted(5)));
        assert_eq!(h.get(&a).ids(), [3, 5, 7]);
        // Removing someone who does not hold it changes nothing.
        assert!(!h.remove(&a, 9));
        assert!(!h.remove(&a, 5));
        assert!(!h.remove(&a, 3));
        assert_eq!(h.get(&a), Holding::One(7));
        assert!(!h.remove(&a, 8));
        assert!(h.remove(&a, 7));
        assert_eq!(h.get(&a), Holding::None);
        assert!(!h.remove(&a, 7));
        // The freed list is reused for the next shared address.
        let b = ip("2001:db8::1");
        assert!(add(&mut h, &b, 1, sorted(1)));
        assert!(!add(&mut h, &b, 2, sorted(2)));
        assert_eq!(h.lists.len(), 1);
        assert_eq!(h.get(&b).ids(), [1, 2]);
    }

    #[test]
    fn families_and_addresses_are_kept_apart() {
        let mut h = HolderMap::default();
        // 0.0.0.1 and ::1 are the same integer in different families.
        let (v4, v6) = (ip("0.0.0.1"), ip("::1"));
        assert!(add(&mut h, &v4, 1, sorted(1)));
        assert!(add(&mut h, &v6, 2, sorted(2)));
        assert!(add(&mut h, &ip("0.0.0.2"), 3, sorted(3)));
        assert_eq!(h.get(&v4), Holding::One(1));
        assert_eq!(h.get(&v6), Holding::One(2));
        let mut all: Vec<IpAddr> = h.ips().collect();
        all.sort();
        assert_eq!(all, [ip("0.0.0.1"), ip("0.0.0.2"), ip("::1")]);
        assert!(add(&mut h, &ip("::2"), 4, sorted(4)));
        assert!(add(&mut h, &ip("2001:db8::1"), 5, sorted(5)));
        assert!(add(&mut h, &ip("255.0.0.1"), 6, sorted(6)));
        let got: Vec<IpAddr> = h.sorted_ips().collect();
        let mut want: Vec<IpAddr> = h.ips().collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(got[0], ip("0.0.0.1"));
        // The largest id fits an entry and is not taken for a list.
        assert!(add(&mut h, &ip("198.51.100.1"), MAX_ID, sorted(MAX_ID)));
        assert_eq!(h.get(&ip("198.51.100.1")), Holding::One(MAX_ID));
    }

    #[test]
    fn many_holders_stay_sorted_by_key_as_ids_are_reused() {
        let mut a = Allocator::new(config(), "ferrolb");
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
        assert!(matches!(a.holders.get(&ip), Holding::One(_)));
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
