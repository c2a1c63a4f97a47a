//! The CRD manifests and `config convert`, offline:
//! - `manifests/base/crds.yaml` is exactly what the Rust types generate (`FERROLB_BLESS=1` rewrites it);
//! - every field the schemas accept is one ferrolb reads or reports as not implemented;
//! - every example under `manifests/examples/` and every valid config fixture converts to CRDs
//!   (golden files under `tests/data/convert/`) that read back to a configuration with the same
//!   pools, peers, announcements and the same order of pools for Services that ask for none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrolb_config::{Config, Pool};
use serde_json::Value as Json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn bless() -> bool {
    std::env::var_os("FERROLB_BLESS").is_some_and(|v| v == "1")
}

/// Compares `got` with the file at `path`, or rewrites it when blessing.
fn golden(path: &Path, got: &str) {
    if bless() {
        std::fs::write(path, got).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with FERROLB_BLESS=1)", path.display()));
    assert!(
        want == got,
        "{} differs from what the code produces (run with FERROLB_BLESS=1 to accept):\n{got}",
        path.display()
    );
}

#[test]
fn manifests_crds_yaml_is_what_the_types_generate() {
    let got = ferrolb_crds::manifest().expect("YAML");
    golden(&root().join("manifests/base/crds.yaml"), &got);
    let kinds: Vec<String> = ferrolb_crds::definitions()
        .iter()
        .map(|c| c.spec.names.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "IPAddressPool",
            "L2Advertisement",
            "BGPAdvertisement",
            "Community",
            "BGPPeer",
            "BFDProfile",
            "ConfigurationState",
            "ServiceL2Status",
            "ServiceBGPStatus"
        ]
    );
}

/// A value of the type a schema asks for (every property of an object filled in).
fn sample(schema: &Json) -> Json {
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match schema.get("type").and_then(Json::as_str) {
        Some("object") => {
            let mut m = serde_json::Map::new();
            for (k, v) in schema
                .get("properties")
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                m.insert(k.clone(), sample(v));
            }
            if let Some(extra) = schema.get("additionalProperties") {
                m.insert("key".into(), sample(extra));
            }
            Json::Object(m)
        }
        Some("array") => Json::Array(vec![sample(&schema["items"])]),
        Some("integer") => Json::from(
            schema
                .get("minimum")
                .and_then(Json::as_f64)
                .map_or(1, |m| m.max(1.0) as i64),
        ),
        Some("boolean") => Json::Bool(true),
        _ => Json::String("x".into()),
    }
}

#[test]
fn every_field_the_schemas_accept_is_read_or_reported_as_not_implemented() {
    for crd in ferrolb_crds::definitions() {
        let kind = crd.spec.names.kind.clone();
        if ferrolb_config::crd::Kind::from_name(&kind).is_none() {
            continue;
        }
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a schema"),
        )
        .expect("JSON");
        let spec = sample(&schema["properties"]["spec"]);
        let object = serde_json::json!({
            "apiVersion": format!("metallb.io/{}", version.name),
            "kind": kind,
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": spec,
        });
        let text = serde_yaml::to_string(&object).expect("YAML");
        let problems = match ferrolb_config::parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        let unknown: Vec<String> = problems
            .iter()
            .filter(|p| p.reason.contains("unknown field"))
            .map(ToString::to_string)
            .collect();
        assert!(unknown.is_empty(), "{kind}: {unknown:#?}");
        // The sample sets every field, so each field ferrolb does not implement is reported.
        let not_implemented = problems
            .iter()
            .filter(|p| p.reason.contains("does not implement"))
            .count();
        let expected = match kind.as_str() {
            "BGPPeer" => 7,
            "L2Advertisement" => 2,
            "BGPAdvertisement" => 1,
            _ => 0,
        };
        assert_eq!(not_implemented, expected, "{kind}: {problems:#?}");
    }
}

