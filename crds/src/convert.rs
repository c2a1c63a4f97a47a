//! `ferrolb config convert`: a validated configuration (from a ConfigMap, a raw file, Helm values
//! or a Konvoy cluster.yaml) as the MetalLB custom resources that mean the same, following
//! MetalLB's `configmaptocrs`: BFDProfiles by name, `peers[i]` as BGPPeer `peer{i+1}`, the
//! `bgp-communities` as one Community named `communities`, each pool as an IPAddressPool of its
//! name made DNS-safe, each layer2 pool's announcement as L2Advertisement `l2advertisement{n}`,
//! each of a BGP pool's advertisements as BGPAdvertisement `bgpadvertisement{n}`.
//!
//! Two things MetalLB's converter loses are kept: a ConfigMap tries auto-assign pools in the
//! order it lists them, while MetalLB orders IPAddressPools only by priority, so pools listed out
//! of name order get `serviceAllocation.priority` 1, 2, ... in their ConfigMap order; and a pool
//! whose name is not DNS-safe is renamed and the rename reported (Services that ask for it by
//! name must follow).
//!
//! Must not: validate (the input is a validated `Config`) or do I/O.

use std::collections::BTreeMap;

use ferrolb_config::crd::natural;
use ferrolb_config::{
    BgpAdvertisement, Config, IpRange, MatchExpression, NodeSelector, Peer, Pool, SelectorOperator,
};
use kube::api::ObjectMeta;

use crate::types::*;

/// Why a configuration could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("pools {first:?} and {second:?} both become IPAddressPool {name:?}; rename one")]
    NameClash {
        first: String,
        second: String,
        name: String,
    },
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The objects as one multi-document YAML text, and what the user must know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub yaml: String,
    /// One line per thing that changed on the way (a pool renamed, a priority added).
    pub notes: Vec<String>,
}

/// The objects equivalent to `config`, in `namespace`.
pub fn convert(config: &Config, namespace: &str) -> Result<Converted, ConvertError> {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectMeta::default()
    };
    let mut notes = Vec::new();
    let names = pool_names(&config.pools, &mut notes)?;
    let mut docs: Vec<String> = Vec::new();
    let mut push = |obj: &dyn erased::Yaml| -> Result<(), ConvertError> {
        docs.push(obj.yaml()?);
        Ok(())
    };
    for b in &config.bfd_profiles {
        push(&BFDProfile {
            metadata: meta(&b.name),
            spec: bfd(b),
        })?;
    }
    for (i, p) in config.peers.iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| format!("peer{}", i + 1));
        push(&BGPPeer {
            metadata: meta(&name),
            spec: peer(p),
        })?;
    }
    if !config.communities.is_empty() || !config.large_communities.is_empty() {
        let mut communities: Vec<CommunityAlias> = config
            .communities
            .iter()
            .map(|(name, c)| CommunityAlias {
                name: name.clone(),
                value: c.to_string(),
            })
            .collect();
        communities.extend(
            config
                .large_communities
                .iter()
                .map(|(name, c)| CommunityAlias {
                    name: name.clone(),
                    value: c.to_string(),
                }),
        );
        communities.sort_by(|a, b| a.name.cmp(&b.name));
        push(&Community {
            metadata: meta("communities"),
            spec: CommunitySpec { communities },
        })?;
    }
    let priorities = priorities(config, &names, &mut notes);
    for (i, pool) in config.pools.iter().enumerate() {
        push(&IPAddressPool {
            metadata: meta(&names[i]),
            spec: pool_spec(pool, priorities.get(&i).copied()),
            status: None,
        })?;
    }
    let mut n = 0;
    for (i, pool) in config.pools.iter().enumerate() {
        for spec in layer2(pool, &names[i]) {
            n += 1;
            push(&L2Advertisement {
                metadata: meta(&format!("l2advertisement{n}")),
                spec,
            })?;
        }
    }
    let mut n = 0;
    for (i, pool) in config.pools.iter().enumerate() {
        if !pool.protocol.bgp() {
            continue;
        }
        for ad in &pool.bgp_advertisements {
            n += 1;
            push(&BGPAdvertisement {
                metadata: meta(&format!("bgpadvertisement{n}")),
                spec: bgp(ad, &names[i], config),
            })?;
        }
    }
    let mut yaml = String::new();
    for d in docs {
        yaml.push_str("---\n");
        yaml.push_str(&d);
    }
    Ok(Converted { yaml, notes })
}

