//! Layer2 announcer: ARP/NDP packet build and classify (pure), election, AF_PACKET responder.

pub mod announcer;
pub mod election;
pub mod interfaces;
pub mod packet;
pub mod responder;
pub mod schedule;
pub mod socket;
pub mod stats;

pub use announcer::Layer2Announcer;
pub use stats::{Counters, Layer2Metrics};
