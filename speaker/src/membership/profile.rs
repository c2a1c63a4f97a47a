//! Failure-detection timer profiles and their validation (pure).
//!
//! `fast` (the default) detects a killed member in about 0.3–0.6 s on a LAN: probe every 100 ms,
//! wait 50 ms for the ack, suspect for 2 probe intervals. `tuned` halves that again (probe every
//! 50 ms, 50 ms TCP fallback, 100 ms suspicion) for a failover under 300 ms on a quiet LAN, at
//! the price of more false suspicions on overloaded nodes. `lan` is memberlist's own LAN profile
//! (probe 500 ms, ack timeout 1 s, suspicion ×4: about 2.5–3.3 s), for busy or lossy networks.
//! Any profile's timers can be overridden one by one ([`Overrides`]); [`Timers::validate`]
//! refuses combinations memberlist cannot work with, naming the flag and its value.
//!
//! Where a crash's time goes (2–9 members, no confirmations possible): up to one probe round
//! until a survivor probes the dead member, then the probe waits out the rest of the probe
//! interval for a direct or indirect ack, and the TCP fallback ping (up to `tcp_timeout` when
//! the peer is silent, e.g. its link is down; at once if its kernel answers with a reset), then
//! `suspicion_mult × probe_interval` of suspicion (the accused may refute meanwhile), then the
//! "dead" verdict is gossiped.
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
    /// Failover well under 300 ms on a quiet LAN; more false suspicions under load.
    Tuned,
    /// memberlist's conservative LAN defaults.
    Lan,
}

impl Profile {
    /// Every profile, fastest first.
    pub const ALL: [Profile; 3] = [Profile::Tuned, Profile::Fast, Profile::Lan];
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fast" => Ok(Profile::Fast),
            "tuned" => Ok(Profile::Tuned),
            "lan" => Ok(Profile::Lan),
            other => Err(format!(
                "membership profile {other:?}: expected \"fast\", \"tuned\" or \"lan\""
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Fast => "fast",
            Profile::Tuned => "tuned",
            Profile::Lan => "lan",
        })
    }
}

/// The failure-detection timers handed to memberlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How often this node probes one random peer.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others (indirect probe). A late direct
    /// ack still counts until the probe interval ends.
    pub probe_timeout: Duration,
    /// Suspicion lasts `suspicion_mult × probe_interval` (scaled by log10 of the cluster size
    /// from 10 members on).
    pub suspicion_mult: usize,
    /// Upper bound of the suspicion timeout, as a multiple of the lower bound (used while
    /// confirmations from other members are still expected).
    pub suspicion_max_timeout_mult: usize,
    /// How often gossip (including dead/suspect news) is sent.
    pub gossip_interval: Duration,
    /// How far probe timeouts may back off when this node itself is unhealthy.
    pub awareness_max_multiplier: usize,
    /// TCP timeout (memberlist's `timeout`): bounds joins and state exchange, and also how long
    /// a failed probe waits for its TCP fallback ping before the peer becomes suspect. A peer
    /// that silently stops answering (a partition or a dead link, not a crash: no RST) is
    /// suspected only after this, so it must be short for fast detection.
    pub tcp_timeout: Duration,
}

/// Per-timer overrides of a profile (command-line flags); `None` keeps the profile's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--ml-probe-interval`.
    pub probe_interval: Option<Duration>,
    /// `--ml-probe-timeout`.
    pub probe_timeout: Option<Duration>,
    /// `--ml-suspicion-mult`.
    pub suspicion_mult: Option<usize>,
    /// `--ml-gossip-interval`.
    pub gossip_interval: Option<Duration>,
    /// `--ml-tcp-timeout`.
    pub tcp_timeout: Option<Duration>,
}

