//! The `metallb.universe.tf/allow-shared-ip` rules: when may two Services hold the same address?
//!
//! Both carry the same non-empty key, their `(protocol, port)` sets do not overlap, and both have
//! `externalTrafficPolicy: Cluster`, or both `Local` with an identical selector (so they land on
//! the same nodes).
//!
//! Must not: look at pools or decide which address to use.

use std::collections::BTreeMap;

use ferrolb_config::{ServiceKey, ServicePort, ServiceView, TrafficPolicy};

/// What sharing decisions need to remember about a Service holding an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingInfo {
    pub key: ServiceKey,
    pub sharing_key: Option<String>,
    pub ports: Vec<ServicePort>,
    pub policy: TrafficPolicy,
    pub selector: BTreeMap<String, String>,
}

impl SharingInfo {
    pub fn of(v: &ServiceView, sharing_key: Option<String>) -> SharingInfo {
        SharingInfo {
            key: v.key.clone(),
            sharing_key,
            ports: v.ports.clone(),
            policy: v.external_traffic_policy,
            selector: v.selector.clone(),
        }
    }
}

/// `Ok` when `a` and `b` may share an address, else why not (in words).
pub fn compatible(a: &SharingInfo, b: &SharingInfo) -> Result<(), String> {
    match (&a.sharing_key, &b.sharing_key) {
        (Some(x), Some(y)) if x == y => {}
        (None, _) | (_, None) => {
            return Err(
                "both Services need the allow-shared-ip annotation with the same key".into(),
            )
        }
        (Some(x), Some(y)) => return Err(format!("sharing keys differ ({x:?} vs {y:?})")),
    }
    if let Some(p) = a.ports.iter().find(|p| b.ports.contains(p)) {
        return Err(format!("both use port {}/{}", p.protocol, p.port));
    }
    match (a.policy, b.policy) {
        (TrafficPolicy::Cluster, TrafficPolicy::Cluster) => Ok(()),
        (TrafficPolicy::Local, TrafficPolicy::Local) if a.selector == b.selector => Ok(()),
        (TrafficPolicy::Local, TrafficPolicy::Local) => {
            Err("externalTrafficPolicy Local with different selectors".into())
        }
        _ => Err("externalTrafficPolicy differs (Cluster vs Local)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, key: Option<&str>, port: u16) -> SharingInfo {
        SharingInfo {
            key: ServiceKey::new("ns", name),
            sharing_key: key.map(String::from),
            ports: vec![ServicePort {
                protocol: "TCP".into(),
                port,
            }],
            policy: TrafficPolicy::Cluster,
            selector: BTreeMap::new(),
        }
    }

    #[test]
    fn rules() {
        assert!(compatible(&info("a", Some("k"), 80), &info("b", Some("k"), 443)).is_ok());
        assert!(
            compatible(&info("a", Some("k"), 80), &info("b", Some("k"), 80))
                .unwrap_err()
                .contains("80")
        );
        assert!(compatible(&info("a", Some("k"), 80), &info("b", Some("j"), 443)).is_err());
        assert!(compatible(&info("a", None, 80), &info("b", None, 443)).is_err());
        let mut l1 = info("a", Some("k"), 80);
        let mut l2 = info("b", Some("k"), 443);
        l1.policy = TrafficPolicy::Local;
        assert!(compatible(&l1, &l2).unwrap_err().contains("differs"));
        l2.policy = TrafficPolicy::Local;
        assert!(compatible(&l1, &l2).is_ok());
        l2.selector.insert("app".into(), "x".into());
        assert!(compatible(&l1, &l2).unwrap_err().contains("selectors"));
    }
}
