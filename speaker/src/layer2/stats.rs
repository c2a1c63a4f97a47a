//! Layer2 counters, named after MetalLB's metrics (`metallb_layer2_requests_received`,
//! `metallb_layer2_responses_sent`, `metallb_layer2_gratuitous_sent`, each labelled by `ip`),
//! plus one counter per [`DropReason`] and the set of addresses announced now
//! (`metallb_speaker_announced`).
//!
//! Plain counters behind a mutex; a metrics registry reads a [`Counters`] snapshot. Must not:
//! decide anything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

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

/// Shared, thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats(Mutex<Counters>);

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic elsewhere while counting leaves the counters usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self, ip: IpAddr) {
        *self.lock().requests_received.entry(ip).or_default() += 1;
    }

    pub fn response(&self, ip: IpAddr) {
        *self.lock().responses_sent.entry(ip).or_default() += 1;
    }

    pub fn gratuitous(&self, ip: IpAddr) {
        *self.lock().gratuitous_sent.entry(ip).or_default() += 1;
    }

    pub fn dropped(&self, reason: DropReason) {
        *self.lock().dropped.entry(reason).or_default() += 1;
    }

    pub fn set_announced(&self, ips: BTreeSet<IpAddr>) {
        self.lock().announced = ips;
    }

    pub fn snapshot(&self) -> Counters {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_ip_and_reason() {
        let s = Stats::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        s.request(ip);
        s.request(ip);
        s.response(ip);
        s.gratuitous(ip);
        s.dropped(DropReason::NotOwned);
        s.set_announced(BTreeSet::from([ip]));
        let c = s.snapshot();
        assert_eq!(c.requests_received[&ip], 2);
        assert_eq!(c.responses_sent[&ip], 1);
        assert_eq!(c.gratuitous_sent[&ip], 1);
        assert_eq!(c.dropped[&DropReason::NotOwned], 1);
        assert_eq!(c.announced, BTreeSet::from([ip]));
    }
}
