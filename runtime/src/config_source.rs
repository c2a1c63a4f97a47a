//! The configuration's sources as both Kubernetes roles watch them: the config ConfigMap and
//! MetalLB's custom resources (the six `metallb.io` configuration kinds in the role's namespace,
//! and, for the controller, the Namespaces that `serviceAllocation.namespaceSelectors` match),
//! each feeding a cache; what they hold now becomes the candidate configuration by
//! `ferrolb_config::source::choose` (`--config-source configmap|crds|auto`).
//!
//! A configuration kind the cluster does not serve (its CRD is not installed) is not watched:
//! with `auto`, a MetalLB 0.12 cluster without MetalLB's CRDs reads its ConfigMap as before.
//! Which kinds are served is looked up once, when the role starts.
//!
//! Must not: decide which source wins or parse configuration (`ferrolb_config` does), or offer
//! anything to the gate (the roles do).

use std::collections::BTreeSet;

use ferrolb_config::crd::Kind;
use ferrolb_config::source::{choose, From, Source};
use ferrolb_config::{Config, ConfigErrors};
use futures::future::select_all;
use futures::FutureExt;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use prometheus_client::metrics::counter::Counter;
use serde_yaml::{Mapping, Value};
use tracing::{info, warn};

use crate::cache::Watched;
use crate::watch::Watch;

/// What the caches keep of a configuration object (or a Namespace): the parts the reader
/// reads, and where an Event about it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// `apiVersion`, `kind`, `metadata` (`name`, `namespace`, `labels`) and `spec`.
    pub value: Value,
    pub reference: ObjectReference,
}

/// The candidate configuration, where it came from, and the objects an Event about it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub from: From,
    /// How logs name where it came from ([`ConfigSources::describe`]).
    pub source: String,
    pub config: Result<Config, ConfigErrors>,
    /// The ConfigMap, or the objects the problems name (else the IPAddressPools), at most
    /// [`MAX_EVENT_TARGETS`].
    pub targets: Vec<ObjectReference>,
}

/// Most objects an Event about one configuration goes to.
pub const MAX_EVENT_TARGETS: usize = 10;

/// The watched sources of one role.
#[derive(Debug)]
pub struct ConfigSources {
    source: Source,
    /// `namespace/name` of the ConfigMap.
    config_map_name: String,
    config_map: Option<Watched<ConfigMap, ConfigMap>>,
    kinds: Vec<Watched<DynamicObject, Kept>>,
    namespaces: Option<Watched<Namespace, Kept>>,
}

impl ConfigSources {
    /// Starts the watches of `source` in `namespace` (ConfigMap `config_map`); `namespaces`:
    /// also watch the Namespaces (the controller, for `namespaceSelectors`). Every event is
    /// counted in `updates`.
    pub async fn start(
        client: &Client,
        namespace: &str,
        config_map: &str,
        source: Source,
        namespaces: bool,
        updates: &Counter,
    ) -> Self {
        let cm = (source != Source::Crds).then(|| {
            Watched::new(
                Watch::of(
                    "ConfigMap",
                    updates.clone(),
                    Api::<ConfigMap>::namespaced(client.clone(), namespace),
                    watcher::Config::default().fields(&format!("metadata.name={config_map}")),
                ),
                keep_config_map,
            )
        });
        let mut kinds = Vec::new();
        if source != Source::ConfigMap {
            for kind in Kind::ALL {
                let gvk =
                    GroupVersionKind::gvk(ferrolb_config::crd::GROUP, kind.version(), kind.name());
                match kube::discovery::pinned_kind(client, &gvk).await {
                    Ok((ar, _)) => kinds.push(watch_kind(client, namespace, ar, updates)),
                    Err(e) if source == Source::Crds => warn!(kind = kind.name(), error = %e,
                        "MetalLB's CRD is not served (apply manifests/base/crds.yaml); not watching this kind"),
                    Err(_) => info!(
                        kind = kind.name(),
                        "MetalLB's CRD is not served; reading the ConfigMap only for it"
                    ),
                }
            }
        }
        let namespaces = (namespaces && !kinds.is_empty()).then(|| {
            Watched::new(
                Watch::of(
                    "Namespace",
                    updates.clone(),
                    Api::<Namespace>::all(client.clone()),
                    watcher::Config::default(),
                ),
                keep_namespace,
            )
        });
        info!(%source, crd_kinds = kinds.len(), "configuration sources");
        ConfigSources {
            source,
            config_map_name: format!("{namespace}/{config_map}"),
            config_map: cm,
            kinds,
            namespaces,
        }
    }

