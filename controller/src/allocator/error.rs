//! Why a Service got no address: the allocator's one error type, each variant naming what was
//! asked and what stood in the way (its text goes into the Service's Warning Event).
//!
//! Must not: decide anything; these are plain values.

use std::net::IpAddr;

use ferrolb_config::{IpFamily, ServiceKey};

/// Why a Service got no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("bad request: {field} = {value:?}: {reason}")]
    BadRequest {
        field: String,
        value: String,
        reason: String,
    },
    #[error("unknown address pool {pool:?} (annotation metallb.universe.tf/address-pool)")]
    UnknownPool { pool: String },
    #[error("requested address {ip} is not in any address pool")]
    NotInAnyPool { ip: IpAddr },
    #[error(
        "requested address {ip} is in pool {actual:?}, not in the requested pool {requested:?}"
    )]
    WrongPool {
        ip: IpAddr,
        actual: String,
        requested: String,
    },
    #[error("addresses {first} and {second} are in different pools ({first_pool:?}, {second_pool:?}); one pool must serve all families")]
    SplitPools {
        first: IpAddr,
        second: IpAddr,
        first_pool: String,
        second_pool: String,
    },
    #[error("pool exhausted: no free {family} address in pool(s) {pools}")]
    PoolExhausted { pools: String, family: IpFamily },
    #[error("no address pool serves {families} for this Service (auto-assign pools with these families: none)")]
    NoPoolForFamilies { families: String },
    #[error("no auto-assign address pool serves this Service: the serviceAllocation (namespaces, namespaceSelectors, serviceSelectors) of every pool that has one excludes it, and no pool is without one")]
    NoPoolAdmits,
    #[error("pool {pool:?} does not serve this Service (its serviceAllocation excludes the Service's namespace or labels)")]
    PoolExcludes { pool: String },
    #[error("pool {pool:?} has no {family} addresses")]
    PoolLacksFamily { pool: String, family: IpFamily },
    #[error("address family mismatch: {ip} is {family} but the Service's families are {wanted}")]
    FamilyMismatch {
        ip: IpAddr,
        family: IpFamily,
        wanted: String,
    },
    #[error("sharing conflict on {ip} with service {other}: {why}")]
    SharingConflict {
        ip: IpAddr,
        other: ServiceKey,
        why: String,
    },
    #[error("requested address {ip} is not assignable in pool {pool:?} (avoid-buggy-ips)")]
    BuggyIp { ip: IpAddr, pool: String },
    #[error(
        "not served by ferrolb (not type LoadBalancer, or loadBalancerClass is not {class:?})"
    )]
    NotOurs { class: String },
}
