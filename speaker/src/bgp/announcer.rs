//! The BGP [`Announcer`]: one session task per peer that selects this node.
//!
//! `apply` hands every new world to the running sessions, starts sessions for new peers and
//! stops (withdraw + Cease "peer de-configured") those whose peer left the config or changed;
//! unchanged peers keep their sessions. Must not: block in `apply` or decide routes itself.

use std::sync::Arc;
use std::time::Duration;

use ferrolb_config::Peer;
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::listener::Listener;
use super::metrics::BgpMetrics;
use super::session::{self, Inbound, StopReason};
use crate::world::{Announcer, World};

/// How long shutdown waits for each session to withdraw and send its Cease.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Session {
    peer: Peer,
    world: watch::Sender<Arc<World>>,
    stop: watch::Sender<Option<StopReason>>,
    up: watch::Receiver<bool>,
    /// Connections the listener accepted from this peer.
    inbound: mpsc::Sender<Inbound>,
    task: JoinHandle<()>,
}

/// BGP announcer over in-process sessions.
#[derive(Debug)]
pub struct BgpAnnouncer {
    metrics: BgpMetrics,
    /// Taken from the first `apply` when not given (apply runs inside the runtime).
    runtime: Option<Handle>,
    sessions: Vec<Session>,
    /// `--bgp-listen`: accepts connections from this node's peers only.
    listener: Option<Listener>,
}

impl BgpAnnouncer {
    /// Sessions run on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        BgpAnnouncer {
            metrics: BgpMetrics::default(),
            runtime: Some(runtime),
            sessions: Vec::new(),
            listener: None,
        }
    }

    /// Sessions run on the runtime that calls the first `apply`; they count into `metrics`
    /// (see [`BgpMetrics::register`]).
    pub fn start(metrics: BgpMetrics) -> Self {
        BgpAnnouncer {
            metrics,
            runtime: None,
            sessions: Vec::new(),
            listener: None,
        }
    }

    /// Also accepts BGP connections on `addrs` (bound now, so a busy port fails here), from the
    /// configured peers of this node only; see [`Listener`].
    pub fn with_listener(mut self, addrs: &[std::net::SocketAddr]) -> std::io::Result<Self> {
        if !addrs.is_empty() {
            self.listener = Some(Listener::bind(addrs)?);
        }
        Ok(self)
    }

    /// The listener's bound addresses (empty without one).
    pub fn listen_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listener
            .as_ref()
            .map(Listener::local_addrs)
            .unwrap_or_default()
    }

    /// Peer addresses with whether each session is Established, in config order.
    pub fn session_states(&self) -> Vec<(std::net::IpAddr, bool)> {
        self.sessions
            .iter()
            .map(|s| (s.peer.peer_address, *s.up.borrow()))
            .collect()
    }

    fn stop(s: Session, reason: StopReason) -> JoinHandle<()> {
        let _ = s.stop.send(Some(reason));
        s.task
    }
}

