//! Layer2 end to end: `ferrolb standalone` in node namespaces on one bridge, a client namespace
//! that uses `arping`, `ndisc6`, `ping` and real TCP (`socat`) against the service address.
//!
//! Each node has the address on `lo` (as kube-proxy IPVS would) with `arp_ignore=1` /
//! `arp_announce=2`, so the kernel stays silent and every ARP/NDP answer comes from ferrolb; the
//! tests first prove that silence. Root only; every namespace is removed on drop. One test
//! binary, one module per subject; the lab is in `lab.rs`.

mod announce;
mod failover;
mod lab;
mod reliability;