/// A timer setting memberlist cannot work with: the flag, its value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}: {reason}")]
pub struct TimerError {
    /// The flag (`--ml-probe-timeout`).
    pub field: &'static str,
    /// Its value as given (`80ms`).
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

/// Bounds checked by [`Timers::validate`].
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(5);
pub const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(5);
pub const MAX_SUSPICION_MULT: usize = 100;

/// Prints a duration the way [`parse_duration`] reads it (`50ms`, `1s`, `1500ms`).
pub fn fmt_duration(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// Reads `50ms`, `1s`, `1.5s`, `250us` (a number and a unit; no unit is an error, so `50` is
/// never silently seconds or milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "us" | "µs" => 1e-6,
        "" => return Err(format!("{text:?}: give a unit, e.g. 50ms or 1s")),
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s or us)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: not a number followed by ms, s or us"))?;
    let secs = n * scale;
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("{text:?}: too long"));
    }
    Ok(Duration::from_secs_f64(secs))
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
            Profile::Tuned => Timers {
                probe_interval: Duration::from_millis(50),
                probe_timeout: Duration::from_millis(25),
                suspicion_mult: 2,
                suspicion_max_timeout_mult: 1,
                gossip_interval: Duration::from_millis(20),
                awareness_max_multiplier: 4,
                // One probe interval: a silent peer's fallback ping ends with its probe round
                // (a LAN peer answers it in well under 1 ms; 100 ms cost every failover 50 ms).
                tcp_timeout: Duration::from_millis(50),
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

    /// The timers of `profile` with `overrides` applied, validated.
    pub fn with_overrides(profile: Profile, overrides: &Overrides) -> Result<Self, TimerError> {
        let mut t = Timers::of(profile);
        if let Some(v) = overrides.probe_interval {
            t.probe_interval = v;
        }
        if let Some(v) = overrides.probe_timeout {
            t.probe_timeout = v;
        } else if overrides.probe_interval.is_some() && t.probe_timeout >= t.probe_interval {
            // A shorter interval alone: keep the ack timeout inside it.
            t.probe_timeout = t.probe_interval / 2;
        }
        if let Some(v) = overrides.suspicion_mult {
            t.suspicion_mult = v;
            if v < 2 {
                // memberlist 0.8 expects `suspicion_mult - 2` confirmations; below 2 that is
                // negative and it then waits the *maximal* timeout: make the maximum the minimum.
                t.suspicion_max_timeout_mult = 1;
            }
        }
        if let Some(v) = overrides.gossip_interval {
            t.gossip_interval = v;
        }
        if let Some(v) = overrides.tcp_timeout {
            t.tcp_timeout = v;
        }
        t.validate()?;
        // memberlist's own LAN defaults wait 1 s for an ack within a 500 ms interval (the
        // interval then bounds the wait and indirect probes get no time of their own); a probe
        // timer chosen here must leave room for them.
        let probe_set = overrides.probe_interval.is_some() || overrides.probe_timeout.is_some();
        if probe_set && t.probe_timeout >= t.probe_interval {
            return Err(TimerError {
                field: "--ml-probe-timeout",
                value: fmt_duration(t.probe_timeout),
                reason: format!(
                    "must be shorter than the probe interval ({}): the rest of the interval is \
                     for indirect probes",
                    fmt_duration(t.probe_interval)
                ),
            });
        }
        Ok(t)
    }

    /// Refuses timers out of range, naming the flag and its value ([`Self::with_overrides`] also
    /// checks that an overridden probe timeout fits its interval).
    pub fn validate(&self) -> Result<(), TimerError> {
        let err = |field: &'static str, value: String, reason: String| TimerError {
            field,
            value,
            reason,
        };
        let d = fmt_duration;
        if self.probe_interval < MIN_INTERVAL || self.probe_interval > MAX_INTERVAL {
            return Err(err(
                "--ml-probe-interval",
                d(self.probe_interval),
                format!(
                    "must be between {} and {}",
                    d(MIN_INTERVAL),
                    d(MAX_INTERVAL)
                ),
            ));
        }
        if self.probe_timeout < MIN_PROBE_TIMEOUT {
            return Err(err(
                "--ml-probe-timeout",
                d(self.probe_timeout),
                format!("must be at least {}", d(MIN_PROBE_TIMEOUT)),
            ));
        }
        if self.suspicion_mult == 0 || self.suspicion_mult > MAX_SUSPICION_MULT {
            return Err(err(
                "--ml-suspicion-mult",
                self.suspicion_mult.to_string(),
                format!("must be between 1 and {MAX_SUSPICION_MULT}"),
            ));
        }
        if self.gossip_interval < MIN_GOSSIP_INTERVAL || self.gossip_interval > MAX_INTERVAL {
            return Err(err(
                "--ml-gossip-interval",
                d(self.gossip_interval),
                format!(
                    "must be between {} and {}",
                    d(MIN_GOSSIP_INTERVAL),
                    d(MAX_INTERVAL)
                ),
            ));
        }
        if self.tcp_timeout < self.probe_timeout || self.tcp_timeout > MAX_INTERVAL {
            return Err(err(
                "--ml-tcp-timeout",
                d(self.tcp_timeout),
                format!(
                    "must be between the probe timeout ({}) and {}",
                    d(self.probe_timeout),
                    d(MAX_INTERVAL)
                ),
            ));
        }
        Ok(())
    }

    /// memberlist's suspicion timeout for a cluster of `members` (< 10: no log scaling) when
    /// no confirmations are expected, which is the case with 2–3 members.
    pub fn suspicion(&self, members: usize) -> Duration {
        let scale = (members.max(1) as f64).log10().max(1.0);
        self.probe_interval
            .mul_f64(self.suspicion_mult as f64 * scale)
    }

    /// Rough worst case from a crash (the peer's kernel resets the TCP fallback) to the "dead"
    /// verdict for a small cluster with `peers` other members: one probe round over them until
    /// the dead one is probed, the rest of the probe interval waiting for acks, then the
    /// suspicion. Used in docs, logs and tests, not for decisions.
    pub fn worst_case_detection(&self, peers: usize) -> Duration {
        let rounds = u32::try_from(peers.max(1)).unwrap_or(u32::MAX);
        self.probe_interval * rounds + self.probe_interval + self.suspicion(peers + 1)
    }

    /// The same for a peer cut off without a crash (packets silently dropped, or its link
    /// down): the failed probe also waits out the TCP fallback ping.
    pub fn worst_case_partition_detection(&self, peers: usize) -> Duration {
        let rounds = u32::try_from(peers.max(1)).unwrap_or(u32::MAX);
        self.probe_interval * rounds
            + self.probe_interval.max(self.tcp_timeout)
            + self.suspicion(peers + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn profiles_parse_and_print() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
            Timers::of(p).validate().unwrap();
        }
        let e = "slow".parse::<Profile>().unwrap_err();
        assert!(e.contains("\"slow\"") && e.contains("tuned"), "{e}");
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

    /// Issue 7: failover <= 300 ms with tuned settings. A silent peer (link down: the TCP
    /// fallback waits its whole timeout) is declared dead within 250 ms even in the worst case
    /// for 3 members, leaving room for the announcement and the client's next try. One lost
    /// probe alone cannot do it: suspicion needs the direct ack, the indirect probe and the TCP
    /// ping to fail, and then lasts long enough (100 ms, five gossip rounds) for the accused to
    /// refute.
    #[test]
    fn tuned_profile_detects_a_silent_peer_within_300_ms() {
        let t = Timers::of(Profile::Tuned);
        assert!(t.worst_case_partition_detection(2) <= ms(250), "{t:?}");
        // The fallback ping fits in the probe round: a silent peer costs no more than a crash.
        assert_eq!(t.tcp_timeout, t.probe_interval);
        assert_eq!(
            t.worst_case_detection(2),
            t.worst_case_partition_detection(2)
        );
        assert_eq!(t.suspicion(3), ms(100));
        assert!(t.suspicion(3) >= t.gossip_interval * 5);
        let fast = Timers::of(Profile::Fast);
        assert!(t.worst_case_partition_detection(2) * 2 < fast.worst_case_partition_detection(2));
        // Large clusters scale suspicion by log10(n).
        assert_eq!(t.suspicion(100), ms(200));
    }

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration("50ms").unwrap(), ms(50));
        assert_eq!(parse_duration("1s").unwrap(), ms(1000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(
            parse_duration(" 250us ").unwrap(),
            Duration::from_micros(250)
        );
        for bad in ["50", "ms", "5x", "-5ms", "1e9s", "", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("50").unwrap_err().contains("unit"));
        for d in [ms(50), ms(1000), ms(1500), Duration::from_micros(250)] {
            assert_eq!(parse_duration(&fmt_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn overrides_replace_single_timers() {
        let o = Overrides {
            probe_interval: Some(ms(40)),
            suspicion_mult: Some(3),
            gossip_interval: Some(ms(10)),
            tcp_timeout: Some(ms(80)),
            ..Overrides::default()
        };
        let t = Timers::with_overrides(Profile::Fast, &o).unwrap();
        assert_eq!(t.probe_interval, ms(40));
        // The fast profile's 50 ms ack timeout would not fit: halved interval.
        assert_eq!(t.probe_timeout, ms(20));
        assert_eq!(t.suspicion_mult, 3);
        assert_eq!(t.gossip_interval, ms(10));
        assert_eq!(t.tcp_timeout, ms(80));
        assert_eq!(
            Timers::with_overrides(Profile::Lan, &Overrides::default()).unwrap(),
            Timers::of(Profile::Lan)
        );
        // Suspicion ×1: memberlist would wait the maximum; the maximum becomes the minimum.
        let one = Overrides {
            suspicion_mult: Some(1),
            ..Overrides::default()
        };
        let t = Timers::with_overrides(Profile::Fast, &one).unwrap();
        assert_eq!(t.suspicion_max_timeout_mult, 1);
        assert_eq!(t.suspicion(3), ms(100));
    }

    #[test]
    fn bad_timers_are_refused_with_flag_and_value() {
        let cases: [(Overrides, &str, &str); 7] = [
            (
                Overrides {
                    probe_timeout: Some(ms(80)),
                    probe_interval: Some(ms(50)),
                    ..Overrides::default()
                },
                "--ml-probe-timeout",
                "80ms",
            ),
            (
                Overrides {
                    probe_interval: Some(ms(5)),
                    ..Overrides::default()
                },
                "--ml-probe-interval",
                "5ms",
            ),
            (
                Overrides {
                    probe_interval: Some(Duration::from_secs(120)),
                    ..Overrides::default()
                },
                "--ml-probe-interval",
                "120s",
            ),
            (
                Overrides {
                    suspicion_mult: Some(0),
                    ..Overrides::default()
                },
                "--ml-suspicion-mult",
                "0",
            ),
            (
                Overrides {
                    gossip_interval: Some(ms(1)),
                    ..Overrides::default()
                },
                "--ml-gossip-interval",
                "1ms",
            ),
            (
                Overrides {
                    tcp_timeout: Some(ms(10)),
                    ..Overrides::default()
                },
                "--ml-tcp-timeout",
                "10ms",
            ),
            (
                Overrides {
                    probe_timeout: Some(Duration::from_micros(100)),
                    ..Overrides::default()
                },
                "--ml-probe-timeout",
                "100us",
            ),
        ];
        for (o, field, value) in cases {
            let e = Timers::with_overrides(Profile::Fast, &o).unwrap_err();
            assert_eq!((e.field, e.value.as_str()), (field, value), "{e}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("{field} {value}: ")), "{text}");
        }
    }
}
