//! The Kubernetes shell of `ferrolb controller`: watches Services and the config ConfigMap,
//! holds the leader lease, and carries out the pure decisions of [`crate::reconcile`].
//!
//! Flow: wait until the Service list and the ConfigMap have been read (restart safety: every
//! Service's current `status.loadBalancer.ingress` is known before anything is assigned); then, as
//! leader, on every change: offer a changed ConfigMap to the [`ConfigGate`], plan all Services
//! (existing addresses restored first, then new ones assigned), write status changes through the
//! status subresource and emit Events. Only the leader writes.
//!
//! Must not: make decisions itself (they live in `reconcile` and the allocator), or parse
//! configuration text beyond handing it to `ferrolb_config`.

pub mod convert;
mod leader;
mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::{ServiceKey, ServiceView};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::metrics::ControllerMetrics;
use crate::reconcile::{self, ConfigGate, ConfigVerdict, StatusChange};

pub use writer::FIELD_MANAGER;

/// Settings of one controller process.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Namespace of the config ConfigMap and the leader Lease.
    pub namespace: String,
    /// Name of the config ConfigMap (key `config`).
    pub config_map: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// Lease duration; a standby takes over at most this long after the leader stops renewing.
    pub lease_duration: Duration,
    /// This replica's identity in the Lease and in Events.
    pub identity: String,
    /// The `spec.loadBalancerClass` ferrolb serves (besides Services with no class).
    pub load_balancer_class: String,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("the {what} watch ended unexpectedly")]
    WatchEnded { what: &'static str },
}

/// Run until `shutdown` resolves. `ready` becomes true once the Services and the ConfigMap have
/// been read.
pub async fn run(
    client: Client,
    opts: ControllerOptions,
    metrics: ControllerMetrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    let services_api: Api<Service> = Api::all(client.clone());
    let mut services_stream = watcher::watcher(services_api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &opts.namespace);
    let cm_fields = format!("metadata.name={}", opts.config_map);
    let mut cm_stream = watcher::watcher(cm_api, watcher::Config::default().fields(&cm_fields))
        .default_backoff()
        .boxed();
    let (mut leader_rx, lease_task) = leader::start(client.clone(), &opts).await?;

    let mut state = State {
        opts: opts.clone(),
        writer: writer::Writer::new(client, opts.identity.clone()),
        metrics,
        services: BTreeMap::new(),
        init_buffer: BTreeMap::new(),
        services_synced: false,
        config_map: None,
        config_synced: false,
        config_dirty: false,
        gate: ConfigGate::default(),
        last_failure: BTreeMap::new(),
        leader: false,
    };
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    tokio::pin!(shutdown);
    info!(namespace = %opts.namespace, config_map = %opts.config_map, identity = %opts.identity, "controller starting");
    // Events come in bursts (a Deployment of many Services, our own status writes echoed back by
    // the watch): gather them for a short moment and plan once for the whole burst, so the cost of
    // a burst of n events is one pass over the Services, not n.
    let debounce = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(debounce);
    let mut pending = false;
    loop {
        let mut dirty = false;
        let mut run_now = false;
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut debounce, if pending => { pending = false; run_now = true; }
            ev = services_stream.next() => {
                let Some(ev) = ev else { return Err(ControllerError::WatchEnded { what: "Service" }) };
                match ev {
                    Ok(ev) => { dirty = state.on_service_event(ev); }
                    Err(e) => warn!(error = %e, "Service watch error (retrying)"),
                }
            }
            ev = cm_stream.next() => {
                let Some(ev) = ev else { return Err(ControllerError::WatchEnded { what: "ConfigMap" }) };
                match ev {
                    Ok(ev) => { dirty = state.on_config_event(ev); }
                    Err(e) => warn!(error = %e, "ConfigMap watch error (retrying)"),
                }
            }
            changed = leader_rx.changed() => {
                if changed.is_err() {
                    warn!("leader election task ended; standing down");
                    state.set_leader(false);
                    break;
                }
                let is_leader = *leader_rx.borrow_and_update();
                state.set_leader(is_leader);
                dirty = is_leader;
            }
            _ = resync.tick() => { dirty = true; }
        }
        ready.store(
            state.services_synced && state.config_synced,
            Ordering::Relaxed,
        );
        if dirty && !pending {
            pending = true;
            debounce
                .as_mut()
                .reset(tokio::time::Instant::now() + RECONCILE_DEBOUNCE);
        }
        if run_now && state.leader && state.services_synced && state.config_synced {
            state.reconcile_all().await;
        }
    }
    info!("controller stopping; releasing the lease");
    drop(leader_rx);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => debug!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("timed out releasing the lease"),
    }
    Ok(())
}

