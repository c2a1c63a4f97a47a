//! BGP announcer: codec wrapper, sans-IO session FSM, UPDATE packing, tokio session driver.

pub mod adv;
pub mod codec;
pub mod fsm;
pub mod msg;
pub mod pack;
