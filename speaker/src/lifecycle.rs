//! One announcing node's life, the same in every mode (`ferrolb speaker` on Kubernetes,
//! `ferrolb standalone` with files): start the announcers ([`announcers`]) and the membership
//! (or none), hand each changed [`World`] to every announcer, and on stop leave the membership
//! and shut every announcer down (BGP: withdraw + Cease) under one deadline,
//! [`SHUTDOWN_DEADLINE`], logging what did not finish in time.
//!
//! Must not: build worlds (the sources do, with [`crate::world::build`]) or decide announcements
//! (the announcers do).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::bgp::announcer::BgpAnnouncer;
use crate::bgp::metrics::BgpMetrics;
use crate::layer2::{Layer2Announcer, Layer2Metrics};
use crate::membership::{MemberlistConfig, MemberlistMembership, Membership, MembershipError};
use crate::world::build::Liveness;
use crate::world::{Announcer, World};

/// How long stopping may take in all: leaving the membership, then every announcer's shutdown.
/// What has not finished by then is logged and left behind (the process exits).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the announcers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("layer2 announcer: {0}")]
    Layer2(#[source] std::io::Error),
    #[error("BGP listener: {0}")]
    BgpListen(#[source] std::io::Error),
}

/// Starts every announcer of this process (each owns its threads or tasks until `shutdown`),
/// registering their metrics into `registry`; BGP also accepts connections on `bgp_listen`.
pub fn announcers(
    registry: &mut Registry,
    bgp_listen: &[std::net::SocketAddr],
) -> Result<Vec<Box<dyn Announcer>>, StartError> {
    let layer2 = Layer2Announcer::start_with_metrics(Layer2Metrics::register(registry))
        .map_err(StartError::Layer2)?;
    let bgp = BgpAnnouncer::start(BgpMetrics::register(registry))
        .with_listener(bgp_listen)
        .map_err(StartError::BgpListen)?;
    Ok(vec![Box::new(layer2), Box::new(bgp)])
}

/// The membership (if started), the announcers and the last world handed to them.
pub struct Lifecycle {
    membership: Option<MemberlistMembership>,
    /// Membership's live set; `None` without membership or once it stopped reporting.
    live: Option<watch::Receiver<BTreeSet<String>>>,
    announcers: Vec<Box<dyn Announcer>>,
    last: Option<Arc<World>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.announcers.iter().map(|a| a.name()).collect();
        f.debug_struct("Lifecycle")
            .field("membership", &self.membership.is_some())
            .field("announcers", &names)
            .finish()
    }
}

impl Lifecycle {
    /// A node announcing through `announcers`, with no membership until
    /// [`start_membership`](Self::start_membership).
    pub fn new(announcers: Vec<Box<dyn Announcer>>) -> Self {
        Lifecycle {
            membership: None,
            live: None,
            announcers,
            last: None,
        }
    }

    /// Joins the memberlist cluster `cfg` describes.
    pub async fn start_membership(&mut self, cfg: MemberlistConfig) -> Result<(), MembershipError> {
        info!(join = ?cfg.join, "membership: starting");
        let m = MemberlistMembership::start(cfg).await?;
        self.live = Some(m.live());
        self.membership = Some(m);
        Ok(())
    }

    /// What membership says now.
    pub fn liveness(&self) -> Liveness {
        match (&self.membership, &self.live) {
            (None, _) => Liveness::Off,
            (Some(_), Some(rx)) => Liveness::Members(rx.borrow().clone()),
            (Some(_), None) => Liveness::Stopped,
        }
    }

    /// Resolves when membership's live set changes, and once when membership stops reporting
    /// (then [`liveness`](Self::liveness) says [`Liveness::Stopped`]); never without
    /// membership. Cancel-safe.
    pub async fn live_changed(&mut self) {
        let Some(rx) = self.live.as_mut() else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_err() {
            warn!("membership stopped reporting; keeping the last live set");
            self.live = None;
        }
    }

    /// Hands `world` to every announcer unless it equals the last one handed over; returns it
    /// when it was handed over.
    pub fn apply(&mut self, world: World) -> Option<Arc<World>> {
        if self.last.as_deref() == Some(&world) {
            return None;
        }
        let world = Arc::new(world);
        for a in &mut self.announcers {
            a.apply(world.clone());
        }
        self.last = Some(world.clone());
        Some(world)
    }

    /// The last world handed to the announcers.
    pub fn last(&self) -> Option<&World> {
        self.last.as_deref()
    }