/// How long events are gathered before one planning pass (see the main loop).
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(25);

struct State {
    opts: ControllerOptions,
    writer: writer::Writer,
    metrics: ControllerMetrics,
    services: BTreeMap<ServiceKey, Service>,
    init_buffer: BTreeMap<ServiceKey, Service>,
    services_synced: bool,
    config_map: Option<ConfigMap>,
    config_synced: bool,
    /// The ConfigMap changed since the gate last saw it.
    config_dirty: bool,
    gate: ConfigGate,
    /// Reason of the last `AllocationFailed` Event per Service (one Event per distinct reason).
    last_failure: BTreeMap<ServiceKey, String>,
    leader: bool,
}

/// `metadata.resourceVersion` as a number when it is one (etcd revisions are).
fn rv(svc: &Service) -> Option<u64> {
    svc.metadata.resource_version.as_deref()?.parse().ok()
}

impl State {
    fn set_leader(&mut self, leader: bool) {
        if leader != self.leader {
            info!(identity = %self.opts.identity, leader, "leadership changed");
        }
        self.leader = leader;
        self.metrics.leader.set(i64::from(leader));
    }

    /// Keep `svc` unless the stored copy is newer (our own status writes are stored at once).
    fn store(&mut self, svc: Service) {
        let key = convert::service_key(&svc);
        if let (Some(old), Some(new_rv)) = (self.services.get(&key).and_then(rv), rv(&svc)) {
            if old > new_rv {
                return;
            }
        }
        self.services.insert(key, svc);
    }

    fn on_service_event(&mut self, ev: Event<Service>) -> bool {
        self.metrics.updates.inc();
        match ev {
            Event::Init => {
                self.init_buffer.clear();
                false
            }
            Event::InitApply(svc) => {
                self.init_buffer.insert(convert::service_key(&svc), svc);
                false
            }
            Event::InitDone => {
                self.services = std::mem::take(&mut self.init_buffer);
                if !self.services_synced {
                    info!(services = self.services.len(), "Service list read");
                }
                self.services_synced = true;
                true
            }
            Event::Apply(svc) => {
                self.store(svc);
                true
            }
            Event::Delete(svc) => {
                let key = convert::service_key(&svc);
                self.services.remove(&key);
                self.last_failure.remove(&key);
                true
            }
        }
    }

    fn on_config_event(&mut self, ev: Event<ConfigMap>) -> bool {
        self.metrics.updates.inc();
        match ev {
            Event::Init | Event::InitApply(_) if self.config_synced => false,
            Event::Init => false,
            Event::InitApply(cm) | Event::Apply(cm) => {
                let changed = self.config_map.as_ref().map(config_text) != Some(config_text(&cm));
                self.config_dirty |= changed;
                self.config_map = Some(cm);
                changed
            }
            Event::InitDone => {
                if !self.config_synced && self.config_map.is_none() {
                    warn!(namespace = %self.opts.namespace, config_map = %self.opts.config_map,
                        "config ConfigMap not found; waiting for it");
                }
                self.config_synced = true;
                true
            }
            Event::Delete(_) => {
                warn!(namespace = %self.opts.namespace, config_map = %self.opts.config_map,
                    "config ConfigMap deleted; keeping the configuration in force");
                false
            }
        }
    }

    fn views(&self) -> Vec<ServiceView> {
        self.services.values().map(convert::service_view).collect()
    }