    /// True once every watched list has been read.
    pub fn synced(&self) -> bool {
        self.config_map
            .as_ref()
            .is_none_or(|c| c.cache().is_synced())
            && self.kinds.iter().all(|k| k.cache().is_synced())
            && self
                .namespaces
                .as_ref()
                .is_none_or(|n| n.cache().is_synced())
    }

    /// Takes in the next event of any source; true when what a source holds changed.
    /// Cancel-safe.
    pub async fn next(&mut self) -> bool {
        let mut futures: Vec<futures::future::BoxFuture<'_, bool>> = Vec::new();
        if let Some(c) = self.config_map.as_mut() {
            futures.push(c.next().boxed());
        }
        for k in &mut self.kinds {
            futures.push(k.next().boxed());
        }
        if let Some(n) = self.namespaces.as_mut() {
            futures.push(n.next().boxed());
        }
        if futures.is_empty() {
            return std::future::pending().await;
        }
        select_all(futures).await.0
    }

    /// `namespace/name` of the ConfigMap, how logs name the ConfigMap source.
    pub fn config_map_name(&self) -> &str {
        &self.config_map_name
    }

    /// How logs name the source a candidate came from.
    pub fn describe(&self, from: From) -> String {
        match from {
            From::ConfigMap => self.config_map_name.clone(),
            From::Crds => format!(
                "metallb.io objects in {}",
                self.config_map_name.split('/').next().unwrap_or_default()
            ),
            From::Both => format!("{} and metallb.io objects", self.config_map_name),
        }
    }

    /// The ConfigMap, when there is one.
    pub fn config_map(&self) -> Option<&ConfigMap> {
        self.config_map
            .as_ref()
            .and_then(|c| c.cache().items().values().next())
    }

    /// The candidate of what the sources hold now (`None`: nothing to offer).
    pub fn candidate(&self) -> Option<Candidate> {
        let text = self.config_map().map(crate::config::config_text);
        let mut values: Vec<Value> = self
            .kinds
            .iter()
            .flat_map(|k| k.cache().items().values().map(|o| o.value.clone()))
            .collect();
        values.extend(
            self.namespaces
                .iter()
                .flat_map(|n| n.cache().items().values().map(|o| o.value.clone())),
        );
        let (from, config) = choose(self.source, text, &values, &self.config_map_name)?;
        let targets = self.targets(from, &config);
        Some(Candidate {
            from,
            source: self.describe(from),
            config,
            targets,
        })
    }

    fn targets(&self, from: From, config: &Result<Config, ConfigErrors>) -> Vec<ObjectReference> {
        let map = || {
            self.config_map()
                .map(|c| c.object_ref(&()))
                .into_iter()
                .collect()
        };
        if from != From::Crds {
            return map();
        }
        let objects = || self.kinds.iter().flat_map(|k| k.cache().items().values());
        let mut named: Vec<ObjectReference> = Vec::new();
        if let Err(errors) = config {
            let paths: BTreeSet<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            for o in objects() {
                let id = object_id(&o.reference);
                if paths.iter().any(|p| p.starts_with(&format!("{id} "))) {
                    named.push(o.reference.clone());
                }
            }
        }
        if named.is_empty() {
            named = objects()
                .filter(|o| o.reference.kind.as_deref() == Some("IPAddressPool"))
                .map(|o| o.reference.clone())
                .collect();
        }
        named.truncate(MAX_EVENT_TARGETS);
        named
    }
}

/// `Kind namespace/name`, as problems name an object.
fn object_id(r: &ObjectReference) -> String {
    format!(
        "{} {}/{}",
        r.kind.as_deref().unwrap_or_default(),
        r.namespace.as_deref().unwrap_or_default(),
        r.name.as_deref().unwrap_or_default()
    )
}

