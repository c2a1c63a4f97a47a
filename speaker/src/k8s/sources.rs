//! The speaker's watches (Services, EndpointSlices, Nodes, and the configuration's sources: the
//! config ConfigMap and MetalLB's custom resources), each feeding its cache with what the
//! speaker keeps of the objects, multiplexed into one stream of changes.
//!
//! Must not: act on a change (the shell arms its rebuild), or keep more of an object than
//! [`super::convert`] and [`super::nodes`] keep.

use ferrolb_config::source::Source;
use ferrolb_runtime::cache::Watched;
use ferrolb_runtime::config_source::ConfigSources;
use ferrolb_runtime::watch::Watch;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;

use super::convert::{self, CachedService, CachedSlice};
use super::nodes;

/// What one watch event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The Services (true when the cached set changed).
    Services(bool),
    /// The configuration's sources (true when what they hold changed).
    Config(bool),
    /// EndpointSlices or Nodes.
    Other,
}

/// The watched kinds and their caches.
#[derive(Debug)]
pub struct Sources {
    pub services: Watched<Service, CachedService>,
    pub slices: Watched<EndpointSlice, CachedSlice>,
    pub nodes: Watched<Node, Node>,
    pub config: ConfigSources,
}

impl Sources {
    /// Starts the watches: every Service, EndpointSlice and Node, and the configuration's
    /// `source` in `namespace` (ConfigMap `config_map`); each event is counted in `updates`.
    pub async fn watch(
        client: &Client,
        namespace: &str,
        config_map: &str,
        source: Source,
        updates: &Counter,
    ) -> Self {
        let config =
            ConfigSources::start(client, namespace, config_map, source, false, updates).await;
        let all = watcher::Config::default;
        let c = client.clone();
        let u = updates.clone();
        Sources {
            services: Watched::new(
                Watch::of("Service", u.clone(), Api::all(c.clone()), all()),
                convert::cached_service,
            ),
            slices: Watched::new(
                Watch::of("EndpointSlice", u.clone(), Api::all(c.clone()), all()),
                convert::cached_slice,
            ),
            nodes: Watched::new(
                Watch::of("Node", u.clone(), Api::all(c.clone()), all()),
                nodes::cached_node,
            ),
            config,
        }
    }

    /// True once every list has been read.
    pub fn synced(&self) -> bool {
        self.services.cache().is_synced()
            && self.slices.cache().is_synced()
            && self.nodes.cache().is_synced()
            && self.config.synced()
    }

    /// Takes in the next event of any watch. Cancel-safe; `select!` picks fairly among the
    /// watches with events ready.
    pub async fn next(&mut self) -> Change {
        tokio::select! {
            changed = self.services.next() => Change::Services(changed),
            _ = self.slices.next() => Change::Other,
            _ = self.nodes.next() => Change::Other,
            changed = self.config.next() => Change::Config(changed),
        }
    }
}
