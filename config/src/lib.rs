//! ferrolb-config: MetalLB's (v0.12) ConfigMap format and the vocabulary every part of ferrolb shares.
//!
//! Owns: the strict raw schema, validation that reports every problem with its field path, the
//! validated model ([`Config`]), the compatibility check ("does this config keep every assigned
//! address valid?") and the plain view of a Kubernetes Service ([`ServiceView`]) that both the
//! controller and the speaker reason about.
//!
//! Must not: depend on tokio, kube or sockets. Everything here is pure and synchronous.

pub mod addr;
pub mod check;
mod cidr;
pub mod compat;
pub mod crd;
mod duration;
pub mod errors;
pub mod forms;
pub mod gate;
mod konvoy;
mod labels;
pub mod manifests;
pub mod model;
mod parse;
mod peers;
mod pools;
pub mod service;
pub mod source;
mod validate;
mod yamlx;

pub use addr::{IpFamily, IpRange};
pub use compat::{breakages_of, breaking, Breakage};
pub use errors::{ConfigError, ConfigErrors, ConfigWarning};
pub use forms::InputForm;
pub use gate::{ConfigGate, ConfigVerdict, Refusal, RefusalCause};
pub use model::{
    BfdProfile, BgpAdvertisement, Community, Config, L2Advertisement, LargeCommunity,
    MatchExpression, NodeSelector, Peer, Pool, Protocol, SelectorOperator, ServiceAllocation,
};
pub use parse::{parse, parse_with_form, parse_with_warnings, Parsed};
pub use service::{is_ours, IpFamilyPolicy, ServiceKey, ServicePort, ServiceView, TrafficPolicy};
