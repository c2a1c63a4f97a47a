//! Failure-detection timer profiles (pure).
//!
//! `fast` (the default) detects a killed member in about 0.3–0.6 s on a LAN: probe every 100 ms,
//! wait 50 ms for the ack, suspect for 2 probe intervals. `lan` is memberlist's own LAN profile
//! (probe 500 ms, ack timeout 1 s, suspicion ×4: about 2.5–3.3 s), for busy or lossy networks.
//!
//! Must not: touch the network.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A named timer profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Sub-second detection (default).
    #[default]
    Fast,
    /// memberlist's conservative LAN defaults.
    Lan,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fast" => Ok(Profile::Fast),
            "lan" => Ok(Profile::Lan),
            other => Err(format!(
                "membership profile {other:?}: expected \"fast\" or \"lan\""
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Fast => "fast",
            Profile::Lan => "lan",
        })
    }
}

/// The failure-detection timers handed to memberlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How often this node probes one random peer.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others (indirect probe).
    pub probe_timeout: Duration,
    /// Suspicion lasts `suspicion_mult × probe_interval` (scaled by log10 of the cluster size).
    pub suspicion_mult: usize,
    /// Upper bound of the suspicion timeout, as a multiple of the lower bound.
    pub suspicion_max_timeout_mult: usize,
    /// How often gossip (including dead/suspect news) is sent.
    pub gossip_interval: Duration,
    /// How far probe timeouts may back off when this node itself is unhealthy.
    pub awareness_max_multiplier: usize,
    /// TCP timeout (memberlist's `timeout`): bounds joins and state exchange, and also how long
    /// a failed probe waits for its TCP fallback ping before the peer becomes suspect. A peer
    /// that silently stops answering (a partition, not a crash: no RST) is suspected only after
    /// this, so it must be short for fast detection.
    pub tcp_timeout: Duration,
}

impl Timers {
    /// The timers of `profile`.
    pub fn of(profile: Profile) -> Self {
        match profile {
            Profile::Fast => Timers {
                probe_interval: Duration::from_millis(100),
                probe_timeout: Duration::from_millis(50),
                suspicion_mult: 2,
                suspicion_max_timeout_mult: 2,
                gossip_interval: Duration::from_millis(50),
                awareness_max_multiplier: 4,
                tcp_timeout: Duration::from_millis(500),
            },
            Profile::Lan => Timers {
                probe_interval: Duration::from_millis(500),
                probe_timeout: Duration::from_secs(1),
                suspicion_mult: 4,
                suspicion_max_timeout_mult: 6,
                gossip_interval: Duration::from_millis(200),
                awareness_max_multiplier: 8,
                tcp_timeout: Duration::from_secs(10),
            },
        }
    }

    /// Rough worst case from a crash to the "dead" verdict for a small cluster (< 10 nodes,
    /// no confirmations): one round of probes over the other `peers`, the ack timeout, then the
    /// maximal suspicion. Used in docs and logs, not for decisions.
    pub fn worst_case_detection(&self, peers: usize) -> Duration {
        let rounds = u32::try_from(peers.max(1)).unwrap_or(u32::MAX);
        let suspicion = self.probe_interval
            * u32::try_from(self.suspicion_mult * self.suspicion_max_timeout_mult)
                .unwrap_or(u32::MAX);
        self.probe_interval * rounds + self.probe_timeout + suspicion
    }

    /// The same for a peer cut off without a crash (packets silently dropped): the failed probe
    /// also waits out the TCP fallback ping.
    pub fn worst_case_partition_detection(&self, peers: usize) -> Duration {
        self.worst_case_detection(peers) + self.tcp_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_print() {
        for p in [Profile::Fast, Profile::Lan] {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert!("slow".parse::<Profile>().unwrap_err().contains("\"slow\""));
        assert_eq!(Profile::default(), Profile::Fast);
    }

    #[test]
    fn fast_profile_is_sub_second_and_ack_shorter_than_probe() {
        let t = Timers::of(Profile::Fast);
        assert!(t.probe_timeout < t.probe_interval);
        assert!(t.worst_case_detection(2) < Duration::from_secs(1));
        assert!(Timers::of(Profile::Lan).worst_case_detection(2) > Duration::from_secs(2));
        // Regression (issue 8): memberlist's default 10 s TCP timeout made a partitioned peer
        // take ~11 s to drop with `fast` timers.
        assert!(t.worst_case_partition_detection(2) < Duration::from_millis(1500));
    }
}
