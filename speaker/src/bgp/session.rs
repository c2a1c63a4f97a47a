//! tokio driver for one BGP peer: owns the socket and the timers, feeds the FSM, sends the
//! routes `adv.rs` picks for the latest world, packed by `pack.rs`.
//!
//! The full table is computed and encoded while the OPENs are exchanged ([`Prepared`]), so on
//! Established it goes out at once; UPDATEs are written many per `write`, in large chunks.
//!
//! Must not: decide anything the FSM or the pure modules decide; it only moves bytes and time.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::Peer;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::codec::{Codec, DecodeError};
use super::collision::{self, Decision, Direction};
use super::fsm::{Fsm, Input, Output, Params, State, Timer};
use super::metrics::{BgpMetrics, Labels};
use super::msg::{code, Capabilities, Message, Notification, Open};
use super::pack::{self, RouteSet, Updates};
use super::{adv, md5};
use crate::world::World;

/// Why the session task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The speaker shuts down: withdraw and Cease (administrative shutdown).
    Shutdown,
    /// The peer left the config: withdraw and Cease (peer de-configured).
    Removed,
}

/// Connect-retry backoff bounds.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest wait for a TCP handshake (the loop does nothing else meanwhile).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// UPDATE bytes handed to the socket per `write` (whole messages; a chunk ends past this).
const WRITE_CHUNK: usize = 64 * 1024;

fn params(peer: &Peer) -> Params {
    let secs = |d: Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
    Params {
        my_asn: peer.my_asn,
        peer_asn: peer.peer_asn,
        router_id: peer.router_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
        hold_time: secs(peer.hold_time),
        keepalive: Some(peer.keepalive_time).filter(|k| !k.is_zero()),
        retry_initial: RETRY_INITIAL,
        retry_max: RETRY_MAX,
    }
}

/// Opens the TCP connection: source address, MD5 key, TTL, then connect.
async fn connect(peer: &Peer) -> std::io::Result<TcpStream> {
    let remote = SocketAddr::new(peer.peer_address, peer.peer_port);
    let domain = socket2::Domain::for_address(remote);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if let Some(pw) = &peer.password {
        md5::set_md5(&sock, remote, pw.as_bytes())?;
    }
    if peer.is_ebgp() {
        let ttl = if peer.ebgp_multihop { 255 } else { 1 };
        if remote.is_ipv4() {
            sock.set_ttl_v4(ttl)?;
        } else {
            sock.set_unicast_hops_v6(ttl)?;
        }
    }
    if let Some(src) = peer.source_address {
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    sock.set_nonblocking(true)?;
    let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
    sock.connect(remote).await
}

/// A connection the peer opened to our listener, with the OPEN it sent first.
#[derive(Debug)]
pub struct Inbound {
    pub conn: Framed<TcpStream, Codec>,
    pub open: Open,
    /// Our address on the connection.
    pub local: IpAddr,
}

/// Router id when none is configured: the local IPv4 address of the session, or for IPv6 the
/// low 32 bits of the local address.
fn derived_router_id(local: Option<IpAddr>) -> Ipv4Addr {
    match local {
        Some(IpAddr::V4(a)) => a,
        Some(IpAddr::V6(a)) => {
            let o = a.octets();
            Ipv4Addr::new(o[12], o[13], o[14], o[15])
        }
        None => Ipv4Addr::new(192, 0, 2, 254),
    }
}

/// Timer deadlines the FSM asked for.
#[derive(Debug, Default)]
struct Timers {
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, t: Timer) -> &mut Option<Instant> {
        match t {
            Timer::ConnectRetry => &mut self.connect_retry,
            Timer::Hold => &mut self.hold,
            Timer::Keepalive => &mut self.keepalive,
        }
    }

    /// The earliest armed timer.
    fn next(&self) -> Option<(Instant, Timer)> {
        [
            (self.connect_retry, Timer::ConnectRetry),
            (self.hold, Timer::Hold),
            (self.keepalive, Timer::Keepalive),
        ]
        .into_iter()
        .filter_map(|(d, t)| d.map(|d| (d, t)))
        .min()
    }
}

