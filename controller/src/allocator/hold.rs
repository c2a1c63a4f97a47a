//! Holding: recording that a Service holds addresses ([`Allocator::commit`]) and letting them
//! go ([`Allocator::release`]), keeping every index in step: the Services' slots, the holders of
//! each address, the pools' free indexes (unless a rebuild defers them) and the sharing-key index.
//!
//! Must not: decide whether a Service may hold an address (picking and restore check that
//! before they commit).

use std::net::IpAddr;

use ferrolb_config::ServiceKey;

use super::sharing::SharingInfo;
use super::{services, Allocator, Assigned, Id, Slot};

impl Allocator {
    /// Frees what `key` holds (deleted, type or class changed). Returns what it held.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assigned> {
        let id = self.services.id(key)?;
        Some(self.release_id(id))
    }

    /// Frees what Service `id` holds; returns it.
    pub(super) fn release_id(&mut self, id: Id) -> Assigned {
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
    pub(super) fn reindex_sharing_key(
        &mut self,
        old: Option<&str>,
        assigned: &Assigned,
        new: Option<String>,
    ) {
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

    /// Records that `key` (hashed as `h`) holds `assigned` (from pool index `pool`), which it must
    /// not hold yet.
    #[inline]
    pub(super) fn commit(
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