/// Serialising the different object types through one closure.
mod erased {
    pub trait Yaml {
        fn yaml(&self) -> Result<String, serde_yaml::Error>;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn yaml(&self) -> Result<String, serde_yaml::Error> {
            serde_yaml::to_string(self)
        }
    }
}

/// Each pool's object name: its name made DNS-safe (`_` to `-`, lower case), as MetalLB 0.13.11
/// and later convert it.
fn pool_names(pools: &[Pool], notes: &mut Vec<String>) -> Result<Vec<String>, ConvertError> {
    let mut out: Vec<String> = Vec::with_capacity(pools.len());
    for p in pools {
        let safe = p.name.replace('_', "-").to_lowercase();
        if let Some(j) = out.iter().position(|n| *n == safe) {
            return Err(ConvertError::NameClash {
                first: pools[j].name.clone(),
                second: p.name.clone(),
                name: safe,
            });
        }
        if safe != p.name {
            notes.push(format!(
                "pool {:?} is IPAddressPool {safe:?}: Services that ask for it by name (address-pool annotation) must use the new name",
                p.name
            ));
        }
        out.push(safe);
    }
    Ok(out)
}

/// Priorities that keep the ConfigMap's order of auto-assign pools: none when that order is
/// already the order MetalLB's objects are read in (by name).
fn priorities(config: &Config, names: &[String], notes: &mut Vec<String>) -> BTreeMap<usize, i32> {
    let auto: Vec<usize> = (0..config.pools.len())
        .filter(|&i| config.pools[i].auto_assign && config.pools[i].service_allocation.is_none())
        .collect();
    let in_order = auto
        .windows(2)
        .all(|w| natural(&names[w[0]], &names[w[1]]).is_lt());
    if in_order || config.allocates_by_service() {
        return BTreeMap::new();
    }
    notes.push(
        "auto-assign pools get serviceAllocation.priority 1, 2, ... so that they are tried in the ConfigMap's order".to_string(),
    );
    auto.into_iter()
        .enumerate()
        .map(|(k, i)| (i, i32::try_from(k + 1).unwrap_or(i32::MAX)))
        .collect()
}

fn pool_spec(pool: &Pool, priority: Option<i32>) -> IPAddressPoolSpec {
    let service_allocation = match (&pool.service_allocation, priority) {
        (Some(a), _) => Some(ServiceAllocation {
            priority: i32::try_from(a.priority).unwrap_or(i32::MAX),
            namespaces: a.namespaces.iter().flatten().cloned().collect(),
            namespace_selectors: Vec::new(),
            service_selectors: a.service_selectors.iter().map(selector).collect(),
        }),
        (None, Some(priority)) => Some(ServiceAllocation {
            priority,
            ..ServiceAllocation::default()
        }),
        (None, None) => None,
    };
    IPAddressPoolSpec {
        addresses: pool.ranges.iter().map(range_text).collect(),
        auto_assign: pool.auto_assign,
        avoid_buggy_ips: pool.avoid_buggy_ips,
        service_allocation,
    }
}

/// A range as a CIDR when it is exactly one, else `first-last`.
fn range_text(r: &IpRange) -> String {
    let bits = if r.first().is_ipv4() { 32 } else { 128 };
    let len = r.len();
    if len.is_power_of_two() {
        let prefix = bits - len.trailing_zeros();
        if let Ok(net) = ipnet::IpNet::new(r.first(), u8::try_from(prefix).unwrap_or(0)) {
            if net.network() == r.first() {
                return net.to_string();
            }
        }
    }
    if len == u128::MAX && bits == 128 {
        // The whole IPv6 space (len() saturates).
        return "::/0".to_string();
    }
    format!("{}-{}", r.first(), r.last())
}

