//! Passive side of BGP: listening sockets (`--bgp-listen`) that accept a connection only from a
//! configured peer of this node and hand it, with its OPEN, to that peer's session.
//!
//! A connection from any other address is closed at once, before a byte is sent, counted in
//! `ferrolb_bgp_refused_connections_total` and logged with the address (at most one line a
//! second; the next line counts the ones not logged). Peers with a `password`
//! get their TCP MD5 key on the listening socket (Linux copies it to the accepted socket).
//! Must not: run the session (that is `session.rs`) or decide collisions (`collision.rs`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_config::Peer;
use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::codec::{Codec, DecodeError};
use super::md5;
use super::msg::{code, Message, Notification};
use super::session::Inbound;

/// How long an accepted connection may take to send its OPEN.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);

/// At most one refusal line per this interval (a flood of connections must not flood the log);
/// the next line says how many were not logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Rate limit for the refusal log line.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(lines not logged since the last one)` when a line may be logged at `now`.
    fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < REFUSAL_LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Where accepted connections from one peer go.
#[derive(Debug, Clone)]
pub struct Route {
    pub peer_address: IpAddr,
    /// The peer's `source-address`: the connection must arrive on it when set.
    pub source_address: Option<IpAddr>,
    /// TTL for the accepted socket (eBGP without multihop: 1).
    pub ttl: Option<u32>,
    pub tx: mpsc::Sender<Inbound>,
}

impl Route {
    pub fn new(peer: &Peer, tx: mpsc::Sender<Inbound>) -> Route {
        Route {
            peer_address: peer.peer_address.to_canonical(),
            source_address: peer.source_address.map(|a| a.to_canonical()),
            ttl: peer
                .is_ebgp()
                .then_some(if peer.ebgp_multihop { 255 } else { 1 }),
            tx,
        }
    }
}

/// The route for a connection from `remote` to our `local` address: the first configured peer
/// with that address whose `source-address` (if any) is `local`. `None`: refuse.
pub fn find(routes: &[Route], remote: IpAddr, local: IpAddr) -> Option<&Route> {
    let (remote, local) = (remote.to_canonical(), local.to_canonical());
    routes
        .iter()
        .find(|r| r.peer_address == remote && r.source_address.is_none_or(|s| s == local))
}

/// The listening sockets and the peers they accept.
#[derive(Debug)]
pub struct Listener {
    /// Bound, not yet accepting (the accept loops start on the runtime of the first `update`).
    pending: Vec<std::net::TcpListener>,
    /// The same sockets, for MD5 keys.
    sockets: Vec<(SocketAddr, socket2::Socket)>,
    routes: Arc<Mutex<Vec<Route>>>,
    /// Peer addresses with an MD5 key on the listening sockets.
    keyed: BTreeSet<IpAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listener {
    /// Binds every address (IPv6 sockets are IPv6-only; SO_REUSEADDR).
    pub fn bind(addrs: &[SocketAddr]) -> std::io::Result<Listener> {
        let mut l = Listener {
            pending: Vec::new(),
            sockets: Vec::new(),
            routes: Arc::default(),
            keyed: BTreeSet::new(),
            tasks: Vec::new(),
        };
        for &addr in addrs {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            if addr.is_ipv6() {
                sock.set_only_v6(true)?;
            }
            sock.set_reuse_address(true)?;
            sock.bind(&addr.into())
                .map_err(|e| std::io::Error::new(e.kind(), format!("--bgp-listen {addr}: {e}")))?;
            sock.listen(64)?;
            sock.set_nonblocking(true)?;
            let bound = sock.local_addr()?.as_socket().unwrap_or(addr);
            l.sockets.push((bound, sock.try_clone()?));
            l.pending.push(sock.into());
            info!(listen = %bound, "BGP listener bound");
        }
        Ok(l)
    }

    /// The bound addresses (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _)| *a).collect()
    }

