//! ferrolb-speaker: makes assigned addresses reachable.
//!
//! Owns the announcement decisions (pure), the layer2 announcer (ARP/NDP packet logic pure,
//! AF_PACKET I/O in a thin shell), the BGP announcer (sans-IO session FSM and codec wrapper, tokio
//! driver), membership (which speakers are alive), the world and its pure building steps, the
//! node lifecycle every announcing mode runs (announcers and membership, started and stopped
//! once) and the Kubernetes source of `ferrolb speaker` ([`k8s`]).
//!
//! Must not: allocate addresses, or depend on the controller (shared Kubernetes plumbing is in
//! `ferrolb-runtime`).

pub mod bgp;
pub mod k8s;
pub mod layer2;
pub mod lifecycle;
pub mod membership;
pub mod world;
