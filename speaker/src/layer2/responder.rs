//! One interface's ARP/NDP responder: a dedicated thread blocks in `recv` on the filtered packet
//! socket of [`super::socket`], classifies each frame against the addresses this interface
//! answers for and sends the reply at once on the same socket (no async reactor, no `poll`, no
//! lock around the send; the counters are updated after the reply is out). The announcer changes
//! that set with [`Responder::set_owned`] (effective for the next frame) and sends gratuitous
//! frames through [`Responder::send`].
//!
//! Must not: decide which addresses to answer for (the announcer does).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use super::interfaces::Usable;
use super::packet::{classify, Mac};
use super::socket::{self, PacketSocket};
use super::stats::Stats;

/// How long the receive thread blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Receive buffer: ARP and Neighbor Solicitations are far smaller; a longer frame is truncated
/// and then refused by the parser.
const RX_BUF: usize = 4096;

/// A running responder on one interface. Dropping it stops the thread.
pub struct Responder {
    iface: Usable,
    sock: Arc<PacketSocket>,
    owned: Arc<RwLock<BTreeSet<IpAddr>>>,
    /// Solicited-node groups joined, with how many owned addresses need each.
    groups: BTreeMap<Mac, usize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("iface", &self.iface)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Opens the filtered socket on `iface` and starts its receive thread (answering nothing yet).
    pub fn start(iface: Usable, stats: Arc<Stats>) -> io::Result<Responder> {
        let sock = Arc::new(PacketSocket::open(iface.index, POLL)?);
        let owned = Arc::new(RwLock::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rx_loop = RxLoop {
            name: iface.name.clone(),
            mac: iface.mac,
            owned: owned.clone(),
            sock: sock.clone(),
            stop: stop.clone(),
            stats,
        };
        let thread = std::thread::Builder::new()
            .name(format!("l2-{}", iface.name))
            .spawn(move || rx_loop.run())?;
        Ok(Responder {
            iface,
            sock,
            owned,
            groups: BTreeMap::new(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn iface(&self) -> &Usable {
        &self.iface
    }

    /// Replaces the set of addresses answered on this interface, joining and leaving
    /// solicited-node multicast groups to match.
    pub fn set_owned(&mut self, ips: BTreeSet<IpAddr>) {
        let mut want: BTreeMap<Mac, usize> = BTreeMap::new();
        for ip in &ips {
            if let IpAddr::V6(v6) = ip {
                *want.entry(Mac::solicited_node(v6)).or_default() += 1;
            }
        }
        for mac in want.keys().filter(|m| !self.groups.contains_key(m)) {
            if let Err(e) = socket::multicast(self.sock.raw(), self.iface.index, *mac, true) {
                warn!(interface = %self.iface.name, group = %mac, error = %e, "could not join multicast group");
            }
        }
        for mac in self.groups.keys().filter(|m| !want.contains_key(m)) {
            if let Err(e) = socket::multicast(self.sock.raw(), self.iface.index, *mac, false) {
                warn!(interface = %self.iface.name, group = %mac, error = %e, "could not leave multicast group");
            }
        }
        self.groups = want;
        // ARP for addresses we do not answer is dropped in the kernel.
        let v4: Vec<std::net::Ipv4Addr> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        if let Err(e) = socket::attach(self.sock.raw(), &socket::filter_for(&v4)) {
            warn!(interface = %self.iface.name, error = %e, "could not narrow the ARP filter");
        }
        *self.owned.write().unwrap_or_else(|e| e.into_inner()) = ips;
    }

    /// Sends one frame out of this interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.sock.send(frame)
    }

    /// Asks the receive thread to stop (without waiting).
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct RxLoop {
    name: String,
    mac: Mac,
    owned: Arc<RwLock<BTreeSet<IpAddr>>>,
    sock: Arc<PacketSocket>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl RxLoop {
    fn run(self) {
        let mut buf = vec![0u8; RX_BUF];
        while !self.stop.load(Ordering::Relaxed) {
            match self.sock.recv(&mut buf) {
                Ok(n) => self.handle(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // The interface may be going away; the announcer's rescan replaces us.
                    debug!(interface = %self.name, error = %e, "receive failed");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    fn handle(&self, frame: &[u8]) {
        let verdict = {
            let owned = self.owned.read().unwrap_or_else(|e| e.into_inner());
            classify(frame, self.mac, &owned)
        };
        match verdict {
            Ok(action) => {
                // Reply first, count afterwards: the counters take locks and format labels.
                let sent = self.sock.send(&action.reply(self.mac));
                let ip = action.target();
                self.stats.request(ip);
                match sent {
                    Ok(()) => {
                        self.stats.response(ip);
                        debug!(interface = %self.name, %ip, "answered");
                    }
                    Err(e) => {
                        warn!(interface = %self.name, %ip, error = %e, "could not send reply")
                    }
                }
            }
            Err(reason) => {
                self.stats.dropped(reason);
                debug!(interface = %self.name, %reason, "not answered");
            }
        }
    }
}
