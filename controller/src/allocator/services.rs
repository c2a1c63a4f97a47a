//! Interned Services: each Service holding addresses gets a small id (an index into a vector of
//! slots, reused after release), and everything else in the allocator refers to it by id.
//!
//! Keys live in one shared text buffer (namespace then name, back to back), not in a heap block
//! each: a new Service costs no allocation of its own, and 100k keys take their bytes and no
//! allocator overhead. Released keys leave holes that are squeezed out once they make up half
//! the buffer (and at least 4 KiB). Offsets are 32-bit: the keys held at once, with the holes,
//! must stay under 4 GiB (about 13 million Services with the longest keys Kubernetes allows). The key -> id table holds ids and 32 bits of their keys' hashes (a randomly keyed
//! hash, see [`super::hasher`]), so growing it and skipping non-matching entries never read keys.
//!
//! Must not: know what a slot means; it stores and finds them.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use ferrolb_config::ServiceKey;

use super::hasher::Keyed;
use super::{Id, Slot};

/// Where a key sits in [`Services::names`]: `ns` bytes of namespace then `name` bytes of name.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NameAt {
    at: u32,
    ns: u32,
    name: u32,
}

impl NameAt {
    fn len(&self) -> usize {
        self.ns as usize + self.name as usize
    }
}

/// A key's hash as [`Services`] computes it (with its own secret seed): made once per call by
/// [`Services::hashed`] and handed to the lookup and the insert, so a new Service's key is hashed
/// once, not twice.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hashed(u32);

/// Released key bytes below this are never worth squeezing out.
const MIN_GARBAGE: usize = 4096;

/// Slots come in chunks of `1 << CHUNK_BITS` (80 KiB), allocated whole and not moved as they fill
/// (a clone copies each chunk at its length, so a clone's last chunk moves once when it grows):
/// growing to n Services touches n slots' worth of memory once, where a doubling vector would
/// copy every slot at each doubling and fault in twice the final size on the way.
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Debug, Clone, Default)]
pub(super) struct Services {
    hasher: Keyed,
    /// `(32-bit hash, id)` per live Service.
    index: HashTable<(u32, Id)>,
    chunks: Vec<Vec<Option<Slot>>>,
    /// Slots handed out so far (live or free): ids are below this.
    used: usize,
    /// Ids of empty slots, reused before the slot vector grows.
    free_ids: Vec<Id>,
    /// Every live key's text, and the holes released ones left.
    names: String,
    /// Bytes of `names` that belong to released keys.
    garbage: usize,
}

