//! What this node announces, as MetalLB's status objects say it (ServiceL2Status: the node
//! answering for a Service and on which interfaces; ServiceBGPStatus: a node announcing a
//! Service and to which peers), and the task that keeps this node's objects equal to it: new and
//! changed ones written (server-side apply), ones no longer true deleted, its own leftovers from
//! an earlier run deleted at start, all of them deleted when the speaker stops. The task runs
//! beside the rebuilds and never delays an announcement.
//!
//! Must not: decide announcements (`crate::layer2::election`, `crate::bgp::adv` do), or touch
//! another node's objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrolb_config::ServiceKey;
use ferrolb_crds::types::{
    InterfaceInfo, ServiceBGPStatus, ServiceBGPStatusSpec, ServiceBGPStatusStatus, ServiceL2Status,
    ServiceL2StatusSpec, ServiceL2StatusStatus,
};
use ferrolb_runtime::status::{FIELD_MANAGER, NODE_LABEL};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::bgp::adv::announced_to;
use crate::layer2::election::my_addresses;
use crate::world::World;

/// Label of a status object: the Service's name.
pub const SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
/// Label of a status object: the Service's namespace.
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// Which status kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Layer2,
    Bgp,
}

/// One status object's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub kind: Kind,
    pub service: ServiceKey,
    /// Layer2: the interfaces (none: every usable interface); BGP: the peers.
    pub items: Vec<String>,
}

/// The status objects of what `world.node` announces, by object name.
pub fn announced(world: &World) -> BTreeMap<String, Announced> {
    let node = &world.node.name;
    let mut out = BTreeMap::new();
    let won = my_addresses(world);
    for svc in &world.services {
        let mut interfaces: BTreeSet<String> = BTreeSet::new();
        let mut any = false;
        for ip in &svc.ips {
            if let Some(i) = won.get(ip) {
                any = true;
                interfaces.extend(i.iter().cloned());
            }
        }
        if any {
            out.insert(
                object_name(Kind::Layer2, node, &svc.key),
                Announced {
                    kind: Kind::Layer2,
                    service: svc.key.clone(),
                    items: interfaces.into_iter().collect(),
                },
            );
        }
    }
    for (service, peers) in announced_to(world) {
        out.insert(
            object_name(Kind::Bgp, node, &service),
            Announced {
                kind: Kind::Bgp,
                service,
                items: peers.into_iter().collect(),
            },
        );
    }
    out
}

/// `l2-HASH` / `bgp-HASH`: the first 16 hex digits of sha256(`node/namespace/name`), a valid
/// object name whatever the lengths of the node's and the Service's names.
pub fn object_name(kind: Kind, node: &str, service: &ServiceKey) -> String {
    let digest = Sha256::digest(format!("{node}/{}/{}", service.namespace, service.name));
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match kind {
        Kind::Layer2 => format!("l2-{hex}"),
        Kind::Bgp => format!("bgp-{hex}"),
    }
}

/// The handle of the status task: hand it each world's [`announced`], stop it at the end.
#[derive(Debug)]
pub struct ServiceStatuses {
    tx: watch::Sender<BTreeMap<String, Announced>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServiceStatuses {
    /// Starts the task writing `node`'s objects in `namespace`.
    pub fn start(client: Client, namespace: &str, node: &str) -> Self {
        let (tx, rx) = watch::channel(BTreeMap::new());
        let writer = Writer {
            l2: Api::namespaced(client.clone(), namespace),
            bgp: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            node: node.to_string(),
            written: BTreeMap::new(),
            unsure: BTreeSet::new(),
            warned: false,
        };
        ServiceStatuses {
            tx,
            task: tokio::spawn(writer.run(rx)),
        }
    }

    /// What this node announces now.
    pub fn on_world(&self, world: &World) {
        let now = announced(world);
        self.tx.send_if_modified(|old| {
            let changed = *old != now;
            if changed {
                *old = now;
            }
            changed
        });
    }

    /// Deletes this node's objects (within `deadline`) and ends the task.
    pub async fn stop(self, deadline: Duration) {
        drop(self.tx);
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            warn!("status objects not all deleted before the deadline");
        }
    }
}

