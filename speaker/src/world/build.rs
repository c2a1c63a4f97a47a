//! The steps of building a [`World`] that do not depend on where its inputs come from: the
//! Services to announce, where their endpoints are ready, which nodes count as alive, and the
//! world itself. Pure functions.
//!
//! Must not: know Kubernetes object types (a source converts its objects to these inputs first,
//! e.g. `crate::k8s::convert`), do I/O, or decide announcements (the announcers do).

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_config::{is_ours, Config, ServiceKey, ServiceView};

use super::{AssignedService, NodeInfo, Readiness, World};

/// The Services this speaker announces: `type: LoadBalancer`, ours by class, with at least one
/// address in `status.loadBalancer.ingress`. In `namespace/name` order.
pub fn assigned_views<'a>(
    views: impl IntoIterator<Item = &'a ServiceView>,
    class: &str,
) -> Vec<AssignedService> {
    let mut out: Vec<AssignedService> = views
        .into_iter()
        .filter(|v| is_ours(v, class) && !v.ingress_ips.is_empty())
        .map(|v| AssignedService::of(v, v.ingress_ips.clone()))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Per Service, the nodes hosting at least one ready endpoint. `groups` gives, for each group of
/// endpoints (a Kubernetes EndpointSlice), its Service and the nodes of its ready endpoints;
/// the groups of one Service are merged.
pub fn readiness<'a>(
    groups: impl IntoIterator<Item = (&'a ServiceKey, &'a [String])>,
) -> Readiness {
    let mut ready: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for (service, nodes) in groups {
        if nodes.is_empty() {
            continue;
        }
        ready
            .entry(service.clone())
            .or_default()
            .extend(nodes.iter().cloned());
    }
    Readiness::Nodes(ready)
}

/// What membership says about which speakers are alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// No membership (no `--ml-bind`).
    Off,
    /// Membership's live set, this node included.
    Members(BTreeSet<String>),
    /// Membership stopped reporting.
    Stopped,
}

/// The live nodes of the next world: membership's live set; without membership, the source's
/// own notion (`without_membership`: Kubernetes counts the Nodes whose `Ready` condition is
/// True, standalone only this node); once membership stopped reporting, the `previous` world's
/// live set stays (none before the first world).
pub fn live_nodes(
    liveness: Liveness,
    without_membership: impl FnOnce() -> BTreeSet<String>,
    previous: Option<&BTreeSet<String>>,
) -> BTreeSet<String> {
    match liveness {
        Liveness::Members(live) => live,
        Liveness::Off => without_membership(),
        Liveness::Stopped => previous.cloned().unwrap_or_default(),
    }
}

/// The world every announcer decides from. `node_labels`: the labels of the other nodes, read
/// only when some L2Advertisement selects nodes (see [`World::node_labels`]).
pub fn world(
    config: Config,
    node: NodeInfo,
    services: Vec<AssignedService>,
    readiness: Readiness,
    live_nodes: BTreeSet<String>,
    node_labels: impl FnOnce() -> BTreeMap<String, BTreeMap<String, String>>,
) -> World {
    let selects_nodes = config.pools.iter().any(|p| !p.l2_advertisements.is_empty());
    World {
        config,
        node,
        services,
        readiness,
        live_nodes,
        node_labels: if selects_nodes {
            node_labels()
        } else {
            BTreeMap::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn live_nodes_come_from_membership_else_the_source_and_stay_when_membership_stops() {
        let ready = || set(&["a", "b"]);
        assert_eq!(
            live_nodes(Liveness::Members(set(&["c"])), ready, Some(&set(&["x"]))),
            set(&["c"])
        );
        assert_eq!(
            live_nodes(Liveness::Off, ready, Some(&set(&["x"]))),
            ready()
        );
        assert_eq!(
            live_nodes(Liveness::Stopped, ready, Some(&set(&["x"]))),
            set(&["x"])
        );
        assert!(live_nodes(Liveness::Stopped, ready, None).is_empty());
    }

    #[test]
    fn readiness_merges_the_groups_of_a_service_and_leaves_out_empty_ones() {
        let web = ServiceKey::new("default", "web");
        let idle = ServiceKey::new("default", "idle");
        let (a, b, none) = (vec!["a".to_string()], vec!["b".to_string()], Vec::new());
        let r = readiness([
            (&web, a.as_slice()),
            (&web, b.as_slice()),
            (&idle, none.as_slice()),
        ]);
        assert!(r.ready_on(&web, "a") && r.ready_on(&web, "b"));
        assert!(!r.ready_on(&web, "c"));
        assert!(!r.ready_anywhere(&idle));
        assert_eq!(
            r,
            Readiness::Nodes(BTreeMap::from([(web, set(&["a", "b"]))]))
        );
    }

    #[test]
    fn assigned_services_are_ours_with_addresses_in_key_order() {
        let view = |name: &str, class: Option<&str>, ip: Option<&str>| {
            let mut v = ServiceView::new_load_balancer(ServiceKey::new("default", name));
            v.load_balancer_class = class.map(str::to_string);
            v.ingress_ips = ip
                .into_iter()
                .map(|i| i.parse().expect("an address"))
                .collect();
            v
        };
        let mut cluster_ip = view("cip", None, Some("192.0.2.3"));
        cluster_ip.is_load_balancer = false;
        let views = [
            view("web", None, Some("192.0.2.1")),
            view("mine", Some("ferrolb"), Some("192.0.2.2")),
            view("theirs", Some("other"), Some("192.0.2.4")),
            view("pending", None, None),
            cluster_ip,
        ];
        let got = assigned_views(&views, "ferrolb");
        let names: Vec<&str> = got.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(names, vec!["mine", "web"]);
        assert_eq!(got[1].ips, views[0].ingress_ips);
    }
}