/// The inputs of the golden conversion: the examples and the valid config fixtures.
fn inputs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["manifests/examples", "config/tests/data/valid"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

#[test]
fn every_example_and_fixture_converts_to_crds_that_mean_the_same() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert");
    let inputs = inputs();
    assert!(inputs.len() >= 15, "{inputs:?}");
    for path in inputs {
        let text = std::fs::read_to_string(&path).expect("read");
        let before =
            ferrolb_config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let converted = ferrolb_crds::convert(&before, "metallb-system").expect("converts");
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let prefix = if path.starts_with(root().join("manifests")) {
            "example-"
        } else {
            ""
        };
        let mut shown = converted.yaml.clone();
        for n in &converted.notes {
            shown = format!("# {n}\n{shown}");
        }
        golden(&dir.join(format!("{prefix}{stem}.yaml")), &shown);
        if before == Config::default() {
            assert_eq!(converted.yaml, "", "{}: nothing to convert", path.display());
            continue;
        }
        let after = ferrolb_config::parse_with_warnings(&converted.yaml).unwrap_or_else(|e| {
            panic!("{}: the converted objects do not read: {e}", path.display())
        });
        assert_eq!(after.form, ferrolb_config::InputForm::CustomResources);
        assert!(after.warnings.is_empty(), "{:?}", after.warnings);
        same_meaning(&path, &before, &after.config);
        assert!(
            ferrolb_config::source::equivalent(&before, &after.config),
            "{}",
            path.display()
        );
    }
}

/// Everything allocation and announcement decide from: the same, up to pool and peer names
/// and the priorities that keep the ConfigMap's order.
fn same_meaning(path: &Path, a: &Config, b: &Config) {
    let at = path.display();
    let safe = |n: &str| n.replace('_', "-").to_lowercase();
    let mut peers_a = a.peers.clone();
    let mut peers_b = b.peers.clone();
    for p in peers_a.iter_mut().chain(peers_b.iter_mut()) {
        p.name = None;
    }
    peers_b.sort_by_key(|p| format!("{p:?}"));
    peers_a.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(peers_a, peers_b, "{at}: peers");
    assert_eq!(a.communities, b.communities, "{at}: communities");
    let mut bfd_a = a.bfd_profiles.clone();
    bfd_a.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(bfd_a, b.bfd_profiles, "{at}: bfd profiles (by name)");
    let by_name = |c: &Config| -> BTreeMap<String, Pool> {
        c.pools
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.name = safe(&p.name);
                if p.service_allocation
                    .as_ref()
                    .is_some_and(|s| s.namespaces.is_none() && s.service_selectors.is_empty())
                {
                    // Priority-only: the order check below covers it.
                    p.service_allocation = None;
                }
                (p.name.clone(), p)
            })
            .collect()
    };
    assert_eq!(by_name(a), by_name(b), "{at}: pools");
    let order = |c: &Config| -> Vec<String> {
        c.unasked_pools("default", &BTreeMap::new())
            .into_iter()
            .map(|i| safe(&c.pools[i].name))
            .collect()
    };
    assert_eq!(order(a), order(b), "{at}: the order pools are tried in");
}

#[test]
fn pools_listed_out_of_name_order_keep_their_order_through_priorities() {
    let cm = "address-pools:\n- {name: zeta, protocol: layer2, addresses: [192.0.2.0/28]}\n- {name: My_Pool, protocol: bgp, addresses: [198.51.100.0/28]}\n- {name: alpha, protocol: layer2, auto-assign: false, addresses: [203.0.113.0/28]}\n";
    let before = ferrolb_config::parse(cm).expect("valid");
    let converted = ferrolb_crds::convert(&before, "metallb-system").expect("converts");
    assert_eq!(converted.notes.len(), 2, "{:?}", converted.notes);
    assert!(converted.notes[0].contains("\"My_Pool\" is IPAddressPool \"my-pool\""));
    let after = ferrolb_config::parse(&converted.yaml).expect("reads");
    same_meaning(Path::new("inline"), &before, &after);
    assert!(converted.yaml.contains("priority: 1"), "{}", converted.yaml);
    let clash = "address-pools:\n- {name: a_b, protocol: layer2, addresses: [192.0.2.0/28]}\n- {name: a-b, protocol: layer2, addresses: [198.51.100.0/28]}\n";
    let e = ferrolb_crds::convert(&ferrolb_config::parse(clash).expect("valid"), "x")
        .expect_err("a clash");
    assert!(e.to_string().contains("\"a-b\""), "{e}");
}
