//! The `nodeAssigned` Event on a Service when this node becomes its layer2 announcer: which
//! Services this node newly wins (pure: [`layer2_won`], [`newly_won`]) and their publication,
//! which never waits for the apiserver (`ferrolb_runtime::events`).
//!
//! Must not: decide who wins an address (`crate::layer2::election` does), or delay announcing.

use std::collections::BTreeSet;

use ferrolb_config::ServiceKey;
use ferrolb_runtime::cache::Cache;
use ferrolb_runtime::events::EventPublisher;
use k8s_openapi::api::core::v1::Service;
use tracing::info;

use super::convert::CachedService;
use crate::layer2::election::my_addresses;
use crate::world::World;

/// The Services this node wins by layer2 in `world`: at least one of its addresses is in a
/// `layer2` pool and elected to `world.node` ([`my_addresses`]).
pub fn layer2_won(world: &World) -> BTreeSet<ServiceKey> {
    let won = my_addresses(world);
    world
        .services
        .iter()
        .filter(|s| s.ips.iter().any(|ip| won.contains_key(ip)))
        .map(|s| s.key.clone())
        .collect()
}

/// The Services to send a `nodeAssigned` Event for: won now, not won in the previous world.
pub fn newly_won(before: &BTreeSet<ServiceKey>, now: &BTreeSet<ServiceKey>) -> Vec<ServiceKey> {
    now.difference(before).cloned().collect()
}

/// The Services this node won in the last world handed to the announcers, and where Events go.
#[derive(Debug)]
pub struct NodeAssigned {
    node: String,
    events: EventPublisher,
    won: BTreeSet<ServiceKey>,
}

impl NodeAssigned {
    pub fn new(node: String, events: EventPublisher) -> Self {
        NodeAssigned {
            node,
            events,
            won: BTreeSet::new(),
        }
    }

    /// `world` was handed to the announcers: log and publish (in the background) an Event for
    /// each Service this node newly wins.
    pub fn on_world(&mut self, world: &World, services: &Cache<Service, CachedService>) {
        let now = layer2_won(world);
        for key in newly_won(&self.won, &now) {
            info!(service = %key, node = %self.node, "layer2: announcing from this node");
            if let Some(svc) = services.get(&key.namespace, &key.name) {
                let note = format!("announcing from node {:?}", self.node);
                self.events
                    .spawn(svc.object_ref(), false, "nodeAssigned", note);
            }
        }
        self.won = now;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assigned_services, config, ready, slice, svc};
    use super::*;
    use crate::world::build::world;
    use crate::world::NodeInfo;
    use std::collections::BTreeMap;

    #[test]
    fn local_policy_winner_is_the_node_with_the_endpoint_and_events_only_on_change() {
        let services = assigned_services(
            &[
                svc("web", &["192.0.2.100"], "Local"),
                svc("bgp", &["203.0.113.1"], "Cluster"),
            ],
            "ferrolb",
        );
        let live = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let w = |me: &str, ready_on: &str| {
            world(
                config(),
                NodeInfo {
                    name: me.into(),
                    labels: BTreeMap::new(),
                },
                services.clone(),
                ready(&[
                    slice("web", &[(ready_on, Some(true))]),
                    slice("bgp", &[("a", Some(true)), ("b", Some(true))]),
                ]),
                live.clone(),
                BTreeMap::new,
            )
        };
        let web = ServiceKey::new("default", "web");
        // Only b has the endpoint: b wins, a does not; the bgp Service never counts.
        assert_eq!(layer2_won(&w("b", "b")), BTreeSet::from([web.clone()]));
        assert!(layer2_won(&w("a", "b")).is_empty());
        // The endpoint moves to a: a now wins; one event for a, none repeated.
        let before = layer2_won(&w("a", "b"));
        let now = layer2_won(&w("a", "a"));
        assert_eq!(newly_won(&before, &now), vec![web.clone()]);
        assert!(newly_won(&now, &now).is_empty());
        // No endpoint anywhere: nobody wins.
        let mut none = w("a", "a");
        none.readiness = ready(&[slice("web", &[("a", Some(false))])]);
        assert!(layer2_won(&none).is_empty());
    }

    #[test]
    fn cluster_policy_winner_is_the_same_on_every_node() {
        let services = assigned_services(&[svc("web", &["192.0.2.104"], "Cluster")], "ferrolb");
        let live: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let winners: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|me| {
                let w = world(
                    config(),
                    NodeInfo {
                        name: (*me).into(),
                        labels: BTreeMap::new(),
                    },
                    services.clone(),
                    ready(&[slice("web", &[("c", Some(true))])]),
                    live.clone(),
                    BTreeMap::new,
                );
                !layer2_won(&w).is_empty()
            })
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    }
}