/// How often a failed write is tried again when nothing else changes.
const RETRY: Duration = Duration::from_secs(5);

struct Writer {
    l2: Api<ServiceL2Status>,
    bgp: Api<ServiceBGPStatus>,
    namespace: String,
    node: String,
    /// What the apiserver holds, as far as this task knows.
    written: BTreeMap<String, Announced>,
    /// Objects of this node whose content is not known (left from an earlier run).
    unsure: BTreeSet<(Kind, String)>,
    warned: bool,
}

impl Writer {
    async fn run(mut self, mut rx: watch::Receiver<BTreeMap<String, Announced>>) {
        self.leftovers().await;
        loop {
            let want = rx.borrow_and_update().clone();
            let done = self.sync(&want).await;
            let changed = if done {
                rx.changed().await
            } else {
                match tokio::time::timeout(RETRY, rx.changed()).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            };
            if changed.is_err() {
                break;
            }
        }
        self.sync(&BTreeMap::new()).await;
    }

    /// This node's objects from an earlier run: deleted unless the first world wants them.
    async fn leftovers(&mut self) {
        let lp = ListParams::default().labels(&format!("{NODE_LABEL}={}", self.node));
        match self.l2.list(&lp).await {
            Ok(l) => self.unsure.extend(
                l.items
                    .into_iter()
                    .filter_map(|o| Some((Kind::Layer2, o.metadata.name?))),
            ),
            Err(e) => self.failed("list ServiceL2Status", &e),
        }
        match self.bgp.list(&lp).await {
            Ok(l) => self.unsure.extend(
                l.items
                    .into_iter()
                    .filter_map(|o| Some((Kind::Bgp, o.metadata.name?))),
            ),
            Err(e) => self.failed("list ServiceBGPStatus", &e),
        }
    }

    /// Makes the apiserver hold `want`; false when a write failed (try again later).
    async fn sync(&mut self, want: &BTreeMap<String, Announced>) -> bool {
        let mut ok = true;
        for (name, a) in want {
            if self.written.get(name) == Some(a) {
                continue;
            }
            match self.apply(name, a).await {
                Ok(()) => {
                    debug!(name, service = %a.service, "status object written");
                    self.written.insert(name.clone(), a.clone());
                    self.unsure.remove(&(a.kind, name.clone()));
                }
                Err(e) => {
                    ok = false;
                    self.failed(name, &e);
                }
            }
        }
        let gone: Vec<(Kind, String)> = self
            .written
            .iter()
            .filter(|(n, _)| !want.contains_key(*n))
            .map(|(n, a)| (a.kind, n.clone()))
            .chain(
                self.unsure
                    .iter()
                    .filter(|(_, n)| !want.contains_key(n))
                    .cloned(),
            )
            .collect();
        for (kind, name) in gone {
            let dp = DeleteParams::default();
            let result = match kind {
                Kind::Layer2 => self.l2.delete(&name, &dp).await.map(|_| ()),
                Kind::Bgp => self.bgp.delete(&name, &dp).await.map(|_| ()),
            };
            match result {
                Err(e) if !is_gone(&e) => {
                    ok = false;
                    self.failed(&name, &e);
                }
                _ => {
                    self.written.remove(&name);
                    self.unsure.remove(&(kind, name));
                }
            }
        }
        ok
    }

