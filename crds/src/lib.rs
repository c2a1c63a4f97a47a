//! ferrolb-crds: MetalLB's custom resources (group `metallb.io`, the kinds and versions of
//! MetalLB 0.16) as Rust types, the CRD manifests generated from them ([`definitions`],
//! [`manifest`], checked against `manifests/base/crds.yaml` by a test), and `ferrolb config convert`:
//! a configuration turned into the equivalent objects ([`convert`]).
//!
//! Reading the objects into a configuration is `ferrolb_config::crd`'s job (pure, every problem
//! with its object and field path); the Kubernetes roles watch the objects and hand them over.
//!
//! Must not: talk to a cluster, or read configuration.

pub mod convert;
pub mod types;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;

pub use convert::{convert, ConvertError, Converted};

/// The CRDs, in the order they are applied: configuration kinds, then status kinds.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    use types::*;
    let mut crds = vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        BGPAdvertisement::crd(),
        Community::crd(),
        BGPPeer::crd(),
        BFDProfile::crd(),
        ConfigurationState::crd(),
        ServiceL2Status::crd(),
        ServiceBGPStatus::crd(),
    ];
    for crd in &mut crds {
        if crd.spec.names.kind != "IPAddressPool" {
            spec_optional(crd);
        }
        for v in &mut crd.spec.versions {
            if let Some(root) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                no_null_in_enums(root);
            }
        }
        crd.metadata.labels =
            Some([("app.kubernetes.io/name".to_string(), "ferrolb".to_string())].into());
    }
    crds
}

/// MetalLB's objects may leave `spec` out (MetalLB's documentation does, for an
/// L2Advertisement of every pool); only an IPAddressPool must have one.
fn spec_optional(crd: &mut CustomResourceDefinition) {
    for v in &mut crd.spec.versions {
        let root = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(root) = root {
            if let Some(required) = root.required.as_mut() {
                required.retain(|f| f != "spec");
            }
            if root.required.as_ref().is_some_and(Vec::is_empty) {
                root.required = None;
            }
        }
    }
}

/// Two things schemars writes that kube-apiserver 1.20 refuses: `null` among an optional enum's
/// values ("per-version schemas may not all be set to identical values"; `nullable: true`
/// already allows null) and the `default` of a field Rust fills in when it is absent (`""`,
/// read as "null"). ferrolb's reader fills MetalLB's defaults itself.
fn no_null_in_enums(s: &mut JSONSchemaProps) {
    if let Some(values) = s.enum_.as_mut() {
        values.retain(|v| !v.0.is_null());
    }
    s.default = None;
    for p in s.properties.iter_mut().flat_map(|m| m.values_mut()) {
        no_null_in_enums(p);
    }
    match s.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(i)) => no_null_in_enums(i),
        Some(JSONSchemaPropsOrArray::Schemas(all)) => all.iter_mut().for_each(no_null_in_enums),
        None => {}
    }
}

/// `manifests/base/crds.yaml`: every CRD, one YAML document each.
pub fn manifest() -> Result<String, serde_yaml::Error> {
    let mut out = String::from(
        "# MetalLB's custom resources (metallb.io), as ferrolb reads and writes them.\n\
         # Generated from the Rust types in crds/src/types (`ferrolb config crds` prints it); do not edit.\n\
         # The same group, kinds, versions and fields as MetalLB 0.16: a cluster that runs MetalLB\n\
         # 0.13 to 0.16 may keep its own CRDs instead.\n",
    );
    for crd in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
