//! Finds the MetalLB configuration in whatever the user hands us: a raw config file, a ConfigMap
//! manifest (`data.config`), Helm/addon values (`configInline:`), or a Konvoy `cluster.yaml`
//! whose `addonsList` has a `metallb` addon whose `values` string holds `configInline` (read by
//! `konvoy`). Besides the value it returns warnings about the input, which callers show.
//!
//! Must not: validate the configuration itself (see `validate`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::errors::{ConfigError, ConfigErrors, ConfigWarning};
use crate::yamlx::{describe, get, get_str, untag};

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
    /// MetalLB's custom resources (`metallb.io` objects), as MetalLB 0.13 and later read them.
    CustomResources,
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
            InputForm::CustomResources => f.write_str("MetalLB custom resources (metallb.io)"),
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

/// What [`extract_with_warnings`] found: the configuration value, where it came from, and what
/// the user should hear about the input (e.g. a disabled Konvoy addon).
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub form: InputForm,
    pub value: Value,
    pub warnings: Vec<ConfigWarning>,
}

impl Extracted {
    fn plain(form: InputForm, value: Value) -> Self {
        Extracted {
            form,
            value,
            warnings: Vec::new(),
        }
    }
}

/// The configuration value and where it came from (warnings dropped: see
/// [`extract_with_warnings`]).
pub fn extract(text: &str) -> Result<(InputForm, Value), ConfigErrors> {
    extract_with_warnings(text).map(|e| (e.form, e.value))
}

/// The configuration value, where it came from, and the warnings about the input. MetalLB
/// custom resources come back as the list of documents (read them with [`read`]).
pub fn extract_with_warnings(text: &str) -> Result<Extracted, ConfigErrors> {
    let docs = documents(text, "<input>")?;
    let mut found: Vec<Result<Extracted, ConfigErrors>> =
        docs.iter().filter_map(recognise).collect();
    if crate::crd::text::has_custom_resources(&docs) {
        if !found.is_empty() {
            return Err(ConfigErrors::one(ConfigError::new(
                "<input>",
                None,
                "holds both MetalLB custom resources and a ConfigMap-format configuration; give one",
            )));
        }
        return Ok(Extracted::plain(
            InputForm::CustomResources,
            Value::Sequence(docs),
        ));
    }
    match found.len() {
        0 => match docs.as_slice() {
            [] => Ok(Extracted::plain(InputForm::Raw, Value::Null)),
            [one] => match get_str(one, "kind") {
                Some(kind) => Err(ConfigErrors::one(ConfigError::new(
                    "<input>",
                    Some(kind.to_string()),
                    "a Kubernetes object without MetalLB configuration (expected a ConfigMap with data.config)",
                ))),
                None => Ok(Extracted::plain(InputForm::Raw, one.clone())),
            },
            _ => Err(ConfigErrors::one(ConfigError::new(
                "<input>",
                None,
                "no MetalLB configuration found among the documents (expected a ConfigMap with data.config, configInline, or a metallb addon)",
            ))),
        },
        1 => found
            .pop()
            .unwrap_or(Ok(Extracted::plain(InputForm::Raw, Value::Null))),
        n => Err(ConfigErrors::one(ConfigError::new(
            "<input>",
            None,
            format!("{n} MetalLB configurations found; give one"),
        ))),
    }
}

/// What one document holds, if it is one of the wrapped forms. A document with MetalLB's own
/// top-level keys is a raw config. A Konvoy ClusterConfiguration is always recognised, so that
/// what is missing in it is said there (see `konvoy`).
fn recognise(doc: &Value) -> Option<Result<Extracted, ConfigErrors>> {
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
        return Some(single(text, "data.config").map(|v| Extracted::plain(form, v)));
    }
    if let Some(inline) = get(doc, "configInline") {
        return Some(
            inline_value(inline, "configInline")
                .map(|v| Extracted::plain(InputForm::HelmValues, v)),
        );
    }
    let addons = get(doc, "spec").and_then(|s| get(s, "addons"));
    if get_str(doc, "kind") == Some("ClusterConfiguration") || addons.is_some() {
        return Some(crate::konvoy::read(doc));
    }
    let raw_keys = ["peers", "address-pools", "bgp-communities", "bfd-profiles"];
    if raw_keys.iter().any(|k| get(doc, k).is_some()) {
        return Some(Ok(Extracted::plain(InputForm::Raw, doc.clone())));
    }
    None
}

/// The configuration that [`extract_with_warnings`] found, validated, with the warnings about
/// its input (custom resources: the objects skipped).
pub fn read(found: &Extracted) -> Result<(crate::Config, Vec<ConfigWarning>), ConfigErrors> {
    let mut warnings = found.warnings.clone();
    let config = match (&found.form, &found.value) {
        (InputForm::CustomResources, Value::Sequence(docs)) => {
            let (config, skipped) = crate::crd::text::read_documents(docs)?;
            warnings.extend(skipped);
            config
        }
        (_, value) => crate::validate::validate(value, "")?,
    };
    Ok((config, warnings))
}

/// `configInline` is a mapping; some values files hold it as a YAML string instead. Empty
/// (null) reads as an empty configuration.
pub(crate) fn inline_value(v: &Value, path: &str) -> Result<Value, ConfigErrors> {
    let value = match v {
        Value::String(s) => single(s, path)?,
        other => other.clone(),
    };
    match untag(&value) {
        Value::Mapping(_) | Value::Null => Ok(value),
        other => Err(ConfigErrors::one(ConfigError::new(
            path,
            Some(describe(other)),
            "expected a mapping (peers, address-pools, bgp-communities, bfd-profiles)",
        ))),
    }
}

/// The one YAML document of an embedded string.
pub(crate) fn single(text: &str, path: &str) -> Result<Value, ConfigErrors> {
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

/// A rendered ConfigMap manifest and the warnings about its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub manifest: String,
    pub warnings: Vec<ConfigWarning>,
}

/// A ConfigMap manifest (`namespace/name`, key `config`) holding the configuration found in
/// `text` (any input form), after checking that it is valid. The configuration YAML is
/// re-emitted as read (comments are not kept).
pub fn render_configmap(text: &str, namespace: &str, name: &str) -> Result<Rendered, ConfigErrors> {
    let Extracted {
        form,
        value,
        warnings,
    } = extract_with_warnings(text)?;
    if form == InputForm::CustomResources {
        return Err(ConfigErrors::one(ConfigError::new(
            "<input>",
            None,
            "MetalLB custom resources are applied as they are (kubectl apply -f); there is no ConfigMap to render",
        )));
    }
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
    let manifest = serde_yaml::to_string(&Value::Mapping(cm)).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            "<input>",
            None,
            format!("cannot render: {e}"),
        ))
    })?;
    Ok(Rendered { manifest, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_configmap_parses_back_to_the_same_config() {
        let konvoy = "kind: ClusterConfiguration\nspec:\n  addons:\n  - addonsList:\n    - name: metallb\n      values: |-\n        configInline:\n          peers:\n          - {my-asn: 64500, peer-asn: 64501, peer-address: 192.0.2.1}\n          address-pools:\n          - name: default\n            protocol: bgp\n            addresses: [198.51.100.0/24]\n";
        let cm = render_configmap(konvoy, "metallb-system", "config")
            .unwrap()
            .manifest;
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
