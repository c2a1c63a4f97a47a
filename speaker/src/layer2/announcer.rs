//! The layer2 [`Announcer`]: keeps one [`Responder`] per usable interface answering for the
//! addresses this node wins, and announces takeovers with gratuitous ARP / unsolicited NA.
//!
//! `apply` only queues the world; a control thread does the work: it elects (pure, see
//! [`super::election`]), rescans interfaces (at every change and every few seconds), narrows the
//! addresses per interface (pool `interfaces:` list, ARP vs NDP capability), stops answering lost
//! addresses at once and starts the gratuitous sequence ([`super::schedule`]) for won ones.
//!
//! Test-only: with `FERROLB_TEST_NO_GRATUITOUS=1` in the environment no gratuitous ARP /
//! unsolicited NA is sent at all (replies to requests are unchanged). It exists so the layer2
//! benchmark (`e2e/bench/layer2.sh`) can show what a failover costs without announcements (the
//! client keeps the dead node's MAC for tens of seconds); never set it in production.
//!
//! Must not: compute winners itself or parse frames.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{debug, info, warn};

use super::election::my_addresses;
use super::interfaces::{self, allowed_on, Usable};
use super::packet::{gratuitous_arp, unsolicited_na};
use super::responder::Responder;
use super::schedule::Plan;
use super::stats::{Counters, Layer2Metrics, Stats};
use crate::world::{Announcer, World};

/// How often interfaces are rescanned when nothing else happens (MetalLB: 10 s).
const RESCAN: Duration = Duration::from_secs(5);

/// Test-only switch (see the module doc): set to `1` to send no gratuitous frames.
pub const NO_GRATUITOUS_ENV: &str = "FERROLB_TEST_NO_GRATUITOUS";

enum Command {
    Apply(Arc<World>),
    Shutdown(oneshot::Sender<()>),
}

/// Answers ARP/NDP for the layer2 addresses this node wins.
#[derive(Debug)]
pub struct Layer2Announcer {
    commands: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Layer2Announcer {
    /// Starts the control thread; nothing is answered until the first `apply`.
    pub fn start() -> std::io::Result<Layer2Announcer> {
        Self::start_with(Stats::default())
    }

    /// Like [`Self::start`], also counting into `metrics` (see [`Layer2Metrics::register`]).
    pub fn start_with_metrics(metrics: Layer2Metrics) -> std::io::Result<Layer2Announcer> {
        Self::start_with(Stats::with_metrics(metrics))
    }

    fn start_with(stats: Stats) -> std::io::Result<Layer2Announcer> {
        let (commands, rx) = mpsc::channel();
        let stats = Arc::new(stats);
        let gratuitous = std::env::var(NO_GRATUITOUS_ENV).as_deref() != Ok("1");
        if !gratuitous {
            warn!("{NO_GRATUITOUS_ENV}=1: no gratuitous ARP / unsolicited NA will be sent (test only)");
        }
        let control = Control {
            gratuitous,
            stats: stats.clone(),
            node: String::new(),
            wanted: BTreeMap::new(),
            announced: BTreeSet::new(),
            responders: BTreeMap::new(),
            failed: BTreeSet::new(),
            plan: Plan::default(),
            last_scan: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("l2-control".into())
            .spawn(move || control.run(rx))?;
        Ok(Layer2Announcer {
            commands,
            stats,
            thread: Some(thread),
        })
    }

    /// The counters (MetalLB metric names; see [`super::stats`]).
    pub fn stats(&self) -> Counters {
        self.stats.snapshot()
    }
}

impl Announcer for Layer2Announcer {
    fn name(&self) -> &'static str {
        "layer2"
    }

    fn apply(&mut self, world: Arc<World>) {
        if self.commands.send(Command::Apply(world)).is_err() {
            warn!("layer2 control thread is gone; world ignored");
        }
    }

    fn shutdown(&mut self) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown(tx));
        // The thread joins its responders before answering; dropping `tx` (thread gone) also ends
        // the wait.
        async move {
            let _ = rx.await;
        }
        .boxed()
    }
}

