//! Faults and hostile input against the real `ferrolb standalone` binary in network namespaces
//! (issue 8). Every test prints what it measured (`measured:` lines; run with `--nocapture`).
//!
//! Sizes: short by default (CI); `FERROLB_SOAK=1` (`make soak`) runs the long version.
//!
//! - `bgp_hostile_peer_*`: a "router" that is a bare TCP listener (socat relays bytes, the BGP
//!   bytes are written by hand here) sends malformed messages; the exact NOTIFICATION, the reset,
//!   the reconnect and the process staying up are checked; then a real BIRD gets the routes.
//! - `speaker_sigkill_restarts_*`: SIGKILL + restart with a BIRD peer, desired set changing.
//! - `router_flaps_*`: BIRD restarted N times; full set each time; RSS compared.
//! - `layer2_partition_*`, `arp_flood_*`: see their doc comments.
//!
//! Root only; every namespace is removed on drop (also on failure).
//! One test binary, one module per subject; the shared lab is in `lab.rs`, the hand-written BGP
//! bytes in `wire.rs`.

mod garbage;
mod hostile;
mod lab;
mod restarts;
mod wire;
