//! ferrolb-controller: gives every `type: LoadBalancer` Service an address and keeps it.
//!
//! Owns the allocator (pure), the reconcile decisions (pure) and the Kubernetes shell that
//! watches Services and the config and writes status and Events.
//!
//! Must not: know about ARP or BGP.

pub mod allocator;
pub mod engine;
pub mod incremental;
pub mod k8s;
pub mod metrics;
pub mod reconcile;