impl Drop for Layer2Announcer {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown(tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Control {
    /// False only under the test-only [`NO_GRATUITOUS_ENV`].
    gratuitous: bool,
    stats: Arc<Stats>,
    /// This node's name (from the latest world).
    node: String,
    /// Addresses this node wins, with their pool's interface restriction.
    wanted: BTreeMap<IpAddr, Vec<String>>,
    /// The addresses of `wanted` as of the last reconcile (to see what was won or lost).
    announced: BTreeSet<IpAddr>,
    responders: BTreeMap<String, Responder>,
    /// Interfaces whose socket could not be opened (warned once, retried at every rescan).
    failed: BTreeSet<String>,
    plan: Plan,
    last_scan: Instant,
}

impl Control {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let now = Instant::now();
            let wake = self
                .plan
                .next_deadline()
                .map_or(self.last_scan + RESCAN, |d| d.min(self.last_scan + RESCAN));
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Command::Apply(mut world)) => {
                    // Only the newest world matters; skip any queued behind it.
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            Command::Apply(w) => world = w,
                            Command::Shutdown(done) => return self.stop(Some(done)),
                        }
                    }
                    self.wanted = my_addresses(&world);
                    self.node.clone_from(&world.node.name);
                    self.reconcile(Instant::now());
                }
                Ok(Command::Shutdown(done)) => return self.stop(Some(done)),
                Err(RecvTimeoutError::Disconnected) => return self.stop(None),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= self.last_scan + RESCAN {
                self.reconcile(now);
            }
            for ip in self.plan.take_due(now) {
                self.announce(ip);
            }
        }
    }

    fn stop(mut self, done: Option<oneshot::Sender<()>>) {
        for r in self.responders.values() {
            r.signal_stop();
        }
        let count = self.responders.len();
        self.responders.clear();
        self.stats.set_announced(&self.node, BTreeSet::new());
        info!(interfaces = count, "layer2 stopped");
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Brings responders and their address sets in line with `wanted` and the interfaces now.
    fn reconcile(&mut self, now: Instant) {
        self.last_scan = now;
        let usable = match interfaces::scan() {
            Ok(links) => interfaces::usable(&links),
            Err(e) => {
                warn!(error = %e, "could not list interfaces; keeping the current ones");
                self.responders
                    .values()
                    .map(|r| r.iface().clone())
                    .collect()
            }
        };
        let usable: BTreeMap<String, Usable> =
            usable.into_iter().map(|u| (u.name.clone(), u)).collect();

        // Interfaces gone or changed (index, MAC, IPv6 capability): stop their responders.
        let stale: Vec<String> = self
            .responders
            .iter()
            .filter(|(name, r)| usable.get(*name) != Some(r.iface()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            info!(interface = %name, "layer2 interface gone");
            self.responders.remove(&name);
        }

        let previous = std::mem::take(&mut self.announced);
        let mut fresh = Vec::new();
        for (name, iface) in &usable {
            if self.responders.contains_key(name) {
                continue;
            }
            match Responder::start(iface.clone(), self.stats.clone()) {
                Ok(r) => {
                    info!(interface = %name, mac = %iface.mac, ndp = iface.ndp, "layer2 interface up");
                    self.responders.insert(name.clone(), r);
                    self.failed.remove(name);
                    fresh.push(name.clone());
                }
                Err(e) if self.failed.insert(name.clone()) => {
                    warn!(interface = %name, error = %e, "could not open packet socket (needs CAP_NET_RAW)")
                }
                Err(e) => debug!(interface = %name, error = %e, "could not open packet socket"),
            }
        }

        for (name, r) in self.responders.iter_mut() {
            r.set_owned(serves(&self.wanted, r.iface()));
            debug!(interface = %name, "addresses updated");
        }

        let current: BTreeSet<IpAddr> = self.wanted.keys().copied().collect();
        for ip in previous.difference(&current) {
            info!(%ip, "layer2: no longer announcing");
            self.plan.cancel(ip);
        }
        for ip in current.difference(&previous) {
            info!(%ip, "layer2: announcing");
            self.plan.start(*ip, now);
        }
        // A new interface learns about addresses we already held.
        if !fresh.is_empty() {
            for ip in current.intersection(&previous) {
                self.plan.start(*ip, now);
            }
        }
        self.stats.set_announced(&self.node, current.clone());
        self.announced = current;
    }

    /// Sends the gratuitous frames for `ip` on every interface that serves it.
    fn announce(&self, ip: IpAddr) {
        if !self.gratuitous {
            return;
        }
        for r in self.responders.values() {
            let iface = r.iface();
            if !serves(&self.wanted, iface).contains(&ip) {
                continue;
            }
            let frames = match ip {
                IpAddr::V4(v4) => gratuitous_arp(iface.mac, v4).to_vec(),
                IpAddr::V6(v6) => vec![unsolicited_na(iface.mac, v6)],
            };
            for f in frames {
                match r.send(&f) {
                    Ok(()) => self.stats.gratuitous(ip),
                    Err(e) => {
                        warn!(interface = %iface.name, %ip, error = %e, "gratuitous send failed")
                    }
                }
            }
            debug!(interface = %iface.name, %ip, "gratuitous announcement sent");
        }
    }
}

/// The addresses `iface` answers for: allowed by the pool and of a family it can speak.
fn serves(wanted: &BTreeMap<IpAddr, Vec<String>>, iface: &Usable) -> BTreeSet<IpAddr> {
    wanted
        .iter()
        .filter(|(ip, allowed)| {
            allowed_on(allowed, &iface.name)
                && match ip {
                    IpAddr::V4(_) => iface.arp,
                    IpAddr::V6(_) => iface.ndp,
                }
        })
        .map(|(ip, _)| *ip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer2::packet::Mac;

    fn iface(name: &str, ndp: bool) -> Usable {
        Usable {
            name: name.into(),
            index: 2,
            mac: Mac([2, 0, 0, 0, 0, 1]),
            arp: true,
            ndp,
        }
    }

    #[test]
    fn serves_honours_pool_interfaces_and_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let wanted = BTreeMap::from([
            (ip("192.0.2.1"), vec![]),
            (ip("192.0.2.2"), vec!["eth1".to_string()]),
            (ip("2001:db8::1"), vec![]),
        ]);
        assert_eq!(
            serves(&wanted, &iface("eth0", true)),
            BTreeSet::from([ip("192.0.2.1"), ip("2001:db8::1")])
        );
        assert_eq!(
            serves(&wanted, &iface("eth1", false)),
            BTreeSet::from([ip("192.0.2.1"), ip("192.0.2.2")])
        );
    }
}
