//! Finds the MetalLB configuration in whatever the user hands us: a raw config file, a ConfigMap
//! manifest (`data.config`), Helm/addon values (`configInline:`), or a Konvoy `cluster.yaml`
//! whose `addonsList` has a `metallb` addon whose `values` string holds `configInline`.
//!
//! Must not: validate the configuration itself (see `validate`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::errors::{ConfigError, ConfigErrors};
use crate::yamlx::{describe, untag};

/// Where the configuration was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum InputForm {
    /// The config file itself (`peers`, `address-pools`, ...).
    Raw,
    /// `data.config` of a ConfigMap.
    ConfigMap { namespace: String, name: String },
    /// `configInline` of Helm / addon values.
    HelmValues,
    /// `configInline` in the `values` of the `metallb` addon of a Konvoy cluster.yaml.
    KonvoyClusterYaml,
}

impl fmt::Display for InputForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputForm::Raw => f.write_str("raw config"),
            InputForm::ConfigMap { namespace, name } => {
                write!(f, "ConfigMap {namespace}/{name} (data.config)")
            }
            InputForm::HelmValues => f.write_str("Helm values (configInline)"),
            InputForm::KonvoyClusterYaml => {
                f.write_str("Konvoy cluster.yaml (metallb addon values.configInline)")
            }
        }
    }
}

/// Every YAML document in `text` (empty documents skipped), or the syntax error.
pub fn documents(text: &str, path: &str) -> Result<Vec<Value>, ConfigErrors> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => out.push(v),
            Err(e) => return Err(ConfigErrors::one(ConfigError::syntax(path, &e))),
        }
    }
    Ok(out)
}

/// The configuration value and where it came from.
pub fn extract(text: &str) -> Result<(InputForm, Value), ConfigErrors> {
    let docs = documents(text, "<input>")?;
    let found: Vec<Result<(InputForm, Value), ConfigErrors>> =
        docs.iter().filter_map(recognise).collect();
    match found.len() {
        0 => match docs.as_slice() {
            [] => Ok((InputForm::Raw, Value::Null)),
            [one] => match get_str(one, "kind") {
                Some(kind) => Err(ConfigErrors::one(ConfigError::new(
                    "<input>",
                    Some(kind.to_string()),
                    "a Kubernetes object without MetalLB configuration (expected a ConfigMap with data.config)",
                ))),
                None => Ok((InputForm::Raw, one.clone())),
            },
            _ => Err(ConfigErrors::one(ConfigError::new(
                "<input>",
                None,
                "no MetalLB configuration found among the documents (expected a ConfigMap with data.config, configInline, or a metallb addon)",
            ))),
        },
        1 => found.into_iter().next().unwrap_or(Ok((InputForm::Raw, Value::Null))),
        n => Err(ConfigErrors::one(ConfigError::new(
            "<input>",
            None,
            format!("{n} MetalLB configurations found; give one"),
        ))),
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match untag(v) {
        Value::Mapping(m) => m.get(key).map(untag),
        _ => None,
    }
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// What one document holds, if it is one of the wrapped forms. A document with MetalLB's own
/// top-level keys is a raw config.
fn recognise(doc: &Value) -> Option<Result<(InputForm, Value), ConfigErrors>> {
    if get_str(doc, "kind") == Some("ConfigMap") {
        let data = get(doc, "data")?;
        let cfg = get(data, "config")?;
        let meta = get(doc, "metadata");
        let form = InputForm::ConfigMap {
            namespace: meta
                .and_then(|m| get_str(m, "namespace"))
                .unwrap_or("default")
                .to_string(),
            name: meta
                .and_then(|m| get_str(m, "name"))
                .unwrap_or("")
                .to_string(),
        };
        let Some(text) = cfg.as_str() else {
            return Some(Err(ConfigErrors::one(ConfigError::new(
                "data.config",
                Some(describe(cfg)),
                "expected a string holding the configuration YAML (use `config: |`)",
            ))));
        };
        return Some(single(text, "data.config").map(|v| (form, v)));
    }
    if let Some(inline) = get(doc, "configInline") {
        return Some(inline_value(inline, "configInline").map(|v| (InputForm::HelmValues, v)));
    }
    if let Some(addons) = get(doc, "spec").and_then(|s| get(s, "addons")) {
        return konvoy(addons);
    }
    let raw_keys = ["peers", "address-pools", "bgp-communities", "bfd-profiles"];
    if raw_keys.iter().any(|k| get(doc, k).is_some()) {
        return Some(Ok((InputForm::Raw, doc.clone())));
    }
    None
}

/// `configInline` is a mapping; some values files hold it as a YAML string instead.
fn inline_value(v: &Value, path: &str) -> Result<Value, ConfigErrors> {
    match v {
        Value::String(s) => single(s, path),
        other => Ok(other.clone()),
    }
}

/// The one YAML document of an embedded string.
fn single(text: &str, path: &str) -> Result<Value, ConfigErrors> {
    let docs = documents(text, path)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.into_iter().next().unwrap_or(Value::Null)),
        _ => Err(ConfigErrors::one(ConfigError::new(
            path,
            None,
            "holds several YAML documents; give one",
        ))),
    }
}

