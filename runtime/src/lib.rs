//! ferrolb-runtime: what both Kubernetes roles (controller and speaker) do the same way around
//! their own decisions: the configuration's sources (the ConfigMap and MetalLB's custom
//! resources, [`config_source`]), acting on the config gate's verdict ([`config`]), MetalLB's
//! status objects ([`status`]), a Service object as a view ([`service`]), watch streams
//! that restart and the caches fed by them ([`watch`], [`cache`]), coalescing bursts of events
//! ([`debounce`]) and publishing Events ([`events`]).
//!
//! Must not: make decisions (the gate and the planners do, in `ferrolb-config` and the role
//! crates), know about ARP, BGP or the allocator, or depend on a role crate (the arrows go
//! binary → roles → runtime → config).

pub mod cache;
pub mod config;
pub mod config_source;
pub mod debounce;
pub mod events;
pub mod service;
pub mod status;
pub mod watch;
