//! ferrolb-config: MetalLB's (v0.12) ConfigMap format and the vocabulary every part of ferrolb shares.
//!
//! Owns: the strict raw schema, validation that reports every problem with its field path, the
//! validated model ([`Config`]), the compatibility check ("does this config keep every assigned
//! address valid?") and the plain view of a Kubernetes Service ([`ServiceView`]) that both the
//! controller and the speaker reason about.
//!
//! Must not: depend on tokio, kube or sockets. Everything here is pure and synchronous.

pub mod addr;
pub mod model;
pub mod service;

pub use addr::{IpFamily, IpRange};
pub use model::{
    BfdProfile, BgpAdvertisement, Community, Config, MatchExpression, NodeSelector, Peer, Pool,
    Protocol, SelectorOperator,
};
pub use service::{IpFamilyPolicy, ServiceKey, ServicePort, ServiceView, TrafficPolicy};
