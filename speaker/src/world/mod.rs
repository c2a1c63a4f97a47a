//! What a speaker knows about the cluster: the input to every announcement decision.
//!
//! Sources fill it in (the Kubernetes watchers, or standalone mode's files; [`build`] holds the
//! pure steps that do not depend on the source) and hand it to each announcer's `apply` (through
//! [`crate::lifecycle`]); announcers derive what to announce from it with pure functions.
//! Nothing here does I/O.

pub mod build;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::{Config, ServiceKey, ServiceView, TrafficPolicy};

/// A Service together with the addresses the controller assigned to it (its status): what
/// announcers read of it, and nothing else (a world of 10k Services holds no copies of their
/// annotations, selectors or ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedService {
    pub key: ServiceKey,
    /// `spec.externalTrafficPolicy`: `Local` announces only from nodes with a ready endpoint.
    pub external_traffic_policy: TrafficPolicy,
    pub ips: Vec<IpAddr>,
}

impl AssignedService {
    /// `service` holding `ips`.
    pub fn of(service: &ServiceView, ips: Vec<IpAddr>) -> AssignedService {
        AssignedService {
            key: service.key.clone(),
            external_traffic_policy: service.external_traffic_policy,
            ips,
        }
    }
}

/// The node this speaker runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Where each Service has ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// No endpoint information (standalone mode): every Service counts as ready on every node.
    AllReady,
    /// Per Service, the nodes that host at least one ready endpoint. A Service missing from the
    /// map has no ready endpoint anywhere.
    Nodes(BTreeMap<ServiceKey, BTreeSet<String>>),
}

impl Readiness {
    /// True when the Service has a ready endpoint on `node`.
    pub fn ready_on(&self, service: &ServiceKey, node: &str) -> bool {
        match self {
            Readiness::AllReady => true,
            Readiness::Nodes(m) => m.get(service).is_some_and(|n| n.contains(node)),
        }
    }

    /// True when the Service has a ready endpoint anywhere.
    pub fn ready_anywhere(&self, service: &ServiceKey) -> bool {
        match self {
            Readiness::AllReady => true,
            Readiness::Nodes(m) => m.get(service).is_some_and(|n| !n.is_empty()),
        }
    }
}

/// Everything an announcer decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// The configuration in force (never a refused one).
    pub config: Config,
    /// This speaker's node.
    pub node: NodeInfo,
    /// Every Service that has addresses, in any pool.
    pub services: Vec<AssignedService>,
    pub readiness: Readiness,
    /// Names of the nodes whose speakers are alive (membership), this node included.
    pub live_nodes: BTreeSet<String>,
    /// The labels of the other nodes, by name, for L2Advertisements that select nodes (a node
    /// missing here has no labels). This node's are in `node`.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl World {
    /// The labels of node `name` (none when unknown).
    pub fn labels_of(&self, name: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        if name == self.node.name {
            return &self.node.labels;
        }
        self.node_labels.get(name).unwrap_or(&NONE)
    }
}

/// An announcer (layer2, bgp): turns the latest [`World`] into announcements.
///
/// Sources call `apply` after every change; implementations hand the world to their own tasks
/// and return at once. `shutdown` withdraws everything (BGP: withdraw and Cease; layer2: stop
/// answering) and ends the tasks.
pub trait Announcer: Send {
    /// Short name for logs and metrics, e.g. `"layer2"` or `"bgp"`.
    fn name(&self) -> &'static str;
    /// Hands over the latest world. Must not block.
    fn apply(&mut self, world: std::sync::Arc<World>);
    /// Withdraws every announcement and stops.
    fn shutdown(&mut self) -> futures::future::BoxFuture<'static, ()>;
}
