//! The Kubernetes shell of `ferrolb controller`: watches Services and the configuration's
//! sources (the config ConfigMap and MetalLB's custom resources,
//! [`ferrolb_runtime::config_source`]), holds the leader lease, and carries out the pure
//! decisions of [`crate::reconcile`].
//!
//! Flow: wait until the Service list and the configuration's sources have been read (restart
//! safety: every Service's current `status.loadBalancer.ingress` is known before anything is
//! assigned); then, as leader: offer a changed candidate configuration to the config gate; plan every Service once (existing
//! addresses restored first, then new ones assigned) into an allocator that is kept, and from then
//! on plan only the Services that changed ([`crate::incremental`]); everything again only when the
//! configuration in force changes, after a re-list or when leadership is regained. Status changes
//! are written through the status subresource, Events emitted. Only the leader writes.
//!
//! Memory: each Service is kept as a compact view (the fields the allocator reads, see
//! [`convert::compact`]) plus its uid and resourceVersion, never as the full object.
//!
//! Must not: make decisions itself (they live in `reconcile` and the allocator), or parse
//! configuration text beyond handing it to `ferrolb_config`.

pub mod convert;
mod leader;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::{ServiceKey, ServiceView};
use ferrolb_runtime::config_source::{Candidate, ConfigSources};
use ferrolb_runtime::debounce::Debounce;
use ferrolb_runtime::status::{self, StatusWriter};
use ferrolb_runtime::watch::Watch;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::metrics::ControllerMetrics;
use crate::reconcile::StatusChange;
use convert::ServiceMeta;
use ferrolb_runtime::config as runtime;

pub use writer::FIELD_MANAGER;

/// Settings of one controller process.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Namespace of the config ConfigMap and the leader Lease.
    pub namespace: String,
    /// Name of the config ConfigMap (key `config`).
    pub config_map: String,
    /// Where the configuration comes from (`--config-source`).
    pub config_source: ferrolb_config::source::Source,
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
    /// The task reading the watch stopped (it restarts the watch when it ends, so only a
    /// panic stops it).
    #[error("the {what} watch ended unexpectedly")]
    WatchEnded { what: &'static str },
}

/// Run until `shutdown` resolves. `ready` becomes true once the Services and the configuration's
/// sources have been read.
pub async fn run(
    client: Client,
    opts: ControllerOptions,
    metrics: ControllerMetrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    // MetalLB's CRDs may select Services by their labels (serviceAllocation.serviceSelectors).
    let keep_labels = opts.config_source != ferrolb_config::source::Source::ConfigMap;
    let (mut services_rx, services_task) = watch_services(
        Api::all(client.clone()),
        metrics.client.updates.clone(),
        keep_labels,
    );
    let mut config = ConfigSources::start(
        &client,
        &opts.namespace,
        &opts.config_map,
        opts.config_source,
        true,
        &metrics.client.updates,
    )
    .await;
    let (mut leader_rx, lease_task) = leader::start(client.clone(), &opts).await?;

    let mut state = State {
        opts: opts.clone(),
        status: StatusWriter::new(client.clone(), &opts.namespace),
        writer: writer::Writer::new(client, opts.identity.clone()),
        metrics,
        engine: Engine::new(opts.load_balancer_class.clone()),
        keep_labels,
        services_synced: false,
        candidate: None,
        config_synced: false,
        config_dirty: false,
        leader: false,
    };
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    tokio::pin!(shutdown);
    info!(namespace = %opts.namespace, config_map = %opts.config_map, identity = %opts.identity, "controller starting");
    // Events come in bursts (a Deployment of many Services, our own status writes echoed back by
    // the watch): gather them for a short moment and plan once for the whole burst, so the cost of
    // a burst of n events is one pass over the Services, not n.
    let mut debounce = Debounce::new(RECONCILE_DEBOUNCE);
    loop {
        let mut dirty = false;
        let mut run_now = false;
        tokio::select! {
            () = &mut shutdown => break,
            () = debounce.due() => { debounce.fire(); run_now = true; }
            ev = services_rx.recv() => {
                let Some(ev) = ev else { return Err(ControllerError::WatchEnded { what: "Service" }) };
                dirty = state.on_service_event(ev);
            }
            changed = config.next() => dirty = state.on_config(changed, &config),
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
            _ = resync.tick() => {
                state.engine.recheck_all();
                dirty = true;
            }
        }
        ready.store(
            state.services_synced && state.config_synced,
            Ordering::Relaxed,
        );
        if dirty {
            debounce.arm(Instant::now());
        }
        if run_now && state.leader && state.services_synced && state.config_synced {
            // Take in what the Service watch has already delivered (deletions above all), so a
            // pass never plans, and writes the status of, a Service whose Delete is queued.
            for _ in 0..MAX_DRAINED_EVENTS {
                match services_rx.try_recv() {
                    Ok(ev) => {
                        state.on_service_event(ev);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(ControllerError::WatchEnded { what: "Service" })
                    }
                }
            }
            // No pass while a re-list is half read (the drain may have started one): Services
            // deleted while the watch was down are only known to be gone once it completes (its
            // completion asks for a pass).
            if !state.engine.is_listing() && state.reconcile_all().await {
                debounce.arm(Instant::now());
            }
        }
    }
    info!("controller stopping; releasing the lease");
    services_task.abort();
    drop(leader_rx);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => debug!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("timed out releasing the lease"),
    }
    Ok(())
}

