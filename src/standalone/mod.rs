//! `ferrolb standalone`: allocation with no cluster. Reads a MetalLB-format config and Service
//! manifests from files, polls both for changes, persists assignments in the `--state` file,
//! prints each assignment on stdout and feeds every announcer the new world.
//!
//! Must not: make allocation decisions (the [`engine`] does, through the controller's allocator).

pub mod engine;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::ServiceView;
use ferrolb_speaker::membership::{MemberlistConfig, MemberlistMembership, Membership};
use ferrolb_speaker::world::{Announcer, AssignedService, NodeInfo, Readiness, World};
use tracing::{info, warn};

use engine::Engine;

/// Options of `ferrolb standalone`.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub services: PathBuf,
    pub state: PathBuf,
    pub node: NodeInfo,
    pub class: String,
    pub poll: Duration,
    /// Memberlist settings; `None`: this node counts only itself as alive.
    pub membership: Option<MemberlistConfig>,
}

/// A watched file: its last content.
#[derive(Debug, Default)]
struct Watched {
    last: Option<Result<String, String>>,
}

impl Watched {
    /// The new content (or read error) when it differs from the last one seen.
    fn changed(&mut self, path: &Path) -> Option<Result<String, String>> {
        let now = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }
}

fn print(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for l in lines {
        // A closed stdout must not stop allocation; the state file still records everything.
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

fn world(
    engine: &Engine,
    services: &[ServiceView],
    node: &NodeInfo,
    live: &BTreeSet<String>,
) -> Option<World> {
    let config = engine.config()?.clone();
    let assignments = engine.assignments();
    let services = services
        .iter()
        .filter_map(|s| {
            assignments.get(&s.key).map(|a| AssignedService {
                service: ServiceView {
                    ingress_ips: a.ips.clone(),
                    ..s.clone()
                },
                ips: a.ips.clone(),
            })
        })
        .collect();
    Some(World {
        config,
        node: node.clone(),
        services,
        readiness: Readiness::AllReady,
        live_nodes: live.clone(),
    })
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(opts: Options, mut announcers: Vec<Box<dyn Announcer>>) -> anyhow::Result<()> {
    let persisted = state::load(&opts.state)?;
    info!(
        state = %opts.state.display(),
        services = persisted.len(),
        "restoring persisted assignments"
    );
    let mut persisted: BTreeMap<_, _> = persisted;
    let mut engine = Engine::new(opts.class.clone());
    let mut config_file = Watched::default();
    let mut services_file = Watched::default();
    let mut services: Vec<ServiceView> = Vec::new();
    let mut services_known = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(opts.poll);
    let membership = match opts.membership.clone() {
        Some(cfg) => Some(MemberlistMembership::start(cfg).await?),
        None => {
            info!(node = %opts.node.name, "membership off (no --ml-bind): only this node counts as alive");
            None
        }
    };
    let mut live = match &membership {
        Some(m) => m.live(),
        None => tokio::sync::watch::channel(BTreeSet::from([opts.node.name.clone()])).1,
    };
    let mut live_nodes = live.borrow_and_update().clone();
    let mut live_changed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = live.changed(), if membership.is_some() => {
                live_nodes = live.borrow_and_update().clone();
                live_changed = true;
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
        }
        let mut dirty = false;
        if let Some(text) = config_file.changed(&opts.config) {
            let parsed = text.and_then(|t| {
                ferrolb_config::parse(&t).map_err(|e| format!("does not parse: {e}"))
            });
            if let Err(e) = &parsed {
                warn!(path = %opts.config.display(), error = %e, "config does not parse");
            }
            print(&engine.offer_config(parsed).lines);
            dirty = true;
        }
        if let Some(text) = services_file.changed(&opts.services) {
            match text.and_then(|t| {
                ferrolb_config::service::parse_services(&t).map_err(|e| e.to_string())
            }) {
                Ok(s) => {
                    info!(path = %opts.services.display(), count = s.len(), "services loaded");
                    services = s;
                    services_known = true;
                    dirty = true;
                }
                Err(e) => {
                    warn!(path = %opts.services.display(), error = %e, "services file refused; keeping the previous services");
                    print(&[format!("services refused: {}", e.trim())]);
                }
            }
        }
        let dirty = dirty | std::mem::take(&mut live_changed);
        if !dirty || !services_known {
            continue;
        }
        let step = engine.reconcile(&services, &persisted);
        // Persist before printing: a printed assignment survives a crash.
        if step.changed {
            let assignments = engine.assignments();
            if let Err(e) = state::save(&opts.state, &assignments) {
                warn!(error = format!("{e:#}"), "cannot persist assignments");
            }
            persisted = assignments.into_iter().map(|(k, a)| (k, a.ips)).collect();
        }
        print(&step.lines);
        if let Some(w) = world(&engine, &services, &opts.node, &live_nodes) {
            let w = Arc::new(w);
            for a in &mut announcers {
                a.apply(w.clone());
            }
        }
    }
    if let Some(m) = &membership {
        if let Err(e) = m.leave().await {
            warn!(error = %e, "membership: leave failed");
        }
    }
    for a in &mut announcers {
        info!(announcer = a.name(), "shutting down");
        a.shutdown().await;
    }
    Ok(())
}
