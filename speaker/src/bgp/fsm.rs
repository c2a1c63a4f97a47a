//! Sans-IO BGP session state machine (RFC 4271 §8), for one peer: it dials out, and a connection
//! the peer opened to our listener enters as `TcpConnected` too (collisions: `collision.rs`).
//!
//! `handle(Input) -> Vec<Output>`: the driver turns outputs into socket actions and arms the
//! timers it is told to; every timer expiry comes back as an input. Must not: touch sockets,
//! clocks or the route set (the driver sends the full set after `Output::Established`).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::msg::{code, Capabilities, Message, Notification, Open};

/// RFC 4271 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Timers the driver arms on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// What happens to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// ManualStart / AutomaticStart.
    Start,
    /// ManualStop: sends Cease with this subcode when a connection is open.
    Stop {
        cease_subcode: u8,
    },
    TimerExpired(Timer),
    /// TCP connection established (Tcp_CR_Acked / TcpConnectionConfirmed).
    TcpConnected,
    /// TCP connect attempt failed (TcpConnectionFails before OPEN).
    TcpFailed,
    /// The peer closed the connection or the socket failed.
    TcpClosed,
    Received(Message),
    /// The bytes from the peer did not decode: send this NOTIFICATION.
    DecodeError(Notification),
    /// Connection collision (RFC 4271 §6.8) lost by the current connection: Cease 6/7 on it,
    /// close it, and wait (Active) for the surviving connection's `TcpConnected`.
    CollisionLost,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending what precedes this output).
    CloseTcp,
    Send(Message),
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    /// The session reached Established with this negotiated hold time: send the full set and
    /// End-of-RIB.
    Established {
        hold_time: u16,
        peer_caps: Capabilities,
    },
    /// The peer asked for a route refresh: re-send the full set for this AFI.
    ResendAll {
        afi: u16,
    },
    /// The session left Established (or failed before it); routes are gone at the peer.
    Down {
        reason: String,
    },
}

/// Session parameters from the peer config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub my_asn: u32,
    pub peer_asn: u32,
    pub router_id: Ipv4Addr,
    /// Hold time we propose (seconds; 0 disables hold and keepalive timers).
    pub hold_time: u16,
    /// Configured keepalive interval; `None`: a third of the negotiated hold time.
    pub keepalive: Option<Duration>,
    /// First connect-retry delay; doubles after each failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Hold time used between sending OPEN and receiving the peer's (RFC 4271: "large", 4 minutes).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);

/// The state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    params: Params,
    state: State,
    retry: Duration,
    negotiated_hold: u16,
    peer_caps: Capabilities,
    /// Cleared by `Stop`: no automatic restart.
    running: bool,
}

impl Fsm {
    pub fn new(params: Params) -> Self {
        let retry = params.retry_initial;
        Fsm {
            params,
            state: State::Idle,
            retry,
            negotiated_hold: 0,
            peer_caps: Capabilities::default(),
            running: false,
        }
    }

    /// Sets the router id (known only once the local address of the connection is).
    pub fn set_router_id(&mut self, id: Ipv4Addr) {
        self.params.router_id = id;
    }

