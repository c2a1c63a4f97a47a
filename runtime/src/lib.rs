//! ferrolb-runtime: what both Kubernetes roles (controller and speaker) do the same way around
//! their own decisions: reading the configuration text from the ConfigMap, acting on the config
//! gate's verdict (log lines, metrics, the Event note), and the shells' shared plumbing.
//!
//! Must not: make decisions (the gate and the planners do, in `ferrolb-config` and the role
//! crates), or know about ARP, BGP or the allocator.

pub mod config;
pub mod service;
