//! The Kubernetes source of the speaker (`ferrolb speaker`): watches Services, EndpointSlices
//! (discovery.k8s.io/v1), Nodes and the config ConfigMap ([`sources`]), turns them into a
//! [`World`](crate::world::World) ([`rebuild`]) and hands every changed world to the
//! announcers through the node lifecycle ([`crate::lifecycle`]), exactly as standalone mode
//! does with its files. This module is the shell: it multiplexes the watches, the timers and
//! membership, and stops.
//!
//! - Config: the same gate as the controller (`ferrolb_runtime::config::turn`): an unparsable
//!   configuration, or one that would take an address away from a Service, is refused; the
//!   configuration in force stays, the refusal is logged once and
//!   `metallb_k8s_client_config_stale_bool` is 1. Announcements never stop because of it.
//! - Liveness: memberlist when `--ml-bind` is given, else the Nodes' `Ready` condition.
//! - Nothing is announced until the four lists have been read once. When the apiserver goes
//!   away the watches retry with backoff and the announcements in force stay as they are.
//! - Event `nodeAssigned` on a Service when this node becomes its layer2 announcer
//!   ([`assigned`]), published without waiting.
//! - Each watched object is converted as it arrives into what the speaker reads of it
//!   ([`convert`], [`nodes`]): no managedFields, no last-applied copy, no Node images are kept.
//! - Watch events only update the caches; the world is rebuilt at most [`DEBOUNCE`] after the
//!   first event since the last rebuild (a burst costs one rebuild). [`TRIM_AFTER`] a rebuild,
//!   freed heap pages go back to the system ([`trim`]).
//!
//! Must not: decide announcements (the announcers do, from the world), or parse configuration
//! beyond handing it to `ferrolb_config`.

mod assigned;
mod config;
pub mod convert;
#[cfg(test)]
mod fixtures;
pub mod nodes;
mod rebuild;
mod sources;
pub mod status;
mod trim;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_runtime::config::ClientMetrics;
use ferrolb_runtime::debounce::Debounce;
use kube::Client;
use tokio::time::Instant;
use tracing::info;

use crate::membership::{MemberlistConfig, MembershipError};
use crate::world::Announcer;
use rebuild::Rebuilder;
use sources::Sources;

/// The reporting component of the speaker's Events.
pub const REPORTER: &str = "ferrolb-speaker";

/// Settings of one speaker process.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (the Node object and the membership name).
    pub node: String,
    /// Namespace of the config ConfigMap.
    pub namespace: String,
    /// Name of the config ConfigMap (key `config`).
    pub config_map: String,
    /// Where the configuration comes from (`--config-source`).
    pub config_source: ferrolb_config::source::Source,
    /// The `spec.loadBalancerClass` served, besides Services without a class.
    pub class: String,
    /// Memberlist settings; `None`: liveness from the Nodes' Ready condition.
    pub membership: Option<MemberlistConfig>,
    /// Also join the memberlist of every other Node's `InternalIP` at the bind port.
    pub join_from_nodes: bool,
}

/// How long after the first watch event since the last rebuild the speaker rebuilds its state
/// (the controller waits 25 ms the same way). Bounds the added announcement latency; under
/// churn, every event in this window costs one rebuild instead of one each.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// How long after a rebuild the speaker hands freed heap memory back to the system
/// ([`trim::release_free_memory`]); like [`DEBOUNCE`], later rebuilds do not postpone it.
pub const TRIM_AFTER: Duration = Duration::from_secs(2);

/// Runs until `shutdown` resolves, then leaves the membership and shuts the announcers down
/// (BGP: withdraw + Cease) within [`SHUTDOWN_DEADLINE`](crate::lifecycle::SHUTDOWN_DEADLINE).
/// `ready` becomes true once every list has been read. Fails when membership cannot start.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: ClientMetrics,
    ready: Arc<AtomicBool>,
    announcers: Vec<Box<dyn Announcer>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MembershipError> {
    if opts.membership.is_none() {
        info!(node = %opts.node, "membership off (no --ml-bind): a node counts as alive while its Node is Ready");
    }
    info!(node = %opts.node, namespace = %opts.namespace, config_map = %opts.config_map, "speaker starting");
    let mut sources = Sources::watch(
        &client,
        &opts.namespace,
        &opts.config_map,
        opts.config_source,
        &metrics.updates,
    )
    .await;
    let mut speaker = Rebuilder::new(&opts, client, metrics, announcers);
    let mut rebuild = Debounce::new(DEBOUNCE);
    let mut trim = Debounce::new(TRIM_AFTER);
    tokio::pin!(shutdown);
    loop {
        // Every event only updates the caches and arms the rebuild; the state is rebuilt when
        // it is due (at most DEBOUNCE after the first event since the last rebuild). `select!`
        // picks fairly among ready branches, so queued events are drained while the timer runs
        // and a steady stream of events cannot postpone the rebuild.
        tokio::select! {
            () = &mut shutdown => break,
            () = rebuild.due() => {
                rebuild.fire();
                trim.arm(Instant::now());
                let synced = sources.synced();
                ready.store(synced, Ordering::Relaxed);
                if synced {
                    speaker.rebuild(&sources).await?;
                }
            }
            () = trim.due() => {
                trim.fire();
                trim::release_free_memory();
            }
            change = sources.next() => {
                speaker.note(change, &sources);
                rebuild.arm(Instant::now());
            }
            () = speaker.live_changed() => rebuild.arm(Instant::now()),
        }
    }
    info!("speaker stopping");
    speaker.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebuild_delay_keeps_announcing_fast() {
        assert!(
            DEBOUNCE <= Duration::from_millis(50),
            "keeps announcing fast"
        );
    }
}
