//! MetalLB's custom resources (group `metallb.io`: IPAddressPool, L2Advertisement,
//! BGPAdvertisement, Community, BGPPeer, BFDProfile) read into the same validated [`Config`] as
//! the ConfigMap, with every problem reported at once, each naming the object (kind,
//! namespace/name) and the field path (`IPAddressPool metallb-system/web spec.addresses[0]`).
//!
//! The objects come in as plain values (a YAML file, or what the apiserver sent, as JSON turned
//! into YAML values), with the cluster facts some fields refer to ([`Cluster`]: Namespaces for
//! `namespaceSelectors`, Secrets for `passwordSecret`). Field rules shared with the ConfigMap
//! (peers, BFD profiles, address entries, communities, label selectors) are the ConfigMap
//! reader's own, asked for in CRD spelling ([`crate::yamlx::Names::Crd`]). Fields MetalLB has and
//! ferrolb does not implement are errors naming the field whenever they are set to anything but
//! their default, never silently dropped.
//!
//! Must not: know kube types or talk to a cluster, or decide anything beyond what the objects say.

mod ads;
mod bgp;
mod pools;
pub mod text;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::Value;

use crate::errors::{ConfigErrors, Problems};
use crate::model::Config;
use crate::yamlx::{describe, get, get_str, untag, Obj};

/// The API group of MetalLB's resources.
pub const GROUP: &str = "metallb.io";

/// The configuration kinds, with the API versions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    IPAddressPool,
    L2Advertisement,
    BGPAdvertisement,
    Community,
    BGPPeer,
    BFDProfile,
}

impl Kind {
    /// Every configuration kind.
    pub const ALL: [Kind; 6] = [
        Kind::IPAddressPool,
        Kind::L2Advertisement,
        Kind::BGPAdvertisement,
        Kind::Community,
        Kind::BGPPeer,
        Kind::BFDProfile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::IPAddressPool => "IPAddressPool",
            Kind::L2Advertisement => "L2Advertisement",
            Kind::BGPAdvertisement => "BGPAdvertisement",
            Kind::Community => "Community",
            Kind::BGPPeer => "BGPPeer",
            Kind::BFDProfile => "BFDProfile",
        }
    }

    /// The kind named `name`, if it is a configuration kind.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The version ferrolb serves and writes (`v1beta2` for BGPPeer, `v1beta1` otherwise).
    pub fn version(self) -> &'static str {
        match self {
            Kind::BGPPeer => "v1beta2",
            _ => "v1beta1",
        }
    }

    /// The versions read (BGPPeer `v1beta1` has a subset of `v1beta2`'s fields).
    fn reads(self, version: &str) -> bool {
        version == self.version() || (self == Kind::BGPPeer && version == "v1beta1")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// MetalLB's status kinds: written by MetalLB (and ferrolb), never configuration; skipped.
pub const STATUS_KINDS: [&str; 3] = ["ConfigurationState", "ServiceL2Status", "ServiceBGPStatus"];

/// What some fields refer to outside the configuration objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Namespace name -> its labels, matched by `serviceAllocation.namespaceSelectors`.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `(namespace, name)` -> the Secret, for a BGPPeer's `passwordSecret`.
    pub secrets: BTreeMap<(String, String), Secret>,
}

/// What a BGPPeer's `passwordSecret` needs of a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secret {
    /// `type` (MetalLB requires `kubernetes.io/basic-auth`).
    pub type_: Option<String>,
    /// The `password` key, decoded; `None` when absent or not UTF-8.
    pub password: Option<String>,
}

/// One configuration object: its identity and its `spec`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec` (null when absent).
    pub spec: Value,
}

impl Object {
    /// `Kind namespace/name`, how problems name the object.
    pub fn id(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// The path of `spec` (`Kind namespace/name spec`), the root of every field path.
    fn spec_path(&self) -> String {
        format!("{} spec", self.id())
    }
}

/// The top-level keys of a configuration object.
const OBJECT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Reads one object value whose `apiVersion` is in [`GROUP`]: `None` for a status kind, or
/// (after reporting) for an object that is not valid as an object. `at` names the object in the
/// input when it has no usable name (`<input>[2]`).
pub fn object(v: &Value, at: &str, p: &mut Problems) -> Option<Object> {
    let kind_name = get_str(v, "kind").unwrap_or_default();
    if STATUS_KINDS.contains(&kind_name) {
        return None;
    }
    let Some(kind) = Kind::from_name(kind_name) else {
        p.push(
            &format!("{at}.kind"),
            Some(kind_name.to_string()),
            format!(
                "not a MetalLB configuration kind (expected one of: {})",
                Kind::ALL.map(Kind::name).join(", ")
            ),
        );
        return None;
    };
    let meta = get(v, "metadata");
    let name = meta.and_then(|m| get_str(m, "name")).unwrap_or_default();
    let namespace = meta
        .and_then(|m| get_str(m, "namespace"))
        .unwrap_or_default();
    let id = if name.is_empty() {
        format!("{kind} {at}")
    } else if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    let before = p.len();
    Obj::new(v, &id, OBJECT_KEYS, None, p)?;
    let version = get_str(v, "apiVersion")
        .and_then(|a| a.strip_prefix("metallb.io/"))
        .unwrap_or_default();
    if !kind.reads(version) {
        p.push(
            &format!("{id} apiVersion"),
            get(v, "apiVersion").map(describe),
            format!("ferrolb reads {kind} as {GROUP}/{}", kind.version()),
        );
    }
    if name.is_empty() {
        p.push(&format!("{id} metadata.name"), None, "required: a name");
    }
    let labels = meta.map(|m| labels(m, &id, p)).unwrap_or_default();
    let spec = get(v, "spec").cloned().unwrap_or(Value::Null);
    (p.len() == before).then(|| Object {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels,
        spec,
    })
}

/// `metadata.labels` (other metadata is not configuration and is not read).
fn labels(meta: &Value, id: &str, p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match get(meta, "labels") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                match (untag(k).as_str(), untag(v).as_str()) {
                    (Some(k), Some(v)) => {
                        out.insert(k.to_string(), v.to_string());
                    }
                    _ => p.push(
                        &format!("{id} metadata.labels"),
                        Some(describe(k)),
                        "labels are strings",
                    ),
                }
            }
        }
        Some(other) => p.push(
            &format!("{id} metadata.labels"),
            Some(describe(other)),
            "expected a mapping",
        ),
    }
    out
}

