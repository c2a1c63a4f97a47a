//! `ferrolb speaker`: the Kubernetes source of the speaker. Watches Services, EndpointSlices
//! (discovery.k8s.io/v1), Nodes and the config ConfigMap, turns them into a
//! [`World`](ferrolb_speaker::world::World) ([`convert`], pure) and hands every changed world to
//! the announcers (`crate::announce`), exactly as standalone mode does with its files.
//!
//! - Config: the same gate as the controller (`ConfigGate`): an unparsable configuration, or one
//!   that would take an address away from a Service (`ferrolb_config::compat`), is refused; the
//!   configuration in force stays, the refusal is logged once and
//!   `metallb_k8s_client_config_stale_bool` is 1. Announcements never stop because of it.
//! - Liveness: memberlist when `--ml-bind` is given, else the Nodes' `Ready` condition.
//! - Nothing is announced until the four lists have been read once. When the apiserver goes
//!   away the watchers retry with backoff and the announcements in force stay as they are.
//! - Event `nodeAssigned` on a Service when this node becomes its layer2 announcer (each with a
//!   fresh `Recorder`: a shared one keeps every Event it sent for six minutes).
//! - Each watched object is converted as it arrives into what the speaker reads of it
//!   (`convert::cached_*`): a Service into a small view and its Event reference, an
//!   EndpointSlice into its Service and ready nodes, a Node and the ConfigMap cut down. No
//!   managedFields, no last-applied copy, no Node images are kept.
//! - Watch events only update the caches; the world is rebuilt at most [`DEBOUNCE`] after the
//!   first event since the last rebuild (a burst costs one rebuild). [`TRIM_AFTER`] a rebuild,
//!   freed heap pages go back to the system.
//!
//! Must not: decide announcements (the announcers do, from the world), or parse configuration
//! beyond handing it to `ferrolb_config`.

pub mod convert;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::ConfigGate;
use ferrolb_config::ServiceKey;
use ferrolb_runtime::config::{self as runtime, ClientMetrics};
use ferrolb_speaker::membership::{MemberlistConfig, MemberlistMembership, Membership};
use ferrolb_speaker::world::{Announcer, World};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// The reporting component of the speaker's Events.
pub const REPORTER: &str = "ferrolb-speaker";

/// Settings of one speaker process.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (the Node object and the membership name).
    pub node: String,
    /// Namespace of the config ConfigMap.
    pub namespace: String,
    /// Name of the config ConfigMap (key `config`).
    pub config_map: String,
    /// The `spec.loadBalancerClass` served, besides Services without a class.
    pub class: String,
    /// Memberlist settings; `None`: liveness from the Nodes' Ready condition.
    pub membership: Option<MemberlistConfig>,
    /// Also join the memberlist of every other Node's `InternalIP` at the bind port.
    pub join_from_nodes: bool,
}

/// How long after the first watch event since the last rebuild the speaker rebuilds its state
/// (the controller waits 25 ms the same way). Bounds the added announcement latency; under
/// churn, every event in this window costs one rebuild instead of one each.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// How long after a rebuild the speaker hands freed heap memory back to the system
/// ([`release_free_memory`]); like [`DEBOUNCE`], later rebuilds do not postpone it.
pub const TRIM_AFTER: Duration = Duration::from_secs(2);

/// Hands the heap's free pages back to the system (glibc `malloc_trim(0)`, which since glibc
/// 2.8 releases every whole free page in every arena, not only at the top of the heap).
/// Churn frees the objects of deleted Services all over the heap; without this glibc keeps
/// those pages and RSS stays at its peak (measured: the churn soak's speakers kept ~2 MiB more).
/// A no-op with other C libraries (musl returns memory by itself).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own state under
    // its own locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Coalesces events: the first event after a rebuild sets the deadline, later events do not
/// move it (so a steady stream of events cannot postpone the rebuild past `delay`).
#[derive(Debug)]
struct Debounce {
    delay: Duration,
    deadline: Option<Instant>,
}

