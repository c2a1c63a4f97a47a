//! When to send gratuitous ARP / unsolicited NA after this node takes an address over.
//!
//! Pure: the caller passes `now`. One announcement goes out at once; more follow so that a client
//! whose neighbour entry was just updated by someone else (Linux locks an entry for `locktime`,
//! 1 s by default, and ignores updates meanwhile) still gets one after the lock expires, and so
//! that a single lost frame does not leave a client pointing at the old node. MetalLB sends at
//! 0, 1.1, 2.2, 3.3 and 4.4 s; the extra 0.3 s repeat covers a lost first frame sooner.
//!
//! Must not: send frames or sleep.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Offsets from takeover at which announcements are sent.
pub const OFFSETS: [Duration; 6] = [
    Duration::from_millis(0),
    Duration::from_millis(300),
    Duration::from_millis(1100),
    Duration::from_millis(2200),
    Duration::from_millis(3300),
    Duration::from_millis(4400),
];

/// Pending announcements per address.
#[derive(Debug, Default)]
pub struct Plan {
    /// Address -> (takeover time, index of the next offset to send).
    pending: BTreeMap<IpAddr, (Instant, usize)>,
}

impl Plan {
    /// Starts (or restarts) the sequence for `ip`, taken over at `now`.
    pub fn start(&mut self, ip: IpAddr, now: Instant) {
        self.pending.insert(ip, (now, 0));
    }

    /// Stops announcing `ip` (lost or withdrawn).
    pub fn cancel(&mut self, ip: &IpAddr) {
        self.pending.remove(ip);
    }

    /// Addresses due for an announcement at `now` (each at most once per call, even if several
    /// offsets passed), advancing their sequence; finished sequences are dropped.
    pub fn take_due(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut due = Vec::new();
        self.pending.retain(|ip, (start, next)| {
            if *start + OFFSETS[*next] > now {
                return true;
            }
            due.push(*ip);
            // Skip offsets that already passed: one frame now stands for them.
            while *next < OFFSETS.len() && *start + OFFSETS[*next] <= now {
                *next += 1;
            }
            *next < OFFSETS.len()
        });
        due
    }

    /// When the next announcement is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|(start, next)| *start + OFFSETS[*next])
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn offsets_straddle_the_linux_arp_locktime_and_end_within_five_seconds() {
        assert_eq!(OFFSETS[0], Duration::ZERO, "first announcement at once");
        assert!(OFFSETS.windows(2).all(|w| w[0] < w[1]), "increasing");
        let locktime = Duration::from_secs(1);
        assert!(
            OFFSETS
                .iter()
                .any(|o| *o > locktime && *o < locktime + Duration::from_millis(500)),
            "one soon after the lock expires"
        );
        assert!(*OFFSETS.last().unwrap() <= Duration::from_secs(5));
    }

    #[test]
    fn sequence_for_one_address() {
        let t0 = Instant::now();
        let a = ip("192.0.2.10");
        let mut plan = Plan::default();
        plan.start(a, t0);
        let mut sent = Vec::new();
        // Step through time in 50 ms ticks, as a driver woken by next_deadline would.
        let mut t = t0;
        while !plan.is_empty() {
            let deadline = plan.next_deadline().unwrap();
            assert!(deadline >= t0);
            t = t.max(deadline);
            let due = plan.take_due(t);
            assert_eq!(due, vec![a]);
            sent.push(t - t0);
        }
        assert_eq!(sent, OFFSETS.to_vec());
        assert_eq!(plan.next_deadline(), None);
    }

    #[test]
    fn late_wakeup_sends_once_and_skips_missed_offsets() {
        let t0 = Instant::now();
        let a = ip("192.0.2.10");
        let mut plan = Plan::default();
        plan.start(a, t0);
        assert_eq!(plan.take_due(t0 + Duration::from_millis(1500)), vec![a]);
        assert_eq!(plan.next_deadline(), Some(t0 + OFFSETS[3]));
        assert!(plan.take_due(t0 + Duration::from_millis(2000)).is_empty());
    }

    #[test]
    fn cancel_and_restart() {
        let t0 = Instant::now();
        let (a, b) = (ip("192.0.2.10"), ip("2001:db8::1"));
        let mut plan = Plan::default();
        plan.start(a, t0);
        plan.start(b, t0 + Duration::from_millis(100));
        assert_eq!(plan.take_due(t0), vec![a]);
        plan.cancel(&a);
        assert_eq!(plan.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(plan.take_due(t0 + Duration::from_millis(100)), vec![b]);
        // Restarting (lost, then won again) begins a fresh sequence.
        let t1 = t0 + Duration::from_secs(10);
        plan.start(a, t1);
        assert_eq!(plan.next_deadline(), Some(t0 + Duration::from_millis(400)));
        let due = plan.take_due(t1);
        assert!(due.contains(&a) && due.contains(&b));
        assert_eq!(plan.next_deadline(), Some(t1 + OFFSETS[1]));
    }
}
