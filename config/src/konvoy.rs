//! Konvoy `cluster.yaml`: the MetalLB configuration is the `configInline` of the `values` string
//! of the addon named `metallb`. `spec.addons` comes in two shapes, both read:
//! - a mapping with `addonsList` directly under it, as Konvoy's load-balancing page writes it
//!   (addons at `spec.addons.addonsList[i]`);
//! - a list of addon repositories, each with its own `addonsList`, as later releases write it
//!   (addons at `spec.addons[r].addonsList[i]`).
//!
//! A ClusterConfiguration without a usable `metallb` addon is an error that says what is missing
//! and where; a `metallb` addon with `enabled: false` is read, with a warning.
//!
//! Must not: validate the MetalLB configuration itself (see `validate`).

use serde_yaml::Value;

use crate::errors::{ConfigError, ConfigErrors, ConfigWarning, Problems};
use crate::forms::{inline_value, single, Extracted, InputForm};
use crate::yamlx::{describe, get, get_str, index, join};

const ADDON: &str = "metallb";

/// Reads the `metallb` addon of a ClusterConfiguration document (`doc` has `kind:
/// ClusterConfiguration` or a `spec.addons`).
pub(crate) fn read(doc: &Value) -> Result<Extracted, ConfigErrors> {
    let Some(addons) = get(doc, "spec").and_then(|s| get(s, "addons")) else {
        return Err(one(
            "spec.addons",
            None,
            "missing: a ClusterConfiguration holds the MetalLB configuration in the metallb addon (spec.addons.addonsList[].values, its configInline)",
        ));
    };
    let (lists, nowhere) = addon_lists(addons)?;
    let found: Vec<(String, &Value)> = lists
        .iter()
        .flat_map(|(path, list)| {
            list.iter()
                .enumerate()
                .map(move |(i, addon)| (index(path, i), addon))
        })
        .filter(|(_, addon)| get_str(addon, "name") == Some(ADDON))
        .collect();
    match found.as_slice() {
        [] => {
            let names: Vec<&str> = lists
                .iter()
                .flat_map(|(_, list)| list.iter().filter_map(|a| get_str(a, "name")))
                .collect();
            let seen = if names.is_empty() {
                String::new()
            } else {
                format!("; addons found: {}", names.join(", "))
            };
            Err(one(
                &nowhere,
                None,
                format!("no addon named metallb (the configInline of its values holds the MetalLB configuration){seen}"),
            ))
        }
        [(path, addon)] => metallb_addon(path, addon),
        [(first, _), (second, _), ..] => Err(one(
            &join(second, "name"),
            Some(ADDON.to_string()),
            format!("a second metallb addon (the first is {first}); keep one"),
        )),
    }
}

/// The addon lists under `spec.addons`, each with its path.
type AddonLists<'a> = Vec<(String, &'a [Value])>;

/// The addon lists under `spec.addons`, and the path to name when no list holds a metallb addon.
fn addon_lists(addons: &Value) -> Result<(AddonLists<'_>, String), ConfigErrors> {
    match addons {
        Value::Mapping(_) => {
            let path = "spec.addons.addonsList".to_string();
            match get(addons, "addonsList") {
                None => Err(one(
                    &path,
                    None,
                    "missing: the list of addons, with one named metallb",
                )),
                Some(Value::Sequence(list)) => Ok((vec![(path.clone(), list.as_slice())], path)),
                Some(other) => Err(one(
                    &path,
                    Some(describe(other)),
                    "expected a list of addons",
                )),
            }
        }
        Value::Sequence(repos) => {
            let mut p = Problems::default();
            let mut lists = Vec::new();
            for (r, repo) in repos.iter().enumerate() {
                let path = join(&index("spec.addons", r), "addonsList");
                match get(repo, "addonsList") {
                    None => {}
                    Some(Value::Sequence(list)) => lists.push((path, list.as_slice())),
                    Some(other) => p.push(&path, Some(describe(other)), "expected a list of addons"),
                }
            }
            let nowhere = "spec.addons[].addonsList".to_string();
            p.into_result((lists, nowhere))
        }
        other => Err(one(
            "spec.addons",
            Some(describe(other)),
            "expected a mapping with addonsList, or a list of addon repositories each with addonsList",
        )),
    }
}

/// The configuration of the one `metallb` addon at `path`: every problem with it at once.
fn metallb_addon(path: &str, addon: &Value) -> Result<Extracted, ConfigErrors> {
    let mut p = Problems::default();
    let mut warnings = Vec::new();
    let enabled = join(path, "enabled");
    match get(addon, "enabled") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => warnings.push(ConfigWarning::new(
            &enabled,
            Some("false".to_string()),
            "the metallb addon is disabled, so Konvoy does not deploy MetalLB; its configuration is read all the same",
        )),
        Some(other) => p.push(&enabled, Some(describe(other)), "expected true or false"),
    }
    let values_path = join(path, "values");
    let value = match get(addon, "values") {
        None => {
            p.push(
                &values_path,
                None,
                "missing: the metallb addon has no values (their configInline holds the MetalLB configuration)",
            );
            None
        }
        Some(Value::String(text)) => match single(text, &values_path) {
            Ok(values) => config_inline(&values, &values_path, &mut p),
            Err(e) => {
                p.extend(e);
                None
            }
        },
        Some(other) => {
            p.push(
                &values_path,
                Some(describe(other)),
                "expected a string holding YAML: Konvoy's addon values are a YAML string (`values: |-`, the YAML indented under it)",
            );
            None
        }
    };
    p.into_result(())?;
    Ok(Extracted {
        form: InputForm::KonvoyClusterYaml,
        value: value.unwrap_or(Value::Null),
        warnings,
    })
}

