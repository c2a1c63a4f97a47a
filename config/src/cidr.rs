//! One `addresses` entry of a pool: a CIDR (`192.0.2.0/24`, host bits allowed as Go's
//! `net.ParseCIDR` allows them) or a `start-end` range; and the CIDR cover of a range, which the
//! `aggregation-length` rule is defined on (MetalLB's `ipaddr.Summarize`).
//!
//! Must not: know about pools or overlap (the pool validator does).

use std::net::IpAddr;

use crate::addr::{from_u128, to_u128, IpFamily, IpRange};

/// A parsed `addresses` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressEntry {
    pub range: IpRange,
    /// The prefix lengths of the CIDRs covering the entry (one for a CIDR).
    pub prefix_lens: Vec<u8>,
}

impl AddressEntry {
    /// The shortest prefix length among the covering CIDRs (MetalLB's `lowestMask`).
    pub fn lowest_prefix(&self) -> u8 {
        self.prefix_lens.iter().copied().min().unwrap_or(0)
    }
}

/// Parses `a.b.c.d/n`, `x::/n` or `start-end`. The error says why.
pub fn parse_entry(s: &str) -> Result<AddressEntry, String> {
    if let Some((a, b)) = s.split_once('-') {
        let start: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid start address {:?} of the range", a.trim()))?;
        let end: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("invalid end address {:?} of the range", b.trim()))?;
        if IpFamily::of(&start) != IpFamily::of(&end) {
            return Err("start and end of the range are of different IP families".to_string());
        }
        let range = IpRange::new(start, end)
            .ok_or_else(|| format!("start address {start} is after the end address {end}"))?;
        return Ok(AddressEntry {
            range,
            prefix_lens: summarize(&range),
        });
    }
    let Some((ip, len)) = s.split_once('/') else {
        return Err("not a CIDR (a.b.c.d/n) or a range (start-end)".to_string());
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid address {ip:?} in the CIDR"))?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max && !len.starts_with('+'))
        .ok_or_else(|| format!("invalid prefix length {len:?} (0 to {max})"))?;
    let net = ipnet::IpNet::new(ip, len)
        .map_err(|_| format!("invalid prefix length {len}"))?
        .trunc();
    Ok(AddressEntry {
        range: IpRange::from_net(&net),
        prefix_lens: vec![len],
    })
}

/// Prefix lengths of the minimal set of CIDR blocks that exactly cover `range`.
pub fn summarize(range: &IpRange) -> Vec<u8> {
    let bits: u32 = match range.family() {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    };
    let mut out = Vec::new();
    let mut cur = to_u128(&range.first());
    let last = to_u128(&range.last());
    loop {
        // Largest block aligned at `cur` that does not pass `last`.
        let align = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        let mut size_bits = align;
        while size_bits > 0 {
            let span = if size_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << size_bits) - 1
            };
            if cur.checked_add(span).is_some_and(|end| end <= last) {
                break;
            }
            size_bits -= 1;
        }
        out.push(u8::try_from(bits - size_bits).unwrap_or(0));
        let span = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        match cur.checked_add(span) {
            Some(end) if end < last => cur = end + 1,
            _ => break,
        }
        // Guard against a range that is not representable in the family.
        if from_u128(range.family(), cur).is_none() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_range() {
        let e = parse_entry("192.0.2.7/24").unwrap();
        assert_eq!(e.range.to_string(), "192.0.2.0-192.0.2.255");
        assert_eq!(e.prefix_lens, vec![24]);
        let e = parse_entry("192.0.2.10 - 192.0.2.20").unwrap();
        assert_eq!(e.range.len(), 11);
        // 10/31, 12/30, 16/30, 20/32
        assert_eq!(e.prefix_lens, vec![31, 30, 30, 32]);
        assert_eq!(e.lowest_prefix(), 30);
        let e = parse_entry("2001:db8::/64").unwrap();
        assert_eq!(e.prefix_lens, vec![64]);
        let e = parse_entry("0.0.0.0-255.255.255.255").unwrap();
        assert_eq!(e.prefix_lens, vec![0]);
        let e = parse_entry("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap();
        assert_eq!(e.prefix_lens, vec![0]);
        assert!(parse_entry("192.0.2.0/33").is_err());
        assert!(parse_entry("192.0.2.0").is_err());
        assert!(parse_entry("192.0.2.9-192.0.2.1").is_err());
        assert!(parse_entry("192.0.2.1-2001:db8::1").is_err());
        assert!(parse_entry("x-y").is_err());
    }
}