/// The 64-bit hash the table works with, from the 32 bits stored per entry: the table takes
/// bucket bits from the low end and its 7-bit tag from the top, so both come from the stored bits.
fn spread(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

fn len_u32(s: &str) -> u32 {
    u32::try_from(s.len()).expect("the Service keys held at once take less than 4 GiB")
}

impl Services {
    fn hash(&self, ns: &str, name: &str) -> u32 {
        let h = self.hasher.hash_one((ns, name));
        (h ^ (h >> 32)) as u32
    }

    fn parts_at(&self, n: NameAt) -> (&str, &str) {
        let text = &self.names[n.at as usize..n.at as usize + n.len()];
        text.split_at(n.ns as usize)
    }

    /// `key`'s hash here, for a lookup ([`Services::find`]) and the insert after it.
    pub(super) fn hashed(&self, key: &ServiceKey) -> Hashed {
        Hashed(self.hash(&key.namespace, &key.name))
    }

    pub(super) fn id(&self, key: &ServiceKey) -> Option<Id> {
        self.find(key, self.hashed(key))
    }

    /// [`Services::id`] with the key's hash already made.
    pub(super) fn find(&self, key: &ServiceKey, h: Hashed) -> Option<Id> {
        debug_assert_eq!(h.0, self.hashed(key).0, "a hash of another key");
        let Hashed(h) = h;
        let wanted = (key.namespace.as_str(), key.name.as_str());
        self.index
            .find(spread(h), |&(eh, id)| {
                eh == h
                    && self
                        .slot(id)
                        .as_ref()
                        .is_some_and(|s| self.parts_at(s.name) == wanted)
            })
            .map(|&(_, id)| id)
    }

    fn slot(&self, id: Id) -> &Option<Slot> {
        &self.chunks[(id >> CHUNK_BITS) as usize][id as usize & (CHUNK - 1)]
    }

    fn slot_mut(&mut self, id: Id) -> &mut Option<Slot> {
        &mut self.chunks[(id >> CHUNK_BITS) as usize][id as usize & (CHUNK - 1)]
    }

    pub(super) fn get(&self, id: Id) -> &Slot {
        self.slot(id)
            .as_ref()
            .expect("ids in the allocator's indexes are live")
    }

    pub(super) fn get_mut(&mut self, id: Id) -> &mut Slot {
        self.slot_mut(id)
            .as_mut()
            .expect("ids in the allocator's indexes are live")
    }

    /// Service `id`'s `(namespace, name)`: orders as its [`ServiceKey`] does.
    pub(super) fn key_parts(&self, id: Id) -> (&str, &str) {
        self.parts_at(self.get(id).name)
    }

    pub(super) fn key(&self, id: Id) -> ServiceKey {
        let (ns, name) = self.key_parts(id);
        ServiceKey::new(ns, name)
    }

    /// Stores `key`'s `slot` (`key` must not be present) under a new or reused id.
    pub(super) fn insert(&mut self, key: &ServiceKey, h: Hashed, mut slot: Slot) -> Id {
        debug_assert_eq!(h.0, self.hashed(key).0, "a hash of another key");
        let Hashed(h) = h;
        slot.name = NameAt {
            at: len_u32(&self.names),
            ns: len_u32(&key.namespace),
            name: len_u32(&key.name),
        };
        self.names.push_str(&key.namespace);
        self.names.push_str(&key.name);
        let id = match self.free_ids.pop() {
            Some(id) => {
                *self.slot_mut(id) = Some(slot);
                id
            }
            None => {
                let id = Id::try_from(self.used)
                    .ok()
                    .filter(|id| *id <= super::holders::MAX_ID)
                    .expect("fewer than 2^31 Services");
                if self.used % CHUNK == 0 {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let last = self.chunks.last_mut().expect("a chunk with room");
                last.push(Some(slot));
                self.used += 1;
                id
            }
        };
        self.index
            .insert_unique(spread(h), (h, id), |&(eh, _)| spread(eh));
        id
    }

    /// Removes Service `id`; its id becomes free for reuse.
    pub(super) fn remove(&mut self, id: Id) -> Slot {
        let slot = self
            .slot_mut(id)
            .take()
            .expect("ids in the allocator's indexes are live");
        let name = slot.name;
        let (ns, n) = self.parts_at(name);
        let h = self.hash(ns, n);
        if let Ok(e) = self.index.find_entry(spread(h), |&(_, i)| i == id) {
            e.remove();
        }
        self.free_ids.push(id);
        self.garbage += name.len();
        if self.garbage > MIN_GARBAGE && self.garbage * 2 > self.names.len() {
            self.squeeze();
        }
        slot
    }

    /// Rewrites the key text without the released keys' bytes.
    fn squeeze(&mut self) {
        let mut names = String::with_capacity(self.names.len() - self.garbage);
        for n in self
            .chunks
            .iter_mut()
            .flatten()
            .flatten()
            .map(|s| &mut s.name)
        {
            let start = n.at as usize;
            n.at = len_u32(&names);
            names.push_str(&self.names[start..start + n.len()]);
        }
        self.names = names;
        self.garbage = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Room for `additional` more Services whose keys take `key_bytes` in all (slots grow
    /// without copying, so they need no reservation).
    pub(super) fn reserve(&mut self, additional: usize, key_bytes: usize) {
        self.index.reserve(additional, |&(h, _)| spread(h));
        self.names.reserve(key_bytes);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (Id, &Slot)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| Some((i as Id, s.as_ref()?)))
    }

    pub(super) fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.chunks.iter_mut().flatten().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::testkit::{config, view};
    use crate::allocator::{Allocator, Assigned, Ips, PoolName};
    use proptest::prelude::*;

    /// An empty slot.
    fn empty() -> Slot {
        Slot::new(
            Assigned {
                ips: Ips::new(),
                pool: PoolName::from("p"),
            },
            None,
            None,
        )
    }

    /// Slots handed out so far and the free ids among them.
    fn ids_used(s: &Services) -> (usize, &[Id]) {
        (s.used, &s.free_ids)
    }

    #[test]
    fn released_keys_are_squeezed_out_and_the_rest_still_found() {
        let mut s = Services::default();
        let key = |i: usize| ServiceKey::new(format!("ns-{}", i % 7), format!("svc-{i:05}"));
        let slot = empty;
        let ids: Vec<Id> = (0..20_000)
            .map(|i| s.insert(&key(i), s.hashed(&key(i)), slot()))
            .collect();
        let full = s.names.len();
        // Release every Service but each tenth: the holes pass half the text and are dropped.
        for (i, id) in ids.iter().enumerate() {
            if i % 10 != 0 {
                s.remove(*id);
            }
        }
        // What is left: the live keys and fewer released bytes than live ones (or than the
        // threshold), far below the full text.
        let live: usize = (0..20_000)
            .filter(|i| i % 10 == 0)
            .map(|i| key(i).namespace.len() + key(i).name.len())
            .sum();
        let kept = s.names.len();
        assert!(
            kept <= 2 * live.max(MIN_GARBAGE),
            "{kept} of {full} bytes kept, {live} live"
        );
        assert!(kept < full / 4, "{kept} of {full} bytes kept");
        for (i, id) in ids.iter().enumerate() {
            if i % 10 == 0 {
                assert_eq!(s.id(&key(i)), Some(*id));
                assert_eq!(s.key(*id), key(i));
            } else {
                assert_eq!(s.id(&key(i)), None);
            }
        }
        // Freed ids are reused, and the new keys are found under them.
        let again: Vec<Id> = (50_000..50_100)
            .map(|i| s.insert(&key(i), s.hashed(&key(i)), slot()))
            .collect();
        assert!(again.iter().all(|id| (*id as usize) < 20_000));
        assert_eq!(ids_used(&s).0, 20_000);
        for (i, id) in (50_000..50_100).zip(&again) {
            assert_eq!(s.id(&key(i)), Some(*id));
        }
        assert_eq!(s.len(), 2000 + 100);
    }

    #[test]
    fn keys_split_where_the_namespace_ends() {
        let mut s = Services::default();
        // "ab"+"c" and "a"+"bc" share their text: the split tells them apart.
        let (kx, ky) = (ServiceKey::new("ab", "c"), ServiceKey::new("a", "bc"));
        let x = s.insert(&kx, s.hashed(&kx), empty());
        let y = s.insert(&ky, s.hashed(&ky), empty());
        assert_ne!(x, y);
        assert_eq!(s.id(&ServiceKey::new("ab", "c")), Some(x));
        assert_eq!(s.id(&ServiceKey::new("a", "bc")), Some(y));
        assert_eq!(s.key_parts(y), ("a", "bc"));
    }

    #[test]
    fn ids_are_reused_after_release_and_keys_stay_distinct() {
        let mut a = Allocator::new(config(), "ferrolb");
        let (x, y) = (view(1, 0, 0, false, None), view(2, 0, 0, false, None));
        let ax = a.allocate(&x).ok();
        let ay = a.allocate(&y).ok();
        assert!(ax.is_some() && ay.is_some());
        assert_eq!(ids_used(&a.services), (2, &[][..]));
        assert_eq!(a.release(&x.key), ax);
        assert_eq!(ids_used(&a.services), (2, &[0][..]));
        assert_eq!(a.assignment(&x.key), None);
        // A new Service takes the freed id; the old key does not come back with it.
        let z = view(3, 0, 0, false, None);
        let az = a.allocate(&z).ok();
        assert!(az.is_some());
        assert_eq!(ids_used(&a.services), (2, &[][..]));
        assert_eq!(a.services.id(&z.key), Some(0));
        assert_eq!(a.assignment(&x.key), None);
        assert_eq!(a.assignment(&y.key), ay.as_ref());
        assert_eq!(a.assignment(&z.key), az.as_ref());
        assert_eq!(a.len(), 2);
        // Releasing what is not held changes nothing.
        assert_eq!(a.release(&x.key), None);
        assert_eq!(a.len(), 2);
    }

    proptest! {
        /// Whatever the allocator is asked, every id handed out is either live (found under its
        /// key) or free, never both, and the live ones are exactly the Services holding addresses.
        #[test]
        fn every_id_is_live_or_free(
            ops in proptest::collection::vec((0u8..4, 0u8..16, 0u8..3, proptest::bool::weighted(0.3), 0u8..12), 1..80),
        ) {
            let mut a = Allocator::new(config(), "ferrolb");
            for (op, n, policy, share, r) in ops {
                let mut v = view(n, n % 2, policy, share, (r < 4).then_some(r));
                match op {
                    0 | 1 => {
                        let _ = a.allocate(&v);
                    }
                    2 => {
                        a.release(&v.key);
                    }
                    _ => {
                        v.ingress_ips = vec![std::net::IpAddr::from([192, 0, 2, r % 8])];
                        let _ = a.restore(&v);
                    }
                }
                let s = &a.services;
                let (used, free) = ids_used(s);
                let live: Vec<Id> = s.iter().map(|(id, _)| id).collect();
                prop_assert_eq!(live.len() + free.len(), used);
                prop_assert!(free.iter().all(|id| s.slot(*id).is_none()));
                prop_assert_eq!(live.len(), s.len());
                for id in live {
                    prop_assert_eq!(s.id(&s.key(id)), Some(id));
                }
                prop_assert_eq!(a.assignments().len(), a.len());
            }
        }
    }
}
