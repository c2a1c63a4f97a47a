//! The configuration as both Kubernetes roles read it: the text of the ConfigMap's
//! `data.config`, offered to the [`ConfigGate`], and what to do with the gate's verdict: log it
//! (one line per problem, with its field path), set `metallb_k8s_client_config_*`, and the
//! Warning Event's note for the role that publishes Events.
//!
//! Must not: publish Events itself or decide anything the gate decides.

use ferrolb_config::gate::{ConfigGate, ConfigVerdict, RefusalCause};
use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// `data.config` of the ConfigMap ("" when missing).
pub fn config_text(cm: &ConfigMap) -> &str {
    cm.data
        .as_ref()
        .and_then(|d| d.get("config"))
        .map(String::as_str)
        .unwrap_or("")
}

/// The text parsed and offered to the gate.
pub fn offer_text(gate: &mut ConfigGate, text: &str) {
    gate.offer(ferrolb_config::parse(text));
}

/// MetalLB's Kubernetes-client metrics, which both roles export.
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    /// `metallb_k8s_client_config_loaded_bool`: 1 once a configuration is in force.
    pub config_loaded: Gauge,
    /// `metallb_k8s_client_config_stale_bool`: 1 while the newest configuration is refused.
    pub config_stale: Gauge,
    /// `metallb_k8s_client_updates_total`: Kubernetes object updates processed.
    pub updates: Counter,
}

impl ClientMetrics {
    /// Create the metrics and register them.
    pub fn register(registry: &mut Registry) -> ClientMetrics {
        let m = ClientMetrics::default();
        registry.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 if the configuration was loaded at least once",
            m.config_loaded.clone(),
        );
        registry.register(
            "metallb_k8s_client_config_stale_bool",
            "1 if running on a stale configuration, because the latest one was refused",
            m.config_stale.clone(),
        );
        // The client appends `_total` to counters.
        registry.register(
            "metallb_k8s_client_updates",
            "Number of Kubernetes object updates processed",
            m.updates.clone(),
        );
        m
    }

    /// The gauges after a verdict.
    pub fn set_from(&self, gate: &ConfigGate) {
        self.config_loaded.set(i64::from(gate.active().is_some()));
        self.config_stale.set(i64::from(gate.is_stale()));
    }
}

/// An Event to publish on the ConfigMap about a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Logs the verdict (a refusal once, one line per problem with its field path or Service and
/// address) and returns the Event to publish about it, if any. `source` names where the
/// configuration came from (e.g. `metallb-system/config`).
pub fn report(verdict: &ConfigVerdict, source: &str) -> Option<ConfigEvent> {
    match verdict {
        ConfigVerdict::Unchanged => None,
        ConfigVerdict::Loaded => {
            info!(source, "configuration loaded");
            Some(ConfigEvent {
                warning: false,
                reason: "ConfigLoaded",
                note: "Configuration loaded".into(),
            })
        }
        ConfigVerdict::Refused(r) if !r.first_report => None,
        ConfigVerdict::Refused(r) => {
            match &r.cause {
                RefusalCause::Breaking(breakages) => {
                    for b in breakages {
                        warn!(source, service = %b.service, ip = %b.ip, reason = %b.reason, "{}", r.summary());
                    }
                }
                RefusalCause::Unparsable(errors) => {
                    for e in errors.iter() {
                        warn!(source, path = %e.path, value = e.value.as_deref().unwrap_or(""), reason = %e.reason, problem = %e, "{}", r.summary());
                    }
                }
            }
            Some(ConfigEvent {
                warning: true,
                reason: "ConfigStale",
                note: r.event_note(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn config_text_is_data_config_or_empty() {
        let mut cm = ConfigMap::default();
        assert_eq!(config_text(&cm), "");
        cm.data = Some(BTreeMap::from([(
            "config".to_string(),
            "peers: []".to_string(),
        )]));
        assert_eq!(config_text(&cm), "peers: []");
    }

    #[test]
    fn verdicts_become_events_once() {
        let mut gate = ConfigGate::default();
        offer_text(
            &mut gate,
            "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n",
        );
        let loaded = gate.evaluate(|_| Vec::new());
        let ev = report(&loaded, "ns/config").expect("an Event for a load");
        assert_eq!((ev.warning, ev.reason), (false, "ConfigLoaded"));
        offer_text(
            &mut gate,
            "address-pools:\n- {name: a, protocol: layer3, addresses: [192.0.2.0/33]}\n",
        );
        let refused = gate.evaluate(|_| Vec::new());
        let ev = report(&refused, "ns/config").expect("an Event for a refusal");
        assert_eq!((ev.warning, ev.reason), (true, "ConfigStale"));
        assert!(ev.note.contains("address-pools[0].protocol"), "{}", ev.note);
        assert!(
            ev.note.contains("address-pools[0].addresses[0]"),
            "{}",
            ev.note
        );
        let again = gate.evaluate(|_| Vec::new());
        assert_eq!(report(&again, "ns/config"), None, "reported once");
        assert_eq!(report(&ConfigVerdict::Unchanged, "ns/config"), None);
    }
}
