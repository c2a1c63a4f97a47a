//! What the allocator hands out: a Service's addresses ([`Ips`], at most one per family, kept
//! inline) and the name of the pool they come from ([`PoolName`], shared with the pool). Copying
//! an [`Assigned`] allocates nothing, so handing one back per call costs no heap traffic.
//!
//! Must not: know about pools' contents, Services or sharing; these are plain values.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use ferrolb_config::addr::{from_u128, to_u128};
use ferrolb_config::IpFamily;

/// The addresses a Service holds and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub ips: Ips,
    pub pool: PoolName,
}

/// Up to two addresses (one per IP family), in order, without a heap allocation.
///
/// Each address is kept as its 128-bit value ([`to_u128`]) in two aligned 64-bit words plus a
/// family bit, not as an [`IpAddr`]: an `IpAddr` keeps its 16 bytes at offset 1, so reading one
/// right after copying it (as the allocator does on every call) made the processor wait for the
/// copy's stores to retire (a store-forwarding stall); aligned words forward. Addresses come out
/// as `IpAddr` values ([`Ips::get`], [`Ips::iter`]).
#[derive(Clone, Copy)]
pub struct Ips {
    /// Address n's value: high and low 64 bits.
    words: [[u64; 2]; 2],
    /// Bit n set: address n is IPv6.
    v6: u8,
    len: u8,
}

impl Ips {
    /// No address.
    pub const fn new() -> Ips {
        Ips {
            words: [[0; 2]; 2],
            v6: 0,
            len: 0,
        }
    }

    /// Appends `ip`; false (and unchanged) when two addresses are held already.
    #[must_use = "a third address is refused, not stored"]
    pub fn push(&mut self, ip: IpAddr) -> bool {
        self.push_value(IpFamily::of(&ip), to_u128(&ip))
    }

    /// [`Ips::push`] of the address of `family` whose value ([`to_u128`]) is `value`, which
    /// must fit the family.
    #[must_use = "a third address is refused, not stored"]
    pub(crate) fn push_value(&mut self, family: IpFamily, value: u128) -> bool {
        debug_assert!(family == IpFamily::V6 || value <= u128::from(u32::MAX));
        let n = usize::from(self.len);
        let Some(slot) = self.words.get_mut(n) else {
            return false;
        };
        *slot = [(value >> 64) as u64, value as u64];
        if family == IpFamily::V6 {
            self.v6 |= 1 << n;
        }
        self.len += 1;
        true
    }

    /// Appends `ip` where the caller knows there is room (it adds one address per family, or
    /// at most two in all); debug builds check it.
    pub(crate) fn push_family(&mut self, ip: IpAddr) {
        let stored = self.push(ip);
        debug_assert!(stored, "a third address");
    }

    /// Address `n`'s family and value ([`to_u128`]).
    pub(crate) fn value(&self, n: usize) -> Option<(IpFamily, u128)> {
        (n < usize::from(self.len)).then(|| {
            let [hi, lo] = self.words[n];
            let family = if self.v6 & (1 << n) != 0 {
                IpFamily::V6
            } else {
                IpFamily::V4
            };
            (family, (u128::from(hi) << 64) | u128::from(lo))
        })
    }

    /// Address `n`, if there is one.
    pub fn get(&self, n: usize) -> Option<IpAddr> {
        let (family, v) = self.value(n)?;
        from_u128(family, v)
    }

    /// The first address, if any.
    pub fn first(&self) -> Option<IpAddr> {
        self.get(0)
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.iter().any(|x| x == *ip)
    }

    /// The addresses, in order.
    pub fn iter(&self) -> IpsIter {
        IpsIter {
            ips: *self,
            next: 0,
        }
    }

    pub fn to_vec(&self) -> Vec<IpAddr> {
        self.iter().collect()
    }

    /// The addresses of `ips`, or `None` when there are more than two.
    pub fn from_slice(ips: &[IpAddr]) -> Option<Ips> {
        let mut out = Ips::new();
        ips.iter().all(|ip| out.push(*ip)).then_some(out)
    }
}

/// The addresses of an [`Ips`], in order, by value.
#[derive(Debug, Clone)]
pub struct IpsIter {
    ips: Ips,
    next: usize,
}

impl Iterator for IpsIter {
    type Item = IpAddr;
    fn next(&mut self) -> Option<IpAddr> {
        let ip = self.ips.get(self.next)?;
        self.next += 1;
        Some(ip)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ips.len() - self.next.min(self.ips.len());
        (left, Some(left))
    }
}

impl ExactSizeIterator for IpsIter {}

impl Default for Ips {
    fn default() -> Ips {
        Ips::new()
    }
}

