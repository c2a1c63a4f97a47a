//! MetalLB's custom resources as a user hands them to `ferrolb config check` or
//! `ferrolb standalone --config`: YAML documents (several per file, `kind: List` included), with
//! the Namespaces and Secrets that `namespaceSelectors` and `passwordSecret` refer to allowed
//! beside them. Other objects are skipped with a warning.
//!
//! Must not: do I/O (callers read the files).

use serde_yaml::Value;

use crate::errors::{ConfigErrors, ConfigWarning, Problems};
use crate::model::Config;
use crate::yamlx::{describe, get, get_str, index, untag};

use super::{object, read, Cluster, Object, Secret, GROUP};

/// True when a document (or an item of a `kind: List`) is a `metallb.io` object.
pub fn has_custom_resources(docs: &[Value]) -> bool {
    flatten(docs, "<input>").iter().any(|(_, v)| is_metallb(v))
}

fn is_metallb(v: &Value) -> bool {
    get_str(v, "apiVersion").is_some_and(|a| a.starts_with(&format!("{GROUP}/")))
}

/// Every object of the documents, the items of `kind: List` documents in their place, each
/// with where it is in the input (`<input>[1].items[0]`).
fn flatten<'a>(docs: &'a [Value], root: &str) -> Vec<(String, &'a Value)> {
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let at = index(root, i);
        match get(d, "items").map(untag) {
            Some(Value::Sequence(items)) if get_str(d, "kind") == Some("List") => {
                out.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(j, item)| (index(&format!("{at}.items"), j), item)),
                );
            }
            _ => out.push((at, d)),
        }
    }
    out
}

/// What the documents hold: configuration objects, cluster facts, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Documents {
    pub objects: Vec<Object>,
    pub cluster: Cluster,
    pub warnings: Vec<ConfigWarning>,
}

/// Sorts the documents into configuration objects, cluster facts and skipped objects.
pub fn documents(docs: &[Value]) -> Result<Documents, ConfigErrors> {
    let mut p = Problems::default();
    let mut out = Documents::default();
    for (at, v) in flatten(docs, "<input>") {
        let kind = get_str(v, "kind").unwrap_or_default();
        let meta = get(v, "metadata");
        let name = meta.and_then(|m| get_str(m, "name")).unwrap_or_default();
        let ns = meta
            .and_then(|m| get_str(m, "namespace"))
            .unwrap_or_default();
        if is_metallb(v) {
            if let Some(o) = object(v, &at, &mut p) {
                out.objects.push(o);
            }
        } else if get_str(v, "apiVersion") == Some("v1") && kind == "Namespace" {
            let labels = meta
                .and_then(|m| get(m, "labels"))
                .map(string_map)
                .unwrap_or_default();
            out.cluster.namespaces.insert(name.to_string(), labels);
        } else if get_str(v, "apiVersion") == Some("v1") && kind == "Secret" {
            out.cluster
                .secrets
                .insert((ns.to_string(), name.to_string()), secret(v));
        } else {
            out.warnings.push(ConfigWarning::new(
                format!("{at}.kind"),
                Some(if kind.is_empty() {
                    describe(v)
                } else {
                    kind.to_string()
                }),
                "skipped: not a MetalLB configuration object (metallb.io), a Namespace or a Secret",
            ));
        }
    }
    p.into_result(out)
}

/// Reads CRD documents into a [`Config`], with the warnings about skipped objects.
pub fn read_documents(docs: &[Value]) -> Result<(Config, Vec<ConfigWarning>), ConfigErrors> {
    let d = documents(docs)?;
    let config = read(&d.objects, &d.cluster)?;
    Ok((config, d.warnings))
}

fn string_map(v: &Value) -> std::collections::BTreeMap<String, String> {
    match untag(v) {
        Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    untag(k).as_str()?.to_string(),
                    untag(v).as_str()?.to_string(),
                ))
            })
            .collect(),
        _ => Default::default(),
    }
}

/// A Secret's type and `password` (from `stringData`, else base64 `data`).
fn secret(v: &Value) -> Secret {
    let plain = get(v, "stringData").and_then(|d| get_str(d, "password"));
    let encoded = get(v, "data").and_then(|d| get_str(d, "password"));
    Secret {
        type_: get_str(v, "type").map(str::to_string),
        password: plain.map(str::to_string).or_else(|| {
            encoded
                .and_then(base64)
                .and_then(|b| String::from_utf8(b).ok())
        }),
    }
}

/// Standard base64 (padding optional, whitespace ignored); `None` when not base64.
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(
            super::base64("aHVudGVyMg==").as_deref(),
            Some(&b"hunter2"[..])
        );
        assert_eq!(
            super::base64("aHVudGVyMg").as_deref(),
            Some(&b"hunter2"[..])
        );
        assert_eq!(super::base64("a*"), None);
    }
}
