//! The configuration as both Kubernetes roles read it: the text of the ConfigMap's
//! `data.config`, a candidate offered to the [`ConfigGate`] ([`turn`]: when to offer and
//! evaluate), and what
//! to do with the gate's verdict: log it (one line per problem, with its field path), set
//! `metallb_k8s_client_config_*`, and the Warning Event's note for the role that publishes Events.
//!
//! Must not: publish Events itself or decide anything the gate decides.

use ferrolb_config::gate::{ConfigGate, ConfigVerdict, RefusalCause};
use ferrolb_config::{Breakage, Config, ConfigErrors};
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

/// One turn of the gate ([`ConfigGate::turn`]) for the Kubernetes speaker, which has no planner:
/// a changed candidate (`new`: what the sources hold, parsed, see [`crate::config_source`]) is
/// offered and evaluated; `breakages` gives, for a
/// candidate, the addresses it would take from the Services as they are now. The verdict is
/// logged ([`report`]) and the gauges set; the return is the Event to publish about it, if any.
/// (The controller and standalone turn the gate inside their engine's pass.)
pub fn turn(
    gate: &mut ConfigGate,
    new: Option<Result<Config, ConfigErrors>>,
    services_changed: bool,
    breakages: impl FnOnce(&Config) -> Vec<Breakage>,
    source: &str,
    metrics: &ClientMetrics,
) -> Option<ConfigEvent> {
    turn_with_verdict(gate, new, services_changed, breakages, source, metrics).1
}

/// [`turn`], also returning the verdict (`Unchanged` when there was no turn), from which the
/// ConfigurationState is written (`crate::status::configuration_state`).
pub fn turn_with_verdict(
    gate: &mut ConfigGate,
    new: Option<Result<Config, ConfigErrors>>,
    services_changed: bool,
    breakages: impl FnOnce(&Config) -> Vec<Breakage>,
    source: &str,
    metrics: &ClientMetrics,
) -> (ConfigVerdict, Option<ConfigEvent>) {
    let verdict = gate.turn(new, services_changed, breakages);
    if verdict == ConfigVerdict::Unchanged {
        return (verdict, None);
    }
    let event = report(&verdict, source);
    metrics.set_from(gate);
    (verdict, event)
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
        let loaded = gate.turn(
            Some(ferrolb_config::parse(
                "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n",
            )),
            false,
            |_| Vec::new(),
        );
        let ev = report(&loaded, "ns/config").expect("an Event for a load");
        assert_eq!((ev.warning, ev.reason), (false, "ConfigLoaded"));
        let refused = gate.turn(
            Some(ferrolb_config::parse(
                "address-pools:\n- {name: a, protocol: layer3, addresses: [192.0.2.0/33]}\n",
            )),
            false,
            |_| Vec::new(),
        );
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

    const POOL_A: &str =
        "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";
    const POOL_B: &str =
        "address-pools:\n- {name: b, protocol: layer2, addresses: [198.51.100.0/28]}\n";

    fn breakage() -> Breakage {
        Breakage {
            service: ferrolb_config::ServiceKey::new("ns", "keeper"),
            ip: "192.0.2.1".parse().expect("an address"),
            reason: "outside every address pool of the new configuration".into(),
        }
    }

    /// A turn without new text whose `breakages` would load the candidate: whether the gate
    /// asked for them (evaluated) and the Event.
    fn retry(
        gate: &mut ConfigGate,
        services_changed: bool,
        m: &ClientMetrics,
    ) -> (bool, Option<ConfigEvent>) {
        let mut asked = false;
        let ev = turn(
            gate,
            None,
            services_changed,
            |_| {
                asked = true;
                Vec::new()
            },
            "s",
            m,
        );
        (asked, ev)
    }

    #[test]
    fn a_turn_offers_new_text_and_retries_a_breaking_candidate_only_when_services_change() {
        let m = ClientMetrics::default();
        let mut gate = ConfigGate::default();
        let reason = |ev: Option<ConfigEvent>| ev.map(|e| e.reason);
        // Nothing offered, nothing to retry: no turn at all.
        assert_eq!(retry(&mut gate, true, &m), (false, None));
        assert_eq!(
            reason(turn(
                &mut gate,
                Some(ferrolb_config::parse(POOL_A)),
                false,
                |_| Vec::new(),
                "s",
                &m
            )),
            Some("ConfigLoaded")
        );
        assert_eq!((m.config_loaded.get(), m.config_stale.get()), (1, 0));
        // A candidate that takes an address away is refused, once.
        let ev = turn(
            &mut gate,
            Some(ferrolb_config::parse(POOL_B)),
            false,
            |_| vec![breakage()],
            "s",
            &m,
        );
        assert_eq!(reason(ev), Some("ConfigStale"));
        assert_eq!((m.config_loaded.get(), m.config_stale.get()), (1, 1));
        // No Service changed: not evaluated again.
        assert_eq!(retry(&mut gate, false, &m), (false, None));
        // A Service changed: evaluated again; still breaking, not reported twice.
        assert_eq!(
            turn(&mut gate, None, true, |_| vec![breakage()], "s", &m),
            None
        );
        assert!(gate.is_stale());
        // The Service let go of the address: the candidate loads.
        assert_eq!(
            retry(&mut gate, true, &m),
            (
                true,
                Some(ConfigEvent {
                    warning: false,
                    reason: "ConfigLoaded",
                    note: "Configuration loaded".into()
                })
            )
        );
        assert_eq!((m.config_loaded.get(), m.config_stale.get()), (1, 0));
        // An unparsable candidate is retried only when new text comes.
        let ev = turn(
            &mut gate,
            Some(ferrolb_config::parse("address-pools: 7")),
            false,
            |_| Vec::new(),
            "s",
            &m,
        );
        assert_eq!(reason(ev), Some("ConfigStale"));
        assert_eq!(retry(&mut gate, true, &m), (false, None));
        assert_eq!(m.config_stale.get(), 1);
    }
}
