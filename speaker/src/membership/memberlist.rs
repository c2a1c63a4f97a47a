//! [`Membership`] over the `memberlist` crate (SWIM gossip over UDP + TCP, tokio).
//!
//! Keeps a `watch` of live node names fed only by memberlist's event delegate (its `members()`
//! list keeps dead nodes marked alive). Messages are AES-GCM encrypted with a key derived from
//! the shared secret; messages without it are rejected, so a node with another secret never
//! appears. Not wire-compatible with Go's hashicorp/memberlist (MetalLB speakers).
//!
//! Must not: log the secret; decide announcements.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use memberlist::delegate::{
    CompositeDelegate, EventKind, EventSubscriber, SubscribleEventDelegate, VoidDelegate,
};
use memberlist::net::NetTransportOptions;
use memberlist::proto::{EncryptionAlgorithm, MaybeResolvedAddress, SecretKey};
use memberlist::tokio::{TokioSocketAddrResolver, TokioTcp, TokioTcpMemberlist};
use memberlist::Options;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::live::{self, Change};
use super::profile::{fmt_duration, Overrides, Profile, Timers};
use super::secret::{derive_key, load_secret};
use super::{Membership, MembershipError};

type Id = Arc<str>;
type Events = SubscribleEventDelegate<Id, SocketAddr>;
type Delegate = CompositeDelegate<
    Id,
    SocketAddr,
    VoidDelegate<Id, SocketAddr>,
    VoidDelegate<Id, SocketAddr>,
    Events,
>;
type List = TokioTcpMemberlist<Id, TokioSocketAddrResolver, Delegate>;

/// How often a node that sees no peer retries its join addresses.
const REJOIN_EVERY: Duration = Duration::from_secs(1);
/// How long a graceful leave waits for the leave message to be gossiped.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one memberlist member.
#[derive(Clone)]
pub struct MemberlistConfig {
    /// This node's name (`--node`); unique in the cluster.
    pub node: String,
    /// UDP + TCP address to bind (port 0 picks a free port; default port 7946).
    pub bind: SocketAddr,
    /// Address announced to others (default: the bound address).
    pub advertise: Option<SocketAddr>,
    /// Peers to join; retried every second while this node sees no peer.
    pub join: Vec<SocketAddr>,
    /// Shared secret (any length); `None` runs unencrypted.
    pub secret: Option<Vec<u8>>,
    /// Failure-detection timers.
    pub timers: Timers,
}

impl std::fmt::Debug for MemberlistConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberlistConfig")
            .field("node", &self.node)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timers", &self.timers)
            .finish()
    }
}

impl MemberlistConfig {
    /// A config with the default (`fast`) timers, no join addresses and no secret.
    pub fn new(node: impl Into<String>, bind: SocketAddr) -> Self {
        MemberlistConfig {
            node: node.into(),
            bind,
            advertise: None,
            join: Vec::new(),
            secret: None,
            timers: Timers::of(Profile::default()),
        }
    }

    /// A config from command-line flags: the timers of `profile` with `overrides` (validated
    /// first, so a bad timer is reported before the secret is read); the secret comes from
    /// `secret_file`, else from `FERROLB_ML_SECRET`, else there is none (gossip unencrypted,
    /// with a warning at start).
    pub fn from_flags(
        node: &str,
        bind: SocketAddr,
        join: &[SocketAddr],
        secret_file: Option<&Path>,
        profile: Profile,
        overrides: &Overrides,
    ) -> Result<Self, MembershipError> {
        let mut cfg = MemberlistConfig::new(node, bind);
        cfg.timers = Timers::with_overrides(profile, overrides)?;
        cfg.join = join.iter().copied().filter(|a| *a != bind).collect();
        cfg.secret = load_secret(secret_file)?;
        Ok(cfg)
    }
}

