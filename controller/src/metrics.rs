//! Controller metrics, with MetalLB's names where the meaning is the same.
//!
//! Registered into a registry the caller passes in (no globals); the process serves it on
//! `/metrics`. Must not: decide anything; callers set values from their own state.

use std::collections::BTreeMap;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use ferrolb_runtime::config::ClientMetrics;

/// Label set `{pool="..."}`.
pub type PoolLabels = Vec<(String, String)>;

/// Every metric the controller exports.
#[derive(Debug, Clone, Default)]
pub struct ControllerMetrics {
    /// `metallb_allocator_addresses_in_use_total{pool}`: addresses assigned from the pool.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    /// `metallb_allocator_addresses_total{pool}`: usable addresses in the pool.
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// `metallb_k8s_client_*`: configuration loaded/stale, updates processed.
    pub client: ClientMetrics,
    /// `ferrolb_controller_leader_bool`: 1 while this replica holds the lease.
    pub leader: Gauge,
}

impl ControllerMetrics {
    /// Create the metrics and register them.
    pub fn register(registry: &mut Registry) -> ControllerMetrics {
        let m = ControllerMetrics {
            client: ClientMetrics::register(registry),
            ..ControllerMetrics::default()
        };
        registry.register(
            "metallb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, per pool",
            m.addresses_in_use.clone(),
        );
        registry.register(
            "metallb_allocator_addresses_total",
            "Number of usable IP addresses, per pool",
            m.addresses_total.clone(),
        );
        registry.register(
            "ferrolb_controller_leader_bool",
            "1 while this replica is the leader and writes to the cluster",
            m.leader.clone(),
        );
        m
    }

    /// Replace the per-pool gauges: `pools` maps pool name -> (in use, total). Pools that
    /// disappeared from the config are removed.
    pub fn set_pools(&self, pools: &BTreeMap<String, (u64, u128)>) {
        self.addresses_in_use.clear();
        self.addresses_total.clear();
        for (name, (in_use, total)) in pools {
            let labels = vec![("pool".to_string(), name.clone())];
            self.addresses_in_use
                .get_or_create(&labels)
                .set(i64::try_from(*in_use).unwrap_or(i64::MAX));
            self.addresses_total
                .get_or_create(&labels)
                .set(i64::try_from(*total).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exports_metallb_names() {
        let mut registry = Registry::default();
        let m = ControllerMetrics::register(&mut registry);
        m.client.config_stale.set(1);
        m.client.updates.inc();
        m.set_pools(&BTreeMap::from([("default".to_string(), (2, 1u128 << 64))]));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("metallb_k8s_client_config_stale_bool 1"),
            "{out}"
        );
        assert!(out.contains("metallb_k8s_client_updates_total 1"), "{out}");
        assert!(
            out.contains("metallb_allocator_addresses_in_use_total{pool=\"default\"} 2"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "metallb_allocator_addresses_total{{pool=\"default\"}} {}",
                i64::MAX
            )),
            "{out}"
        );
        m.set_pools(&BTreeMap::new());
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(!out.contains("pool=\"default\""), "{out}");
    }
}
