//! Pure reconcile decisions of the Kubernetes controller.
//!
//! Given what a Service looks like and what the allocator says about it, [`decide`] returns the
//! status to write and the Event to emit. (Whether a new configuration is loaded is the config
//! gate's decision, `ferrolb_config::gate`; which Services are ours is `ferrolb_config::is_ours`.)
//!
//! Must not: do I/O, know about kube-rs types, or read clocks. The Kubernetes shell in `k8s/`
//! calls these functions and carries out their results.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::{Config, ServiceKey, ServiceView};

use crate::allocator::{AllocError, Allocator, Assigned};

/// What the allocator concluded for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// The Service holds these addresses (kept or newly assigned), from `pool`.
    Assigned { ips: Vec<IpAddr>, pool: String },
    /// No address could be given; `reason` names the cause (pool exhausted, bad request, ...).
    Failed { reason: String },
    /// Not a Service ferrolb serves (type, class); never allocated.
    NotOurs,
}

/// What to do with `status.loadBalancer.ingress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    Keep,
    Set(Vec<IpAddr>),
    Clear,
}

/// An Event about a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// Normal `IPAllocated`.
    IpAllocated { ips: Vec<IpAddr>, pool: String },
    /// Warning `AllocationFailed`.
    AllocationFailed { reason: String },
}

impl ServiceEvent {
    /// The Event's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ServiceEvent::IpAllocated { .. } => "IPAllocated",
            ServiceEvent::AllocationFailed { .. } => "AllocationFailed",
        }
    }

    /// The Event's `note` (message).
    pub fn note(&self) -> String {
        match self {
            ServiceEvent::IpAllocated { ips, pool } => {
                format!("Assigned IP {} from pool {pool}", join_ips(ips))
            }
            ServiceEvent::AllocationFailed { reason } => {
                format!("Failed to allocate IP: {reason}")
            }
        }
    }

    /// True for a Warning Event.
    pub fn is_warning(&self) -> bool {
        matches!(self, ServiceEvent::AllocationFailed { .. })
    }
}

/// Addresses as `a, b` for messages (a slice of addresses or an [`Ips`](crate::allocator::Ips)).
pub fn join_ips<T: Borrow<IpAddr>>(ips: impl IntoIterator<Item = T>) -> String {
    ips.into_iter()
        .map(|ip| ip.borrow().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result of [`decide`] for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: StatusChange,
    pub event: Option<ServiceEvent>,
}

/// Decide the status write and Event for one Service.
///
/// `owns_ip` says whether an address belongs to ferrolb (inside one of its pools): a Service that
/// is not ours has its ingress cleared only when it holds such an address, so the status written
/// by another load-balancer implementation is never touched. `last_failure` is the reason of the
/// `AllocationFailed` Event already emitted for this Service, so a failure is reported once per
/// distinct reason, not on every pass.
pub fn decide(
    view: &ServiceView,
    allocation: &Allocation,
    owns_ip: impl Fn(&IpAddr) -> bool,
    last_failure: Option<&str>,
) -> Decision {
    match allocation {
        Allocation::Assigned { ips, pool } => {
            if *ips == view.ingress_ips {
                Decision {
                    status: StatusChange::Keep,
                    event: None,
                }
            } else {
                Decision {
                    status: StatusChange::Set(ips.clone()),
                    event: Some(ServiceEvent::IpAllocated {
                        ips: ips.clone(),
                        pool: pool.clone(),
                    }),
                }
            }
        }
        Allocation::Failed { reason } => Decision {
            status: if view.ingress_ips.is_empty() {
                StatusChange::Keep
            } else {
                StatusChange::Clear
            },
            event: (last_failure != Some(reason.as_str())).then(|| {
                ServiceEvent::AllocationFailed {
                    reason: reason.clone(),
                }
            }),
        },
        Allocation::NotOurs => Decision {
            status: if view.ingress_ips.iter().any(owns_ip) {
                StatusChange::Clear
            } else {
                StatusChange::Keep
            },
            event: None,
        },
    }
}

/// The allocator's verdict for every Service, and pool usage for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub allocations: BTreeMap<ServiceKey, Allocation>,
    /// pool name -> (addresses in use, usable addresses)
    pub pools: BTreeMap<String, (u64, u128)>,
}

impl From<Result<Assigned, AllocError>> for Allocation {
    /// An allocator outcome in the form the Kubernetes shell uses.
    fn from(r: Result<Assigned, AllocError>) -> Allocation {
        match r {
            Ok(Assigned { ips, pool }) => Allocation::Assigned {
                ips: ips.to_vec(),
                pool: pool.to_string(),
            },
            Err(e) => Allocation::Failed {
                reason: e.to_string(),
            },
        }
    }
}