/// The full table for one world and local address, encoded while the OPENs are exchanged: what
/// a peer that holds nothing from us gets on Established.
struct Prepared {
    world: Arc<World>,
    local: IpAddr,
    routes: RouteSet,
    /// Whole UPDATEs announcing `routes`, back to back, and how many.
    bytes: Vec<u8>,
    messages: usize,
}

impl Prepared {
    fn matches(&self, world: &Arc<World>, local: IpAddr) -> bool {
        Arc::ptr_eq(&self.world, world) && self.local == local
    }
}

type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>;

/// One peer's session state outside the FSM.
struct Driver {
    peer: Peer,
    fsm: Fsm,
    timers: Timers,
    conn: Option<Framed<TcpStream, Codec>>,
    /// Our connect attempt in progress.
    connecting: Option<Connecting>,
    /// Who opened `conn`.
    conn_dir: Direction,
    local: Option<IpAddr>,
    /// What the peer holds from us now.
    sent: RouteSet,
    /// The full table, ready before Established (see [`Driver::prepare`]).
    prepared: Option<Prepared>,
    /// The peer's capabilities from its OPEN (which End-of-RIB markers it understands).
    peer_caps: Capabilities,
    world: Arc<World>,
    up: watch::Sender<bool>,
    metrics: BgpMetrics,
    labels: Labels,
}