    /// Leaves the membership, then shuts every announcer down (all at once), everything within
    /// [`SHUTDOWN_DEADLINE`] from now.
    pub async fn stop(self) {
        self.stop_within(SHUTDOWN_DEADLINE).await;
    }

    async fn stop_within(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        if let Some(m) = &self.membership {
            match tokio::time::timeout_at(deadline, m.leave()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "membership: leave failed"),
                Err(_) => warn!(?limit, "membership: leave timed out"),
            }
        }
        let shutdowns = self.announcers.iter_mut().map(|a| {
            let name = a.name();
            info!(announcer = name, "shutting down");
            let done = a.shutdown();
            async move {
                if tokio::time::timeout_at(deadline, done).await.is_err() {
                    warn!(announcer = name, ?limit, "shutdown timed out");
                }
            }
        });
        futures::future::join_all(shutdowns).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::Config;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use std::sync::Mutex;

    /// An announcer that records what it is given; its shutdown takes `takes`.
    struct Recording {
        name: &'static str,
        worlds: Arc<Mutex<Vec<Arc<World>>>>,
        takes: Duration,
        stopped: Arc<Mutex<Option<Instant>>>,
    }

    impl Announcer for Recording {
        fn name(&self) -> &'static str {
            self.name
        }
        fn apply(&mut self, world: Arc<World>) {
            self.worlds.lock().unwrap().push(world);
        }
        fn shutdown(&mut self) -> BoxFuture<'static, ()> {
            let (takes, stopped) = (self.takes, self.stopped.clone());
            async move {
                tokio::time::sleep(takes).await;
                *stopped.lock().unwrap() = Some(Instant::now());
            }
            .boxed()
        }
    }

    type Seen = (Arc<Mutex<Vec<Arc<World>>>>, Arc<Mutex<Option<Instant>>>);

    fn recording(name: &'static str, takes: Duration) -> (Box<dyn Announcer>, Seen) {
        let worlds = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(Mutex::new(None));
        let a = Recording {
            name,
            worlds: worlds.clone(),
            takes,
            stopped: stopped.clone(),
        };
        (Box::new(a), (worlds, stopped))
    }

    fn world(live: &[&str]) -> World {
        super::super::world::build::world(
            Config::default(),
            crate::world::NodeInfo::default(),
            Vec::new(),
            crate::world::Readiness::AllReady,
            live.iter().map(|s| s.to_string()).collect(),
            Default::default,
        )
    }

    #[test]
    fn only_changed_worlds_reach_every_announcer() {
        let (a, (a_worlds, _)) = recording("a", Duration::ZERO);
        let (b, (b_worlds, _)) = recording("b", Duration::ZERO);
        let mut node = Lifecycle::new(vec![a, b]);
        assert_eq!(node.liveness(), Liveness::Off, "no membership started");
        assert!(node.apply(world(&["n1"])).is_some());
        assert!(node.apply(world(&["n1"])).is_none(), "the same world again");
        assert!(node.apply(world(&["n1", "n2"])).is_some());
        for seen in [&a_worlds, &b_worlds] {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[1].live_nodes.len(), 2);
        }
        assert_eq!(node.last().map(|w| w.live_nodes.len()), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_shuts_every_announcer_down_under_one_deadline() {
        let (fast, (_, fast_stopped)) = recording("fast", Duration::from_secs(1));
        let (slow, (_, slow_stopped)) = recording("slow", Duration::from_secs(3));
        let (stuck, (_, stuck_stopped)) = recording("stuck", Duration::from_secs(3600));
        let t0 = Instant::now();
        Lifecycle::new(vec![fast, slow, stuck]).stop().await;
        // One deadline for all: the stuck one is given up at 5 s, not 5 s after the others.
        assert_eq!(Instant::now(), t0 + SHUTDOWN_DEADLINE);
        assert_eq!(
            *fast_stopped.lock().unwrap(),
            Some(t0 + Duration::from_secs(1))
        );
        assert_eq!(
            *slow_stopped.lock().unwrap(),
            Some(t0 + Duration::from_secs(3))
        );
        assert_eq!(*stuck_stopped.lock().unwrap(), None, "timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn live_changed_waits_forever_without_membership() {
        let mut node = Lifecycle::new(Vec::new());
        let waited = tokio::time::timeout(Duration::from_secs(3600), node.live_changed()).await;
        assert!(waited.is_err());
        assert_eq!(node.liveness(), Liveness::Off);
    }
}
