//! Layer2 counters, named after MetalLB's metrics: `metallb_layer2_requests_received`,
//! `metallb_layer2_responses_sent`, `metallb_layer2_gratuitous_sent` (label `ip`; the OpenMetrics
//! encoder appends `_total`), `metallb_speaker_announced` (labels `ip`, `node`, `protocol`), plus
//! `ferrolb_layer2_dropped` (label `reason`, one per [`DropReason`]).
//!
//! Kept twice: as a plain [`Counters`] snapshot (for tests and logs) and, when the process passes
//! a registry, as Prometheus metrics registered into it (no globals). Must not: decide anything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::packet::DropReason;

/// A snapshot of every layer2 counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// ARP requests / Neighbor Solicitations received for an address this node answers for.
    pub requests_received: BTreeMap<IpAddr, u64>,
    /// Replies sent.
    pub responses_sent: BTreeMap<IpAddr, u64>,
    /// Gratuitous ARP / unsolicited NA frames sent.
    pub gratuitous_sent: BTreeMap<IpAddr, u64>,
    /// Frames not answered, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Addresses this node answers for now.
    pub announced: BTreeSet<IpAddr>,
}

/// Label set, e.g. `{ip="192.0.2.1"}`.
pub type Labels = Vec<(String, String)>;

/// The layer2 metrics in a Prometheus registry.
#[derive(Debug, Clone, Default)]
pub struct Layer2Metrics {
    pub requests_received: Family<Labels, Counter>,
    pub responses_sent: Family<Labels, Counter>,
    pub gratuitous_sent: Family<Labels, Counter>,
    pub dropped: Family<Labels, Counter>,
    pub announced: Family<Labels, Gauge>,
}

impl Layer2Metrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> Layer2Metrics {
        let m = Layer2Metrics::default();
        registry.register(
            "metallb_layer2_requests_received",
            "Number of layer2 requests received for owned IPs",
            m.requests_received.clone(),
        );
        registry.register(
            "metallb_layer2_responses_sent",
            "Number of layer2 responses sent for owned IPs",
            m.responses_sent.clone(),
        );
        registry.register(
            "metallb_layer2_gratuitous_sent",
            "Number of gratuitous layer2 packets sent for owned IPs",
            m.gratuitous_sent.clone(),
        );
        registry.register(
            "ferrolb_layer2_dropped",
            "Number of ARP/NDP frames received and not answered, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "metallb_speaker_announced",
            "Services being announced from this node (1) by IP",
            m.announced.clone(),
        );
        m
    }
}

fn ip_label(ip: &IpAddr) -> Labels {
    vec![("ip".to_string(), ip.to_string())]
}

/// Shared, thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<Counters>,
    metrics: Option<Layer2Metrics>,
}

impl Stats {
    /// Counters that also feed `metrics`.
    pub fn with_metrics(metrics: Layer2Metrics) -> Stats {
        Stats {
            counters: Mutex::default(),
            metrics: Some(metrics),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic elsewhere while counting leaves the counters usable.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self, ip: IpAddr) {
        *self.lock().requests_received.entry(ip).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.requests_received.get_or_create(&ip_label(&ip)).inc();
        }
    }