impl Debounce {
    fn new(delay: Duration) -> Self {
        Debounce {
            delay,
            deadline: None,
        }
    }

    /// Something changed at `now`: rebuild by `now + delay` unless already due earlier.
    fn arm(&mut self, now: Instant) {
        self.deadline.get_or_insert(now + self.delay);
    }

    /// When the next rebuild is due; `None` when nothing is pending.
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The rebuild runs now: nothing pending until the next event.
    fn fire(&mut self) {
        self.deadline = None;
    }
}

/// What the speaker keeps of the latest objects of one watched kind (`V`, converted from each
/// object `K` as it arrives), by `namespace/name`; replaced as a whole when a (re)list completes.
struct Cache<K, V> {
    items: BTreeMap<String, V>,
    buffer: BTreeMap<String, V>,
    synced: bool,
    keep: fn(K) -> V,
}

impl<K: Resource, V> Cache<K, V> {
    fn new(keep: fn(K) -> V) -> Self {
        Cache {
            items: BTreeMap::new(),
            buffer: BTreeMap::new(),
            synced: false,
            keep,
        }
    }

    fn key(obj: &K) -> String {
        format!(
            "{}/{}",
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default()
        )
    }

    /// Applies a watch event; true when the cached set changed (or was (re)listed).
    fn apply(&mut self, ev: Event<K>) -> bool {
        match ev {
            Event::Init => {
                self.buffer.clear();
                false
            }
            Event::InitApply(obj) => {
                self.buffer.insert(Self::key(&obj), (self.keep)(obj));
                false
            }
            Event::InitDone => {
                self.items = std::mem::take(&mut self.buffer);
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                self.items.insert(Self::key(&obj), (self.keep)(obj));
                true
            }
            Event::Delete(obj) => self.items.remove(&Self::key(&obj)).is_some(),
        }
    }
}

fn stream<K>(api: Api<K>, cfg: watcher::Config) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher::watcher(api, cfg).default_backoff().boxed()
}

/// One watched kind: its cache and its stream, re-created if it ever ends.
struct Watched<K: Resource, V> {
    what: &'static str,
    cache: Cache<K, V>,
    make: Box<dyn Fn() -> BoxStream<'static, watcher::Result<Event<K>>> + Send>,
    stream: BoxStream<'static, watcher::Result<Event<K>>>,
}

impl<K: Resource, V> Watched<K, V> {
    /// `keep` turns each object into what the cache holds of it (`convert::cached_*`).
    fn new(
        what: &'static str,
        keep: fn(K) -> V,
        make: impl Fn() -> BoxStream<'static, watcher::Result<Event<K>>> + Send + 'static,
    ) -> Self {
        Watched {
            what,
            cache: Cache::new(keep),
            stream: make(),
            make: Box::new(make),
        }
    }

    /// Handles what the stream produced; true when the cache changed.
    fn on(&mut self, ev: Option<watcher::Result<Event<K>>>, metrics: &ClientMetrics) -> bool {
        match ev {
            Some(Ok(ev)) => {
                metrics.updates.inc();
                let was = self.cache.synced;
                let changed = self.cache.apply(ev);
                if !was && self.cache.synced {
                    info!(
                        what = self.what,
                        count = self.cache.items.len(),
                        "list read"
                    );
                }
                changed
            }
            Some(Err(e)) => {
                warn!(what = self.what, error = %e, "watch error (retrying with backoff; announcements stay)");
                false
            }
            None => {
                warn!(what = self.what, "watch ended; restarting it");
                self.stream = (self.make)();
                false
            }
        }
    }
}

