//! `ferrolb standalone`: allocation with no cluster. Reads a MetalLB-format config and Service
//! manifests from files, polls both for changes, persists assignments in the `--state` file,
//! prints each assignment on stdout and feeds every announcer the new world through the node
//! lifecycle (`ferrolb_speaker::lifecycle`, as the Kubernetes speaker does).
//!
//! Must not: make allocation decisions (the controller's engine does, fed and read by [`sink`]).

mod sink;
pub mod state;

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrolb_config::{ConfigError, ConfigErrors, ServiceKey};
use ferrolb_speaker::lifecycle::Lifecycle;
use ferrolb_speaker::membership::MemberlistConfig;
use ferrolb_speaker::world::build;
use ferrolb_speaker::world::{Announcer, NodeInfo, Readiness, World};
use tracing::{info, warn};

use ferrolb_controller::engine::Engine;

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

/// What a watched file held when last read: a fingerprint of the content, not the content (a
/// 10k-Service file is ~2 MB; polling it then costs a streamed hash and no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fingerprint {
    /// Length and two independently seeded 64-bit SipHashes of the bytes.
    Content { len: u64, hash: [u64; 2] },
    /// The read failed with this message.
    Error(String),
}

/// Hashes a byte stream fed in any chunking (`Hasher::write` is a stream).
#[derive(Debug)]
struct ContentHasher {
    len: u64,
    h: [std::hash::DefaultHasher; 2],
}

impl ContentHasher {
    fn new() -> Self {
        let mut h = [
            std::hash::DefaultHasher::new(),
            std::hash::DefaultHasher::new(),
        ];
        h[1].write_u8(1);
        ContentHasher { len: 0, h }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for h in &mut self.h {
            h.write(bytes);
        }
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint::Content {
            len: self.len,
            hash: [self.h[0].finish(), self.h[1].finish()],
        }
    }
}

fn read_error(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// The fingerprint of `path`'s content, read in 64 KiB pieces.
fn fingerprint_file(path: &Path) -> Fingerprint {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Fingerprint::Error(read_error(path, &e)),
    };
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => return hasher.finish(),
            Ok(n) => hasher.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Fingerprint::Error(read_error(path, &e)),
        }
    }
}

/// A watched file: the fingerprint of its last content.
#[derive(Debug, Default)]
struct Watched {
    last: Option<Fingerprint>,
}

impl Watched {
    /// The new content (or read error) when it differs from the last one seen.
    fn changed(&mut self, path: &Path) -> Option<Result<String, String>> {
        if self.last.as_ref() == Some(&fingerprint_file(path)) {
            return None;
        }
        let now = std::fs::read_to_string(path).map_err(|e| read_error(path, &e));
        let seen = match &now {
            Ok(text) => {
                let mut h = ContentHasher::new();
                h.write(text.as_bytes());
                h.finish()
            }
            Err(e) => Fingerprint::Error(e.clone()),
        };
        // Compared again: the file may have changed back between the two reads.
        if self.last.as_ref() == Some(&seen) {
            return None;
        }
        self.last = Some(seen);
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

/// Runs until SIGTERM/SIGINT.
pub async fn run(opts: Options, announcers: Vec<Box<dyn Announcer>>) -> anyhow::Result<()> {
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
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
                warn!(error = format!("{e:#}"), "cannot persist assignments");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fingerprint_does_not_depend_on_read_sizes() {
        let dir = tempfile_dir();
        let path = dir.join("f");
        // Longer than one read buffer, odd length.
        let text: String = (0..30_001).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut h = ContentHasher::new();
        for chunk in text.as_bytes().chunks(7) {
            h.write(chunk);
        }
        assert_eq!(fingerprint_file(&path), h.finish());
        let mut other = ContentHasher::new();
        other.write(b"x");
        assert_ne!(other.finish(), h.finish());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watched_reports_each_change_once() {
        let dir = tempfile_dir();
        let path = dir.join("services.yaml");
        let mut w = Watched::default();
        let first = w.changed(&path).unwrap();
        assert!(first.unwrap_err().contains("services.yaml"));
        assert!(
            w.changed(&path).is_none(),
            "the same error is not reported twice"
        );
        std::fs::write(&path, "a").unwrap();
        assert_eq!(w.changed(&path), Some(Ok("a".to_string())));
        assert!(w.changed(&path).is_none());
        std::fs::write(&path, "b").unwrap();
        assert_eq!(w.changed(&path), Some(Ok("b".to_string())));
        std::fs::write(&path, "b").unwrap();
        assert!(
            w.changed(&path).is_none(),
            "rewritten with the same content"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "ferrolb-standalone-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
