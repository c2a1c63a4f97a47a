//! Writes to the cluster: Service status through the status subresource, and Events.
//!
//! Must not: decide what to write; it carries out [`crate::reconcile`] decisions.

use std::net::IpAddr;

use ferrolb_config::ServiceKey;
use ferrolb_runtime::events::EventPublisher;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::reconcile::StatusChange;

/// The field manager name ferrolb writes with.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// Status patches and Events (`ferrolb_runtime::events`: a fresh `Recorder` per Event) for one
/// controller process.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    events: EventPublisher,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    pub fn new(client: Client, instance: String) -> Writer {
        let events = EventPublisher::new(client.clone(), FIELD_MANAGER, instance);
        Writer { client, events }
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
        self.events.publish(reference, warning, reason, note).await;
    }

    /// Publish an Event about the configuration on one of its objects (the ConfigMap, or a
    /// `metallb.io` object); failures are logged, never fatal.
    pub async fn config_event(
        &self,
        target: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.events.publish(target, warning, reason, note).await;
    }
}

fn ingress_json(ips: &[IpAddr]) -> serde_json::Value {
    serde_json::Value::Array(
        ips.iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect(),
    )
}