/// A running memberlist member.
pub struct MemberlistMembership {
    list: List,
    live: watch::Receiver<BTreeSet<String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl MemberlistMembership {
    /// Binds, starts gossiping and (in the background) joins `cfg.join`.
    pub async fn start(cfg: MemberlistConfig) -> Result<Self, MembershipError> {
        let start_err = |reason: String| MembershipError::Start {
            bind: cfg.bind.to_string(),
            reason,
        };
        let (events, subscriber) = SubscribleEventDelegate::unbounded();
        let delegate = CompositeDelegate::new().with_event_delegate(events);
        let mut topts = NetTransportOptions::<Id, TokioSocketAddrResolver, TokioTcp>::new(
            Arc::from(cfg.node.as_str()),
        );
        topts.add_bind_address(cfg.bind);
        if let Some(adv) = cfg.advertise {
            topts = topts.with_advertise_address(adv);
        }
        let list = List::with_delegate(delegate, topts, options(&cfg))
            .await
            .map_err(|e| start_err(e.to_string()))?;
        let me = cfg.node.clone();
        let (tx, rx) = watch::channel(BTreeSet::from([me.clone()]));
        tracing::info!(
            node = %me,
            bind = %list.advertise_address(),
            encrypted = cfg.secret.is_some(),
            probe_interval = %fmt_duration(cfg.timers.probe_interval),
            probe_timeout = %fmt_duration(cfg.timers.probe_timeout),
            suspicion_mult = cfg.timers.suspicion_mult,
            gossip_interval = %fmt_duration(cfg.timers.gossip_interval),
            tcp_timeout = %fmt_duration(cfg.timers.tcp_timeout),
            "membership: memberlist started"
        );
        if cfg.secret.is_none() {
            tracing::warn!(node = %me, "membership: no shared secret, gossip is not encrypted");
        }
        let mut tasks = vec![tokio::spawn(follow(subscriber, me, tx))];
        if !cfg.join.is_empty() {
            tasks.push(tokio::spawn(keep_joined(
                list.clone(),
                cfg.join.clone(),
                rx.clone(),
            )));
        }
        Ok(MemberlistMembership {
            list,
            live: rx,
            tasks,
        })
    }

    /// The address others reach this member at (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        *self.list.advertise_address()
    }

    /// Stops gossiping without a leave message: to the others this looks like a crash.
    pub async fn shutdown(&self) -> Result<(), MembershipError> {
        for t in &self.tasks {
            t.abort();
        }
        self.list
            .shutdown()
            .await
            .map_err(|e| MembershipError::Leave {
                reason: e.to_string(),
            })
    }
}

impl std::fmt::Debug for MemberlistMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberlistMembership")
            .field("node", &self.list.local_id())
            .field("address", &self.address())
            .field("live", &*self.live.borrow())
            .finish()
    }
}

impl Drop for MemberlistMembership {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Membership for MemberlistMembership {
    fn live(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.clone()
    }

    async fn leave(&self) -> Result<(), MembershipError> {
        self.list
            .leave(LEAVE_TIMEOUT)
            .await
            .map_err(|e| MembershipError::Leave {
                reason: e.to_string(),
            })?;
        tracing::info!(node = %self.list.local_id(), "membership: left the cluster");
        self.shutdown().await
    }
}

fn options(cfg: &MemberlistConfig) -> Options {
    let t = &cfg.timers;
    let opts = Options::lan()
        .with_probe_interval(t.probe_interval)
        .with_probe_timeout(t.probe_timeout)
        .with_suspicion_mult(t.suspicion_mult)
        .with_suspicion_max_timeout_mult(t.suspicion_max_timeout_mult)
        .with_gossip_interval(t.gossip_interval)
        .with_awareness_max_multiplier(t.awareness_max_multiplier)
        .with_timeout(t.tcp_timeout)
        // A restarted speaker may come back on another address under the same name at once.
        .with_dead_node_reclaim_time(Duration::from_secs(1));
    match &cfg.secret {
        Some(secret) => opts
            .with_primary_key(SecretKey::from(derive_key(secret)))
            .with_encryption_algo(EncryptionAlgorithm::NoPadding)
            .with_gossip_verify_incoming(true)
            .with_gossip_verify_outgoing(true),
        None => opts,
    }
}

/// Turns memberlist events into live-set updates until the event channel closes.
async fn follow(
    events: EventSubscriber<Id, SocketAddr>,
    me: String,
    tx: watch::Sender<BTreeSet<String>>,
) {
    while let Ok(ev) = events.recv().await {
        let name = ev.node_state().id().to_string();
        let change = match ev.kind() {
            EventKind::Join => Change::Up(name.clone()),
            EventKind::Leave => Change::Down(name.clone()),
            _ => continue,
        };
        let changed = tx.send_if_modified(|live| live::apply(live, &me, change));
        if changed {
            let now = tx.borrow().iter().cloned().collect::<Vec<_>>().join(",");
            tracing::info!(node = %me, peer = %name, event = ?ev.kind(), live = %now,
                "membership: live set changed");
        }
    }
}

/// Joins `addrs` at start and again whenever this node sees no peer (e.g. it started first).
async fn keep_joined(list: List, addrs: Vec<SocketAddr>, live: watch::Receiver<BTreeSet<String>>) {
    loop {
        if live.borrow().len() <= 1 {
            for addr in &addrs {
                match list.join(MaybeResolvedAddress::Resolved(*addr)).await {
                    Ok(_) => tracing::info!(peer = %addr, "membership: joined"),
                    Err(e) => tracing::debug!(peer = %addr, error = %e,
                        "membership: join failed, retrying"),
                }
            }
        }
        tokio::time::sleep(REJOIN_EVERY).await;
    }
}