fn konvoy(addons: &Value) -> Option<Result<(InputForm, Value), ConfigErrors>> {
    let repos = addons.as_sequence()?;
    for (r, repo) in repos.iter().enumerate() {
        let Some(list) = get(repo, "addonsList").and_then(Value::as_sequence) else {
            continue;
        };
        for (a, addon) in list.iter().enumerate() {
            if get_str(addon, "name") != Some("metallb") {
                continue;
            }
            let path = format!("spec.addons[{r}].addonsList[{a}].values");
            let values =
                match get(addon, "values") {
                    None => return Some(Err(ConfigErrors::one(ConfigError::new(
                        &path,
                        None,
                        "the metallb addon has no values (configInline holds the configuration)",
                    )))),
                    // Konvoy writes values as a YAML string; accept a mapping as well.
                    Some(Value::String(s)) => match single(s, &path) {
                        Ok(v) => v,
                        Err(e) => return Some(Err(e)),
                    },
                    Some(v) => v.clone(),
                };
            return Some(match get(&values, "configInline") {
                Some(inline) => inline_value(inline, &format!("{path}.configInline"))
                    .map(|v| (InputForm::KonvoyClusterYaml, v)),
                None => Err(ConfigErrors::one(ConfigError::new(
                    &path,
                    None,
                    "the metallb addon's values have no configInline",
                ))),
            });
        }
    }
    None
}

/// A ConfigMap manifest (`namespace/name`, key `config`) holding the configuration found in
/// `text` (any input form), after checking that it is valid. The configuration YAML is
/// re-emitted as read (comments are not kept).
pub fn render_configmap(text: &str, namespace: &str, name: &str) -> Result<String, ConfigErrors> {
    let (_, value) = extract(text)?;
    crate::validate::validate(&value, "")?;
    let config = if value.is_null() {
        String::new()
    } else {
        serde_yaml::to_string(&value).map_err(|e| {
            ConfigErrors::one(ConfigError::new(
                "<input>",
                None,
                format!("cannot render: {e}"),
            ))
        })?
    };
    let mut meta = serde_yaml::Mapping::new();
    meta.insert("namespace".into(), namespace.into());
    meta.insert("name".into(), name.into());
    let mut data = serde_yaml::Mapping::new();
    data.insert("config".into(), config.into());
    let mut cm = serde_yaml::Mapping::new();
    cm.insert("apiVersion".into(), "v1".into());
    cm.insert("kind".into(), "ConfigMap".into());
    cm.insert("metadata".into(), meta.into());
    cm.insert("data".into(), data.into());
    serde_yaml::to_string(&Value::Mapping(cm)).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            "<input>",
            None,
            format!("cannot render: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_configmap_parses_back_to_the_same_config() {
        let konvoy = "kind: ClusterConfiguration\nspec:\n  addons:\n  - addonsList:\n    - name: metallb\n      values: |-\n        configInline:\n          peers:\n          - {my-asn: 64500, peer-asn: 64501, peer-address: 192.0.2.1}\n          address-pools:\n          - name: default\n            protocol: bgp\n            addresses: [198.51.100.0/24]\n";
        let cm = render_configmap(konvoy, "metallb-system", "config").unwrap();
        assert!(cm.contains("kind: ConfigMap"), "{cm}");
        let (form, back) = crate::parse_with_form(&cm).unwrap();
        assert_eq!(
            form,
            InputForm::ConfigMap {
                namespace: "metallb-system".into(),
                name: "config".into()
            }
        );
        assert_eq!(back, crate::parse(konvoy).unwrap());
        assert!(render_configmap("address-pools: [{name: a}]", "n", "c").is_err());
    }

    #[test]
    fn config_inline_may_be_a_string() {
        let values = "configInline: |\n  address-pools:\n  - {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";
        let (form, cfg) = crate::parse_with_form(values).unwrap();
        assert_eq!(form, InputForm::HelmValues);
        assert_eq!(cfg.pools.len(), 1);
        let e = crate::parse("configInline: 'a: ['\n").unwrap_err();
        assert_eq!(e.0[0].path, "configInline");
    }
}
