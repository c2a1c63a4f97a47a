//! What the allocator hands out: a Service's addresses ([`Ips`], at most one per family, kept
//! inline) and the name of the pool they come from ([`PoolName`], shared with the pool). Copying
//! an [`Assigned`] allocates nothing, so handing one back per call costs no heap traffic.
//!
//! Must not: know about pools' contents, Services or sharing; these are plain values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Deref;
use std::sync::Arc;

/// The addresses a Service holds and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub ips: Ips,
    pub pool: PoolName,
}

/// Up to two addresses (one per IP family), in order, without a heap allocation.
#[derive(Clone, Copy)]
pub struct Ips {
    addrs: [IpAddr; 2],
    len: u8,
}

const UNSET: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Ips {
    /// No address.
    pub const fn new() -> Ips {
        Ips {
            addrs: [UNSET; 2],
            len: 0,
        }
    }

    /// Appends `ip`; false (and unchanged) when two addresses are held already.
    #[must_use = "a third address is refused, not stored"]
    pub fn push(&mut self, ip: IpAddr) -> bool {
        let Some(slot) = self.addrs.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = ip;
        self.len += 1;
        true
    }

    /// Appends `ip` where the caller knows there is room (it adds one address per family, or
    /// at most two in all); debug builds check it.
    pub(crate) fn push_family(&mut self, ip: IpAddr) {
        let stored = self.push(ip);
        debug_assert!(stored, "a third address");
    }

    pub fn as_slice(&self) -> &[IpAddr] {
        &self.addrs[..usize::from(self.len)]
    }

    /// The addresses of `ips`, or `None` when there are more than two.
    pub fn from_slice(ips: &[IpAddr]) -> Option<Ips> {
        let mut out = Ips::new();
        ips.iter().all(|ip| out.push(*ip)).then_some(out)
    }
}

impl Default for Ips {
    fn default() -> Ips {
        Ips::new()
    }
}

impl Deref for Ips {
    type Target = [IpAddr];
    fn deref(&self) -> &[IpAddr] {
        self.as_slice()
    }
}

impl fmt::Debug for Ips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Ips {
    fn eq(&self, other: &Ips) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Ips {}

impl PartialEq<[IpAddr]> for Ips {
    fn eq(&self, other: &[IpAddr]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<IpAddr>> for Ips {
    fn eq(&self, other: &Vec<IpAddr>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<[IpAddr; 1]> for Ips {
    fn from([a]: [IpAddr; 1]) -> Ips {
        Ips {
            addrs: [a, UNSET],
            len: 1,
        }
    }
}

impl From<[IpAddr; 2]> for Ips {
    fn from(addrs: [IpAddr; 2]) -> Ips {
        Ips { addrs, len: 2 }
    }
}

impl IntoIterator for Ips {
    type Item = IpAddr;
    type IntoIter = std::iter::Take<std::array::IntoIter<IpAddr, 2>>;
    fn into_iter(self) -> Self::IntoIter {
        self.addrs.into_iter().take(usize::from(self.len))
    }
}

impl<'a> IntoIterator for &'a Ips {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
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
        assert_eq!(Ips::from([ip("192.0.2.9")]).as_slice(), &[ip("192.0.2.9")]);
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
    fn unused_slots_do_not_count_in_comparisons() {
        let mut a = Ips::from([ip("192.0.2.1"), ip("192.0.2.2")]);
        let b = Ips::from([ip("192.0.2.1")]);
        assert_ne!(a, b);
        a = Ips::from_slice(&a[..1]).unwrap();
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