    pub fn response(&self, ip: IpAddr) {
        *self.lock().responses_sent.entry(ip).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.responses_sent.get_or_create(&ip_label(&ip)).inc();
        }
    }

    pub fn gratuitous(&self, ip: IpAddr) {
        *self.lock().gratuitous_sent.entry(ip).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.gratuitous_sent.get_or_create(&ip_label(&ip)).inc();
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        *self.lock().dropped.entry(reason).or_default() += 1;
        if let Some(m) = &self.metrics {
            let labels = vec![("reason".to_string(), reason.as_str().to_string())];
            m.dropped.get_or_create(&labels).inc();
        }
    }

    /// Records the addresses `node` answers for now. The per-address series of every other
    /// address are removed (counters and metrics alike), so an address no longer announced
    /// leaves nothing behind: memory stays bounded by the addresses announced now.
    pub fn set_announced(&self, node: &str, ips: BTreeSet<IpAddr>) {
        let mut counters = self.lock();
        let stale: BTreeSet<IpAddr> = counters
            .requests_received
            .keys()
            .chain(counters.responses_sent.keys())
            .chain(counters.gratuitous_sent.keys())
            .filter(|ip| !ips.contains(ip))
            .copied()
            .collect();
        for ip in &stale {
            counters.requests_received.remove(ip);
            counters.responses_sent.remove(ip);
            counters.gratuitous_sent.remove(ip);
        }
        if let Some(m) = &self.metrics {
            for ip in &stale {
                let labels = ip_label(ip);
                m.requests_received.remove(&labels);
                m.responses_sent.remove(&labels);
                m.gratuitous_sent.remove(&labels);
            }
            m.announced.clear();
            for ip in &ips {
                let labels = vec![
                    ("ip".to_string(), ip.to_string()),
                    ("node".to_string(), node.to_string()),
                    ("protocol".to_string(), "layer2".to_string()),
                ];
                m.announced.get_or_create(&labels).set(1);
            }
        }
        counters.announced = ips;
    }

    pub fn snapshot(&self) -> Counters {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counts_by_ip_and_reason() {
        let s = Stats::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        s.request(ip);
        s.request(ip);
        s.response(ip);
        s.gratuitous(ip);
        s.dropped(DropReason::NotOwned);
        s.set_announced("n1", BTreeSet::from([ip]));
        let c = s.snapshot();
        assert_eq!(c.requests_received[&ip], 2);
        assert_eq!(c.responses_sent[&ip], 1);
        assert_eq!(c.gratuitous_sent[&ip], 1);
        assert_eq!(c.dropped[&DropReason::NotOwned], 1);
        assert_eq!(c.announced, BTreeSet::from([ip]));
    }

    #[test]
    fn exports_metallb_names() {
        let mut registry = Registry::default();
        let s = Stats::with_metrics(Layer2Metrics::register(&mut registry));
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        s.set_announced("n1", BTreeSet::from([a, b, c]));
        s.request(a);
        s.response(a);
        s.gratuitous(b);
        s.gratuitous(b);
        s.dropped(DropReason::NsBadChecksum);
        s.set_announced("n1", BTreeSet::from([a, b]));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for want in [
            "metallb_layer2_requests_received_total{ip=\"192.0.2.1\"} 1",
            "metallb_layer2_responses_sent_total{ip=\"192.0.2.1\"} 1",
            "metallb_layer2_gratuitous_sent_total{ip=\"2001:db8::1\"} 2",
            "ferrolb_layer2_dropped_total{reason=\"ns_bad_checksum\"} 1",
            "metallb_speaker_announced{ip=\"2001:db8::1\",node=\"n1\",protocol=\"layer2\"} 1",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        assert!(
            !out.contains("metallb_speaker_announced{ip=\"192.0.2.3\""),
            "lost address still announced:\n{out}"
        );
    }

    #[test]
    fn withdrawn_addresses_leave_no_series_behind() {
        let mut registry = Registry::default();
        let s = Stats::with_metrics(Layer2Metrics::register(&mut registry));
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        s.set_announced("n1", BTreeSet::from([a, b]));
        for ip in [a, b] {
            s.request(ip);
            s.response(ip);
            s.gratuitous(ip);
        }
        s.dropped(DropReason::NotOwned);
        s.set_announced("n1", BTreeSet::from([b]));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(!out.contains("192.0.2.1"), "withdrawn address kept:\n{out}");
        for want in [
            "metallb_layer2_requests_received_total{ip=\"2001:db8::1\"} 1",
            "metallb_layer2_responses_sent_total{ip=\"2001:db8::1\"} 1",
            "metallb_layer2_gratuitous_sent_total{ip=\"2001:db8::1\"} 1",
            "ferrolb_layer2_dropped_total{reason=\"not_owned\"} 1",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        let c = s.snapshot();
        assert_eq!(c.requests_received.keys().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(c.responses_sent.keys().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(c.gratuitous_sent.keys().collect::<Vec<_>>(), vec![&b]);
        // Re-announced later, an address starts from zero; stopping removes everything.
        s.set_announced("n1", BTreeSet::from([a, b]));
        s.request(a);
        assert_eq!(s.snapshot().requests_received[&a], 1);
        s.set_announced("n1", BTreeSet::new());
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(!out.contains("ip=\""), "series left after stopping:\n{out}");
        let c = s.snapshot();
        assert!(
            c.requests_received.is_empty()
                && c.responses_sent.is_empty()
                && c.gratuitous_sent.is_empty()
                && c.announced.is_empty(),
            "{c:?}"
        );
        assert_eq!(
            c.dropped[&DropReason::NotOwned],
            1,
            "drops are not per address"
        );
    }
}