fn layer2(pool: &Pool, name: &str) -> Vec<L2AdvertisementSpec> {
    if !pool.protocol.layer2() {
        return Vec::new();
    }
    let one = |interfaces: &[String], nodes: &[NodeSelector]| L2AdvertisementSpec {
        ip_address_pools: vec![name.to_string()],
        interfaces: interfaces.to_vec(),
        node_selectors: nodes.iter().map(selector).collect(),
        ..L2AdvertisementSpec::default()
    };
    if pool.l2_advertisements.is_empty() {
        return vec![one(&pool.interfaces, &[])];
    }
    pool.l2_advertisements
        .iter()
        .map(|a| one(&a.interfaces, &a.node_selectors))
        .collect()
}

fn bgp(ad: &BgpAdvertisement, pool: &str, config: &Config) -> BGPAdvertisementSpec {
    let alias = |value: String| -> String {
        config
            .communities
            .iter()
            .map(|(n, c)| (n, c.to_string()))
            .chain(
                config
                    .large_communities
                    .iter()
                    .map(|(n, c)| (n, c.to_string())),
            )
            .find(|(_, v)| *v == value)
            .map_or(value, |(n, _)| n.clone())
    };
    let mut communities: Vec<String> = ad
        .communities
        .iter()
        .map(|c| alias(c.to_string()))
        .collect();
    communities.extend(ad.large_communities.iter().map(|c| alias(c.to_string())));
    BGPAdvertisementSpec {
        aggregation_length: (ad.aggregation_length != 32)
            .then_some(i32::from(ad.aggregation_length)),
        aggregation_length_v6: (ad.aggregation_length_v6 != 128)
            .then_some(i32::from(ad.aggregation_length_v6)),
        local_pref: ad.local_pref,
        communities,
        ip_address_pools: vec![pool.to_string()],
        node_selectors: ad.node_selectors.iter().map(selector).collect(),
        peers: ad.peers.clone(),
        ..BGPAdvertisementSpec::default()
    }
}

fn peer(p: &Peer) -> BGPPeerSpec {
    BGPPeerSpec {
        my_asn: p.my_asn,
        peer_asn: Some(p.peer_asn),
        peer_address: Some(p.peer_address.to_string()),
        source_address: p.source_address.map(|a| a.to_string()),
        peer_port: (p.peer_port != 179).then_some(p.peer_port),
        hold_time: Some(format!("{}s", p.hold_time.as_secs())),
        keepalive_time: Some(format!("{}s", p.keepalive_time.as_secs())),
        router_id: p.router_id.map(|a| a.to_string()),
        node_selectors: p.node_selectors.iter().map(selector).collect(),
        password: p.password.clone(),
        ebgp_multi_hop: p.ebgp_multihop,
        ..BGPPeerSpec::default()
    }
}

fn bfd(b: &ferrolb_config::BfdProfile) -> BFDProfileSpec {
    BFDProfileSpec {
        receive_interval: b.receive_interval_ms,
        transmit_interval: b.transmit_interval_ms,
        detect_multiplier: b.detect_multiplier,
        echo_interval: b.echo_interval_ms,
        echo_mode: b.echo_mode.then_some(true),
        passive_mode: b.passive_mode.then_some(true),
        minimum_ttl: b.minimum_ttl,
    }
}

fn selector(s: &NodeSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: s.match_expressions.iter().map(requirement).collect(),
    }
}

fn requirement(e: &MatchExpression) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: e.key.clone(),
        operator: match e.operator {
            SelectorOperator::In => Operator::In,
            SelectorOperator::NotIn => Operator::NotIn,
            SelectorOperator::Exists => Operator::Exists,
            SelectorOperator::DoesNotExist => Operator::DoesNotExist,
        },
        values: e.values.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_written_as_cidrs_when_they_are_one() {
        let r = |a: &str, b: &str| {
            range_text(&IpRange::new(a.parse().unwrap(), b.parse().unwrap()).unwrap())
        };
        assert_eq!(r("192.0.2.0", "192.0.2.255"), "192.0.2.0/24");
        assert_eq!(r("192.0.2.7", "192.0.2.7"), "192.0.2.7/32");
        assert_eq!(r("192.0.2.1", "192.0.2.2"), "192.0.2.1-192.0.2.2");
        assert_eq!(r("192.0.2.2", "192.0.2.5"), "192.0.2.2-192.0.2.5");
        assert_eq!(r("2001:db8::", "2001:db8::ffff"), "2001:db8::/112");
        assert_eq!(r("0.0.0.0", "255.255.255.255"), "0.0.0.0/0");
    }
}