/// `configInline` of the parsed `values`.
fn config_inline(values: &Value, path: &str, p: &mut Problems) -> Option<Value> {
    let inline = match values {
        Value::Null => None,
        Value::Mapping(_) => get(values, "configInline"),
        other => {
            p.push(
                path,
                Some(describe(other)),
                "expected YAML holding a mapping with configInline",
            );
            return None;
        }
    };
    let Some(inline) = inline else {
        let near = values.as_mapping().and_then(|m| {
            m.keys().filter_map(Value::as_str).find(|k| {
                k.replace(['-', '_'], "")
                    .eq_ignore_ascii_case("configinline")
            })
        });
        let reason = match near {
            Some(k) => format!(
                "the metallb addon's values have no configInline (found `{k}`: the key is spelt `configInline`)"
            ),
            None => "the metallb addon's values have no configInline".to_string(),
        };
        p.push(path, None, reason);
        return None;
    };
    match inline_value(inline, &join(path, "configInline")) {
        Ok(v) => Some(v),
        Err(e) => {
            p.extend(e);
            None
        }
    }
}

fn one(path: &str, value: Option<String>, reason: impl Into<String>) -> ConfigErrors {
    ConfigErrors::one(ConfigError::new(path, value, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        let doc: Value = serde_yaml::from_str(text).unwrap();
        read(&doc)
            .unwrap_err()
            .iter()
            .map(|e| e.path.clone())
            .collect()
    }

    fn page_shape(addon: &str) -> String {
        format!("kind: ClusterConfiguration\nspec:\n  addons:\n    addonsList:\n    - name: dashboard\n{addon}")
    }

    #[test]
    fn both_shapes_give_the_same_configuration() {
        let values = "      values: |-\n        configInline:\n          address-pools: []\n";
        let map = page_shape(&format!(
            "    - name: metallb\n      enabled: true\n{values}"
        ));
        let list = "kind: ClusterConfiguration\nspec:\n  addons:\n  - configRepository: a\n    addonsList:\n    - name: dashboard\n  - configRepository: b\n    addonsList:\n    - name: metallb\n      values: |-\n        configInline:\n          address-pools: []\n".to_string();
        for text in [map, list] {
            let doc: Value = serde_yaml::from_str(&text).unwrap();
            let got = read(&doc).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(got.form, InputForm::KonvoyClusterYaml);
            assert!(got.warnings.is_empty());
            assert_eq!(
                got.value,
                serde_yaml::from_str::<Value>("address-pools: []").unwrap()
            );
        }
    }

    #[test]
    fn each_missing_part_is_named_by_its_path() {
        assert_eq!(
            paths("kind: ClusterConfiguration\nspec: {kubernetes: {}}\n"),
            ["spec.addons"]
        );
        assert_eq!(paths("spec: {addons: 3}\n"), ["spec.addons"]);
        assert_eq!(
            paths("spec: {addons: {configRepository: x}}\n"),
            ["spec.addons.addonsList"]
        );
        assert_eq!(
            paths("spec: {addons: {addonsList: {name: metallb}}}\n"),
            ["spec.addons.addonsList"]
        );
        assert_eq!(
            paths("spec: {addons: [{addonsList: [{name: traefik}]}]}\n"),
            ["spec.addons[].addonsList"]
        );
        assert_eq!(
            paths("spec: {addons: [{addonsList: 1}, {addonsList: x}]}\n"),
            ["spec.addons[0].addonsList", "spec.addons[1].addonsList"]
        );
        assert_eq!(
            paths("spec: {addons: [{addonsList: [{name: metallb}]}, {addonsList: [{name: metallb}]}]}\n"),
            ["spec.addons[1].addonsList[0].name"]
        );
        assert_eq!(
            paths(&page_shape("    - name: metallb\n      enabled: 'no'\n")),
            [
                "spec.addons.addonsList[1].enabled",
                "spec.addons.addonsList[1].values"
            ]
        );
        assert_eq!(
            paths(&page_shape("    - name: metallb\n      values: '[1]'\n")),
            ["spec.addons.addonsList[1].values"]
        );
        assert_eq!(
            paths(&page_shape("    - name: metallb\n      values: ''\n")),
            ["spec.addons.addonsList[1].values"]
        );
        assert_eq!(
            paths(&page_shape(
                "    - name: metallb\n      values: 'configInline: 7'\n"
            )),
            ["spec.addons.addonsList[1].values.configInline"]
        );
    }

    #[test]
    fn a_disabled_addon_is_read_with_a_warning() {
        let text = page_shape(
            "    - name: metallb\n      enabled: false\n      values: 'configInline: {}'\n",
        );
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let got = read(&doc).unwrap();
        assert_eq!(
            got.warnings
                .iter()
                .map(|w| w.path.as_str())
                .collect::<Vec<_>>(),
            ["spec.addons.addonsList[1].enabled"]
        );
        assert!(got.value.is_mapping());
    }
}
