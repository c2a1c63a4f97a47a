//! Layer2 announcer: ARP/NDP packet build and classify (pure), election, AF_PACKET responder.

pub mod election;
pub mod interfaces;
pub mod packet;
pub mod schedule;
