//! Watch streams as both Kubernetes roles read them: one reaction to what a stream produces.
//! An event is counted (`metallb_k8s_client_updates_total`) and handed on; an error is logged
//! and skipped (kube's watcher backs off and retries by itself, and what the role holds stays in
//! force meanwhile); a stream that ends is re-created. So a shell only ever sees events.
//!
//! Must not: decide anything from the events, or keep them (the shells and [`crate::cache`] do).

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use prometheus_client::metrics::counter::Counter;
use tracing::warn;

/// What a watch produces: events of `K`, or the errors it retries after.
pub type EventStream<K> = BoxStream<'static, watcher::Result<Event<K>>>;

/// How long a re-created stream waits before it is read, so a stream that keeps ending at once
/// cannot spin (kube's watcher does not end by itself; this is the fallback).
pub const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// A kube watch of `api` with `cfg`, retrying with kube's default backoff.
pub fn stream<K>(api: Api<K>, cfg: watcher::Config) -> EventStream<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher::watcher(api, cfg).default_backoff().boxed()
}

/// One watched kind: its stream, re-created by `make` whenever it ends.
pub struct Watch<K> {
    what: &'static str,
    updates: Counter,
    make: Box<dyn Fn() -> EventStream<K> + Send>,
    stream: EventStream<K>,
}

impl<K> std::fmt::Debug for Watch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("what", &self.what).finish()
    }
}

impl<K> Watch<K> {
    /// `what` names the kind in logs; each event is counted in `updates`.
    pub fn new(
        what: &'static str,
        updates: Counter,
        make: impl Fn() -> EventStream<K> + Send + 'static,
    ) -> Self {
        Watch {
            what,
            updates,
            stream: make(),
            make: Box::new(make),
        }
    }

    /// Watches `api` with `cfg` ([`stream`]), re-created from them when it ends.
    pub fn of(what: &'static str, updates: Counter, api: Api<K>, cfg: watcher::Config) -> Self
    where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        Self::new(what, updates, move || stream(api.clone(), cfg.clone()))
    }

    /// The kind's name in logs.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The next event. Never ends; cancel-safe (an event is handed on only when returned).
    pub async fn next(&mut self) -> Event<K> {
        loop {
            let item = self.stream.next().await;
            match self.take(item) {
                Taken::Event(ev) => return ev,
                Taken::Skipped => {}
                Taken::Restarted => tokio::time::sleep(RESTART_PAUSE).await,
            }
        }
    }

    /// The reaction to one thing the stream produced.
    fn take(&mut self, item: Option<watcher::Result<Event<K>>>) -> Taken<K> {
        match item {
            Some(Ok(ev)) => {
                self.updates.inc();
                Taken::Event(ev)
            }
            Some(Err(e)) => {
                warn!(what = self.what, error = %e, "watch error (retrying with backoff; the state in force stays)");
                Taken::Skipped
            }
            None => {
                warn!(what = self.what, "watch ended; restarting it");
                self.stream = (self.make)();
                Taken::Restarted
            }
        }
    }
}

enum Taken<K> {
    Event(Event<K>),
    Skipped,
    Restarted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn cm(name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c
    }

    fn name(ev: &Event<ConfigMap>) -> Option<String> {
        match ev {
            Event::Apply(c) | Event::Delete(c) | Event::InitApply(c) => c.metadata.name.clone(),
            Event::Init | Event::InitDone => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_skips_errors_restarts_when_it_ends_and_counts_events() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let updates = Counter::default();
        // Each stream: an event, an error, another event, then the end.
        let mut w = Watch::new("ConfigMap", updates.clone(), move || {
            let n = m.fetch_add(1, Ordering::Relaxed);
            let err = watcher::Error::NoResourceVersion;
            futures::stream::iter(vec![
                Ok(Event::Apply(cm(&format!("a{n}")))),
                Err(err),
                Ok(Event::Delete(cm(&format!("b{n}")))),
            ])
            .boxed()
        });
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(name(&w.next().await));
        }
        let want: Vec<Option<String>> = ["a0", "b0", "a1", "b1", "a2"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        assert_eq!(
            seen, want,
            "errors skipped, the stream re-created after its end"
        );
        assert_eq!(made.load(Ordering::Relaxed), 3);
        assert_eq!(updates.get(), 5, "events counted, errors not");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_at_once_is_restarted_without_spinning() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let mut w: Watch<ConfigMap> = Watch::new("ConfigMap", Counter::default(), move || {
            m.fetch_add(1, Ordering::Relaxed);
            futures::stream::empty().boxed()
        });
        let waited = tokio::time::timeout(RESTART_PAUSE * 10, w.next()).await;
        assert!(waited.is_err(), "no event from empty streams");
        let n = made.load(Ordering::Relaxed);
        assert!(
            (10..=12).contains(&n),
            "one restart per pause, not a busy loop: {n}"
        );
    }
}