/// Runs one session until `stop` says why to end. `world` carries every update; `up` reports
/// whether the session is Established; `inbound` brings connections the peer opened to our
/// listener (RFC 4271 §6.8 decides between them and ours).
pub async fn run(
    peer: Peer,
    mut world: watch::Receiver<Arc<World>>,
    mut stop: watch::Receiver<Option<StopReason>>,
    up: watch::Sender<bool>,
    metrics: BgpMetrics,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    let labels = BgpMetrics::labels(SocketAddr::new(peer.peer_address, peer.peer_port));
    metrics.session_up.get_or_create(&labels).set(0);
    let first = world.borrow_and_update().clone();
    let mut d = Driver {
        fsm: Fsm::new(params(&peer)),
        peer,
        timers: Timers::default(),
        conn: None,
        connecting: None,
        conn_dir: Direction::Outgoing,
        local: None,
        sent: RouteSet::new(),
        prepared: None,
        peer_caps: Capabilities::default(),
        world: first,
        up,
        metrics,
        labels,
    };
    d.input(Input::Start).await;
    loop {
        let next = d.timers.next();
        let (conn, connecting) = (&mut d.conn, &mut d.connecting);
        tokio::select! {
            // A stop request wins over everything else that is ready at the same time.
            biased;
            _ = stop.changed() => {
                let reason = (*stop.borrow()).unwrap_or(StopReason::Shutdown);
                d.shutdown(reason).await;
                return;
            }
            _ = async { match next { Some((at, _)) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                if let Some((_, t)) = next {
                    *d.timers.slot(t) = None;
                    // While our connect runs, its own timeout decides (as when it blocked).
                    if !(t == Timer::ConnectRetry && d.connecting.is_some()) {
                        d.input(Input::TimerExpired(t)).await;
                    }
                }
            }
            res = async { match connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                d.connecting = None;
                let input = d.connected(res);
                d.input(input).await;
            }
            msg = async { match conn.as_mut() { Some(c) => c.next().await, None => std::future::pending().await } } => {
                let input = match msg {
                    Some(Ok(m)) => { debug!(peer = %d.peer.peer_address, ?m, "received"); Input::Received(m) }
                    Some(Err(DecodeError::Malformed { notification, detail })) => {
                        warn!(peer = %d.peer.peer_address, %detail, "malformed message");
                        Input::DecodeError(notification)
                    }
                    Some(Err(DecodeError::Io(e))) => { debug!(peer = %d.peer.peer_address, error = %e, "read failed"); Input::TcpClosed }
                    None => Input::TcpClosed,
                };
                d.input(input).await;
            }
            Some(inb) = inbound.recv() => d.incoming(inb).await,
            changed = world.changed() => {
                if changed.is_err() { break; }
                d.world = world.borrow_and_update().clone();
                if matches!(d.fsm.state(), State::OpenSent | State::OpenConfirm) {
                    d.prepare();
                }
                if let Some(i) = d.sync().await {
                    d.input(i).await;
                }
            }
        }
    }
    // The announcer dropped the world channel: stop for the reason it gave, if any.
    let reason = (*stop.borrow()).unwrap_or(StopReason::Shutdown);
    d.shutdown(reason).await;
}

impl Driver {
    /// Feeds one input and carries out the outputs (which may produce further inputs).
    async fn input(&mut self, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(i) = queue.pop_front() {
            // The peer's OPEN: our KEEPALIVE answering it brings the session up at the peer, so
            // the table is made ready first.
            if matches!(i, Input::Received(Message::Open(_))) && self.fsm.state() == State::OpenSent
            {
                self.prepare();
            }
            for out in self.fsm.handle(i) {
                if let Some(next) = self.output(out).await {
                    queue.push_back(next);
                }
            }
        }
    }

    /// A connection the peer opened: keep it or ours (RFC 4271 §6.8), close the loser with
    /// Cease / connection collision resolution.
    async fn incoming(&mut self, inb: Inbound) {
        let Inbound {
            mut conn,
            open,
            local,
        } = inb;
        let peer = self.peer.peer_address;
        if self.peer.router_id.is_none() && self.conn.is_none() {
            self.fsm.set_router_id(derived_router_id(Some(local)));
        }
        let existing = self
            .conn
            .as_ref()
            .map(|_| (self.fsm.state(), self.conn_dir));
        let decision = collision::resolve(
            existing,
            Direction::Incoming,
            self.fsm.router_id(),
            open.router_id,
        );
        info!(%peer, ?existing, ?decision, local_id = %self.fsm.router_id(), remote_id = %open.router_id, "connection from the peer");
        match decision {
            Decision::KeepExisting => {
                let cease = Notification::new(code::CEASE, code::CEASE_CONNECTION_COLLISION);
                let _ = conn.send(Message::Notification(cease)).await;
                return;
            }
            Decision::KeepNew => self.input(Input::CollisionLost).await,
            Decision::Adopt => {}
        }
        // Our own attempt (if one runs) is no longer needed.
        self.connecting = None;
        if let Err(e) = conn.get_ref().set_nodelay(true) {
            debug!(%peer, error = %e, "TCP_NODELAY");
        }
        self.conn = Some(conn);
        self.conn_dir = Direction::Incoming;
        self.local = Some(local);
        self.input(Input::TcpConnected).await;
        if self.conn.is_some() && self.fsm.state() == State::OpenSent {
            self.input(Input::Received(Message::Open(open))).await;
        }
    }

    /// The outcome of our connect attempt, as an FSM input.
    fn connected(&mut self, res: std::io::Result<TcpStream>) -> Input {
        let peer = self.peer.peer_address;
        match res {
            Ok(stream) => {
                let local = stream.local_addr().ok().map(|a| a.ip());
                self.local = local;
                if self.peer.router_id.is_none() {
                    self.fsm.set_router_id(derived_router_id(local));
                }
                info!(%peer, ?local, "TCP connected");
                // UPDATEs go out in large writes; a small tail need not wait for an ACK.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "TCP_NODELAY");
                }
                self.conn = Some(Framed::new(stream, Codec::default()));
                self.conn_dir = Direction::Outgoing;
                Input::TcpConnected
            }
            Err(e) => {
                debug!(%peer, error = %e, "connect failed");
                Input::TcpFailed
            }
        }
    }

    async fn output(&mut self, out: Output) -> Option<Input> {
        let peer = self.peer.peer_address;
        match out {
            Output::Connect => {
                // Runs in the select loop, so a connection from the peer is taken meanwhile.
                let p = self.peer.clone();
                self.connecting = Some(Box::pin(async move {
                    tokio::time::timeout(CONNECT_TIMEOUT, connect(&p))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                }));
                None
            }
            Output::CloseTcp => {
                self.conn = None;
                self.connecting = None;
                None
            }
            Output::Send(m) => self.send(m).await,
            Output::SetTimer(t, d) => {
                *self.timers.slot(t) = Some(Instant::now() + d);
                None
            }
            Output::CancelTimer(t) => {
                *self.timers.slot(t) = None;
                None
            }
            Output::Established {
                hold_time,
                peer_caps,
            } => {
                info!(%peer, hold_time, ?peer_caps, "session established");
                self.peer_caps = peer_caps;
                let _ = self.up.send(true);
                self.metrics.session_up.get_or_create(&self.labels).set(1);
                self.sent.clear();
                if let Some(i) = self.sync().await {
                    return Some(i);
                }
                self.send_eor().await
            }
            Output::ResendAll { afi } => {
                info!(%peer, afi, "route refresh: re-sending");
                self.sent.clear();
                if let Some(i) = self.sync().await {
                    return Some(i);
                }
                self.send_eor().await
            }
            Output::Down { reason } => {
                info!(%peer, %reason, "session down");
                let _ = self.up.send(false);
                self.metrics.session_up.get_or_create(&self.labels).set(0);
                self.metrics
                    .pending_prefixes
                    .get_or_create(&self.labels)
                    .set(i64::try_from(self.sent.len()).unwrap_or(i64::MAX));
                self.metrics
                    .announced_prefixes
                    .get_or_create(&self.labels)
                    .set(0);
                self.sent.clear();
                None
            }
        }
    }

    async fn send(&mut self, m: Message) -> Option<Input> {
        let conn = self.conn.as_mut()?;
        match conn.send(m).await {
            Ok(()) => None,
            Err(e) => {
                debug!(peer = %self.peer.peer_address, error = %e, "write failed");
                Some(Input::TcpClosed)
            }
        }
    }

    async fn send_eor(&mut self) -> Option<Input> {
        // A peer without multiprotocol capabilities speaks IPv4 unicast only (RFC 4760).
        let plain = !self.peer_caps.ipv4_unicast && !self.peer_caps.ipv6_unicast;
        let families = [
            (false, plain || self.peer_caps.ipv4_unicast),
            (true, self.peer_caps.ipv6_unicast),
        ];
        for (v6, _) in families.into_iter().filter(|(_, on)| *on) {
            match pack::end_of_rib(v6) {
                Ok(b) => {
                    if let Some(i) = self.send(Message::Update(b)).await {
                        return Some(i);
                    }
                }
                Err(e) => warn!(error = %e, "End-of-RIB"),
            }
        }
        None
    }

    /// Computes and encodes the full table for the current world and local address, unless
    /// that is already done. Runs before Established, so the routes go out at once then.
    fn prepare(&mut self) {
        let Some(local) = self.local else {
            return;
        };
        if self
            .prepared
            .as_ref()
            .is_some_and(|p| p.matches(&self.world, local))
        {
            return;
        }
        self.prepared = None;
        let start = std::time::Instant::now();
        let routes = adv::routes_for(&self.world, &self.peer, local);
        match Updates::new(&routes, &BTreeSet::new()) {
            Ok(mut enc) => {
                let mut bytes = Vec::new();
                let messages = enc.fill(&mut bytes, usize::MAX);
                debug!(peer = %self.peer.peer_address, routes = routes.len(), messages, bytes = bytes.len(), elapsed = ?start.elapsed(), "table prepared");
                self.prepared = Some(Prepared {
                    world: self.world.clone(),
                    local,
                    routes,
                    bytes,
                    messages,
                });
            }
            // `sync` meets the same error and reports it.
            Err(e) => debug!(peer = %self.peer.peer_address, error = %e, "cannot prepare routes"),
        }
    }

    /// Writes whole encoded messages: what the codec still buffers first, then `bytes`.
    async fn write_raw(&mut self, bytes: &[u8]) -> Option<Input> {
        let conn = self.conn.as_mut()?;
        let res = match conn.flush().await {
            Ok(()) => conn.get_mut().write_all(bytes).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        match res {
            Ok(()) => None,
            Err(e) => {
                debug!(peer = %self.peer.peer_address, error = %e, "write failed");
                Some(Input::TcpClosed)
            }
        }
    }

    /// Writes every UPDATE of `enc`, a chunk of many at a time, each chunk as soon as it is
    /// encoded; counts them into the metrics.
    async fn write_updates(&mut self, mut enc: Updates) -> Option<Input> {
        let mut buf = Vec::with_capacity(WRITE_CHUNK + super::codec::MAX_MESSAGE);
        loop {
            buf.clear();
            let n = enc.fill(&mut buf, WRITE_CHUNK);
            if n == 0 {
                return None;
            }
            if let Some(i) = self.write_raw(&buf).await {
                return Some(i);
            }
            self.metrics
                .updates
                .get_or_create(&self.labels)
                .inc_by(n as u64);
        }
    }

    /// Records that the peer now holds `routes`.
    fn sent_all(&mut self, routes: RouteSet) {
        self.sent = routes;
        let n = i64::try_from(self.sent.len()).unwrap_or(i64::MAX);
        self.metrics
            .announced_prefixes
            .get_or_create(&self.labels)
            .set(n);
        self.metrics
            .pending_prefixes
            .get_or_create(&self.labels)
            .set(0);
    }

    /// Sends the difference between what the peer holds and what it should hold.
    async fn sync(&mut self) -> Option<Input> {
        if self.fsm.state() != State::Established {
            return None;
        }
        let local = self.local?;
        let start = std::time::Instant::now();
        if self.sent.is_empty() {
            let (world, peer) = (&self.world, self.peer.peer_address);
            if let Some(p) = self.prepared.take_if(|p| p.matches(world, local)) {
                if p.routes.is_empty() {
                    return None;
                }
                info!(%peer, announce = p.routes.len(), withdraw = 0, updates = p.messages, "sending routes (prepared)");
                if let Some(i) = self.write_raw(&p.bytes).await {
                    return Some(i);
                }
                self.metrics
                    .updates
                    .get_or_create(&self.labels)
                    .inc_by(p.messages as u64);
                self.sent_all(p.routes);
                debug!(%peer, elapsed = ?start.elapsed(), "routes sent");
                return None;
            }
        }
        let want = adv::routes_for(&self.world, &self.peer, local);
        let (announce, withdraw) = pack::diff(&self.sent, &want);
        if announce.is_empty() && withdraw.is_empty() {
            return None;
        }
        match Updates::new(&announce, &withdraw) {
            Ok(enc) => {
                info!(peer = %self.peer.peer_address, announce = announce.len(), withdraw = withdraw.len(), "sending routes");
                if let Some(i) = self.write_updates(enc).await {
                    return Some(i);
                }
                self.sent_all(want);
                debug!(peer = %self.peer.peer_address, elapsed = ?start.elapsed(), "routes sent");
            }
            Err(e) => warn!(peer = %self.peer.peer_address, error = %e, "cannot encode routes"),
        }
        None
    }

    /// Withdraws everything, sends Cease, closes.
    async fn shutdown(&mut self, reason: StopReason) {
        if self.fsm.state() == State::Established && !self.sent.is_empty() {
            let withdraw = self.sent.keys().copied().collect();
            if let Ok(enc) = Updates::new(&RouteSet::new(), &withdraw) {
                let _ = self.write_updates(enc).await;
            }
        }
        let cease_subcode = match reason {
            StopReason::Shutdown => code::CEASE_ADMIN_SHUTDOWN,
            StopReason::Removed => code::CEASE_PEER_DECONFIGURED,
        };
        for out in self.fsm.handle(Input::Stop { cease_subcode }) {
            let _ = self.output(out).await;
        }
        info!(peer = %self.peer.peer_address, ?reason, "session stopped");
    }
}
