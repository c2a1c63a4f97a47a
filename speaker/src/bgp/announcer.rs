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
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::metrics::BgpMetrics;
use super::session::{self, StopReason};
use crate::world::{Announcer, World};

/// How long shutdown waits for each session to withdraw and send its Cease.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Session {
    peer: Peer,
    world: watch::Sender<Arc<World>>,
    stop: watch::Sender<Option<StopReason>>,
    up: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// BGP announcer over in-process sessions.
#[derive(Debug)]
pub struct BgpAnnouncer {
    metrics: BgpMetrics,
    /// Taken from the first `apply` when not given (apply runs inside the runtime).
    runtime: Option<Handle>,
    sessions: Vec<Session>,
}

impl BgpAnnouncer {
    /// Sessions run on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        BgpAnnouncer {
            metrics: BgpMetrics::default(),
            runtime: Some(runtime),
            sessions: Vec::new(),
        }
    }

    /// Sessions run on the runtime that calls the first `apply`; they count into `metrics`
    /// (see [`BgpMetrics::register`]).
    pub fn start(metrics: BgpMetrics) -> Self {
        BgpAnnouncer {
            metrics,
            runtime: None,
            sessions: Vec::new(),
        }
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
            let task = runtime.spawn(session::run(
                peer.clone(),
                world_rx,
                stop_rx,
                up_tx,
                self.metrics.clone(),
            ));
            self.sessions.push(Session {
                peer: peer.clone(),
                world: world_tx,
                stop: stop_tx,
                up: up_rx,
                task,
            });
        }
    }

    fn shutdown(&mut self) -> BoxFuture<'static, ()> {
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
        Arc::new(World {
            config: ferrolb_config::parse(&cfg).unwrap(),
            node: NodeInfo::default(),
            services: if with_service {
                vec![AssignedService {
                    service: svc,
                    ips: vec!["198.51.100.10".parse().unwrap()],
                }]
            } else {
                vec![]
            },
            readiness: Readiness::AllReady,
            live_nodes: Default::default(),
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
