//! What a shell keeps of the latest objects of one watched kind: each object `K` converted as
//! it arrives into what the shell reads of it (`V`), by `namespace/name`, replaced as a whole
//! when a (re)list completes (the old contents stay in force while a re-list is read).
//! [`Watched`] is a [`Watch`] feeding such a cache.
//!
//! Must not: keep whole objects unless the shell reads all of them, or decide anything.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;
use kube::Resource;
use tracing::info;

use crate::watch::Watch;

/// The latest objects of one kind, as the shell keeps them.
pub struct Cache<K, V> {
    items: BTreeMap<String, V>,
    buffer: BTreeMap<String, V>,
    synced: bool,
    keep: fn(K) -> V,
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("items", &self.items.len())
            .field("synced", &self.synced)
            .finish()
    }
}

impl<K: Resource, V> Cache<K, V> {
    /// `keep` turns each object into what the cache holds of it.
    pub fn new(keep: fn(K) -> V) -> Self {
        Cache {
            items: BTreeMap::new(),
            buffer: BTreeMap::new(),
            synced: false,
            keep,
        }
    }

    fn key(obj: &K) -> String {
        key(
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default(),
        )
    }

    /// Applies a watch event; true when the cached set changed (or was (re)listed).
    pub fn apply(&mut self, ev: Event<K>) -> bool {
        match ev {
            Event::Init => {
                self.buffer.clear();
                false
            }
            Event::InitApply(obj) => {
                self.buffer.insert(Self::key(&obj), (self.keep)(obj));
                false
            }
            Event::InitDone => {
                self.items = std::mem::take(&mut self.buffer);
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                self.items.insert(Self::key(&obj), (self.keep)(obj));
                true
            }
            Event::Delete(obj) => self.items.remove(&Self::key(&obj)).is_some(),
        }
    }

    /// True once a list has been read completely.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// What is kept, by `namespace/name` (`/name` for cluster-scoped kinds).
    pub fn items(&self) -> &BTreeMap<String, V> {
        &self.items
    }

    /// The kept object `namespace/name` (`""` for a cluster-scoped kind).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        self.items.get(&key(namespace, name))
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// One watched kind: its [`Watch`] and the [`Cache`] it feeds.
#[derive(Debug)]
pub struct Watched<K, V> {
    watch: Watch<K>,
    cache: Cache<K, V>,
}

impl<K: Resource, V> Watched<K, V> {
    /// `keep` turns each object into what the cache holds of it.
    pub fn new(watch: Watch<K>, keep: fn(K) -> V) -> Self {
        Watched {
            watch,
            cache: Cache::new(keep),
        }
    }

    /// Takes in the next event; true when the cache changed. Cancel-safe.
    pub async fn next(&mut self) -> bool {
        let ev = self.watch.next().await;
        let was = self.cache.synced;
        let changed = self.cache.apply(ev);
        if !was && self.cache.synced {
            info!(
                what = self.watch.what(),
                count = self.cache.items.len(),
                "list read"
            );
        }
        changed
    }

    /// What is kept.
    pub fn cache(&self) -> &Cache<K, V> {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::config_text;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, text: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("metallb-system".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("config".to_string(), text.to_string())])),
            ..ConfigMap::default()
        }
    }

    /// Keeps a ConfigMap's `data` only (what the speaker reads of it).
    fn data_only(c: ConfigMap) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: c.metadata.namespace,
                name: c.metadata.name,
                ..ObjectMeta::default()
            },
            data: c.data,
            ..ConfigMap::default()
        }
    }

    #[test]
    fn cache_replaces_its_contents_only_when_a_relist_completes() {
        let mut c: Cache<ConfigMap, ConfigMap> = Cache::new(data_only);
        assert!(!c.apply(Event::Init));
        assert!(!c.apply(Event::InitApply(cm("a", "1"))));
        assert!(
            !c.is_synced() && c.items().is_empty(),
            "nothing before InitDone"
        );
        assert!(c.apply(Event::InitDone));
        assert!(c.is_synced());
        assert!(c.apply(Event::Apply(cm("b", "2"))));
        assert_eq!(c.items().len(), 2);
        // A re-list (after the apiserver came back) keeps the old contents until it is complete.
        c.apply(Event::Init);
        c.apply(Event::InitApply(cm("b", "3")));
        assert_eq!(
            c.items().len(),
            2,
            "old contents in force during the re-list"
        );
        c.apply(Event::InitDone);
        assert_eq!(
            c.items().keys().collect::<Vec<_>>(),
            vec!["metallb-system/b"]
        );
        assert_eq!(config_text(&c.items()["metallb-system/b"]), "3");
        assert_eq!(
            c.get("metallb-system", "b").map(config_text),
            Some("3"),
            "found by namespace and name"
        );
        assert!(c.apply(Event::Delete(cm("b", ""))));
        assert!(
            !c.apply(Event::Delete(cm("b", ""))),
            "deleting twice changes nothing"
        );
        assert!(c.items().is_empty());
    }
}
