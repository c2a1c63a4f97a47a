//! Typed, path-aware reads from a `serde_yaml::Value` tree: the strict-schema layer.
//!
//! Every read that fails records a problem with the field path and the value, and the walk goes
//! on, so the caller reports every problem in one pass. Scalars are read the way MetalLB's
//! `gopkg.in/yaml.v2` reads them (any scalar fits a string field; YAML 1.1 `yes`/`no` booleans).
//!
//! Must not: know the meaning of any field (that is the validators' job).

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::errors::Problems;

/// `parent.key` (or `key` at the root).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `parent[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Strip YAML tags (`!!str x`) so they do not get in the way.
pub fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// `v[key]` when `v` is a mapping that has it (tags stripped from both).
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match untag(v) {
        Value::Mapping(m) => m.get(key).map(untag),
        _ => None,
    }
}

/// `v[key]` when it is a string.
pub fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// The text of a scalar, or `None` for null, sequences and mappings.
pub fn scalar_text(v: &Value) -> Option<String> {
    match untag(v) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short rendering of any value for error messages.
pub fn describe(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        other => scalar_text(other).unwrap_or_default(),
    }
}

/// How a schema spells its field names. Readers always ask for a field by its ConfigMap name
/// (`hold-time`); MetalLB's CRDs spell the same field `holdTime` ([`CRD_NAMES`]), and paths and
/// messages use the spelling of the input, so one reader serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// The ConfigMap's kebab-case names, as written.
    Kebab,
    /// MetalLB's CRD names: [`CRD_NAMES`], other names unchanged.
    Crd,
}

/// ConfigMap name -> CRD name, for the fields whose reading both share.
pub const CRD_NAMES: &[(&str, &str)] = &[
    ("my-asn", "myASN"),
    ("peer-asn", "peerASN"),
    ("peer-address", "peerAddress"),
    ("source-address", "sourceAddress"),
    ("peer-port", "peerPort"),
    ("hold-time", "holdTime"),
    ("keepalive-time", "keepaliveTime"),
    ("router-id", "routerID"),
    ("node-selectors", "nodeSelectors"),
    ("bfd-profile", "bfdProfile"),
    ("ebgp-multihop", "ebgpMultiHop"),
    ("enable-graceful-restart", "enableGracefulRestart"),
    ("match-labels", "matchLabels"),
    ("match-expressions", "matchExpressions"),
    ("avoid-buggy-ips", "avoidBuggyIPs"),
    ("auto-assign", "autoAssign"),
    ("aggregation-length", "aggregationLength"),
    ("aggregation-length-v6", "aggregationLengthV6"),
    ("localpref", "localPref"),
    ("receive-interval", "receiveInterval"),
    ("transmit-interval", "transmitInterval"),
    ("detect-multiplier", "detectMultiplier"),
    ("echo-interval", "echoInterval"),
    ("echo-mode", "echoMode"),
    ("passive-mode", "passiveMode"),
    ("minimum-ttl", "minimumTtl"),
];

impl Names {
    /// How `key` (a ConfigMap name) is spelled in this schema.
    pub fn of(self, key: &str) -> &str {
        match self {
            Names::Kebab => key,
            Names::Crd => CRD_NAMES
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key, |(_, c)| c),
        }
    }
}

/// A mapping whose keys have been checked against the schema.
#[derive(Debug)]
pub struct Obj<'a> {
    map: Option<&'a Mapping>,
    pub path: String,
    names: Names,
}

/// Extra words for a known mistake, e.g. `bfdProfile` for `bfd-profile`.
pub type Hint = fn(&str) -> Option<&'static str>;