    /// Sets the peers to accept (this node's sessions) and their MD5 keys; starts the accept
    /// loops on `runtime` the first time.
    pub fn update(
        &mut self,
        peers: &[(Peer, mpsc::Sender<Inbound>)],
        runtime: &Handle,
        refused: &Counter,
    ) {
        let routes: Vec<Route> = peers
            .iter()
            .map(|(p, tx)| Route::new(p, tx.clone()))
            .collect();
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = routes;
        let mut keyed = BTreeSet::new();
        for (peer, _) in peers {
            let Some(pw) = &peer.password else { continue };
            let addr = peer.peer_address.to_canonical();
            for (local, sock) in &self.sockets {
                if local.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
                match md5::set_md5(sock, SocketAddr::new(addr, 0), pw.as_bytes()) {
                    Ok(()) => {
                        keyed.insert(addr);
                    }
                    Err(e) => {
                        warn!(peer = %addr, error = %e, "cannot set the MD5 key on the BGP listener")
                    }
                }
            }
        }
        for gone in self.keyed.difference(&keyed) {
            for (local, sock) in &self.sockets {
                if local.is_ipv4() == gone.is_ipv4() {
                    // An empty key deletes the peer's key.
                    let _ = md5::set_md5(sock, SocketAddr::new(*gone, 0), b"");
                }
            }
        }
        self.keyed = keyed;
        for std_listener in self.pending.drain(..) {
            let routes = self.routes.clone();
            let refused = refused.clone();
            let _guard = runtime.enter();
            match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => self
                    .tasks
                    .push(runtime.spawn(accept_loop(l, routes, refused))),
                Err(e) => warn!(error = %e, "BGP listener"),
            }
        }
    }

    /// Stops accepting.
    pub fn shutdown(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    routes: Arc<Mutex<Vec<Route>>>,
    refused: Counter,
) {
    let mut limit = LogLimit::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a.ip(),
            Err(_) => continue,
        };
        let route = {
            let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
            find(&routes, remote.ip(), local).cloned()
        };
        match route {
            None => {
                refused.inc();
                drop(stream);
                match limit.allow(std::time::Instant::now()) {
                    Some(not_logged) => {
                        warn!(%remote, %local, not_logged, "BGP connection from an address that is not a configured peer of this node: closed")
                    }
                    None => {
                        debug!(%remote, %local, "BGP connection refused (log line rate-limited)")
                    }
                }
            }
            Some(route) => {
                info!(%remote, %local, "BGP connection from a configured peer accepted");
                tokio::spawn(handshake(stream, remote, local, route));
            }
        }
    }
}

/// Waits for the peer's OPEN and hands the connection to its session.
async fn handshake(stream: TcpStream, remote: SocketAddr, local: IpAddr, route: Route) {
    if let Some(ttl) = route.ttl {
        let sock = socket2::SockRef::from(&stream);
        let r = if remote.is_ipv4() {
            sock.set_ttl_v4(ttl)
        } else {
            sock.set_unicast_hops_v6(ttl)
        };
        if let Err(e) = r {
            warn!(%remote, error = %e, "cannot set the TTL");
        }
    }
    let mut conn = Framed::new(stream, Codec::default());
    match tokio::time::timeout(OPEN_WAIT, conn.next()).await {
        Ok(Some(Ok(Message::Open(open)))) => {
            let _ = route.tx.send(Inbound { conn, open, local }).await;
        }
        Ok(Some(Ok(other))) => {
            debug!(%remote, ?other, "first message is not an OPEN");
            let n = Notification::new(code::FSM, 0);
            let _ = conn.send(Message::Notification(n)).await;
        }
        Ok(Some(Err(DecodeError::Malformed {
            notification,
            detail,
        }))) => {
            debug!(%remote, %detail, "malformed first message");
            let _ = conn.send(Message::Notification(notification)).await;
        }
        Ok(Some(Err(DecodeError::Io(_))) | None) => {}
        Err(_) => {
            debug!(%remote, "no OPEN in time");
            let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0);
            let _ = conn.send(Message::Notification(n)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(peer: &str, source: Option<&str>) -> Route {
        let (tx, _) = mpsc::channel(1);
        Route {
            peer_address: peer.parse().unwrap(),
            source_address: source.map(|s| s.parse().unwrap()),
            ttl: None,
            tx,
        }
    }

    #[test]
    fn refusal_log_lines_are_rate_limited_and_count_the_rest() {
        let mut l = LogLimit::default();
        let t0 = std::time::Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(l.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(l.allow(t0 + Duration::from_millis(1001)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(5000)), Some(1));
    }

    #[test]
    fn only_configured_peer_addresses_are_accepted() {
        let routes = vec![
            route("192.0.2.1", None),
            route("192.0.2.3", Some("192.0.2.5")),
            route("2001:db8::1", None),
        ];
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let hit = |r: &str, l: &str| find(&routes, ip(r), ip(l)).map(|r| r.peer_address);
        assert_eq!(hit("192.0.2.1", "192.0.2.2"), Some(ip("192.0.2.1")));
        assert_eq!(hit("192.0.2.9", "192.0.2.2"), None, "unconfigured address");
        // source-address: only on that local address.
        assert_eq!(hit("192.0.2.3", "192.0.2.5"), Some(ip("192.0.2.3")));
        assert_eq!(hit("192.0.2.3", "192.0.2.2"), None);
        assert_eq!(hit("2001:db8::1", "2001:db8::2"), Some(ip("2001:db8::1")));
        // An IPv4 peer seen through an IPv4-mapped IPv6 address.
        assert_eq!(
            hit("::ffff:192.0.2.1", "::ffff:192.0.2.2"),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            find(&[], ip("192.0.2.1"), ip("192.0.2.2")).map(|_| ()),
            None
        );
    }
}
