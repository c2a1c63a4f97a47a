//! The speaker's side of the config gate: the ConfigMap's text as its watch delivers it,
//! offered to the gate when it changes, and a turn of the gate at each rebuild
//! (`ferrolb_runtime::config::turn`: the verdict logged, `metallb_k8s_client_config_*` set). The
//! controller publishes the Events about the configuration; speakers only log.
//!
//! Must not: parse configuration (`ferrolb_config` does), publish Events, or withdraw
//! announcements because of a refusal (the configuration in force stays).

use ferrolb_config::{breakages_of, Config, ConfigGate, ServiceView};
use ferrolb_runtime::cache::Cache;
use ferrolb_runtime::config::{self as runtime, ClientMetrics};
use k8s_openapi::api::core::v1::ConfigMap;
use tracing::warn;

/// The gate, the ConfigMap text it was last offered (or is about to be), and the metrics.
#[derive(Debug)]
pub struct ConfigFeed {
    gate: ConfigGate,
    /// `namespace/name` of the ConfigMap, for logs.
    source: String,
    text: Option<String>,
    /// `text` changed since the gate last saw it.
    dirty: bool,
    metrics: ClientMetrics,
}

impl ConfigFeed {
    pub fn new(namespace: &str, config_map: &str, metrics: ClientMetrics) -> Self {
        ConfigFeed {
            gate: ConfigGate::default(),
            source: format!("{namespace}/{config_map}"),
            text: None,
            dirty: false,
            metrics,
        }
    }

    /// The ConfigMap's cache changed: remember a new text for the next turn.
    pub fn on_config_map(&mut self, cache: &Cache<ConfigMap, ConfigMap>) {
        match cache.items().values().next().map(runtime::config_text) {
            Some(t) if self.text.as_deref() != Some(t) => {
                self.text = Some(t.to_string());
                self.dirty = true;
            }
            Some(_) => {}
            None if cache.is_synced() && self.gate.active().is_none() => {
                warn!(config_map = %self.source, "config ConfigMap not found; waiting for it");
            }
            None => {}
        }
    }

    /// A turn of the gate with the Services as they are now (`services`, of class `class`).
    pub fn turn<'a>(
        &mut self,
        services_changed: bool,
        class: &str,
        services: impl IntoIterator<Item = &'a ServiceView>,
    ) {
        let text = match std::mem::take(&mut self.dirty) {
            true => self.text.as_deref(),
            false => None,
        };
        let _event = runtime::turn(
            &mut self.gate,
            text,
            services_changed,
            |candidate| breakages_of(candidate, class, services),
            &self.source,
            &self.metrics,
        );
    }

    /// The configuration in force.
    pub fn active(&self) -> Option<&Config> {
        self.gate.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::ServiceKey;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeMap;

    fn cm(text: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some("metallb-system".into());
        c.metadata.name = Some("config".into());
        c.data = Some(BTreeMap::from([("config".to_string(), text.to_string())]));
        c
    }

    const POOL_A: &str =
        "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";
    const POOL_B: &str =
        "address-pools:\n- {name: b, protocol: layer2, addresses: [198.51.100.0/28]}\n";

    #[test]
    fn a_new_text_is_offered_once_and_a_breaking_one_waits_for_its_service() {
        let metrics = ClientMetrics::default();
        let mut feed = ConfigFeed::new("metallb-system", "config", metrics.clone());
        let mut cache: Cache<ConfigMap, ConfigMap> = Cache::new(|c| c);
        cache.apply(Event::InitDone);
        feed.on_config_map(&cache);
        feed.turn(false, "ferrolb", []);
        assert!(feed.active().is_none(), "no ConfigMap yet");
        cache.apply(Event::Apply(cm(POOL_A)));
        feed.on_config_map(&cache);
        feed.turn(false, "ferrolb", []);
        assert!(feed.active().is_some_and(|c| c.pools[0].name == "a"));
        // A Service holds 192.0.2.1: pool b would take it away; refused, a stays in force.
        let mut keeper = ServiceView::new_load_balancer(ServiceKey::new("ns", "keeper"));
        keeper.ingress_ips = vec!["192.0.2.1".parse().expect("an address")];
        cache.apply(Event::Apply(cm(POOL_B)));
        feed.on_config_map(&cache);
        feed.turn(false, "ferrolb", [&keeper]);
        assert_eq!(feed.active().map(|c| c.pools[0].name.as_str()), Some("a"));
        assert_eq!(metrics.config_stale.get(), 1);
        // The same text again is not a new offer; the Service goes: b loads on the retry.
        cache.apply(Event::Apply(cm(POOL_B)));
        feed.on_config_map(&cache);
        feed.turn(true, "ferrolb", []);
        assert_eq!(feed.active().map(|c| c.pools[0].name.as_str()), Some("b"));
        assert_eq!(metrics.config_stale.get(), 0);
    }
}
