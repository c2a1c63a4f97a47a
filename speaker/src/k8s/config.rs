//! The speaker's side of the config gate: the candidate of the configuration's sources (the
//! ConfigMap or MetalLB's custom resources, `ferrolb_runtime::config_source`) as their watches
//! deliver it, offered to the gate when it changes, and a turn of the gate at each rebuild
//! (`ferrolb_runtime::config::turn`: the verdict logged, `metallb_k8s_client_config_*` set). The
//! controller publishes the Events about the configuration; speakers only log.
//!
//! Must not: parse configuration (`ferrolb_config` does), publish Events, or withdraw
//! announcements because of a refusal (the configuration in force stays).

use ferrolb_config::{breakages_of, Config, ConfigErrors, ConfigGate, ServiceView};
use ferrolb_crds::types::ConfigurationStateStatus;
use ferrolb_runtime::config::{self as runtime, ClientMetrics};
use ferrolb_runtime::status::{configuration_state, now};
use tracing::warn;

/// The gate, the candidate it was last offered (or is about to be), and the metrics.
#[derive(Debug)]
pub struct ConfigFeed {
    gate: ConfigGate,
    /// Where the candidate came from, for logs.
    source: String,
    candidate: Option<Result<Config, ConfigErrors>>,
    /// `candidate` changed since the gate last saw it.
    dirty: bool,
    metrics: ClientMetrics,
}

impl ConfigFeed {
    /// `source` names the configuration in logs until a candidate says where it came from.
    pub fn new(source: &str, metrics: ClientMetrics) -> Self {
        ConfigFeed {
            gate: ConfigGate::default(),
            source: source.to_string(),
            candidate: None,
            dirty: false,
            metrics,
        }
    }

    /// What the sources hold changed: remember a new candidate (`source`: where it came from)
    /// for the next turn. `synced`: every source's list has been read.
    pub fn on_candidate(
        &mut self,
        candidate: Option<(String, Result<Config, ConfigErrors>)>,
        synced: bool,
    ) {
        match candidate {
            Some((source, c)) if self.candidate.as_ref() != Some(&c) => {
                self.source = source;
                self.candidate = Some(c);
                self.dirty = true;
            }
            Some(_) => {}
            None if synced && self.gate.active().is_none() => {
                warn!(source = %self.source, "no configuration found (no config ConfigMap, no metallb.io objects); waiting for one");
            }
            None => {}
        }
    }

    /// A turn of the gate with the Services as they are now (`services`, of class `class`);
    /// what this speaker's ConfigurationState should now say, if anything new.
    pub fn turn<'a>(
        &mut self,
        services_changed: bool,
        class: &str,
        services: impl IntoIterator<Item = &'a ServiceView>,
    ) -> Option<ConfigurationStateStatus> {
        let new = match std::mem::take(&mut self.dirty) {
            true => self.candidate.clone(),
            false => None,
        };
        let (verdict, _event) = runtime::turn_with_verdict(
            &mut self.gate,
            new,
            services_changed,
            |candidate| breakages_of(candidate, class, services),
            &self.source,
            &self.metrics,
        );
        configuration_state(&verdict, &now())
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

    const POOL_A: &str =
        "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";
    const POOL_B: &str =
        "address-pools:\n- {name: b, protocol: layer2, addresses: [198.51.100.0/28]}\n";

    fn from(text: &str) -> Option<(String, Result<Config, ConfigErrors>)> {
        Some(("metallb-system/config".into(), ferrolb_config::parse(text)))
    }

    #[test]
    fn a_new_candidate_is_offered_once_and_a_breaking_one_waits_for_its_service() {
        let metrics = ClientMetrics::default();
        let mut feed = ConfigFeed::new("metallb-system/config", metrics.clone());
        feed.on_candidate(None, true);
        assert_eq!(feed.turn(false, "ferrolb", []), None);
        assert!(feed.active().is_none(), "no configuration yet");
        feed.on_candidate(from(POOL_A), true);
        let state = feed
            .turn(false, "ferrolb", [])
            .expect("a ConfigurationState");
        assert_eq!(state.result.as_deref(), Some("Valid"));
        assert!(feed.active().is_some_and(|c| c.pools[0].name == "a"));
        // A Service holds 192.0.2.1: pool b would take it away; refused, a stays in force.
        let mut keeper = ServiceView::new_load_balancer(ServiceKey::new("ns", "keeper"));
        keeper.ingress_ips = vec!["192.0.2.1".parse().expect("an address")];
        feed.on_candidate(from(POOL_B), true);
        let state = feed
            .turn(false, "ferrolb", [&keeper])
            .expect("a ConfigurationState");
        assert_eq!(state.result.as_deref(), Some("Invalid"));
        assert!(
            state
                .error_summary
                .as_deref()
                .is_some_and(|s| s.contains("service ns/keeper ip 192.0.2.1")),
            "{state:?}"
        );
        assert_eq!(feed.active().map(|c| c.pools[0].name.as_str()), Some("a"));
        assert_eq!(metrics.config_stale.get(), 1);
        // The same candidate again is not a new offer; the Service goes: b loads on the retry.
        feed.on_candidate(from(POOL_B), true);
        feed.turn(true, "ferrolb", []);
        assert_eq!(feed.active().map(|c| c.pools[0].name.as_str()), Some("b"));
        assert_eq!(metrics.config_stale.get(), 0);
    }
}