/// Runs until `shutdown` resolves, then leaves the membership and shuts the announcers down
/// (BGP: withdraw + Cease). `ready` becomes true once every list has been read.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: ClientMetrics,
    ready: Arc<AtomicBool>,
    mut announcers: Vec<Box<dyn Announcer>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let c = client.clone();
    let mut services = Watched::new("Service", convert::cached_service, move || {
        stream(Api::<Service>::all(c.clone()), watcher::Config::default())
    });
    let c = client.clone();
    let mut slices = Watched::new("EndpointSlice", convert::cached_slice, move || {
        stream(
            Api::<EndpointSlice>::all(c.clone()),
            watcher::Config::default(),
        )
    });
    let c = client.clone();
    let mut nodes = Watched::new("Node", convert::cached_node, move || {
        stream(Api::<Node>::all(c.clone()), watcher::Config::default())
    });
    let c = client.clone();
    let (ns, cm_name) = (opts.namespace.clone(), opts.config_map.clone());
    let mut config_maps = Watched::new("ConfigMap", convert::cached_config_map, move || {
        stream(
            Api::<ConfigMap>::namespaced(c.clone(), &ns),
            watcher::Config::default().fields(&format!("metadata.name={cm_name}")),
        )
    });
    let reporter = Reporter {
        controller: REPORTER.to_string(),
        instance: Some(opts.node.clone()),
    };
    let mut gate = ConfigGate::default();
    let source = format!("{}/{}", opts.namespace, opts.config_map);
    let mut config_dirty = false;
    let mut last_cm_text: Option<String> = None;
    let mut membership: Option<MemberlistMembership> = None;
    let mut live: Option<watch::Receiver<BTreeSet<String>>> = None;
    let mut last_world: Option<Arc<World>> = None;
    let mut won: BTreeSet<ServiceKey> = BTreeSet::new();
    if opts.membership.is_none() {
        info!(node = %opts.node, "membership off (no --ml-bind): a node counts as alive while its Node is Ready");
    }
    info!(node = %opts.node, namespace = %opts.namespace, config_map = %opts.config_map, "speaker starting");
    let mut services_changed = false;
    let mut debounce = Debounce::new(DEBOUNCE);
    let mut trim = Debounce::new(TRIM_AFTER);
    tokio::pin!(shutdown);
    loop {
        // Every event only updates the caches and arms the debounce timer; the state is
        // rebuilt when it fires (at most DEBOUNCE after the first event since the last rebuild).
        // `select!` picks fairly among ready branches, so queued events are drained while the
        // timer runs and a steady stream of events cannot postpone the rebuild.
        let due = debounce.deadline();
        tokio::select! {
            () = &mut shutdown => break,
            () = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                debounce.fire();
                trim.arm(Instant::now());
            }
            () = async {
                match trim.deadline() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                trim.fire();
                release_free_memory();
                continue;
            }
            ev = services.stream.next() => {
                services_changed |= services.on(ev, &metrics);
                debounce.arm(Instant::now());
                continue;
            }
            ev = slices.stream.next() => {
                slices.on(ev, &metrics);
                debounce.arm(Instant::now());
                continue;
            }
            ev = nodes.stream.next() => {
                nodes.on(ev, &metrics);
                debounce.arm(Instant::now());
                continue;
            }
            ev = config_maps.stream.next() => {
                debounce.arm(Instant::now());
                if config_maps.on(ev, &metrics) {
                    let text = config_maps.cache.items.values().next().map(|cm| runtime::config_text(cm).to_string());
                    match text {
                        Some(t) if last_cm_text.as_ref() != Some(&t) => {
                            last_cm_text = Some(t);
                            config_dirty = true;
                        }
                        Some(_) => {}
                        None if config_maps.cache.synced && gate.active().is_none() => {
                            warn!(namespace = %opts.namespace, config_map = %opts.config_map, "config ConfigMap not found; waiting for it");
                        }
                        None => {}
                    }
                }
                continue;
            }
            Some(changed) = async {
                match live.as_mut() {
                    Some(rx) => Some(rx.changed().await),
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    warn!("membership stopped reporting; keeping the last live set");
                    live = None;
                }
                debounce.arm(Instant::now());
                continue;
            }
        }
        let synced = services.cache.synced
            && slices.cache.synced
            && nodes.cache.synced
            && config_maps.cache.synced;
        ready.store(synced, Ordering::Relaxed);
        if !synced {
            continue;
        }
        if membership.is_none() {
            if let Some(mut cfg) = opts.membership.clone() {
                if opts.join_from_nodes {
                    let extra = convert::node_join_addresses(
                        &opts.node,
                        nodes.cache.items.values(),
                        cfg.bind.port(),
                    );
                    for a in extra {
                        if a != cfg.bind && !cfg.join.contains(&a) {
                            cfg.join.push(a);
                        }
                    }
                }
                info!(join = ?cfg.join, "membership: starting");
                let m = MemberlistMembership::start(cfg).await?;
                live = Some(m.live());
                membership = Some(m);
            }
        }
        if config_dirty || (std::mem::take(&mut services_changed) && gate.retry_on_service_change())
        {
            if std::mem::take(&mut config_dirty) {
                if let Some(t) = &last_cm_text {
                    runtime::offer_text(&mut gate, t);
                }
            }
            let views = || services.cache.items.values().map(|s| &s.view);
            let verdict = gate.evaluate(|c| ferrolb_config::breakages_of(c, &opts.class, views()));
            // The controller publishes the Events about the configuration; speakers log.
            let _ = runtime::report(&verdict, &source);
            metrics.set_from(&gate);
        }
        let Some(config) = gate.active().cloned() else {
            continue;
        };
        let live_nodes = match (&membership, &live) {
            (Some(_), Some(rx)) => rx.borrow().clone(),
            (Some(_), None) => last_world
                .as_ref()
                .map(|w| w.live_nodes.clone())
                .unwrap_or_default(),
            (None, _) => convert::ready_nodes(nodes.cache.items.values()),
        };
        let world = convert::world(
            config,
            convert::node_info(&opts.node, nodes.cache.items.values()),
            convert::assigned_views(services.cache.items.values().map(|s| &s.view), &opts.class),
            convert::readiness(slices.cache.items.values()),
            live_nodes,
        );
        if last_world.as_deref() == Some(&world) {
            continue;
        }
        let world = Arc::new(world);
        for a in &mut announcers {
            a.apply(world.clone());
        }
        let now_won = convert::layer2_won(&world);
        for key in convert::newly_won(&won, &now_won) {
            info!(service = %key, node = %opts.node, "layer2: announcing from this node");
            let svc = services
                .cache
                .items
                .get(&format!("{}/{}", key.namespace, key.name));
            if let Some(svc) = svc {
                let reference = svc.object_ref();
                // A fresh Recorder per Event: clones of one share kube's cache of every Event
                // published in the last six minutes (kept to count repeats as a series), which
                // under churn grows with the churn rate. Each win is reported once anyway.
                let recorder = Recorder::new(client.clone(), reporter.clone());
                let note = format!("announcing from node {:?}", opts.node);
                // Never wait for the apiserver here: announcing must not depend on it.
                tokio::spawn(async move {
                    let ev = KubeEvent {
                        type_: EventType::Normal,
                        reason: "nodeAssigned".into(),
                        note: Some(note),
                        action: "nodeAssigned".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &reference).await {
                        warn!(object = ?reference.name, error = %e, "could not publish Event nodeAssigned");
                    }
                });
            }
        }
        won = now_won;
        last_world = Some(world);
    }
    info!("speaker stopping");
    if let Some(m) = &membership {
        if let Err(e) = m.leave().await {
            warn!(error = %e, "membership: leave failed");
        }
    }
    for a in &mut announcers {
        info!(announcer = a.name(), "shutting down");
        tokio::time::timeout(Duration::from_secs(5), a.shutdown())
            .await
            .unwrap_or_else(|_| warn!(announcer = a.name(), "shutdown timed out"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn cm(name: &str, text: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("metallb-system".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("config".to_string(), text.to_string())])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn debounce_coalesces_a_burst_and_never_postpones_past_its_delay() {
        let mut d = Debounce::new(Duration::from_millis(20));
        assert_eq!(d.deadline(), None, "nothing pending at start");
        let t0 = Instant::now();
        d.arm(t0);
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(20)));
        // A steady stream of events: the rebuild stays due 20 ms after the first one.
        for ms in [1, 5, 19, 40] {
            d.arm(t0 + Duration::from_millis(ms));
        }
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(20)));
        d.fire();
        assert_eq!(d.deadline(), None, "rebuilt: nothing pending");
        let t1 = t0 + Duration::from_millis(50);
        d.arm(t1);
        assert_eq!(d.deadline(), Some(t1 + Duration::from_millis(20)));
        assert!(
            DEBOUNCE <= Duration::from_millis(50),
            "keeps announcing fast"
        );
    }

    fn service(name: &str, rv: &str, ip: &str) -> Service {
        use k8s_openapi::api::core::v1::{
            LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
        };
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..LoadBalancerIngress::default()
                    }]),
                }),
                ..ServiceStatus::default()
            }),
        }
    }

    #[test]
    fn the_service_cache_keeps_each_service_converted_as_it_arrives() {
        let mut cache: Cache<Service, convert::CachedService> = Cache::new(convert::cached_service);
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(service("a", "1", "192.0.2.1")));
        cache.apply(Event::InitApply(service("b", "1", "192.0.2.2")));
        assert!(cache.apply(Event::InitDone));
        let ips = |c: &Cache<Service, convert::CachedService>| -> Vec<String> {
            c.items
                .values()
                .flat_map(|s| s.view.ingress_ips.iter().map(|ip| ip.to_string()))
                .collect()
        };
        assert_eq!(ips(&cache), vec!["192.0.2.1", "192.0.2.2"]);
        assert_eq!(
            cache.items["default/a"].object_ref().name.as_deref(),
            Some("a")
        );
        // An update replaces the kept view; a deleted Service's goes.
        assert!(cache.apply(Event::Apply(service("a", "2", "192.0.2.9"))));
        assert!(cache.apply(Event::Delete(service("b", "1", "192.0.2.2"))));
        assert!(cache.apply(Event::Apply(service("c", "3", "192.0.2.3"))));
        assert_eq!(ips(&cache), vec!["192.0.2.9", "192.0.2.3"]);
        assert_eq!(
            cache.items["default/a"].meta.resource_version.as_deref(),
            Some("2")
        );
        let assigned = convert::assigned_views(cache.items.values().map(|s| &s.view), "");
        assert_eq!(assigned.len(), 2);
        cache.apply(Event::Delete(service("a", "2", "")));
        cache.apply(Event::Delete(service("c", "3", "")));
        assert!(cache.items.is_empty(), "nothing kept for deleted Services");
    }

    #[test]
    fn cache_replaces_its_contents_only_when_a_relist_completes() {
        let mut c: Cache<ConfigMap, ConfigMap> = Cache::new(convert::cached_config_map);
        assert!(!c.apply(Event::Init));
        assert!(!c.apply(Event::InitApply(cm("a", "1"))));
        assert!(!c.synced && c.items.is_empty(), "nothing before InitDone");
        assert!(c.apply(Event::InitDone));
        assert!(c.synced);
        assert!(c.apply(Event::Apply(cm("b", "2"))));
        assert_eq!(c.items.len(), 2);
        // A re-list (after the apiserver came back) keeps the old contents until it is complete.
        c.apply(Event::Init);
        c.apply(Event::InitApply(cm("b", "3")));
        assert_eq!(c.items.len(), 2, "old contents in force during the re-list");
        c.apply(Event::InitDone);
        assert_eq!(c.items.keys().collect::<Vec<_>>(), vec!["metallb-system/b"]);
        assert_eq!(runtime::config_text(&c.items["metallb-system/b"]), "3");
        assert!(c.apply(Event::Delete(cm("b", ""))));
        assert!(
            !c.apply(Event::Delete(cm("b", ""))),
            "deleting twice changes nothing"
        );
        assert!(c.items.is_empty());
    }
}