/// A Service watch event as the main loop receives it: each Service already made compact by
/// the watch task, so a queued event costs a compact view, not the full object.
#[derive(Debug)]
enum ServiceUpdate {
    /// A (re-)list begins.
    ListStart,
    /// One Service of the running list.
    Listed(ServiceView, ServiceMeta),
    /// The list is complete.
    ListDone,
    /// A Service was created or changed.
    Changed(ServiceView, ServiceMeta),
    /// A Service was deleted.
    Deleted(ServiceKey),
}

impl ServiceUpdate {
    /// The update of a watch event, each Service made compact ([`convert::compact`]).
    fn of(ev: Event<Service>, keep_labels: bool) -> Self {
        match ev {
            Event::Init => ServiceUpdate::ListStart,
            Event::InitApply(svc) => {
                let (view, meta) = convert::compact(svc, keep_labels);
                ServiceUpdate::Listed(view, meta)
            }
            Event::InitDone => ServiceUpdate::ListDone,
            Event::Apply(svc) => {
                let (view, meta) = convert::compact(svc, keep_labels);
                ServiceUpdate::Changed(view, meta)
            }
            Event::Delete(svc) => ServiceUpdate::Deleted(convert::service_key(&svc)),
        }
    }
}

/// Read the Service watch in a task of its own, so its connection is drained while the main
/// loop waits on status writes. A pass that wrote thousands of statuses left the watch unread;
/// the apiserver then sent nothing more on it until the watch timed out ~5 minutes later (seen
/// at 10k Services). The channel is unbounded: what it holds is what the watch delivered and
/// the main loop has not yet taken in, compact. Each event is counted in `updates`.
fn watch_services(
    api: Api<Service>,
    updates: Counter,
    keep_labels: bool,
) -> (
    mpsc::UnboundedReceiver<ServiceUpdate>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut watch = Watch::of("Service", updates, api, watcher::Config::default());
        loop {
            let ev = watch.next().await;
            if tx.send(ServiceUpdate::of(ev, keep_labels)).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// How long events are gathered before one planning pass (see the main loop).
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(25);

/// Most queued Service events taken in right before a pass (the rest wait for the next one).
const MAX_DRAINED_EVENTS: usize = 10_000;

/// Most status writes of one pass; the rest wait for the next pass (25 ms later), so the watch
/// streams are read between chunks. A pass that wrote the statuses of thousands of new Services
/// in one go left the Service watch unread for minutes; the test apiserver then stopped sending
/// on it (seen at 10k Services: 7 670 assigned, the rest never seen).
const MAX_WRITES_PER_PASS: usize = 200;

struct State {
    opts: ControllerOptions,
    writer: writer::Writer,
    /// ConfigurationState `controller` and the IPAddressPools' status.
    status: StatusWriter,
    metrics: ControllerMetrics,
    /// The config gate, the Services (compact), the allocator kept between passes, what
    /// changed, what was last reported.
    engine: Engine<ServiceMeta>,
    services_synced: bool,
    /// The newest candidate of the configuration's sources, where it came from and the
    /// objects Events about it go to.
    candidate: Option<Candidate>,
    config_synced: bool,
    /// The candidate changed since the gate last saw it.
    config_dirty: bool,
    leader: bool,
    /// Services are kept with their labels ([`convert::compact`]).
    keep_labels: bool,
}

impl State {
    fn set_leader(&mut self, leader: bool) {
        if leader != self.leader {
            info!(identity = %self.opts.identity, leader, "leadership changed");
        }
        if !leader {
            // Another replica decides; a regained leadership re-plans from the statuses.
            self.engine.forget_allocations();
        }
        self.leader = leader;
        self.metrics.leader.set(i64::from(leader));
    }

    /// True when the stored copy of `view`'s Service is newer than `meta` says (our own status
    /// writes are stored at once; the watch may deliver an older version afterwards).
    fn is_outdated(&self, view: &ServiceView, meta: &ServiceMeta) -> bool {
        let stored = self.engine.get(&view.key).and_then(|t| t.meta.revision());
        matches!((stored, meta.revision()), (Some(old), Some(new)) if old > new)
    }

    /// Keep a Service (compact) unless the stored copy is newer. True when it changed.
    fn store(&mut self, view: ServiceView, meta: ServiceMeta) -> bool {
        if self.is_outdated(&view, &meta) {
            return false;
        }
        self.engine.upsert(view, meta)
    }

    /// Store the Service our status write returned.
    fn store_written(&mut self, svc: Service) {
        let (view, meta) = convert::compact(svc, self.keep_labels);
        if !self.is_outdated(&view, &meta) {
            self.engine.written(view, meta);
        }
    }

    fn on_service_event(&mut self, ev: ServiceUpdate) -> bool {
        match ev {
            ServiceUpdate::ListStart => {
                self.engine.start_list();
                false
            }
            ServiceUpdate::Listed(view, meta) => {
                self.engine.mark_listed(&view.key);
                self.store(view, meta);
                false
            }
            ServiceUpdate::ListDone => {
                self.engine.finish_list();
                if !self.services_synced {
                    info!(services = self.engine.planner().len(), "Service list read");
                }
                self.services_synced = true;
                true
            }
            ServiceUpdate::Changed(view, meta) => self.store(view, meta),
            ServiceUpdate::Deleted(key) => {
                self.engine.remove(&key);
                true
            }
        }
    }

    /// The configuration's sources took in an event (`changed`: what they hold changed). True
    /// when a pass should follow.
    fn on_config(&mut self, changed: bool, sources: &ConfigSources) -> bool {
        let was_synced = self.config_synced;
        self.config_synced = sources.synced();
        if !self.config_synced || (was_synced && !changed) {
            return false;
        }
        match sources.candidate() {
            None if !was_synced => {
                warn!(config_map = sources.config_map_name(), source = %self.opts.config_source,
                    "no configuration found (no config ConfigMap, no metallb.io objects); waiting for one");
            }
            None => {
                warn!(config_map = sources.config_map_name(), source = %self.opts.config_source,
                    "configuration source gone; keeping the configuration in force");
            }
            Some(c) => {
                let new = self.candidate.as_ref().map(|p| &p.config) != Some(&c.config);
                self.config_dirty |= new;
                self.candidate = Some(c);
            }
        }
        true
    }

    /// One planning pass: the newest configuration offered to the gate, its verdict reported,
    /// then the engine's writes carried out. True when another pass should follow soon (writes
    /// were left for it, or a Service changed while its status was written); after a failed
    /// write the retry waits for the next event or the periodic resync instead.
    async fn reconcile_all(&mut self) -> bool {
        if std::mem::take(&mut self.config_dirty) {
            if let Some(c) = &self.candidate {
                self.engine.offer_config(c.config.clone());
            }
        }
        if !self.engine.has_work() {
            return false;
        }
        let pass = self.engine.pass(MAX_WRITES_PER_PASS);
        let source = self.candidate.as_ref().map_or_else(
            || format!("{}/{}", self.opts.namespace, self.opts.config_map),
            |c| c.source.clone(),
        );
        if let Some(ev) = runtime::report(&pass.verdict, &source) {
            for target in self.candidate.iter().flat_map(|c| &c.targets) {
                self.writer
                    .config_event(target, ev.warning, ev.reason, ev.note.clone())
                    .await;
            }
        }
        if let Some(state) = status::configuration_state(&pass.verdict, &status::now()) {
            self.status
                .configuration_state("controller", "controller", None, state)
                .await;
        }
        self.metrics.client.set_from(self.engine.gate());
        if self.engine.config().is_none() {
            debug!("no configuration in force; nothing to assign");
            return false;
        }
        if pass.planned {
            if let Some(alloc) = self.engine.allocator() {
                let pools = alloc
                    .usage()
                    .into_iter()
                    .map(|u| (u.pool, (u.in_use, u.addresses_total)))
                    .collect();
                self.metrics.set_pools(&pools);
            }
        }
        if !pass.actions.is_empty() {
            debug!(
                writes = pass.actions.len(),
                services = self.engine.planner().len(),
                "planning pass"
            );
        }
        let mut write_failed = false;
        for action in pass.actions {
            let key = &action.key;
            let decision = &action.decision;
            if decision.status != StatusChange::Keep {
                match self.writer.write_status(key, &decision.status).await {
                    Ok(Some(updated)) => {
                        info!(service = %key, status = ?decision.status, "status written");
                        self.store_written(updated);
                    }
                    Ok(None) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {
                        // Deleted since the watch told us about it: its Delete event is on the
                        // way and releases the address; retrying would only repeat the 404.
                        debug!(service = %key, "Service gone before its status was written");
                        continue;
                    }
                    Err(e) => {
                        warn!(service = %key, error = %e, "could not write status; will retry");
                        self.engine.retry(key);
                        write_failed = true;
                        continue;
                    }
                }
            }
            self.engine.done(&action);
            if let Some(ev) = &action.decision.event {
                if ev.is_warning() {
                    warn!(service = %key, reason = ev.reason(), note = %ev.note(), "allocation failed");
                }
                let Some(t) = self.engine.get(key) else {
                    continue;
                };
                let reference = t.meta.object_ref(key);
                self.writer
                    .service_event(&reference, ev.is_warning(), ev.reason(), ev.note())
                    .await;
            }
        }
        self.write_pool_statuses().await;
        !write_failed && self.engine.has_work()
    }

    /// The IPAddressPools' status (assigned and available per family), when the configuration
    /// in force came from MetalLB's custom resources; only changed ones are written.
    async fn write_pool_statuses(&self) {
        let from_objects = self
            .candidate
            .as_ref()
            .is_some_and(|c| c.from == ferrolb_config::source::From::Crds);
        let Some(alloc) = self.engine.allocator().filter(|_| from_objects) else {
            return;
        };
        let statuses = alloc
            .usage()
            .into_iter()
            .map(|u| (u.pool, status::pool_status(u.by_family)))
            .collect();
        self.status.pools(statuses).await;
    }
}
