//! BGP end to end: `ferrolb standalone` in a node namespace peers with BIRD, GoBGP or FRR in a
//! router namespace over a veth link (192.0.2.0/24, 2001:db8::/64). Verified with the router's
//! own CLI (`birdc`, `gobgp`, `vtysh`): eBGP and iBGP attributes, source-address, IPv6 via
//! MP-BGP, MD5 right/wrong, withdrawal when the Service goes, re-announcement after the router
//! restarts, hold timer after the router's link goes down.
//! Root only; every namespace is removed on drop.
//! One test binary, one module per subject; the labs are in `lab.rs`.

mod bird;
mod ecmp;
mod gobgp_frr;
mod lab;
mod passive;