    /// Our BGP Identifier (unspecified until configured or learnt from a connection).
    pub fn router_id(&self) -> Ipv4Addr {
        self.params.router_id
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The current connect-retry delay (grows with failures, resets on Established).
    pub fn retry_delay(&self) -> Duration {
        self.retry
    }

    /// The OPEN we send.
    pub fn our_open(&self) -> Open {
        Open {
            asn: self.params.my_asn,
            hold_time: self.params.hold_time,
            router_id: self.params.router_id,
            caps: Capabilities {
                four_octet_asn: Some(self.params.my_asn),
                ipv4_unicast: true,
                ipv6_unicast: true,
                route_refresh: true,
            },
        }
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        use State::*;
        match (self.state, input) {
            (_, Input::Stop { cease_subcode }) => self.stop(cease_subcode),
            (Idle, Input::Start) => {
                self.running = true;
                self.connect()
            }
            (_, Input::Start) => Vec::new(),
            (Idle, Input::TimerExpired(Timer::ConnectRetry)) if self.running => self.connect(),
            (Connect | Active, Input::TimerExpired(Timer::ConnectRetry)) => self.connect(),
            // Idle: a peer connected to our listener while we waited to retry.
            (Connect | Active, Input::TcpConnected) | (Idle, Input::TcpConnected)
                if self.running =>
            {
                self.state = OpenSent;
                vec![
                    Output::CancelTimer(Timer::ConnectRetry),
                    Output::Send(Message::Open(self.our_open())),
                    Output::SetTimer(Timer::Hold, OPEN_HOLD),
                ]
            }
            (Connect, Input::TcpFailed) => {
                self.state = Active;
                let delay = self.bump_retry();
                vec![Output::SetTimer(Timer::ConnectRetry, delay)]
            }
            (OpenSent, Input::Received(Message::Open(open))) => self.on_open(open),
            (OpenConfirm, Input::Received(Message::Keepalive)) => {
                self.state = Established;
                self.retry = self.params.retry_initial;
                let mut out = self.restart_hold();
                out.push(Output::Established {
                    hold_time: self.negotiated_hold,
                    peer_caps: self.peer_caps.clone(),
                });
                out
            }
            (Established, Input::Received(Message::Keepalive | Message::Update(_))) => {
                self.restart_hold()
            }
            (Established, Input::Received(Message::RouteRefresh { afi, .. })) => {
                let mut out = self.restart_hold();
                out.push(Output::ResendAll { afi });
                out
            }
            (OpenConfirm | Established, Input::TimerExpired(Timer::Keepalive)) => {
                let mut out = vec![Output::Send(Message::Keepalive)];
                if let Some(k) = self.keepalive_interval() {
                    out.push(Output::SetTimer(Timer::Keepalive, k));
                }
                out
            }
            (OpenSent | OpenConfirm, Input::CollisionLost) => {
                self.state = Active;
                self.negotiated_hold = 0;
                vec![
                    Output::Send(Message::Notification(Notification::new(
                        code::CEASE,
                        code::CEASE_CONNECTION_COLLISION,
                    ))),
                    Output::CloseTcp,
                    Output::CancelTimer(Timer::Hold),
                    Output::CancelTimer(Timer::Keepalive),
                ]
            }
            (OpenSent | OpenConfirm | Established, Input::TimerExpired(Timer::Hold)) => self.fail(
                Some(Notification::new(code::HOLD_TIMER_EXPIRED, 0)),
                "hold timer expired",
            ),
            (OpenSent | OpenConfirm | Established, Input::Received(Message::Notification(n))) => {
                let reason = format!("peer sent NOTIFICATION {}/{}", n.code, n.subcode);
                self.fail(None, &reason)
            }
            (OpenSent | OpenConfirm | Established, Input::DecodeError(n)) => {
                let reason = format!("malformed message from peer ({}/{})", n.code, n.subcode);
                self.fail(Some(n), &reason)
            }
            (OpenSent | OpenConfirm | Established, Input::TcpClosed) => {
                self.fail(None, "connection closed")
            }
            (OpenSent | OpenConfirm | Established, Input::Received(_)) => self.fail(
                Some(Notification::new(code::FSM, 0)),
                "unexpected message for the state",
            ),
            // Stale events (a timer that fired after a state change, a late TCP event): ignore.
            _ => Vec::new(),
        }
    }

    fn connect(&mut self) -> Vec<Output> {
        self.state = State::Connect;
        vec![
            Output::SetTimer(Timer::ConnectRetry, self.retry),
            Output::Connect,
        ]
    }

    fn bump_retry(&mut self) -> Duration {
        let delay = self.retry;
        self.retry = (self.retry * 2).min(self.params.retry_max);
        delay
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        if self.negotiated_hold == 0 {
            return None;
        }
        let hold = Duration::from_secs(u64::from(self.negotiated_hold));
        let k = self.params.keepalive.unwrap_or(hold / 3);
        Some(k.min(hold / 3).max(Duration::from_millis(100)))
    }

    fn restart_hold(&self) -> Vec<Output> {
        if self.negotiated_hold == 0 {
            return Vec::new();
        }
        vec![Output::SetTimer(
            Timer::Hold,
            Duration::from_secs(u64::from(self.negotiated_hold)),
        )]
    }

    fn on_open(&mut self, open: Open) -> Vec<Output> {
        if open.asn != self.params.peer_asn {
            return self.fail(
                Some(Notification::new(code::OPEN, code::OPEN_BAD_PEER_AS)),
                "peer AS does not match the config",
            );
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return self.fail(
                Some(Notification::new(code::OPEN, code::OPEN_BAD_HOLD_TIME)),
                "peer proposed hold time 1 or 2",
            );
        }
        if open.router_id.is_unspecified() || open.router_id == self.params.router_id {
            return self.fail(
                Some(Notification::new(code::OPEN, code::OPEN_BAD_BGP_ID)),
                "peer router id is 0.0.0.0 or ours",
            );
        }
        self.negotiated_hold = open.hold_time.min(self.params.hold_time);
        self.peer_caps = open.caps;
        self.state = State::OpenConfirm;
        let mut out = vec![Output::Send(Message::Keepalive)];
        match self.keepalive_interval() {
            Some(k) => {
                out.extend(self.restart_hold());
                out.push(Output::SetTimer(Timer::Keepalive, k));
            }
            None => {
                out.push(Output::CancelTimer(Timer::Hold));
                out.push(Output::CancelTimer(Timer::Keepalive));
            }
        }
        out
    }

    /// Any error: optional NOTIFICATION, close, back to Idle, restart after the backoff.
    fn fail(&mut self, notify: Option<Notification>, reason: &str) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(n) = notify {
            out.push(Output::Send(Message::Notification(n)));
        }
        out.push(Output::CloseTcp);
        out.push(Output::CancelTimer(Timer::Hold));
        out.push(Output::CancelTimer(Timer::Keepalive));
        self.state = State::Idle;
        self.negotiated_hold = 0;
        out.push(Output::Down {
            reason: reason.to_string(),
        });
        let delay = self.bump_retry();
        out.push(Output::SetTimer(Timer::ConnectRetry, delay));
        out
    }

