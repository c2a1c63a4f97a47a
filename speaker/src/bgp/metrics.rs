//! BGP metrics with MetalLB's names, per peer (`peer="<address>:<port>"`).
//!
//! Registered into the registry passed in (no globals); the session driver updates them. Must
//! not: decide anything.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set: `[("peer", "192.0.2.1:179")]`.
pub type Labels = Vec<(String, String)>;

/// The BGP metrics.
#[derive(Debug, Clone, Default)]
pub struct BgpMetrics {
    /// 1 while the session is Established.
    pub session_up: Family<Labels, Gauge>,
    /// UPDATE messages sent.
    pub updates: Family<Labels, Counter>,
    /// Prefixes the peer holds from us.
    pub announced_prefixes: Family<Labels, Gauge>,
    /// Prefixes waiting to be sent (not Established, or an encoding failure).
    pub pending_prefixes: Family<Labels, Gauge>,
    /// Connections to the BGP listener from addresses that are not a configured peer.
    pub refused_connections: Counter,
}

impl BgpMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> BgpMetrics {
        let m = BgpMetrics::default();
        registry.register(
            "metallb_bgp_session_up",
            "BGP session state (1 is up, 0 is down)",
            m.session_up.clone(),
        );
        registry.register(
            "metallb_bgp_updates",
            "Number of BGP UPDATE messages sent",
            m.updates.clone(),
        );
        registry.register(
            "metallb_bgp_announced_prefixes_total",
            "Number of prefixes currently being advertised on the BGP session",
            m.announced_prefixes.clone(),
        );
        registry.register(
            "metallb_bgp_pending_prefixes_total",
            "Number of prefixes that should be advertised on the BGP session",
            m.pending_prefixes.clone(),
        );
        registry.register(
            "ferrolb_bgp_refused_connections",
            "Connections to the BGP listener closed because the source is not a configured peer",
            m.refused_connections.clone(),
        );
        m
    }

    /// Labels for one peer.
    pub fn labels(peer: std::net::SocketAddr) -> Labels {
        vec![("peer".to_string(), peer.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metallb_names_are_exposed() {
        let mut r = Registry::default();
        let m = BgpMetrics::register(&mut r);
        let l = BgpMetrics::labels("192.0.2.1:179".parse().unwrap());
        m.session_up.get_or_create(&l).set(1);
        m.updates.get_or_create(&l).inc();
        m.announced_prefixes.get_or_create(&l).set(3);
        m.pending_prefixes.get_or_create(&l).set(0);
        m.refused_connections.inc();
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(
            out.contains("metallb_bgp_session_up{peer=\"192.0.2.1:179\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("metallb_bgp_updates_total{peer=\"192.0.2.1:179\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("metallb_bgp_announced_prefixes_total{peer=\"192.0.2.1:179\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("metallb_bgp_pending_prefixes_total{peer=\"192.0.2.1:179\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("ferrolb_bgp_refused_connections_total 1"),
            "{out}"
        );
    }
}
