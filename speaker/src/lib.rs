//! ferrolb-speaker: makes assigned addresses reachable.
//!
//! Owns the announcement decisions (pure), the layer2 announcer (ARP/NDP packet logic pure,
//! AF_PACKET I/O in a thin shell), the BGP announcer (sans-IO session FSM and codec wrapper, tokio
//! driver) and membership (which speakers are alive).
//!
//! Must not: allocate addresses.

pub mod bgp;
pub mod layer2;
pub mod membership;
pub mod world;