impl Announcer for BgpAnnouncer {
    fn name(&self) -> &'static str {
        "bgp"
    }

    fn apply(&mut self, world: Arc<World>) {
        let runtime = match self.runtime.clone().map_or_else(Handle::try_current, Ok) {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "BGP announcer applied outside a tokio runtime: ignored");
                return;
            }
        };
        self.runtime = Some(runtime.clone());
        let wanted: Vec<&Peer> = world
            .config
            .peers
            .iter()
            .filter(|p| p.selects_node(&world.node.labels))
            .collect();
        let (keep, gone): (Vec<Session>, Vec<Session>) = std::mem::take(&mut self.sessions)
            .into_iter()
            .partition(|s| wanted.contains(&&s.peer));
        for s in gone {
            info!(peer = %s.peer.peer_address, "peer removed from config: stopping session");
            drop(Self::stop(s, StopReason::Removed));
        }
        self.sessions = keep;
        for s in &self.sessions {
            let _ = s.world.send(world.clone());
        }
        for peer in wanted {
            if self.sessions.iter().any(|s| &s.peer == peer) {
                continue;
            }
            info!(peer = %peer.peer_address, peer_asn = peer.peer_asn, "starting session");
            let (world_tx, world_rx) = watch::channel(world.clone());
            let (stop_tx, stop_rx) = watch::channel(None);
            let (up_tx, up_rx) = watch::channel(false);
            let (inbound_tx, inbound_rx) = mpsc::channel(4);
            let task = runtime.spawn(session::run(
                peer.clone(),
                world_rx,
                stop_rx,
                up_tx,
                self.metrics.clone(),
                inbound_rx,
            ));
            self.sessions.push(Session {
                peer: peer.clone(),
                world: world_tx,
                stop: stop_tx,
                up: up_rx,
                inbound: inbound_tx,
                task,
            });
        }
        if let Some(l) = self.listener.as_mut() {
            let peers: Vec<_> = self
                .sessions
                .iter()
                .map(|s| (s.peer.clone(), s.inbound.clone()))
                .collect();
            l.update(&peers, &runtime, &self.metrics.refused_connections);
        }
    }

    fn shutdown(&mut self) -> BoxFuture<'static, ()> {
        if let Some(l) = self.listener.as_mut() {
            l.shutdown();
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.sessions)
            .into_iter()
            .map(|s| Self::stop(s, StopReason::Shutdown))
            .collect();
        Box::pin(async move {
            for t in tasks {
                if tokio::time::timeout(SHUTDOWN_WAIT, t).await.is_err() {
                    warn!("a BGP session did not stop in time");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::Codec;
    use crate::bgp::msg::{Capabilities, Message, Open};
    use crate::world::{AssignedService, NodeInfo, Readiness};
    use ferrolb_config::{ServiceKey, ServiceView};
    use futures::{SinkExt, StreamExt};
    use netgauze_bgp_pkt::codec::BgpCodec;
    use netgauze_bgp_pkt::BgpMessage;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::bytes::BytesMut;
    use tokio_util::codec::{Decoder, Framed};

    fn world(port: u16, with_service: bool) -> Arc<World> {
        let cfg = format!(
            "peers:\n- my-asn: 64512\n  peer-asn: 64513\n  peer-address: 127.0.0.1\n  peer-port: {port}\n  hold-time: 9s\naddress-pools:\n- name: b\n  protocol: bgp\n  addresses: [198.51.100.0/24]\n"
        );
        let svc = ServiceView::new_load_balancer(ServiceKey::new("ns", "web"));
        let ips = vec!["198.51.100.10".parse().unwrap()];
        Arc::new(World {
            config: ferrolb_config::parse(&cfg).unwrap(),
            node: NodeInfo::default(),
            services: if with_service {
                vec![AssignedService::of(&svc, ips)]
            } else {
                vec![]
            },
            readiness: Readiness::AllReady,
            live_nodes: Default::default(),
            node_labels: Default::default(),
        })
    }

    /// (announced, withdrawn, is End-of-RIB) of an UPDATE.
    fn update(bytes: &[u8]) -> (Vec<String>, Vec<String>, bool) {
        let (m, _) = BgpCodec::new(true)
            .decode(&mut BytesMut::from(bytes))
            .unwrap()
            .unwrap();
        let BgpMessage::Update(u) = m else {
            panic!("not an update")
        };
        (
            u.nlri()
                .iter()
                .map(|a| a.network().address().to_string())
                .collect(),
            u.withdraw_routes()
                .iter()
                .map(|a| a.network().address().to_string())
                .collect(),
            u.end_of_rib().is_some(),
        )
    }

    /// Next message that is not a KEEPALIVE.
    async fn next(c: &mut Framed<TcpStream, Codec>) -> Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .expect("peer message in time")
                .unwrap()
                .unwrap();
            if m != Message::Keepalive {
                return m;
            }
        }
    }

    async fn next_update(c: &mut Framed<TcpStream, Codec>) -> (Vec<String>, Vec<String>, bool) {
        match next(c).await {
            Message::Update(b) => update(&b),
            other => panic!("expected UPDATE, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn session_announces_withdraws_and_ceases_against_a_loopback_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = BgpMetrics::register(&mut registry);
        let labels = BgpMetrics::labels(([127, 0, 0, 1], port).into());
        let mut a = BgpAnnouncer::start(metrics.clone());
        a.apply(world(port, true));
        let (stream, _) = listener.accept().await.unwrap();
        let mut c = Framed::new(stream, Codec::default());
        let Message::Open(open) = next(&mut c).await else {
            panic!("expected OPEN")
        };
        assert_eq!(open.asn, 64512);
        assert_eq!(open.hold_time, 9);
        assert_eq!(open.router_id, std::net::Ipv4Addr::new(127, 0, 0, 1));
        assert!(open.caps.ipv6_unicast && open.caps.route_refresh);
        c.send(Message::Open(Open {
            asn: 64513,
            hold_time: 9,
            router_id: "192.0.2.99".parse().unwrap(),
            caps: Capabilities {
                four_octet_asn: Some(64513),
                ipv4_unicast: true,
                ipv6_unicast: true,
                route_refresh: true,
            },
        }))
        .await
        .unwrap();
        c.send(Message::Keepalive).await.unwrap();

        assert_eq!(
            next_update(&mut c).await,
            (vec!["198.51.100.10/32".into()], vec![], false)
        );
        assert!(next_update(&mut c).await.2, "IPv4 End-of-RIB");
        assert!(next_update(&mut c).await.2, "IPv6 End-of-RIB");
        assert_eq!(
            a.session_states(),
            vec![("127.0.0.1".parse().unwrap(), true)]
        );
        assert_eq!(metrics.session_up.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.announced_prefixes.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.updates.get_or_create(&labels).get(), 1);

        // The Service goes: only a withdrawal is sent.
        a.apply(world(port, false));
        assert_eq!(
            next_update(&mut c).await,
            (vec![], vec!["198.51.100.10/32".into()], false)
        );
        // Route refresh re-sends (nothing now, then End-of-RIB).
        a.apply(world(port, true));
        assert_eq!(next_update(&mut c).await.0, vec!["198.51.100.10/32"]);
        c.send(Message::RouteRefresh { afi: 1, safi: 1 })
            .await
            .unwrap();
        assert_eq!(next_update(&mut c).await.0, vec!["198.51.100.10/32"]);
        assert!(next_update(&mut c).await.2);
        assert!(next_update(&mut c).await.2);

        // Shutdown: withdraw, then Cease / administrative shutdown.
        a.shutdown().await;
        assert_eq!(next_update(&mut c).await.1, vec!["198.51.100.10/32"]);
        match next(&mut c).await {
            Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 2)),
            other => panic!("expected Cease, got {other:?}"),
        }
        assert_eq!(metrics.session_up.get_or_create(&labels).get(), 0);
    }

    /// World with the given peers (as `(port, peer-asn)`) and the service.
    fn world_peers(peers: &[(u16, u32)]) -> Arc<World> {
        let mut cfg = String::from("peers:\n");
        for (port, asn) in peers {
            cfg.push_str(&format!(
                "- my-asn: 64512\n  peer-asn: {asn}\n  peer-address: 127.0.0.1\n  peer-port: {port}\n"
            ));
        }
        cfg.push_str(
            "address-pools:\n- name: b\n  protocol: bgp\n  addresses: [198.51.100.0/24]\n",
        );
        let mut w = (*world(1, true)).clone();
        w.config = ferrolb_config::parse(&cfg).unwrap();
        Arc::new(w)
    }

    async fn establish(listener: &TcpListener) -> Framed<TcpStream, Codec> {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("connection in time")
            .unwrap();
        let mut c = Framed::new(stream, Codec::default());
        assert!(matches!(next(&mut c).await, Message::Open(_)));
        c.send(Message::Open(Open {
            asn: 64513,
            hold_time: 90,
            router_id: "192.0.2.99".parse().unwrap(),
            caps: Capabilities::default(),
        }))
        .await
        .unwrap();
        c.send(Message::Keepalive).await.unwrap();
        c
    }

    #[tokio::test]
    async fn config_change_keeps_unchanged_sessions_and_ceases_removed_ones() {
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (p1, p2) = (
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port(),
        );
        let mut a = BgpAnnouncer::start(BgpMetrics::default());
        a.apply(world_peers(&[(p1, 64513)]));
        let mut c1 = establish(&l1).await;
        assert_eq!(next_update(&mut c1).await.0, vec!["198.51.100.10/32"]);
        assert!(next_update(&mut c1).await.2);

        // A second peer appears: the first session stays, the second one starts.
        a.apply(world_peers(&[(p1, 64513), (p2, 64513)]));
        let mut c2 = establish(&l2).await;
        assert_eq!(next_update(&mut c2).await.0, vec!["198.51.100.10/32"]);
        assert_eq!(a.session_states().len(), 2);
        // Nothing new on the first session (no re-sent routes, no NOTIFICATION, no reconnect).
        let quiet = tokio::time::timeout(Duration::from_millis(500), c1.next()).await;
        assert!(
            matches!(quiet, Err(_) | Ok(Some(Ok(Message::Keepalive)))),
            "{quiet:?}"
        );

        // The first peer leaves the config: withdrawal, then Cease / peer de-configured.
        a.apply(world_peers(&[(p2, 64513)]));
        assert_eq!(next_update(&mut c1).await.1, vec!["198.51.100.10/32"]);
        match next(&mut c1).await {
            Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 3)),
            other => panic!("expected Cease, got {other:?}"),
        }
        assert_eq!(a.session_states().len(), 1);
        a.shutdown().await;
    }

    /// A port nothing listens on: our outgoing connections to it fail.
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    /// A connection to `to` from `from` (a loopback address).
    async fn connect_from(from: &str, to: std::net::SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    }

    fn peer_open(router_id: &str) -> Message {
        Message::Open(Open {
            asn: 64513,
            hold_time: 9,
            router_id: router_id.parse().unwrap(),
            caps: Capabilities {
                four_octet_asn: Some(64513),
                ipv4_unicast: true,
                ipv6_unicast: false,
                route_refresh: true,
            },
        })
    }

    async fn expect_cease_collision(c: &mut Framed<TcpStream, Codec>) {
        match next(c).await {
            Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 7)),
            other => panic!("expected Cease 6/7, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn listener_accepts_only_configured_peers_and_the_session_runs_on_it() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = BgpMetrics::register(&mut registry);
        let mut a = BgpAnnouncer::start(metrics.clone())
            .with_listener(&["127.0.0.1:0".parse().unwrap()])
            .unwrap();
        let listen = a.listen_addrs()[0];
        // Our own dialling fails (nothing on the peer port): only the listener can bring it up.
        a.apply(world(closed_port().await, true));

        // 127.0.0.2 is not a configured peer: closed before a single byte.
        let mut s = connect_from("127.0.0.2", listen).await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .expect("closed in time")
        .unwrap_or(0);
        assert_eq!(n, 0, "no bytes to an unconfigured address");
        assert_eq!(metrics.refused_connections.get(), 1);

        // 127.0.0.1 is the peer: OPEN both ways, KEEPALIVE, then the routes and End-of-RIB.
        let mut c = Framed::new(connect_from("127.0.0.1", listen).await, Codec::default());
        c.send(peer_open("192.0.2.99")).await.unwrap();
        let Message::Open(open) = next(&mut c).await else {
            panic!("expected OPEN")
        };
        assert_eq!(open.asn, 64512);
        assert_eq!(open.router_id, std::net::Ipv4Addr::new(127, 0, 0, 1));
        c.send(Message::Keepalive).await.unwrap();
        assert_eq!(
            next_update(&mut c).await,
            (vec!["198.51.100.10/32".into()], vec![], false)
        );
        assert!(next_update(&mut c).await.2, "IPv4 End-of-RIB");
        assert_eq!(
            a.session_states(),
            vec![("127.0.0.1".parse().unwrap(), true)]
        );
        assert_eq!(metrics.refused_connections.get(), 1);
        a.shutdown().await;
        assert_eq!(next_update(&mut c).await.1, vec!["198.51.100.10/32"]);
    }

    /// Our outgoing connection is in OpenSent when the peer's own connection arrives: the one
    /// opened by the higher BGP Identifier survives, the other gets Cease 6/7.
    #[tokio::test]
    async fn connection_collision_keeps_the_higher_identifiers_connection() {
        // (peer's router id, whether the peer's incoming connection wins). Ours is 127.0.0.1.
        for (peer_id, incoming_wins) in [("192.0.2.99", true), ("10.0.0.1", false)] {
            let peer_side = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut a = BgpAnnouncer::start(BgpMetrics::default())
                .with_listener(&["127.0.0.1:0".parse().unwrap()])
                .unwrap();
            let listen = a.listen_addrs()[0];
            a.apply(world(peer_side.local_addr().unwrap().port(), true));
            let (out_stream, _) = tokio::time::timeout(Duration::from_secs(10), peer_side.accept())
                .await
                .expect("outgoing connection")
                .unwrap();
            let mut outgoing = Framed::new(out_stream, Codec::default());
            assert!(matches!(next(&mut outgoing).await, Message::Open(_)));
            // The peer also connects (collision) and sends its OPEN there.
            let mut incoming =
                Framed::new(connect_from("127.0.0.1", listen).await, Codec::default());
            incoming.send(peer_open(peer_id)).await.unwrap();
            let (mut keep, mut lose) = if incoming_wins {
                (incoming, outgoing)
            } else {
                (outgoing, incoming)
            };
            expect_cease_collision(&mut lose).await;
            if incoming_wins {
                assert!(
                    matches!(next(&mut keep).await, Message::Open(_)),
                    "{peer_id}"
                );
            } else {
                keep.send(peer_open(peer_id)).await.unwrap();
            }
            keep.send(Message::Keepalive).await.unwrap();
            assert_eq!(
                next_update(&mut keep).await.0,
                vec!["198.51.100.10/32"],
                "{peer_id}"
            );
            assert!(a.session_states()[0].1, "{peer_id}: Established");
            a.shutdown().await;
        }
    }

    #[tokio::test]
    async fn silent_peer_trips_the_hold_timer_and_session_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut a = BgpAnnouncer::new(Handle::current());
        a.apply(world(port, false));
        let (stream, _) = listener.accept().await.unwrap();
        let mut c = Framed::new(stream, Codec::default());
        assert!(matches!(next(&mut c).await, Message::Open(_)));
        c.send(Message::Open(Open {
            asn: 64513,
            hold_time: 3,
            router_id: "192.0.2.99".parse().unwrap(),
            caps: Capabilities::default(),
        }))
        .await
        .unwrap();
        c.send(Message::Keepalive).await.unwrap();
        // Stay silent: after ~3 s the speaker sends Hold Timer Expired and reconnects.
        let started = std::time::Instant::now();
        loop {
            match next(&mut c).await {
                Message::Notification(n) => {
                    assert_eq!(n.code, 4);
                    break;
                }
                Message::Update(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("reconnect")
            .unwrap();
        let mut c = Framed::new(stream, Codec::default());
        assert!(matches!(next(&mut c).await, Message::Open(_)));
        a.shutdown().await;
    }
}
