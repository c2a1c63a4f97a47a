//! Writes to the cluster: Service status through the status subresource, and Events.
//!
//! Must not: decide what to write; it carries out [`crate::reconcile`] decisions.

use std::net::IpAddr;

use ferrolb_config::ServiceKey;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde_json::json;
use tracing::warn;

use crate::reconcile::StatusChange;

/// The field manager name ferrolb writes with.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// Status patches and Events for one controller process.
///
/// Events are created with a fresh [`Recorder`] each: kube's recorder caches every Event it
/// published for six minutes (to count repeats as a series) and scans that cache on every publish,
/// which for the burst of `IPAllocated` Events of 10k new Services costs ~10k cached Events and
/// O(n²) work. The controller already emits each Event once per distinct outcome.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    pub fn new(client: Client, instance: String) -> Writer {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(instance),
        };
        Writer { client, reporter }
    }

    /// Apply a status change; returns the updated Service (None for [`StatusChange::Keep`]).
    pub async fn write_status(
        &self,
        key: &ServiceKey,
        change: &StatusChange,
    ) -> Result<Option<Service>, kube::Error> {
        let ingress = match change {
            StatusChange::Keep => return Ok(None),
            StatusChange::Set(ips) => ingress_json(ips),
            StatusChange::Clear => serde_json::Value::Null,
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch_status(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map(Some)
    }

    /// Publish an Event about the Service `reference` points at; failures are logged, never
    /// fatal.
    pub async fn service_event(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.publish(reference, warning, reason, note).await;
    }

    /// Publish an Event about the config ConfigMap; failures are logged, never fatal.
    pub async fn config_event(&self, cm: &ConfigMap, warning: bool, reason: &str, note: String) {
        self.publish(&cm.object_ref(&()), warning, reason, note)
            .await;
    }

    async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 990;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str(" ...");
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&ev, reference).await {
            warn!(reason, object = ?reference.name, error = %e, "could not publish Event");
        }
    }
}

fn ingress_json(ips: &[IpAddr]) -> serde_json::Value {
    serde_json::Value::Array(
        ips.iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect(),
    )
}