/// Reads a set of configuration objects into a [`Config`], or every problem.
pub fn read(objects: &[Object], cluster: &Cluster) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    let objects = ordered(objects, &mut p);
    let of = |kind: Kind| objects.iter().copied().filter(move |o| o.kind == kind);
    let mut cfg = Config::default();
    for o in of(Kind::BFDProfile) {
        if let Some(b) = bgp::bfd_profile(o, &mut p) {
            cfg.bfd_profiles.push(b);
        }
    }
    let communities = bgp::communities(of(Kind::Community), &mut p);
    cfg.communities = communities.standard.clone();
    cfg.large_communities = communities.large.clone();
    bgp::peers(of(Kind::BGPPeer), cluster, &mut cfg, &mut p);
    let mut drafts = pools::pools(of(Kind::IPAddressPool), cluster, &mut p);
    let pool_names: Vec<&str> = of(Kind::IPAddressPool).map(|o| o.name.as_str()).collect();
    ads::layer2(of(Kind::L2Advertisement), &mut drafts, &pool_names, &mut p);
    let peer_names: Vec<&str> = of(Kind::BGPPeer).map(|o| o.name.as_str()).collect();
    ads::bgp(
        of(Kind::BGPAdvertisement),
        &mut drafts,
        &pool_names,
        &communities,
        &peer_names,
        &mut p,
    );
    cfg.pools = drafts.into_iter().map(pools::Draft::finish).collect();
    p.into_result(cfg)
}

/// The objects sorted by kind, namespace and name (names compared number-aware, so `peer2`
/// comes before `peer10`); an object defined twice is reported and only its first copy kept.
fn ordered<'a>(objects: &'a [Object], p: &mut Problems) -> Vec<&'a Object> {
    let mut out: Vec<&Object> = objects.iter().collect();
    out.sort_by(|a, b| {
        (a.kind, &a.namespace)
            .cmp(&(b.kind, &b.namespace))
            .then_with(|| natural(&a.name, &b.name))
    });
    let mut kept: Vec<&Object> = Vec::with_capacity(out.len());
    for o in out {
        let twice = kept
            .last()
            .is_some_and(|k| k.kind == o.kind && k.namespace == o.namespace && k.name == o.name);
        if twice {
            p.push(
                &format!("{} metadata.name", o.id()),
                Some(o.name.clone()),
                "defined twice",
            );
        } else {
            kept.push(o);
        }
    }
    kept
}

/// Number-aware order of names: runs of digits compare by value.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let strip = |d: &'_ [u8]| -> usize { d.iter().take_while(|c| **c == b'0').count() };
                let (vx, vy) = (&dx[strip(dx)..], &dy[strip(dy)..]);
                let by_value = vx.len().cmp(&vy.len()).then_with(|| vx.cmp(vy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// A field MetalLB has and ferrolb does not implement: an error when `set` says it is set to
/// anything but its default.
#[derive(Clone, Copy)]
pub(crate) struct Unsupported {
    pub name: &'static str,
    pub set: fn(&Value) -> bool,
    pub why: &'static str,
}

/// True for anything but null, `false`, 0, "" and empty lists and mappings.
pub(crate) fn non_default(v: &Value) -> bool {
    match untag(v) {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        _ => true,
    }
}

/// Reports every unsupported field of `spec` that is set (`path`: the spec's path).
pub(crate) fn unsupported(spec: &Value, path: &str, fields: &[Unsupported], p: &mut Problems) {
    for f in fields {
        if let Some(v) = get(spec, f.name).filter(|v| (f.set)(v)) {
            p.push(
                &crate::yamlx::join(path, f.name),
                Some(describe(v)),
                format!("ferrolb does not implement {}: {}", f.name, f.why),
            );
        }
    }
}

#[cfg(test)]
mod tests;