    fn stop(&mut self, cease_subcode: u8) -> Vec<Output> {
        self.running = false;
        let mut out = Vec::new();
        let connected = matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        );
        if connected {
            out.push(Output::Send(Message::Notification(Notification::new(
                code::CEASE,
                cease_subcode,
            ))));
        }
        if self.state != State::Idle {
            out.push(Output::CloseTcp);
        }
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Output::CancelTimer(t));
        }
        if connected {
            out.push(Output::Down {
                reason: "stopped".to_string(),
            });
        }
        self.state = State::Idle;
        self.negotiated_hold = 0;
        self.retry = self.params.retry_initial;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            my_asn: 64512,
            peer_asn: 64513,
            router_id: Ipv4Addr::new(192, 0, 2, 2),
            hold_time: 90,
            keepalive: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
        }
    }

    fn peer_open(hold: u16) -> Open {
        Open {
            asn: 64513,
            hold_time: hold,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            caps: Capabilities {
                four_octet_asn: Some(64513),
                ipv4_unicast: true,
                ipv6_unicast: true,
                route_refresh: true,
            },
        }
    }

    fn established(p: Params, peer_hold: u16) -> Fsm {
        let mut f = Fsm::new(p);
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::Received(Message::Open(peer_open(peer_hold))));
        let out = f.handle(Input::Received(Message::Keepalive));
        assert!(out.iter().any(|o| matches!(o, Output::Established { .. })));
        assert_eq!(f.state(), State::Established);
        f
    }

    fn sends_notification(out: &[Output], c: u8, sc: u8) -> bool {
        out.iter().any(|o| {
            matches!(o, Output::Send(Message::Notification(n)) if n.code == c && n.subcode == sc)
        })
    }

    #[test]
    fn idle_start_connects_and_arms_connect_retry() {
        let mut f = Fsm::new(params());
        assert_eq!(f.state(), State::Idle);
        let out = f.handle(Input::Start);
        assert_eq!(f.state(), State::Connect);
        assert_eq!(
            out,
            vec![
                Output::SetTimer(Timer::ConnectRetry, Duration::from_secs(1)),
                Output::Connect
            ]
        );
    }

    #[test]
    fn connect_failure_goes_active_with_backoff_doubling_to_max() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let out = f.handle(Input::TcpFailed);
            assert_eq!(f.state(), State::Active);
            if let [Output::SetTimer(Timer::ConnectRetry, d)] = out.as_slice() {
                delays.push(d.as_secs());
            } else {
                panic!("unexpected outputs {out:?}");
            }
            let out = f.handle(Input::TimerExpired(Timer::ConnectRetry));
            assert_eq!(f.state(), State::Connect);
            assert!(out.contains(&Output::Connect));
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn tcp_connected_sends_open_with_capabilities_and_large_hold() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        let out = f.handle(Input::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
        let open = out.iter().find_map(|o| match o {
            Output::Send(Message::Open(o)) => Some(o.clone()),
            _ => None,
        });
        let open = open.unwrap_or_else(|| panic!("no OPEN in {out:?}"));
        assert_eq!(open.asn, 64512);
        assert_eq!(open.hold_time, 90);
        assert_eq!(open.caps.four_octet_asn, Some(64512));
        assert!(open.caps.ipv4_unicast && open.caps.ipv6_unicast && open.caps.route_refresh);
        assert!(out.contains(&Output::SetTimer(Timer::Hold, OPEN_HOLD)));
        assert!(out.contains(&Output::CancelTimer(Timer::ConnectRetry)));
    }

    #[test]
    fn open_negotiates_min_hold_and_keepalive_third() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::Received(Message::Open(peer_open(30))));
        assert_eq!(f.state(), State::OpenConfirm);
        assert_eq!(out[0], Output::Send(Message::Keepalive));
        assert!(out.contains(&Output::SetTimer(Timer::Hold, Duration::from_secs(30))));
        assert!(out.contains(&Output::SetTimer(Timer::Keepalive, Duration::from_secs(10))));
    }

    #[test]
    fn configured_keepalive_is_used_when_shorter() {
        let mut p = params();
        p.keepalive = Some(Duration::from_secs(5));
        let mut f = Fsm::new(p);
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::Received(Message::Open(peer_open(90))));
        assert!(out.contains(&Output::SetTimer(Timer::Keepalive, Duration::from_secs(5))));
    }

    #[test]
    fn hold_time_zero_disables_keepalives_and_hold() {
        let mut p = params();
        p.hold_time = 0;
        let mut f = Fsm::new(p);
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::Received(Message::Open(peer_open(90))));
        assert!(out.contains(&Output::CancelTimer(Timer::Hold)));
        assert!(out.contains(&Output::CancelTimer(Timer::Keepalive)));
        assert!(!out.iter().any(|o| matches!(o, Output::SetTimer(_, _))));
        let out = f.handle(Input::Received(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        assert!(!out.iter().any(|o| matches!(o, Output::SetTimer(_, _))));
        // A keepalive timer expiry (stale) sends one but does not re-arm.
        let out = f.handle(Input::TimerExpired(Timer::Keepalive));
        assert_eq!(out, vec![Output::Send(Message::Keepalive)]);
    }

    #[test]
    fn open_with_wrong_peer_as_sends_bad_peer_as_and_restarts() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let mut o = peer_open(90);
        o.asn = 65000;
        let out = f.handle(Input::Received(Message::Open(o)));
        assert!(sends_notification(&out, code::OPEN, code::OPEN_BAD_PEER_AS));
        assert!(out.contains(&Output::CloseTcp));
        assert_eq!(f.state(), State::Idle);
        assert!(out.contains(&Output::SetTimer(
            Timer::ConnectRetry,
            Duration::from_secs(1)
        )));
        let out = f.handle(Input::TimerExpired(Timer::ConnectRetry));
        assert_eq!(f.state(), State::Connect);
        assert!(out.contains(&Output::Connect));
    }

    #[test]
    fn open_with_hold_time_two_or_bad_router_id_is_refused() {
        for (open, sub) in [
            (peer_open(2), code::OPEN_BAD_HOLD_TIME),
            (
                Open {
                    router_id: Ipv4Addr::UNSPECIFIED,
                    ..peer_open(90)
                },
                code::OPEN_BAD_BGP_ID,
            ),
            (
                Open {
                    router_id: Ipv4Addr::new(192, 0, 2, 2),
                    ..peer_open(90)
                },
                code::OPEN_BAD_BGP_ID,
            ),
        ] {
            let mut f = Fsm::new(params());
            f.handle(Input::Start);
            f.handle(Input::TcpConnected);
            let out = f.handle(Input::Received(Message::Open(open)));
            assert!(sends_notification(&out, code::OPEN, sub), "{out:?}");
            assert_eq!(f.state(), State::Idle);
        }
    }

    #[test]
    fn keepalive_in_open_confirm_establishes_with_peer_caps() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::Received(Message::Open(peer_open(90))));
        let out = f.handle(Input::Received(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        assert!(out.contains(&Output::Established {
            hold_time: 90,
            peer_caps: peer_open(90).caps
        }));
    }

    #[test]
    fn hold_timer_restarts_on_every_received_message_in_established() {
        let mut f = established(params(), 9);
        for m in [Message::Keepalive, Message::Update(vec![])] {
            let out = f.handle(Input::Received(m));
            assert_eq!(
                out,
                vec![Output::SetTimer(Timer::Hold, Duration::from_secs(9))]
            );
        }
    }

    #[test]
    fn keepalive_timer_sends_keepalive_and_rearms() {
        let mut f = established(params(), 9);
        let out = f.handle(Input::TimerExpired(Timer::Keepalive));
        assert_eq!(
            out,
            vec![
                Output::Send(Message::Keepalive),
                Output::SetTimer(Timer::Keepalive, Duration::from_secs(3))
            ]
        );
    }

    #[test]
    fn hold_timer_expiry_in_each_connected_state_notifies_and_restarts() {
        for reach in [State::OpenSent, State::OpenConfirm, State::Established] {
            let mut f = Fsm::new(params());
            f.handle(Input::Start);
            f.handle(Input::TcpConnected);
            if reach != State::OpenSent {
                f.handle(Input::Received(Message::Open(peer_open(3))));
            }
            if reach == State::Established {
                f.handle(Input::Received(Message::Keepalive));
            }
            assert_eq!(f.state(), reach);
            let out = f.handle(Input::TimerExpired(Timer::Hold));
            assert!(
                sends_notification(&out, code::HOLD_TIMER_EXPIRED, 0),
                "{out:?}"
            );
            assert!(out.contains(&Output::CloseTcp));
            assert!(out.iter().any(|o| matches!(o, Output::Down { .. })));
            assert_eq!(f.state(), State::Idle);
            let out = f.handle(Input::TimerExpired(Timer::ConnectRetry));
            assert!(out.contains(&Output::Connect), "{reach:?} must restart");
        }
    }

    #[test]
    fn route_refresh_asks_for_resend() {
        let mut f = established(params(), 90);
        let out = f.handle(Input::Received(Message::RouteRefresh { afi: 2, safi: 1 }));
        assert!(out.contains(&Output::ResendAll { afi: 2 }));
    }

    #[test]
    fn decode_error_sends_its_notification() {
        let mut f = established(params(), 90);
        let n = Notification::new(code::HEADER, 2);
        let out = f.handle(Input::DecodeError(n.clone()));
        assert_eq!(out[0], Output::Send(Message::Notification(n)));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn unexpected_message_is_fsm_error() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::Received(Message::Update(vec![])));
        assert!(sends_notification(&out, code::FSM, 0));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn peer_notification_or_close_restarts_without_sending() {
        for input in [
            Input::Received(Message::Notification(Notification::new(6, 2))),
            Input::TcpClosed,
        ] {
            let mut f = established(params(), 90);
            let out = f.handle(input);
            assert!(!out.iter().any(|o| matches!(o, Output::Send(_))));
            assert!(out.contains(&Output::CloseTcp));
            assert_eq!(f.state(), State::Idle);
        }
    }

    #[test]
    fn backoff_resets_after_established() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpFailed);
        f.handle(Input::TimerExpired(Timer::ConnectRetry));
        f.handle(Input::TcpFailed);
        assert_eq!(f.retry_delay(), Duration::from_secs(4));
        f.handle(Input::TimerExpired(Timer::ConnectRetry));
        f.handle(Input::TcpConnected);
        f.handle(Input::Received(Message::Open(peer_open(90))));
        f.handle(Input::Received(Message::Keepalive));
        assert_eq!(f.retry_delay(), Duration::from_secs(1));
    }

    #[test]
    fn stop_in_established_sends_cease_and_does_not_restart() {
        let mut f = established(params(), 90);
        let out = f.handle(Input::Stop {
            cease_subcode: code::CEASE_ADMIN_SHUTDOWN,
        });
        assert!(sends_notification(
            &out,
            code::CEASE,
            code::CEASE_ADMIN_SHUTDOWN
        ));
        assert!(out.contains(&Output::CloseTcp));
        assert_eq!(f.state(), State::Idle);
        assert!(f
            .handle(Input::TimerExpired(Timer::ConnectRetry))
            .is_empty());
    }

    #[test]
    fn stop_in_connect_or_active_closes_without_notification() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        let out = f.handle(Input::Stop {
            cease_subcode: code::CEASE_PEER_DECONFIGURED,
        });
        assert!(!out.iter().any(|o| matches!(o, Output::Send(_))));
        assert!(out.contains(&Output::CancelTimer(Timer::ConnectRetry)));
        f.handle(Input::Start);
        f.handle(Input::TcpFailed);
        assert_eq!(f.state(), State::Active);
        let out = f.handle(Input::Stop {
            cease_subcode: code::CEASE_PEER_DECONFIGURED,
        });
        assert!(out.contains(&Output::CloseTcp));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn collision_lost_sends_cease_7_closes_and_takes_the_other_connection() {
        for reach in [State::OpenSent, State::OpenConfirm] {
            let mut f = Fsm::new(params());
            f.handle(Input::Start);
            f.handle(Input::TcpConnected);
            if reach == State::OpenConfirm {
                f.handle(Input::Received(Message::Open(peer_open(90))));
            }
            assert_eq!(f.state(), reach);
            let out = f.handle(Input::CollisionLost);
            assert_eq!(
                out[0],
                Output::Send(Message::Notification(Notification::new(6, 7)))
            );
            assert!(out.contains(&Output::CloseTcp));
            assert!(!out.iter().any(|o| matches!(o, Output::Down { .. })));
            assert_eq!(f.state(), State::Active);
            // The surviving (incoming) connection: OPEN sent, then the peer's OPEN it carried.
            let out = f.handle(Input::TcpConnected);
            assert!(out
                .iter()
                .any(|o| matches!(o, Output::Send(Message::Open(_)))));
            f.handle(Input::Received(Message::Open(peer_open(90))));
            f.handle(Input::Received(Message::Keepalive));
            assert_eq!(f.state(), State::Established);
        }
        // Established never loses a collision; the input is ignored there.
        let mut f = established(params(), 90);
        assert!(f.handle(Input::CollisionLost).is_empty());
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn incoming_connection_while_waiting_to_retry_is_taken() {
        let mut f = Fsm::new(params());
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::TcpClosed);
        assert_eq!(f.state(), State::Idle);
        let out = f.handle(Input::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
        assert!(out.contains(&Output::CancelTimer(Timer::ConnectRetry)));
        // Not after a stop.
        let mut f = Fsm::new(params());
        assert!(f.handle(Input::TcpConnected).is_empty());
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn stale_timers_are_ignored() {
        let mut f = Fsm::new(params());
        assert!(f.handle(Input::TimerExpired(Timer::Hold)).is_empty());
        assert!(f.handle(Input::TimerExpired(Timer::Keepalive)).is_empty());
        assert!(f
            .handle(Input::TimerExpired(Timer::ConnectRetry))
            .is_empty());
        assert_eq!(f.state(), State::Idle);
    }
}