/// The fresh-start plan in the form the Kubernetes shell uses: every Service's outcome (restore
/// first, then allocate, in key order) and pool usage.
pub fn plan(config: &Config, class: &str, views: &[ServiceView]) -> Plan {
    let (a, results) = Allocator::fresh(config.clone(), class, views);
    let mut out = Plan::default();
    for v in views {
        if !a.serves(v) {
            out.allocations.insert(v.key.clone(), Allocation::NotOurs);
        }
    }
    for (k, r) in results {
        out.allocations.insert(k.clone(), Allocation::from(r));
    }
    for u in a.usage() {
        out.pools.insert(u.pool, (u.in_use, u.addresses_total));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::ServiceKey;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lb(name: &str) -> ServiceView {
        ServiceView::new_load_balancer(ServiceKey::new("ns", name))
    }

    #[test]
    fn new_assignment_sets_status_and_emits_ip_allocated() {
        let v = lb("a");
        let a = Allocation::Assigned {
            ips: vec![ip("192.0.2.1")],
            pool: "p".into(),
        };
        let d = decide(&v, &a, |_| true, None);
        assert_eq!(d.status, StatusChange::Set(vec![ip("192.0.2.1")]));
        let ev = d.event.unwrap();
        assert_eq!(ev.reason(), "IPAllocated");
        assert_eq!(ev.note(), "Assigned IP 192.0.2.1 from pool p");
        assert!(!ev.is_warning());
    }

    #[test]
    fn kept_assignment_writes_nothing() {
        let mut v = lb("a");
        v.ingress_ips = vec![ip("192.0.2.1")];
        let a = Allocation::Assigned {
            ips: vec![ip("192.0.2.1")],
            pool: "p".into(),
        };
        assert_eq!(
            decide(&v, &a, |_| true, None),
            Decision {
                status: StatusChange::Keep,
                event: None
            }
        );
    }

    #[test]
    fn failure_is_reported_once_per_reason_and_clears_a_stale_ip() {
        let mut v = lb("a");
        let a = Allocation::Failed {
            reason: "pool exhausted".into(),
        };
        let d = decide(&v, &a, |_| true, None);
        assert_eq!(d.status, StatusChange::Keep);
        assert_eq!(d.event.as_ref().unwrap().reason(), "AllocationFailed");
        assert!(d.event.as_ref().unwrap().note().contains("pool exhausted"));
        assert!(d.event.unwrap().is_warning());
        assert_eq!(decide(&v, &a, |_| true, Some("pool exhausted")).event, None);
        assert!(decide(&v, &a, |_| true, Some("other")).event.is_some());
        v.ingress_ips = vec![ip("192.0.2.9")];
        assert_eq!(
            decide(&v, &a, |_| true, Some("pool exhausted")).status,
            StatusChange::Clear
        );
    }

    #[test]
    fn not_ours_clears_only_our_addresses() {
        let mut v = lb("a");
        v.ingress_ips = vec![ip("192.0.2.1")];
        let ours = |i: &IpAddr| *i == ip("192.0.2.1");
        assert_eq!(
            decide(&v, &Allocation::NotOurs, ours, None).status,
            StatusChange::Clear
        );
        v.ingress_ips = vec![ip("203.0.113.1")];
        assert_eq!(
            decide(&v, &Allocation::NotOurs, ours, None).status,
            StatusChange::Keep
        );
        v.ingress_ips.clear();
        assert_eq!(
            decide(&v, &Allocation::NotOurs, ours, None),
            Decision {
                status: StatusChange::Keep,
                event: None
            }
        );
    }

    fn pool_config(first: &str, last: &str) -> ferrolb_config::Config {
        let mut c = ferrolb_config::Config::default();
        c.pools.push(ferrolb_config::Pool {
            name: "p".into(),
            protocol: ferrolb_config::Protocol::Layer2,
            ranges: vec![ferrolb_config::IpRange::new(ip(first), ip(last)).unwrap()],
            avoid_buggy_ips: true,
            auto_assign: true,
            bgp_advertisements: Vec::new(),
            interfaces: Vec::new(),
            l2_advertisements: Vec::new(),
            service_allocation: None,
        });
        c
    }

    #[test]
    fn breakages_name_our_services_whose_address_leaves_every_pool() {
        let mut inside = lb("inside");
        inside.ingress_ips = vec![ip("192.0.2.5")];
        let mut outside = lb("outside");
        outside.ingress_ips = vec![ip("192.0.2.5"), ip("198.51.100.7")];
        let mut buggy = lb("buggy");
        buggy.ingress_ips = vec![ip("192.0.2.0")];
        let mut foreign = lb("foreign");
        foreign.load_balancer_class = Some("other".into());
        foreign.ingress_ips = vec![ip("203.0.113.1")];
        let views = [inside, outside, buggy, foreign];
        let b = ferrolb_config::breakages_of(
            &pool_config("192.0.2.0", "192.0.2.255"),
            "ferrolb",
            &views,
        );
        let got: Vec<(String, IpAddr)> = b.iter().map(|b| (b.service.name.clone(), b.ip)).collect();
        assert_eq!(
            got,
            vec![
                ("buggy".to_string(), ip("192.0.2.0")),
                ("outside".to_string(), ip("198.51.100.7")),
            ],
            "avoid-buggy-ips excludes .0; other classes are not ours"
        );
    }
}