    async fn apply(&self, name: &str, a: &Announced) -> Result<(), kube::Error> {
        let meta = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (NODE_LABEL.to_string(), self.node.clone()),
                (SERVICE_NAME_LABEL.to_string(), a.service.name.clone()),
                (
                    SERVICE_NAMESPACE_LABEL.to_string(),
                    a.service.namespace.clone(),
                ),
            ])),
            ..ObjectMeta::default()
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match a.kind {
            Kind::Layer2 => {
                let obj = ServiceL2Status {
                    metadata: meta,
                    spec: ServiceL2StatusSpec {},
                    status: Some(ServiceL2StatusStatus {
                        node: self.node.clone(),
                        service_name: a.service.name.clone(),
                        service_namespace: a.service.namespace.clone(),
                        interfaces: a
                            .items
                            .iter()
                            .map(|n| InterfaceInfo { name: n.clone() })
                            .collect(),
                    }),
                };
                self.l2.patch(name, &params, &Patch::Apply(&obj)).await?;
                self.l2
                    .patch_status(name, &params, &Patch::Apply(&obj))
                    .await?;
            }
            Kind::Bgp => {
                let obj = ServiceBGPStatus {
                    metadata: meta,
                    spec: ServiceBGPStatusSpec {},
                    status: Some(ServiceBGPStatusStatus {
                        node: self.node.clone(),
                        service_name: a.service.name.clone(),
                        service_namespace: a.service.namespace.clone(),
                        peers: a.items.clone(),
                    }),
                };
                self.bgp.patch(name, &params, &Patch::Apply(&obj)).await?;
                self.bgp
                    .patch_status(name, &params, &Patch::Apply(&obj))
                    .await?;
            }
        }
        Ok(())
    }

    fn failed(&mut self, what: &str, e: &kube::Error) {
        if is_gone(e) {
            if !self.warned {
                self.warned = true;
                warn!(what, "status objects not written: MetalLB's CRDs are not installed (manifests/base/crds.yaml)");
            }
            return;
        }
        warn!(what, error = %e, "status object not written; trying again");
    }
}

/// A 404: the object (or its kind) is not there.
fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{AssignedService, NodeInfo, Readiness};
    use ferrolb_config::TrafficPolicy;

    const CONFIG: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: l2}
spec: {addresses: [192.0.2.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2}
spec: {ipAddressPools: [l2], interfaces: [eth1]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: [198.51.100.0/24]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.254}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: b}
spec: {ipAddressPools: [b]}
";

    fn world(me: &str) -> World {
        let svc = |name: &str, ip: &str| AssignedService {
            key: ServiceKey::new("apps", name),
            external_traffic_policy: TrafficPolicy::Cluster,
            ips: vec![ip.parse().expect("an address")],
        };
        World {
            config: ferrolb_config::parse(CONFIG).expect("valid"),
            node: NodeInfo {
                name: me.into(),
                labels: BTreeMap::new(),
            },
            services: vec![svc("web", "192.0.2.10"), svc("bgp-web", "198.51.100.10")],
            readiness: Readiness::AllReady,
            live_nodes: ["a".to_string(), "b".to_string()].into(),
            node_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn the_layer2_winner_and_every_bgp_node_have_status_objects() {
        let (a, b) = (announced(&world("a")), announced(&world("b")));
        let l2: Vec<&Announced> = a
            .values()
            .chain(b.values())
            .filter(|x| x.kind == Kind::Layer2)
            .collect();
        assert_eq!(l2.len(), 1, "one node answers for web: {a:?} {b:?}");
        assert_eq!(l2[0].service, ServiceKey::new("apps", "web"));
        assert_eq!(l2[0].items, vec!["eth1".to_string()]);
        for (node, objects) in [("a", &a), ("b", &b)] {
            let bgp = &objects[&object_name(Kind::Bgp, node, &ServiceKey::new("apps", "bgp-web"))];
            assert_eq!(bgp.items, vec!["router".to_string()]);
        }
    }

    #[test]
    fn object_names_are_short_valid_and_differ_by_node_and_service() {
        let long = "x".repeat(253);
        let svc = ServiceKey::new("n".repeat(63), "s".repeat(63));
        let name = object_name(Kind::Layer2, &long, &svc);
        assert_eq!(name.len(), 19);
        assert!(name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
        assert_ne!(name, object_name(Kind::Layer2, "other", &svc));
        assert_ne!(
            object_name(Kind::Bgp, "a", &svc),
            object_name(Kind::Bgp, "a", &ServiceKey::new("n", "t"))
        );
    }
}