fn watch_kind(
    client: &Client,
    namespace: &str,
    ar: ApiResource,
    updates: &Counter,
) -> Watched<DynamicObject, Kept> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let what: &'static str = Kind::from_name(&ar.kind).map_or("metallb.io", Kind::name);
    let watch = Watch::new(what, updates.clone(), move || {
        watcher::watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed()
    });
    // The apiserver sends each custom resource with its apiVersion and kind; the version and
    // kind watched stand in when it does not.
    let keep = match Kind::from_name(&ar.kind) {
        Some(Kind::IPAddressPool) => keep_kind::<0>,
        Some(Kind::L2Advertisement) => keep_kind::<1>,
        Some(Kind::BGPAdvertisement) => keep_kind::<2>,
        Some(Kind::Community) => keep_kind::<3>,
        Some(Kind::BGPPeer) => keep_kind::<4>,
        _ => keep_kind::<5>,
    };
    Watched::new(watch, keep)
}

/// What is kept of an object of `Kind::ALL[K]`.
fn keep_kind<const K: usize>(o: DynamicObject) -> Kept {
    let kind = Kind::ALL[K.min(Kind::ALL.len() - 1)];
    let api_version = format!("{}/{}", ferrolb_config::crd::GROUP, kind.version());
    let (api_version, kind) = match &o.types {
        Some(t) => (t.api_version.clone(), t.kind.clone()),
        None => (api_version, kind.name().to_string()),
    };
    let spec = o
        .data
        .get("spec")
        .map(|s| serde_yaml::to_value(s).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    kept(&api_version, &kind, &o.metadata, spec)
}

fn keep_namespace(n: Namespace) -> Kept {
    kept("v1", "Namespace", &n.metadata, Value::Null)
}

/// The config ConfigMap as the roles keep it: its identity (for Events) and `data` (where
/// `config` is read).
fn keep_config_map(mut cm: ConfigMap) -> ConfigMap {
    let meta = std::mem::take(&mut cm.metadata);
    cm.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..kube::api::ObjectMeta::default()
    };
    cm.binary_data = None;
    cm
}

fn kept(api_version: &str, kind: &str, meta: &kube::api::ObjectMeta, spec: Value) -> Kept {
    let mut m = Mapping::new();
    if let Some(n) = &meta.name {
        m.insert("name".into(), n.clone().into());
    }
    if let Some(n) = &meta.namespace {
        m.insert("namespace".into(), n.clone().into());
    }
    if let Some(l) = &meta.labels {
        let labels: Mapping = l
            .iter()
            .map(|(k, v)| (Value::from(k.clone()), Value::from(v.clone())))
            .collect();
        m.insert("labels".into(), labels.into());
    }
    let mut obj = Mapping::new();
    obj.insert("apiVersion".into(), api_version.into());
    obj.insert("kind".into(), kind.into());
    obj.insert("metadata".into(), m.into());
    if !spec.is_null() {
        obj.insert("spec".into(), spec);
    }
    Kept {
        value: Value::Mapping(obj),
        reference: ObjectReference {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripped_config_map_keeps_its_data() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "config", "namespace": "metallb-system",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "data": {"config": "address-pools: []\n"}
        }))
        .expect("a ConfigMap");
        let cm = keep_config_map(cm);
        assert_eq!(cm.metadata.name.as_deref(), Some("config"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("metallb-system"));
        assert!(cm.metadata.managed_fields.is_none() && cm.metadata.annotations.is_none());
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("config"))
                .map(String::as_str),
            Some("address-pools: []\n")
        );
    }

    #[test]
    fn an_object_is_kept_as_the_reader_reads_it_with_its_reference() {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "p", "namespace": "metallb-system", "uid": "u1",
                         "labels": {"zone": "a"}, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"addresses": ["192.0.2.0/28"]},
            "status": {"assignedIPv4": 1}
        }))
        .expect("an object");
        let k = keep_kind::<0>(o);
        let (config, _) = ferrolb_config::crd::text::read_documents(std::slice::from_ref(&k.value))
            .expect("reads");
        assert_eq!(config.pools[0].name, "p");
        assert_eq!(k.reference.uid.as_deref(), Some("u1"));
        assert_eq!(object_id(&k.reference), "IPAddressPool metallb-system/p");
        let text = serde_yaml::to_string(&k.value).expect("YAML");
        assert!(
            !text.contains("managedFields") && !text.contains("status"),
            "{text}"
        );
        assert!(text.contains("zone: a"), "{text}");
    }
}
