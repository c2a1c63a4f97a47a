//! `ferrolb standalone`: allocation with no cluster. Reads a MetalLB-format config and Service
//! manifests from files, polls both for changes, persists assignments in the `--state` file,
//! prints each assignment on stdout and feeds every announcer the new world through the node
//! lifecycle (`ferrolb_speaker::lifecycle`, as the Kubernetes speaker does).
//!
//! Must not: make allocation decisions (the controller's engine does, fed and read by [`sink`]).

mod files;
mod sink;
pub mod state;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ferrolb_config::{ConfigError, ConfigErrors, ServiceKey};
use ferrolb_speaker::lifecycle::Lifecycle;
use ferrolb_speaker::membership::MemberlistConfig;
use ferrolb_speaker::world::build;
use ferrolb_speaker::world::{Announcer, NodeInfo, Readiness, World};
use tracing::{info, warn};

use ferrolb_controller::engine::Engine;
use files::Watched;

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

fn print(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for l in lines {
        // A closed stdout must not stop allocation; the state file still records everything.
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

/// The world the announcers get: every Service ferrolb serves that holds addresses (built by
/// the same steps as the Kubernetes speaker's), every endpoint counted ready.
fn world(
    engine: &Engine<()>,
    class: &str,
    node: &NodeInfo,
    live: &BTreeSet<String>,
) -> Option<World> {
    Some(build::world(
        engine.config()?.clone(),
        node.clone(),
        build::assigned_views(engine.planner().views(), class),
        Readiness::AllReady,
        live.clone(),
        Default::default,
    ))
}

/// The assignments in force as the state file records them (addresses and pool), key order.
fn assignments(
    engine: &Engine<()>,
) -> impl Iterator<Item = (&ServiceKey, &ferrolb_controller::allocator::Assigned)> {
    let alloc = engine.allocator();
    engine
        .planner()
        .views()
        .filter_map(move |v| Some((&v.key, alloc?.assignment(&v.key)?)))
}

/// Why standalone mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot handle SIGTERM: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Membership(#[from] ferrolb_speaker::membership::MembershipError),
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(
    opts: Options,
    announcers: Vec<Box<dyn Announcer>>,
) -> Result<(), StandaloneError> {
    let persisted = state::load(&opts.state)?;
    info!(
        state = %opts.state.display(),
        services = persisted.len(),
        "restoring persisted assignments"
    );
    let mut st = sink::Standalone::new(opts.class.clone(), persisted);
    let mut config_file = Watched::default();
    let mut services_file = Watched::default();
    let mut services_known = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StandaloneError::Signal)?;
    let mut tick = tokio::time::interval(opts.poll);
    let mut node = Lifecycle::new(announcers);
    match opts.membership.clone() {
        Some(cfg) => node.start_membership(cfg).await?,
        None => {
            info!(node = %opts.node.name, "membership off (no --ml-bind): only this node counts as alive");
        }
    }
    let only_me = || BTreeSet::from([opts.node.name.clone()]);
    let mut live_nodes = build::live_nodes(node.liveness(), only_me, None);
    let mut live_changed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = node.live_changed() => {
                live_nodes = build::live_nodes(node.liveness(), only_me, Some(&live_nodes));
                live_changed = true;
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
        }
        let mut dirty = false;
        if let Some(text) = config_file.changed(&opts.config) {
            let parsed = match text {
                Ok(t) => ferrolb_config::parse_with_warnings(&t).map(|p| {
                    for w in &p.warnings {
                        warn!(path = %opts.config.display(), warning = %w, "config warning");
                    }
                    p.config
                }),
                Err(e) => Err(ConfigErrors::one(ConfigError::new(
                    opts.config.display().to_string(),
                    None,
                    e,
                ))),
            };
            st.engine.offer_config(parsed);
            dirty = true;
        }
        let mut listed = None;
        if let Some(text) = services_file.changed(&opts.services) {
            match text.and_then(|t| {
                ferrolb_config::service::parse_services(&t).map_err(|e| e.to_string())
            }) {
                Ok(s) => {
                    info!(path = %opts.services.display(), count = s.len(), "services loaded");
                    listed = Some(s);
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
        let step = st.step(listed);
        // Persist before printing: a printed assignment survives a crash.
        if step.changed {
            if let Err(e) = state::save(&opts.state, assignments(&st.engine)) {
                warn!(error = %e, "cannot persist assignments");
            }
        }
        print(&step.lines);
        if let Some(w) = world(&st.engine, &opts.class, &opts.node, &live_nodes) {
            node.apply(w);
        }
    }
    node.stop().await;
    Ok(())
}