impl<'a> Obj<'a> {
    /// Reads `v` as a mapping with only `allowed` keys; unknown keys are reported (with `hint`'s
    /// advice). `None` (after reporting) when `v` is not a mapping; null counts as empty.
    pub fn new(
        v: &'a Value,
        path: &str,
        allowed: &[&str],
        hint: Option<Hint>,
        p: &mut Problems,
    ) -> Option<Obj<'a>> {
        Obj::named(v, path, allowed, Names::Kebab, hint, p)
    }

    /// Like [`Obj::new`] for a schema spelled by `names` (`allowed` holds ConfigMap names).
    pub fn named(
        v: &'a Value,
        path: &str,
        allowed: &[&str],
        names: Names,
        hint: Option<Hint>,
        p: &mut Problems,
    ) -> Option<Obj<'a>> {
        if names == Names::Crd {
            let spelled: Vec<&str> = allowed.iter().map(|k| names.of(k)).collect();
            return Obj::checked(v, path, &spelled, names, hint, p);
        }
        Obj::checked(v, path, allowed, names, hint, p)
    }

    /// A nested mapping spelled as this one.
    pub fn child<'b>(
        &self,
        v: &'b Value,
        path: &str,
        allowed: &[&str],
        p: &mut Problems,
    ) -> Option<Obj<'b>> {
        Obj::named(v, path, allowed, self.names, None, p)
    }

    /// How this schema spells `key` (a ConfigMap name).
    pub fn name<'k>(&self, key: &'k str) -> &'k str {
        self.names.of(key)
    }

    fn checked(
        v: &'a Value,
        path: &str,
        allowed: &[&str],
        names: Names,
        hint: Option<Hint>,
        p: &mut Problems,
    ) -> Option<Obj<'a>> {
        let map = match untag(v) {
            Value::Null => None,
            Value::Mapping(m) => Some(m),
            other => {
                p.push(
                    path_or_root(path),
                    Some(describe(other)),
                    "expected a mapping",
                );
                return None;
            }
        };
        if let Some(m) = map {
            for k in m.keys() {
                match untag(k) {
                    Value::String(s) if allowed.contains(&s.as_str()) => {}
                    Value::String(s) => {
                        let kebab = to_kebab(s);
                        let close = allowed.iter().find(|a| squash(a) == squash(s));
                        let mut reason = if kebab != *s && allowed.contains(&kebab.as_str()) {
                            format!("unknown field; did you mean `{kebab}`?")
                        } else if let (Names::Crd, Some(close)) = (names, close) {
                            format!("unknown field; did you mean `{close}`?")
                        } else {
                            format!("unknown field (expected one of: {})", allowed.join(", "))
                        };
                        if let Some(h) = hint.and_then(|h| h(s)) {
                            reason = format!("{reason} {h}");
                        }
                        p.push(&join(path, s), None, reason);
                    }
                    other => p.push(
                        path_or_root(path),
                        Some(describe(other)),
                        "field names must be strings",
                    ),
                }
            }
        }
        Some(Obj {
            map,
            path: path.to_string(),
            names,
        })
    }

    /// The value of `key`; a null value counts as absent (as in Go, where it leaves the zero value).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let v = self.map?.get(self.names.of(key))?;
        match untag(v) {
            Value::Null => None,
            other => Some(other),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn field(&self, key: &str) -> String {
        join(&self.path, self.names.of(key))
    }

    /// A string field (any scalar is accepted, as yaml.v2 does).
    pub fn string(&self, key: &str, p: &mut Problems) -> Option<String> {
        let v = self.get(key)?;
        match scalar_text(v) {
            Some(s) => Some(s),
            None => {
                p.push(&self.field(key), Some(describe(v)), "expected a string");
                None
            }
        }
    }

    /// An unsigned integer field no larger than `max`.
    pub fn uint(&self, key: &str, max: u64, p: &mut Problems) -> Option<u64> {
        let v = self.get(key)?;
        let got = match v {
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match got {
            Some(n) if n <= max => Some(n),
            _ => {
                p.push(
                    &self.field(key),
                    Some(describe(v)),
                    format!("expected an integer from 0 to {max}"),
                );
                None
            }
        }
    }

    /// A signed integer field.
    pub fn int(&self, key: &str, p: &mut Problems) -> Option<i64> {
        let v = self.get(key)?;
        match v {
            Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
            _ => {
                p.push(&self.field(key), Some(describe(v)), "expected an integer");
                None
            }
        }
    }

    /// A boolean field (YAML 1.1 spellings such as `yes`/`off` accepted, as yaml.v2 does).
    pub fn boolean(&self, key: &str, p: &mut Problems) -> Option<bool> {
        let v = self.get(key)?;
        let got = match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                | "TRUE" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if got.is_none() {
            p.push(
                &self.field(key),
                Some(describe(v)),
                "expected true or false",
            );
        }
        got
    }

    /// A list field; `None` when absent or (after reporting) not a list.
    pub fn list(&self, key: &str, p: &mut Problems) -> Option<&'a Vec<Value>> {
        let v = self.get(key)?;
        match v {
            Value::Sequence(s) => Some(s),
            other => {
                p.push(&self.field(key), Some(describe(other)), "expected a list");
                None
            }
        }
    }

    /// A list of strings; bad entries are reported and skipped.
    pub fn string_list(&self, key: &str, p: &mut Problems) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, v) in self.list(key, p).into_iter().flatten().enumerate() {
            let path = index(&self.field(key), i);
            match scalar_text(v) {
                Some(s) => out.push((path, s)),
                None => p.push(&path, Some(describe(v)), "expected a string"),
            }
        }
        out
    }

    /// A mapping of string to string (`match-labels`, `bgp-communities`), sorted by key.
    pub fn string_map(&self, key: &str, p: &mut Problems) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = self.get(key) else {
            return out;
        };
        let Value::Mapping(m) = v else {
            p.push(&self.field(key), Some(describe(v)), "expected a mapping");
            return out;
        };
        for (k, val) in m {
            let Some(k) = scalar_text(k) else {
                p.push(&self.field(key), Some(describe(k)), "keys must be strings");
                continue;
            };
            match scalar_text(val) {
                Some(s) => {
                    out.insert(k, s);
                }
                None => p.push(
                    &join(&self.field(key), &k),
                    Some(describe(val)),
                    "expected a string",
                ),
            }
        }
        out
    }
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() {
        "<config>"
    } else {
        path
    }
}

/// A key with case, `-` and `_` ignored, to suggest the right spelling (`peerAsn` -> `peerASN`).
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `bfdProfile` / `bfd_profile` -> `bfd-profile`.
fn to_kebab(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}
