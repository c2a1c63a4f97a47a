//! The Rust types of MetalLB's custom resources: the single source of the CRDs' OpenAPI
//! schemas (kube's `CustomResource` derive with schemars), and what `config convert` writes.
//!
//! Must not: read configuration (ferrolb reads the objects as plain values, with every problem
//! reported, in `ferrolb_config::crd`).

// kube's `printcolumn(...)` repeats `type_ = ...` once per column, which clippy takes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod advertisement;
pub mod peer;
pub mod pool;
pub mod selector;
pub mod status;

pub use advertisement::{
    BGPAdvertisement, BGPAdvertisementSpec, L2Advertisement, L2AdvertisementSpec,
};
pub use peer::{
    BFDProfile, BFDProfileSpec, BGPPeer, BGPPeerSpec, Community, CommunityAlias, CommunitySpec,
    DynamicAsn, SecretReference,
};
pub use pool::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation};
pub use selector::{LabelSelector, LabelSelectorRequirement, Operator};
pub use status::{
    Condition, ConfigurationState, ConfigurationStateFields, ConfigurationStateStatus,
    InterfaceInfo, ServiceBGPStatus, ServiceBGPStatusSpec, ServiceBGPStatusStatus, ServiceL2Status,
    ServiceL2StatusSpec, ServiceL2StatusStatus,
};
