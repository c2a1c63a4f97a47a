//! One rebuild of the speaker's state once the caches changed, one job per step: membership
//! started once every list has been read (joining the other Nodes when asked), the config
//! gate's turn, the live set, the world ([`crate::world::build`]) handed to the announcers
//! through the node [`Lifecycle`], and the `nodeAssigned` Events of a world handed over.
//!
//! Must not: read watches or timers (the shell in [`super`] does), or decide announcements.

use std::sync::Arc;

use ferrolb_runtime::config::ClientMetrics;
use ferrolb_runtime::events::EventPublisher;
use ferrolb_runtime::status::StatusWriter;
use kube::Client;

use super::assigned::NodeAssigned;
use super::config::ConfigFeed;
use super::sources::{Change, Sources};
use super::status::ServiceStatuses;
use super::{convert, nodes, Options, REPORTER};
use crate::lifecycle::Lifecycle;
use crate::membership::{MemberlistConfig, MembershipError};
use crate::world::build;
use crate::world::{Announcer, World};

/// How long a stopping speaker spends deleting its status objects at most.
const STATUS_CLEANUP: std::time::Duration = std::time::Duration::from_secs(2);

/// What the speaker keeps between rebuilds.
#[derive(Debug)]
pub struct Rebuilder {
    node: String,
    class: String,
    join_from_nodes: bool,
    /// Membership settings until membership is started (after the first complete read).
    membership: Option<MemberlistConfig>,
    lifecycle: Lifecycle,
    config: ConfigFeed,
    /// A Service changed since the last turn of the config gate.
    services_changed: bool,
    assigned: NodeAssigned,
    /// This node's ServiceL2Status / ServiceBGPStatus objects.
    statuses: ServiceStatuses,
    /// This node's ConfigurationState (`speaker-NODE`).
    states: Arc<StatusWriter>,
}

impl Rebuilder {
    pub fn new(
        opts: &Options,
        client: Client,
        metrics: ClientMetrics,
        announcers: Vec<Box<dyn Announcer>>,
    ) -> Self {
        let events = EventPublisher::new(client.clone(), REPORTER, opts.node.clone());
        let statuses = ServiceStatuses::start(client.clone(), &opts.namespace, &opts.node);
        let states = Arc::new(StatusWriter::new(client, &opts.namespace));
        Rebuilder {
            node: opts.node.clone(),
            class: opts.class.clone(),
            join_from_nodes: opts.join_from_nodes,
            membership: opts.membership.clone(),
            lifecycle: Lifecycle::new(announcers),
            config: ConfigFeed::new(&format!("{}/{}", opts.namespace, opts.config_map), metrics),
            services_changed: false,
            assigned: NodeAssigned::new(opts.node.clone(), events),
            statuses,
            states,
        }
    }

    /// A watch event was taken in.
    pub fn note(&mut self, change: Change, sources: &Sources) {
        match change {
            Change::Services(changed) => self.services_changed |= changed,
            Change::Config(true) => self.config.on_candidate(
                sources
                    .config
                    .candidate()
                    .map(|c| (sources.config.describe(c.from), c.config)),
                sources.config.synced(),
            ),
            Change::Config(false) | Change::Other => {}
        }
    }

    /// Resolves when membership's live set changes (see [`Lifecycle::live_changed`]).
    pub async fn live_changed(&mut self) {
        self.lifecycle.live_changed().await;
    }

    /// Rebuilds from the caches, which have all been read.
    pub async fn rebuild(&mut self, sources: &Sources) -> Result<(), MembershipError> {
        self.start_membership(sources).await?;
        let services = sources.services.cache().items().values();
        let changed = std::mem::take(&mut self.services_changed);
        let state = self
            .config
            .turn(changed, &self.class, services.map(|s| &s.view));
        if let Some(state) = state {
            // In the background: announcing never waits for the apiserver.
            let (states, node) = (self.states.clone(), self.node.clone());
            tokio::spawn(async move {
                let name = format!("speaker-{node}");
                states
                    .configuration_state(&name, "speaker", Some(&node), state)
                    .await;
            });
        }
        let Some(world) = self.world(sources) else {
            return Ok(());
        };
        if let Some(world) = self.lifecycle.apply(world) {
            self.assigned.on_world(&world, sources.services.cache());
            self.statuses.on_world(&world);
        }
        Ok(())
    }

    async fn start_membership(&mut self, sources: &Sources) -> Result<(), MembershipError> {
        let Some(cfg) = self.membership.take() else {
            return Ok(());
        };
        let nodes = sources.nodes.cache().items().values();
        let cfg = nodes::membership_config(cfg, &self.node, self.join_from_nodes, nodes);
        self.lifecycle.start_membership(cfg).await
    }

    /// The world of the caches under the configuration in force; none before one is loaded.
    fn world(&self, sources: &Sources) -> Option<World> {
        let config = self.config.active()?.clone();
        let nodes = sources.nodes.cache().items();
        let live = build::live_nodes(
            self.lifecycle.liveness(),
            || nodes::ready_nodes(nodes.values()),
            self.lifecycle.last().map(|w| &w.live_nodes),
        );
        let services = sources.services.cache().items().values();
        Some(build::world(
            config,
            nodes::node_info(&self.node, nodes.values()),
            build::assigned_views(services.map(|s| &s.view), &self.class),
            convert::readiness(sources.slices.cache().items().values()),
            live,
            || nodes::labels(nodes.values()),
        ))
    }

    /// Leaves the membership and shuts the announcers down ([`Lifecycle::stop`]).
    pub async fn stop(self) {
        self.lifecycle.stop().await;
        self.statuses.stop(STATUS_CLEANUP).await;
    }
}
