//! MetalLB's status objects as both roles write them, so that users need not read logs:
//! ConfigurationState (the controller's `controller`, each speaker's `speaker-NODE`: is the newest
//! configuration in force, and if not every problem with its field path) and the IPAddressPool
//! `status` (the controller: assigned and available addresses per family). What they say is
//! decided by pure functions here; [`StatusWriter`] writes them (server-side apply of the
//! object, then of its status subresource) and never fails the role: a cluster without MetalLB's
//! CRDs gets a warning once.
//!
//! Must not: decide anything the gate or the allocator decides, or block a role on the
//! apiserver longer than one request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrolb_config::gate::{ConfigVerdict, RefusalCause};
use ferrolb_crds::types::{
    Condition, ConfigurationState, ConfigurationStateFields, ConfigurationStateStatus,
    IPAddressPool, IPAddressPoolStatus,
};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use tracing::{debug, warn};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "ferrolb";

/// Label of a ConfigurationState: which role wrote it (`controller` or `speaker`).
pub const COMPONENT_LABEL: &str = "metallb.io/component-type";
/// Label of a speaker's ConfigurationState and status objects: its node.
pub const NODE_LABEL: &str = "metallb.io/node-name";

/// What a ConfigurationState says after `verdict` (`None`: nothing new to say). `now`: the
/// RFC 3339 time of the condition's transition.
pub fn configuration_state(verdict: &ConfigVerdict, now: &str) -> Option<ConfigurationStateStatus> {
    let (valid, reason, message, summary) = match verdict {
        ConfigVerdict::Unchanged => return None,
        ConfigVerdict::Refused(r) if !r.first_report => return None,
        ConfigVerdict::Loaded => (
            true,
            "ConfigLoaded",
            "Configuration loaded".to_string(),
            None,
        ),
        ConfigVerdict::Refused(r) => {
            let reason = match r.cause {
                RefusalCause::Breaking(_) => "ConfigBreaking",
                RefusalCause::Unparsable(_) => "ConfigInvalid",
            };
            let summary = r.problems().join("\n");
            (false, reason, r.summary().to_string(), Some(summary))
        }
    };
    Some(ConfigurationStateStatus {
        result: Some(if valid { "Valid" } else { "Invalid" }.to_string()),
        error_summary: summary,
        conditions: vec![Condition {
            type_: "Valid".to_string(),
            status: if valid { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: now.to_string(),
            observed_generation: None,
        }],
    })
}

/// An IPAddressPool's status from `(usable, in use)` per family (IPv4, IPv6).
pub fn pool_status(by_family: [(u128, u64); 2]) -> IPAddressPoolStatus {
    let n = |x: u128| i64::try_from(x).unwrap_or(i64::MAX);
    let [(u4, i4), (u6, i6)] = by_family;
    IPAddressPoolStatus {
        assigned_ipv4: n(u128::from(i4)),
        assigned_ipv6: n(u128::from(i6)),
        available_ipv4: n(u4.saturating_sub(u128::from(i4))),
        available_ipv6: n(u6.saturating_sub(u128::from(i6))),
    }
}

/// The current time as RFC 3339 (for conditions).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Writes status objects in one namespace.
pub struct StatusWriter {
    client: Client,
    namespace: String,
    /// A write failed because the kind is not served (CRD not installed): said once.
    warned: AtomicBool,
    /// The IPAddressPool statuses last written, by pool.
    pools: std::sync::Mutex<BTreeMap<String, IPAddressPoolStatus>>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl StatusWriter {
    pub fn new(client: Client, namespace: &str) -> Self {
        StatusWriter {
            client,
            namespace: namespace.to_string(),
            warned: AtomicBool::new(false),
            pools: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes the ConfigurationState `name` (labels: `component`, and `node` for a speaker).
    pub async fn configuration_state(
        &self,
        name: &str,
        component: &str,
        node: Option<&str>,
        status: ConfigurationStateStatus,
    ) {
        let mut labels = BTreeMap::from([(COMPONENT_LABEL.to_string(), component.to_string())]);
        if let Some(n) = node {
            labels.insert(NODE_LABEL.to_string(), n.to_string());
        }
        let obj = ConfigurationState {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: ConfigurationStateFields {},
            status: Some(status),
        };
        let api: Api<ConfigurationState> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = match api.patch(name, &params, &Patch::Apply(&obj)).await {
            Ok(_) => api.patch_status(name, &params, &Patch::Apply(&obj)).await,
            Err(e) => Err(e),
        };
        self.outcome("ConfigurationState", name, result.map(|_| ()));
    }

    /// Writes the status of each IPAddressPool in `statuses` that changed since the last write.
    pub async fn pools(&self, statuses: BTreeMap<String, IPAddressPoolStatus>) {
        let changed: Vec<(String, IPAddressPoolStatus)> = {
            let last = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            statuses
                .into_iter()
                .filter(|(n, s)| last.get(n) != Some(s))
                .collect()
        };
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, status) in changed {
            let patch = serde_json::json!({"status": status});
            let result = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if result.is_ok() {
                self.pools
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), status);
            }
            self.outcome("IPAddressPool status", &name, result.map(|_| ()));
        }
    }

    fn outcome(&self, what: &str, name: &str, result: Result<(), kube::Error>) {
        match result {
            Ok(()) => debug!(what, name, "status written"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    warn!(what, name, "not written: MetalLB's CRDs are not installed (manifests/base/crds.yaml), or the object is gone");
                }
            }
            Err(e) => {
                warn!(what, name, error = %e, "status not written; written again on the next change")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::gate::Refusal;
    use ferrolb_config::{ConfigError, ConfigErrors};

    #[test]
    fn a_refusal_is_invalid_with_every_problem_and_a_load_is_valid() {
        let now = "2026-12-06T10:00:00Z";
        assert_eq!(configuration_state(&ConfigVerdict::Unchanged, now), None);
        let loaded = configuration_state(&ConfigVerdict::Loaded, now).expect("a state");
        assert_eq!(loaded.result.as_deref(), Some("Valid"));
        assert_eq!(loaded.error_summary, None);
        assert_eq!(loaded.conditions[0].status, "True");
        let errors = ConfigErrors(vec![
            ConfigError::new(
                "IPAddressPool ns/p spec.addresses[0]",
                Some("192.0.2.0/33".into()),
                "invalid prefix length",
            ),
            ConfigError::new(
                "BGPPeer ns/r spec.vrf",
                Some("red".into()),
                "not implemented",
            ),
        ]);
        let refused = ConfigVerdict::Refused(Refusal {
            cause: RefusalCause::Unparsable(errors),
            first_report: true,
        });
        let s = configuration_state(&refused, now).expect("a state");
        assert_eq!(s.result.as_deref(), Some("Invalid"));
        assert_eq!(
            s.error_summary.as_deref(),
            Some("IPAddressPool ns/p spec.addresses[0] = \"192.0.2.0/33\": invalid prefix length\nBGPPeer ns/r spec.vrf = \"red\": not implemented")
        );
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str()
            ),
            ("False", "ConfigInvalid")
        );
        let again = match refused {
            ConfigVerdict::Refused(mut r) => {
                r.first_report = false;
                ConfigVerdict::Refused(r)
            }
            other => other,
        };
        assert_eq!(configuration_state(&again, now), None, "said once");
    }

    #[test]
    fn pool_status_counts_per_family() {
        let s = pool_status([(254, 3), (1u128 << 64, 1)]);
        assert_eq!((s.assigned_ipv4, s.available_ipv4), (3, 251));
        assert_eq!(s.assigned_ipv6, 1);
        assert_eq!(s.available_ipv6, i64::MAX, "a /64 does not fit: saturates");
    }
}
