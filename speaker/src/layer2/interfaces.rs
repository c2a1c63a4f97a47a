//! Which network interfaces layer2 answers on.
//!
//! [`scan`] reads `/sys/class/net` and `/proc/net/if_inet6` (I/O, nothing else); [`usable`] is
//! the pure selection, as MetalLB does it: the interface is up, not loopback, ARP-capable (not
//! NOARP) and Ethernet, and not enslaved to a bond or bridge (the master answers instead). NDP
//! needs an IPv6 link-local address on it. A pool's `interfaces:` list (a ferrolb extension)
//! narrows the set for that pool's addresses.
//!
//! Must not: open sockets.

use std::fs;
use std::path::Path;

use super::packet::Mac;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
const ARPHRD_ETHER: u32 = 1;

/// What the kernel says about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` hardware type (1 = Ethernet).
    pub hw_type: u32,
    /// Enslaved to a bond or bridge.
    pub has_master: bool,
    /// Has an IPv6 link-local address.
    pub has_ipv6_link_local: bool,
}

/// An interface layer2 may answer on, and for which address families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    pub arp: bool,
    pub ndp: bool,
}

/// Selects the interfaces to answer on, sorted by name.
pub fn usable(links: &[Link]) -> Vec<Usable> {
    let mut out: Vec<Usable> = links
        .iter()
        .filter(|l| {
            l.flags & IFF_UP != 0
                && l.flags & IFF_LOOPBACK == 0
                && l.flags & IFF_NOARP == 0
                && l.hw_type == ARPHRD_ETHER
                && !l.has_master
                && l.mac != Mac::ZERO
        })
        .map(|l| Usable {
            name: l.name.clone(),
            index: l.index,
            mac: l.mac,
            arp: true,
            ndp: l.has_ipv6_link_local,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// True when a pool with interface list `allowed` (empty: any) may be announced on `name`.
pub fn allowed_on(allowed: &[String], name: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a == name)
}

/// Reads every interface of the current network namespace.
pub fn scan() -> std::io::Result<Vec<Link>> {
    let inet6 = fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let mut links = Vec::new();
    for entry in fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // An interface can vanish between listing and reading: skip it then.
        if let Some(link) = read_link(&entry.path(), &name, &inet6) {
            links.push(link);
        }
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(links)
}

fn read_link(dir: &Path, name: &str, inet6: &str) -> Option<Link> {
    let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
    let flags = parse_hex(read("flags")?.trim())?;
    let index = read("ifindex")?.trim().parse().ok()?;
    let hw_type = read("type")?.trim().parse().ok()?;
    let mac = read("address")?.parse().unwrap_or(Mac::ZERO);
    Some(Link {
        name: name.to_owned(),
        index,
        mac,
        flags,
        hw_type,
        has_master: dir.join("master").exists(),
        has_ipv6_link_local: has_link_local(inet6, name),
    })
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// True when `/proc/net/if_inet6` lists a link-scope (0x20) address on `name`.
/// Line format: `address ifindex prefixlen scope flags name`.
pub fn has_link_local(inet6: &str, name: &str) -> bool {
    inet6.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() == 6 && f[5] == name && f[3] == "20"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, flags: u32) -> Link {
        Link {
            name: name.into(),
            index: 2,
            mac: Mac([2, 0, 0, 0, 0, 1]),
            flags,
            hw_type: ARPHRD_ETHER,
            has_master: false,
            has_ipv6_link_local: true,
        }
    }

    #[test]
    fn selection_rules() {
        let up = IFF_UP | 0x2 | 0x1000; // UP, BROADCAST, MULTICAST
        let mut slave = link("eth2", up);
        slave.has_master = true;
        let mut tunnel = link("tun0", up);
        tunnel.hw_type = 65534;
        let mut no_v6 = link("eth3", up);
        no_v6.has_ipv6_link_local = false;
        let mut no_mac = link("eth4", up);
        no_mac.mac = Mac::ZERO;
        let links = vec![
            link("lo", IFF_UP | IFF_LOOPBACK),
            link("eth1", up),
            link("eth0", up),
            link("down0", 0x2 | 0x1000),
            link("noarp0", up | IFF_NOARP),
            slave,
            tunnel,
            no_v6,
            no_mac,
            link("br0", up),
        ];
        let got: Vec<(String, bool)> = usable(&links)
            .into_iter()
            .map(|u| (u.name, u.ndp))
            .collect();
        assert_eq!(
            got,
            vec![
                ("br0".to_string(), true),
                ("eth0".to_string(), true),
                ("eth1".to_string(), true),
                ("eth3".to_string(), false),
            ]
        );
    }

    #[test]
    fn pool_interface_list() {
        assert!(allowed_on(&[], "eth0"));
        let only = vec!["eth1".to_string()];
        assert!(allowed_on(&only, "eth1"));
        assert!(!allowed_on(&only, "eth0"));
    }

    #[test]
    fn link_local_from_proc() {
        let proc = "\
20010db8000000000000000000000002 02 40 00 80     eth0
fe80000000000000000000fffe000a01 03 40 20 80     eth1
00000000000000000000000000000001 01 80 10 80       lo
";
        assert!(!has_link_local(proc, "eth0"));
        assert!(has_link_local(proc, "eth1"));
        assert!(!has_link_local(proc, "lo"));
        assert_eq!(parse_hex("0x1003"), Some(0x1003));
    }

    #[test]
    fn scan_reads_this_namespace() {
        // Every Linux namespace has lo; it is never usable.
        let links = scan().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").unwrap();
        assert!(lo.flags & IFF_LOOPBACK != 0);
        assert!(usable(&links).iter().all(|u| u.name != "lo"));
    }
}