    /// Offer a changed ConfigMap to the gate and act on its verdict.
    async fn update_config(&mut self, views: &[ServiceView]) {
        if self.config_dirty {
            self.config_dirty = false;
            if let Some(cm) = &self.config_map {
                let parsed = ferrolb_config::parse(config_text(cm))
                    .map_err(|e| e.to_string().replace('\n', "; "));
                self.gate.offer(parsed);
            }
        } else if !self.gate.retry_on_service_change() {
            return;
        }
        let class = self.opts.load_balancer_class.clone();
        let verdict = self
            .gate
            .evaluate(|candidate| reconcile::breakages(candidate, &class, views));
        let cm = self.config_map.clone();
        match verdict {
            ConfigVerdict::Unchanged => {}
            ConfigVerdict::Loaded => {
                info!(config_map = %self.opts.config_map, "configuration loaded");
                if let Some(cm) = &cm {
                    self.writer
                        .config_event(cm, false, "ConfigLoaded", "Configuration loaded".into())
                        .await;
                }
            }
            ConfigVerdict::RefusedBreaking {
                breakages,
                first_report,
            } => {
                if first_report {
                    for b in &breakages {
                        warn!(service = %b.service, ip = %b.ip, reason = %b.reason,
                            "new configuration refused: it would take this address away; old configuration stays in force");
                    }
                    if let Some(cm) = &cm {
                        let list: Vec<String> = breakages
                            .iter()
                            .map(|b| format!("{} {} ({})", b.service, b.ip, b.reason))
                            .collect();
                        let note = format!(
                            "New configuration refused, the previous one stays in force: it would break {}. Delete or change those Services, or restart the controller to re-assign them.",
                            list.join("; ")
                        );
                        self.writer
                            .config_event(cm, true, "ConfigStale", note)
                            .await;
                    }
                }
            }
            ConfigVerdict::RefusedUnparsable {
                error,
                first_report,
            } => {
                if first_report {
                    warn!(config_map = %self.opts.config_map, error = %error,
                        "new configuration refused: it does not parse; old configuration stays in force");
                    if let Some(cm) = &cm {
                        let note = format!("New configuration refused, it does not parse: {error}");
                        self.writer
                            .config_event(cm, true, "ConfigStale", note)
                            .await;
                    }
                }
            }
        }
        self.metrics
            .config_loaded
            .set(i64::from(self.gate.active().is_some()));
        self.metrics
            .config_stale
            .set(i64::from(self.gate.is_stale()));
    }

    async fn reconcile_all(&mut self) {
        let views = self.views();
        self.update_config(&views).await;
        let Some(config) = self.gate.active().cloned() else {
            debug!("no configuration in force; nothing to assign");
            return;
        };
        let plan = crate::allocator::plan(&config, &self.opts.load_balancer_class, &views);
        self.metrics.set_pools(&plan.pools);
        let owns = |ip: &IpAddr| config.pool_containing(ip).is_some();
        let mut decisions: Vec<_> = views
            .iter()
            .filter_map(|view| {
                let allocation = plan.allocations.get(&view.key)?;
                let decision = reconcile::decide(
                    view,
                    allocation,
                    owns,
                    self.last_failure.get(&view.key).map(String::as_str),
                );
                Some((view, allocation, decision))
            })
            .collect();
        // Clear released addresses before handing them to another Service, so no address is
        // ever in two Services' status at once (the sort is stable: key order otherwise).
        decisions.sort_by_key(|(_, _, d)| d.status != StatusChange::Clear);
        for (view, allocation, decision) in decisions {
            let Some(svc) = self.services.get(&view.key).cloned() else {
                continue;
            };
            if decision.status != StatusChange::Keep {
                match self.writer.write_status(&svc, &decision.status).await {
                    Ok(Some(updated)) => {
                        info!(service = %view.key, status = ?decision.status, "status written");
                        self.store(updated);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(service = %view.key, error = %e, "could not write status; will retry");
                        continue;
                    }
                }
            }
            match allocation {
                reconcile::Allocation::Failed { reason } => {
                    self.last_failure.insert(view.key.clone(), reason.clone());
                }
                _ => {
                    self.last_failure.remove(&view.key);
                }
            }
            if let Some(ev) = decision.event {
                if ev.is_warning() {
                    warn!(service = %view.key, reason = ev.reason(), note = %ev.note(), "allocation failed");
                }
                self.writer
                    .service_event(&svc, ev.is_warning(), ev.reason(), ev.note())
                    .await;
            }
        }
    }
}

/// `data.config` of the ConfigMap ("" when missing).
fn config_text(cm: &ConfigMap) -> &str {
    cm.data
        .as_ref()
        .and_then(|d| d.get("config"))
        .map(String::as_str)
        .unwrap_or("")
}
