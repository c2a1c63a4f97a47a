//! Address vocabulary: IP families and inclusive address ranges.
//!
//! A pool's `addresses` entries (`a.b.c.d/n` or `start-end`) both become an [`IpRange`]; the
//! allocator works on ranges (O(1) size and membership), BGP aggregation and the overlap rule
//! work on their CIDR cover.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// An address family. Ordered so that IPv4 sorts before IPv6 wherever order is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// An inclusive range of addresses of one family, `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    /// A range from `first` to `last` inclusive; `None` when the families differ or `first > last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<IpRange> {
        if IpFamily::of(&first) != IpFamily::of(&last) || first > last {
            return None;
        }
        Some(IpRange { first, last })
    }

    /// The whole of a CIDR block, network and broadcast addresses included (as MetalLB does).
    pub fn from_net(net: &ipnet::IpNet) -> IpRange {
        IpRange {
            first: net.network(),
            last: net.broadcast(),
        }
    }

    pub fn first(&self) -> IpAddr {
        self.first
    }

    pub fn last(&self) -> IpAddr {
        self.last
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.first)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self.family() && self.first <= *ip && *ip <= self.last
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family() == other.family() && self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses in the range, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn len(&self) -> u128 {
        (to_u128(&self.last) - to_u128(&self.first)).saturating_add(1)
    }

    /// Always false: a range holds at least one address. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// An address as an integer (IPv4 in the low 32 bits), for range arithmetic.
pub fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// The inverse of [`to_u128`] for a given family; `None` if the value does not fit the family.
pub fn from_u128(family: IpFamily, value: u128) -> Option<IpAddr> {
    match family {
        IpFamily::V4 => u32::try_from(value)
            .ok()
            .map(|v| IpAddr::V4(std::net::Ipv4Addr::from(v))),
        IpFamily::V6 => Some(IpAddr::V6(std::net::Ipv6Addr::from(value))),
    }
}

/// True for IPv4 addresses ending in .0 or .255, which some old client firmware mishandles
/// (MetalLB's `avoid-buggy-ips`). Never true for IPv6.
pub fn is_buggy_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn range_basics() {
        let r = IpRange::new(ip("192.0.2.10"), ip("192.0.2.20")).unwrap();
        assert_eq!(r.len(), 11);
        assert!(r.contains(&ip("192.0.2.10")));
        assert!(r.contains(&ip("192.0.2.20")));
        assert!(!r.contains(&ip("192.0.2.21")));
        assert!(!r.contains(&ip("2001:db8::1")));
        assert!(IpRange::new(ip("192.0.2.2"), ip("192.0.2.1")).is_none());
        assert!(IpRange::new(ip("192.0.2.2"), ip("2001:db8::1")).is_none());
        let net: ipnet::IpNet = "2001:db8::/64".parse().unwrap();
        assert_eq!(IpRange::from_net(&net).len(), 1u128 << 64);
    }

    #[test]
    fn buggy_ips() {
        assert!(is_buggy_ip(&ip("198.51.100.0")));
        assert!(is_buggy_ip(&ip("198.51.100.255")));
        assert!(!is_buggy_ip(&ip("198.51.100.1")));
        assert!(!is_buggy_ip(&ip("2001:db8::ff")));
    }
}
