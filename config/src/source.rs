//! Which configuration source a Kubernetes role reads: MetalLB 0.12's ConfigMap, MetalLB 0.13+'s
//! custom resources, or (the default) whichever the cluster has, so that a MetalLB 0.12 user and
//! a 0.13+ user both keep working without flags:
//! - `configmap`: only the ConfigMap;
//! - `crds`: only the `metallb.io` objects;
//! - `auto`: the ConfigMap when there are no configuration objects, the objects when there is no
//!   ConfigMap; when both are there they must mean the same ([`equivalent`]), else the candidate
//!   is an error that says so (the configuration in force stays, as for any refusal).
//!
//! Nothing is offered while the chosen source holds nothing (no ConfigMap, no objects): a
//! restarted role never loads an empty configuration that would take every address away.
//!
//! Must not: read a cluster (the roles hand in what their watches hold).

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::Value;

use crate::errors::{ConfigError, ConfigErrors};
use crate::model::{Config, Pool};

/// `--config-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    ConfigMap,
    Crds,
    #[default]
    Auto,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::ConfigMap => "configmap",
            Source::Crds => "crds",
            Source::Auto => "auto",
        })
    }
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    ConfigMap,
    Crds,
    /// Both, and they disagree.
    Both,
}

/// The candidate configuration of what the sources hold now, and where it came from; `None`
/// when there is nothing to offer. `config_map`: the ConfigMap's `data.config` (`None`: no
/// ConfigMap); `objects`: the `metallb.io` objects, with the Namespaces and Secrets they refer
/// to, as plain values; `config_map_name`: `namespace/name`, for the conflict's message.
pub fn choose(
    source: Source,
    config_map: Option<&str>,
    objects: &[Value],
    config_map_name: &str,
) -> Option<(From, Result<Config, ConfigErrors>)> {
    let has_objects = crate::crd::text::has_custom_resources(objects);
    let from_map = || crate::parse(config_map.unwrap_or_default());
    let from_objects = || crate::crd::text::read_documents(objects).map(|(c, _)| c);
    match source {
        Source::ConfigMap => config_map.map(|_| (From::ConfigMap, from_map())),
        Source::Crds => has_objects.then(|| (From::Crds, from_objects())),
        Source::Auto => match (config_map.is_some(), has_objects) {
            (false, false) => None,
            (true, false) => Some((From::ConfigMap, from_map())),
            (false, true) => Some((From::Crds, from_objects())),
            (true, true) => Some(match (from_map(), from_objects()) {
                (Ok(a), Ok(b)) if equivalent(&a, &b) => (From::Crds, Ok(b)),
                _ => (
                    From::Both,
                    Err(ConfigErrors::one(ConfigError::new(
                        "<sources>",
                        None,
                        format!(
                            "both ConfigMap {config_map_name} and MetalLB custom resources (metallb.io) configure ferrolb, and they do not mean the same; delete one of them, or choose one with --config-source configmap|crds"
                        ),
                    ))),
                ),
            }),
        },
    }
}

/// True when two configurations make the same decisions: the same peers (names aside), pools
/// (by name made DNS-safe, as `config convert` names them), announcements, communities, BFD
/// profiles, and the same order of pools for a Service that asks for none (priorities that only
/// keep an order aside).
pub fn equivalent(a: &Config, b: &Config) -> bool {
    let peers = |c: &Config| {
        let mut p: Vec<String> = c
            .peers
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.name = None;
                format!("{p:?}{:?}", p.password)
            })
            .collect();
        p.sort();
        p
    };
    let bfd = |c: &Config| {
        let mut b = c.bfd_profiles.clone();
        b.sort_by(|x, y| x.name.cmp(&y.name));
        b
    };
    let order = |c: &Config| -> Vec<String> {
        c.unasked_pools("default", &BTreeMap::new())
            .into_iter()
            .map(|i| safe(&c.pools[i].name))
            .collect()
    };
    peers(a) == peers(b)
        && a.communities == b.communities
        && a.large_communities == b.large_communities
        && bfd(a) == bfd(b)
        && pools(a) == pools(b)
        && order(a) == order(b)
}

fn safe(name: &str) -> String {
    name.replace('_', "-").to_lowercase()
}

/// The pools by DNS-safe name, a `serviceAllocation` that only sets a priority left out.
fn pools(c: &Config) -> BTreeMap<String, Pool> {
    c.pools
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.name = safe(&p.name);
            if p.service_allocation
                .as_ref()
                .is_some_and(|s| s.namespaces.is_none() && s.service_selectors.is_empty())
            {
                p.service_allocation = None;
            }
            (p.name.clone(), p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CM: &str = "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";

    fn objects(cidr: &str) -> Vec<Value> {
        crate::forms::documents(
            &format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: a}}\nspec: {{addresses: ['{cidr}']}}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: l2}}\n"
            ),
            "<input>",
        )
        .expect("YAML")
    }

    fn from(c: Option<(From, Result<Config, ConfigErrors>)>) -> Option<(From, bool)> {
        c.map(|(f, r)| (f, r.is_ok()))
    }

    #[test]
    fn auto_takes_whichever_source_is_there_and_refuses_two_that_differ() {
        let same = objects("192.0.2.0/28");
        let other = objects("198.51.100.0/28");
        let n = "ns/config";
        assert_eq!(from(choose(Source::Auto, None, &[], n)), None);
        assert_eq!(
            from(choose(Source::Auto, Some(CM), &[], n)),
            Some((From::ConfigMap, true))
        );
        assert_eq!(
            from(choose(Source::Auto, None, &same, n)),
            Some((From::Crds, true))
        );
        assert_eq!(
            from(choose(Source::Auto, Some(CM), &same, n)),
            Some((From::Crds, true)),
            "the same meaning: no conflict"
        );
        let (f, r) = choose(Source::Auto, Some(CM), &other, n).expect("a candidate");
        assert_eq!(f, From::Both);
        let e = r.expect_err("a conflict");
        assert!(e.0[0].reason.contains("ConfigMap ns/config"), "{e}");
        // An explicit choice reads one source and ignores the other.
        assert_eq!(
            from(choose(Source::ConfigMap, Some(CM), &other, n)),
            Some((From::ConfigMap, true))
        );
        assert_eq!(
            from(choose(Source::Crds, Some(CM), &other, n)),
            Some((From::Crds, true))
        );
        assert_eq!(from(choose(Source::Crds, Some(CM), &[], n)), None);
        assert_eq!(from(choose(Source::ConfigMap, None, &other, n)), None);
    }
}
