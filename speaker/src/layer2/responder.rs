//! One interface's ARP/NDP responder: a dedicated thread reads filtered frames from a pnet
//! channel (over the socket from [`super::socket`]), classifies them against the addresses this
//! interface answers for, and sends replies. The announcer changes that set with
//! [`Responder::set_owned`] (effective for the next frame) and sends gratuitous frames through
//! [`Responder::send`].
//!
//! Must not: decide which addresses to answer for (the announcer does).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, MacAddr, NetworkInterface};
use tracing::{debug, warn};

use super::interfaces::Usable;
use super::packet::{classify, Mac};
use super::socket;
use super::stats::Stats;

/// How long the receive thread blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

type Sender = Arc<Mutex<Box<dyn DataLinkSender>>>;

/// A running responder on one interface. Dropping it stops the thread.
pub struct Responder {
    iface: Usable,
    fd: RawFd,
    owned: Arc<RwLock<BTreeSet<IpAddr>>>,
    /// Solicited-node groups joined, with how many owned addresses need each.
    groups: BTreeMap<Mac, usize>,
    tx: Sender,
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
        let fd = socket::open_filtered()?;
        let pnet_iface = NetworkInterface {
            name: iface.name.clone(),
            description: String::new(),
            index: iface.index,
            mac: Some(MacAddr::from(iface.mac.0)),
            ips: Vec::new(),
            flags: 0,
        };
        let config = pnet_datalink::Config {
            read_timeout: Some(POLL),
            write_timeout: Some(Duration::from_millis(100)),
            socket_fd: Some(fd),
            promiscuous: false,
            ..Default::default()
        };
        // pnet owns `fd` from here on (and closes it on its own errors).
        let (tx, rx) = match pnet_datalink::channel(&pnet_iface, config)? {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => {
                return Err(io::Error::other(format!(
                    "interface {}: pnet returned a non-Ethernet channel",
                    iface.name
                )))
            }
        };
        let tx: Sender = Arc::new(Mutex::new(tx));
        let owned = Arc::new(RwLock::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rx_loop = RxLoop {
            name: iface.name.clone(),
            mac: iface.mac,
            owned: owned.clone(),
            tx: tx.clone(),
            stop: stop.clone(),
            stats,
        };
        let thread = std::thread::Builder::new()
            .name(format!("l2-{}", iface.name))
            .spawn(move || rx_loop.run(rx))?;
        Ok(Responder {
            iface,
            fd,
            owned,
            groups: BTreeMap::new(),
            tx,
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
            if let Err(e) = socket::multicast(self.fd, self.iface.index, *mac, true) {
                warn!(interface = %self.iface.name, group = %mac, error = %e, "could not join multicast group");
            }
        }
        for mac in self.groups.keys().filter(|m| !want.contains_key(m)) {
            if let Err(e) = socket::multicast(self.fd, self.iface.index, *mac, false) {
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
        if let Err(e) = socket::attach(self.fd, &socket::filter_for(&v4)) {
            warn!(interface = %self.iface.name, error = %e, "could not narrow the ARP filter");
        }
        *self.owned.write().unwrap_or_else(|e| e.into_inner()) = ips;
    }

    /// Sends one frame out of this interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send(&self.tx, frame)
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

fn send(tx: &Sender, frame: &[u8]) -> io::Result<()> {
    let mut tx = tx.lock().unwrap_or_else(|e| e.into_inner());
    tx.send_to(frame, None)
        .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
}

struct RxLoop {
    name: String,
    mac: Mac,
    owned: Arc<RwLock<BTreeSet<IpAddr>>>,
    tx: Sender,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl RxLoop {
    fn run(self, mut rx: Box<dyn DataLinkReceiver>) {
        while !self.stop.load(Ordering::Relaxed) {
            match rx.next() {
                Ok(frame) => self.handle(frame),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
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
                let ip = action.target();
                self.stats.request(ip);
                match send(&self.tx, &action.reply(self.mac)) {
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
