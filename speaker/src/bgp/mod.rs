//! BGP announcer: codec wrapper, sans-IO session FSM, UPDATE packing, tokio session driver.

pub mod adv;
pub mod announcer;
pub mod codec;
pub mod collision;
pub mod fsm;
pub mod listener;
pub mod md5;
pub mod metrics;
pub mod msg;
pub mod pack;
pub mod session;
