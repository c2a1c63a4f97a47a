//! Publishing Kubernetes Events, for both roles: failures are logged, never fatal.
//!
//! Each Event is published with a fresh kube [`Recorder`]: a recorder (and every clone of it)
//! keeps each Event it published for six minutes, to count repeats as a series, and scans that
//! cache on every publish. Under churn that cache grows with the churn rate (the speaker's
//! `nodeAssigned` Events) and a burst costs O(n²) (the controller's `IPAllocated` Events for 10k
//! new Services). The roles emit each Event once per distinct outcome anyway.
//!
//! Must not: decide which Events to publish, or make a caller that must not wait for the
//! apiserver wait for it ([`EventPublisher::spawn`]).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tracing::warn;

/// The longest note kept (the apiserver refuses Events whose note exceeds 1 kB).
pub const MAX_NOTE: usize = 1000;

/// Publishes Events as one reporting component (`controller`) of one process (`instance`).
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("reporter", &self.reporter.controller)
            .finish()
    }
}

impl EventPublisher {
    pub fn new(client: Client, controller: &str, instance: String) -> EventPublisher {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: Some(instance),
        };
        EventPublisher { client, reporter }
    }

    /// Publishes an Event about the object `reference` points at and waits for the apiserver.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(fit_note(note)),
            action: reason.to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&ev, reference).await {
            warn!(reason, object = ?reference.name, error = %e, "could not publish Event");
        }
    }

    /// Publishes in a task of its own and returns at once: for a caller whose work must never
    /// wait for the apiserver (announcing does not depend on it).
    pub fn spawn(
        &self,
        reference: ObjectReference,
        warning: bool,
        reason: &'static str,
        note: String,
    ) {
        let me = self.clone();
        tokio::spawn(async move { me.publish(&reference, warning, reason, note).await });
    }
}

/// `note` cut to [`MAX_NOTE`] bytes at a character boundary, marked with " ..." when cut.
pub fn fit_note(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 10;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str(" ...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(fit_note("short".into()), "short");
        let exact = "x".repeat(MAX_NOTE);
        assert_eq!(fit_note(exact.clone()), exact, "the limit itself fits");
        let long = "é".repeat(MAX_NOTE);
        let cut = fit_note(long);
        assert!(cut.len() <= MAX_NOTE, "{}", cut.len());
        assert!(cut.ends_with("é ..."), "{cut}");
    }
}