impl fmt::Debug for Ips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Ips {
    fn eq(&self, other: &Ips) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Ips {}

impl PartialEq<[IpAddr]> for Ips {
    fn eq(&self, other: &[IpAddr]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl PartialEq<Vec<IpAddr>> for Ips {
    fn eq(&self, other: &Vec<IpAddr>) -> bool {
        *self == *other.as_slice()
    }
}

impl From<[IpAddr; 1]> for Ips {
    fn from([a]: [IpAddr; 1]) -> Ips {
        let mut ips = Ips::new();
        ips.push_family(a);
        ips
    }
}

impl From<[IpAddr; 2]> for Ips {
    fn from([a, b]: [IpAddr; 2]) -> Ips {
        let mut ips = Ips::from([a]);
        ips.push_family(b);
        ips
    }
}

impl IntoIterator for Ips {
    type Item = IpAddr;
    type IntoIter = IpsIter;
    fn into_iter(self) -> IpsIter {
        IpsIter { ips: self, next: 0 }
    }
}

impl IntoIterator for &Ips {
    type Item = IpAddr;
    type IntoIter = IpsIter;
    fn into_iter(self) -> IpsIter {
        self.iter()
    }
}

/// A pool's name, shared between the pool and every [`Assigned`] from it (a copy is a reference
/// count, not a string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(Arc<str>);

impl PoolName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for PoolName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PoolName {
    fn from(s: &str) -> PoolName {
        PoolName(s.into())
    }
}

impl From<String> for PoolName {
    fn from(s: String) -> PoolName {
        PoolName(s.into())
    }
}

impl From<&PoolName> for String {
    fn from(p: &PoolName) -> String {
        p.as_str().to_string()
    }
}

impl PartialEq<str> for PoolName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for PoolName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for PoolName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ips_hold_up_to_two_in_order() {
        let mut ips = Ips::new();
        assert!(ips.is_empty());
        assert!(ips.push(ip("2001:db8::1")));
        assert!(ips.push(ip("192.0.2.1")));
        assert!(!ips.push(ip("192.0.2.2")), "a third address is refused");
        assert_eq!(ips, vec![ip("2001:db8::1"), ip("192.0.2.1")]);
        assert_eq!(format!("{ips:?}"), "[2001:db8::1, 192.0.2.1]");
        assert_eq!(Ips::from([ip("192.0.2.9")]).to_vec(), vec![ip("192.0.2.9")]);
        assert_eq!(
            ips.into_iter().collect::<Vec<_>>(),
            vec![ip("2001:db8::1"), ip("192.0.2.1")]
        );
        assert_eq!(Ips::from_slice(&[ip("192.0.2.1"); 3]), None);
        assert_eq!(
            Ips::from_slice(&[ip("192.0.2.1")]),
            Some(Ips::from([ip("192.0.2.1")]))
        );
    }

    #[test]
    fn addresses_keep_their_family_and_value() {
        // ::1 and 0.0.0.1 have the same value; only the family tells them apart.
        let mut ips = Ips::new();
        assert!(ips.push(ip("::1")));
        assert!(ips.push_value(IpFamily::V4, 1));
        assert_eq!(ips.value(0), Some((IpFamily::V6, 1)));
        assert_eq!(ips.value(1), Some((IpFamily::V4, 1)));
        assert_eq!(ips.value(2), None);
        assert_eq!(ips.to_vec(), vec![ip("::1"), ip("0.0.0.1")]);
        assert_ne!(ips, Ips::from([ip("0.0.0.1"), ip("::1")]));
        assert!(ips.contains(&ip("0.0.0.1")) && !ips.contains(&ip("::2")));
        let wide = ip("ffff:ffff:ffff:ffff:8000::ff");
        let top = ip("255.255.255.255");
        let both = Ips::from([wide, top]);
        assert_eq!(
            (both.first(), both.get(1), both.get(2)),
            (Some(wide), Some(top), None)
        );
        assert_eq!(both.iter().len(), 2);
        assert_eq!((&both).into_iter().collect::<Vec<_>>(), vec![wide, top]);
    }

    #[test]
    fn unused_slots_do_not_count_in_comparisons() {
        let mut a = Ips::from([ip("192.0.2.1"), ip("192.0.2.2")]);
        let b = Ips::from([ip("192.0.2.1")]);
        assert_ne!(a, b);
        a = Ips::from_slice(&a.to_vec()[..1]).unwrap();
        assert_eq!(a, b);
        assert_eq!(Ips::new(), Ips::default());
    }

    #[test]
    fn pool_names_compare_and_print_as_strings() {
        let p = PoolName::from("gold");
        let q = p.clone();
        assert_eq!(p, "gold");
        assert_eq!(p, q);
        assert_eq!(p.as_str(), "gold");
        assert_eq!(format!("{p} {p:?}"), "gold \"gold\"");
        assert_eq!(String::from(&p), "gold");
    }
}
