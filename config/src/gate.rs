//! The config gate: which configuration is in force, and whether a new one may replace it.
//!
//! Every role that reads a configuration (controller, Kubernetes speaker, standalone) offers each
//! new configuration here and acts on the [`ConfigVerdict`]. The first configuration loads
//! unconditionally (a fresh start re-assigns what no longer fits); later ones are refused, and
//! the configuration in force stays, when they do not parse or would take an address away from
//! a Service that holds it ([`crate::compat`]). A breaking candidate is evaluated again when the
//! Services change (the offending Service may be gone); an unparsable one only when a new
//! configuration is offered. A refusal is reported once per distinct set of problems.
//!
//! What a refusal says is also decided here ([`Refusal`]), so every role reports the same
//! problems the same way: one line per problem, field path (or Service and address) first.
//!
//! Must not: do I/O, log, or know where the configuration came from.

use crate::compat::Breakage;
use crate::errors::ConfigErrors;
use crate::model::Config;

/// What a role must do about its configuration after [`ConfigGate::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigVerdict {
    /// Nothing new to consider.
    Unchanged,
    /// The candidate is now in force.
    Loaded,
    /// The candidate was refused; the configuration in force (if any) stays.
    Refused(Refusal),
}

/// Why a candidate configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub cause: RefusalCause,
    /// True the first time this exact refusal is seen: report it (log, Event) only then.
    pub first_report: bool,
}

/// The problems that made a candidate unacceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalCause {
    /// It would take these held addresses away (sorted).
    Breaking(Vec<Breakage>),
    /// It does not parse or validate: every problem, with its field path.
    Unparsable(ConfigErrors),
}

impl Refusal {
    /// One line per problem: `service ns/name ip 192.0.2.1: <reason>` for a breaking
    /// configuration, `<field path> = <value>: <reason>` for an invalid one.
    pub fn problems(&self) -> Vec<String> {
        match &self.cause {
            RefusalCause::Breaking(b) => b.iter().map(ToString::to_string).collect(),
            RefusalCause::Unparsable(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    /// What the refusal means, in one sentence (log message, first words of an Event).
    pub fn summary(&self) -> &'static str {
        match &self.cause {
            RefusalCause::Breaking(_) => {
                "new configuration refused: it would take addresses away from Services; the previous configuration stays in force"
            }
            RefusalCause::Unparsable(_) => {
                "new configuration refused: it is not valid; the previous configuration stays in force"
            }
        }
    }

    /// What the user can do about it.
    pub fn remedy(&self) -> &'static str {
        match &self.cause {
            RefusalCause::Breaking(_) => {
                "Delete or change those Services, or restart the controller to re-assign them; the configuration is retried when the Services change."
            }
            RefusalCause::Unparsable(_) => "Fix the configuration; it is read again when it changes.",
        }
    }

    /// The note of the Warning Event `ConfigStale`: the summary, every problem with its path,
    /// and the remedy.
    pub fn event_note(&self) -> String {
        let what = match &self.cause {
            RefusalCause::Breaking(_) => "it would break",
            RefusalCause::Unparsable(_) => "it is not valid:",
        };
        format!(
            "New configuration refused, the previous one stays in force: {what} {}. {}",
            self.problems().join("; "),
            self.remedy()
        )
    }

    /// True when evaluating the same candidate again could change the verdict once the
    /// Services change.
    pub fn retried_on_service_change(&self) -> bool {
        matches!(self.cause, RefusalCause::Breaking(_))
    }
}

/// The configuration in force and the newest one offered.
#[derive(Debug, Default)]
pub struct ConfigGate {
    active: Option<Config>,
    candidate: Option<Result<Config, ConfigErrors>>,
    /// The problems of the last refusal reported, to report each distinct refusal once.
    last_refusal: Option<RefusalCause>,
}

impl ConfigGate {
    /// The configuration in force, if any was ever loaded.
    pub fn active(&self) -> Option<&Config> {
        self.active.as_ref()
    }

    /// True while the newest configuration is refused.
    pub fn is_stale(&self) -> bool {
        self.candidate.is_some()
    }

    /// A new configuration was read: `parsed` is its parse result.
    pub fn offer(&mut self, parsed: Result<Config, ConfigErrors>) {
        if let (Ok(new), Some(active)) = (&parsed, &self.active) {
            if new == active {
                self.candidate = None;
                self.last_refusal = None;
                return;
            }
        }
        self.candidate = Some(parsed);
        self.last_refusal = None;
    }

    /// Try to load the candidate. `breakages` computes, for a candidate config, the addresses
    /// it would break among the Services as they are now. With no config in force (a fresh
    /// start) any valid candidate loads.
    pub fn evaluate(&mut self, breakages: impl FnOnce(&Config) -> Vec<Breakage>) -> ConfigVerdict {
        let Some(candidate) = self.candidate.take() else {
            return ConfigVerdict::Unchanged;
        };
        let cause = match &candidate {
            Err(errors) => RefusalCause::Unparsable(errors.clone()),
            Ok(config) => {
                let mut broken = if self.active.is_some() {
                    breakages(config)
                } else {
                    Vec::new()
                };
                if broken.is_empty() {
                    self.active = candidate.ok();
                    self.last_refusal = None;
                    return ConfigVerdict::Loaded;
                }
                broken.sort();
                RefusalCause::Breaking(broken)
            }
        };
        let first_report = self.last_refusal.as_ref() != Some(&cause);
        self.last_refusal = Some(cause.clone());
        self.candidate = Some(candidate);
        ConfigVerdict::Refused(Refusal {
            cause,
            first_report,
        })
    }

    /// One turn of the gate, the same in every role: a newly read configuration (`offered`, its
    /// parse result) is offered and evaluated; without one, a refused breaking candidate is
    /// evaluated again only when `services_changed` (the offending Service may be gone). Nothing
    /// else to consider: [`ConfigVerdict::Unchanged`].
    pub fn turn(
        &mut self,
        offered: Option<Result<Config, ConfigErrors>>,
        services_changed: bool,
        breakages: impl FnOnce(&Config) -> Vec<Breakage>,
    ) -> ConfigVerdict {
        match offered {
            Some(parsed) => self.offer(parsed),
            None if services_changed && self.retry_on_service_change() => {}
            None => return ConfigVerdict::Unchanged,
        }
        self.evaluate(breakages)
    }

    /// True when evaluating again could change the verdict (a breaking candidate is retried
    /// when Services change; an unparsable one only when a new configuration is offered).
    pub fn retry_on_service_change(&self) -> bool {
        matches!(self.candidate, Some(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ConfigError;
    use crate::service::ServiceKey;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(n: u32) -> Config {
        let mut c = Config::default();
        c.communities
            .insert(format!("c{n}"), crate::model::Community(n));
        c
    }

    fn breakage() -> Breakage {
        Breakage {
            service: ServiceKey::new("ns", "a"),
            ip: ip("192.0.2.1"),
            reason: "outside every address pool of the new configuration".into(),
        }
    }

    fn refused(v: &ConfigVerdict) -> &Refusal {
        match v {
            ConfigVerdict::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn first_config_loads_even_if_it_would_break() {
        let mut g = ConfigGate::default();
        assert_eq!(g.evaluate(|_| unreachable!()), ConfigVerdict::Unchanged);
        g.offer(Ok(config(1)));
        assert!(g.is_stale());
        assert_eq!(g.evaluate(|_| vec![breakage()]), ConfigVerdict::Loaded);
        assert_eq!(g.active(), Some(&config(1)));
        assert!(!g.is_stale());
    }

    #[test]
    fn breaking_config_is_refused_reported_once_and_retried() {
        let mut g = ConfigGate::default();
        g.offer(Ok(config(1)));
        assert_eq!(g.evaluate(|_| Vec::new()), ConfigVerdict::Loaded);
        g.offer(Ok(config(2)));
        let v1 = g.evaluate(|_| vec![breakage()]);
        let r = refused(&v1);
        assert!(r.first_report);
        assert_eq!(r.cause, RefusalCause::Breaking(vec![breakage()]));
        assert!(g.is_stale());
        assert!(g.retry_on_service_change());
        assert_eq!(g.active(), Some(&config(1)), "old config stays");
        assert!(!refused(&g.evaluate(|_| vec![breakage()])).first_report);
        // The offending Service was deleted.
        assert_eq!(g.evaluate(|_| Vec::new()), ConfigVerdict::Loaded);
        assert_eq!(g.active(), Some(&config(2)));
        assert!(!g.is_stale());
    }

    #[test]
    fn a_turn_evaluates_what_is_offered_and_retries_a_breaking_one_on_service_changes() {
        let mut g = ConfigGate::default();
        assert_eq!(
            g.turn(None, true, |_| unreachable!()),
            ConfigVerdict::Unchanged
        );
        assert_eq!(
            g.turn(Some(Ok(config(1))), false, |_| Vec::new()),
            ConfigVerdict::Loaded
        );
        assert!(refused(&g.turn(Some(Ok(config(2))), false, |_| vec![breakage()])).first_report);
        assert_eq!(
            g.turn(None, false, |_| unreachable!()),
            ConfigVerdict::Unchanged,
            "no Service changed: not evaluated"
        );
        assert_eq!(g.turn(None, true, |_| Vec::new()), ConfigVerdict::Loaded);
        let bad = ConfigErrors::one(ConfigError::new("peers", None, "bad"));
        assert!(refused(&g.turn(Some(Err(bad)), false, |_| Vec::new())).first_report);
        assert_eq!(
            g.turn(None, true, |_| unreachable!()),
            ConfigVerdict::Unchanged,
            "an invalid one waits for a new configuration"
        );
        assert_eq!(g.active(), Some(&config(2)));
    }

    #[test]
    fn another_set_of_breakages_is_reported_again() {
        let mut g = ConfigGate::default();
        g.offer(Ok(config(1)));
        g.evaluate(|_| Vec::new());
        g.offer(Ok(config(2)));
        assert!(refused(&g.evaluate(|_| vec![breakage()])).first_report);
        let mut other = breakage();
        other.ip = ip("192.0.2.2");
        assert!(refused(&g.evaluate(|_| vec![other])).first_report);
    }

    #[test]
    fn unparsable_config_is_refused_without_retry() {
        let mut g = ConfigGate::default();
        g.offer(Ok(config(1)));
        g.evaluate(|_| Vec::new());
        let errors = ConfigErrors(vec![
            ConfigError::new(
                "address-pools[0].addresses[0]",
                Some("192.0.2.0/33".into()),
                "invalid prefix length",
            ),
            ConfigError::new("peers[1].peer-asn", None, "missing"),
        ]);
        g.offer(Err(errors.clone()));
        let v = g.evaluate(|_| Vec::new());
        let r = refused(&v);
        assert!(r.first_report);
        assert_eq!(r.cause, RefusalCause::Unparsable(errors));
        assert!(!g.retry_on_service_change());
        assert!(g.is_stale());
        assert!(!refused(&g.evaluate(|_| Vec::new())).first_report);
        assert_eq!(g.active(), Some(&config(1)));
        // Re-offering the config in force clears the staleness.
        g.offer(Ok(config(1)));
        assert!(!g.is_stale());
    }

    #[test]
    fn a_refusal_names_every_problem_with_its_path() {
        let errors = ConfigErrors(vec![
            ConfigError::new(
                "address-pools[0].addresses[0]",
                Some("192.0.2.0/33".into()),
                "invalid prefix length",
            ),
            ConfigError::new("peers[1].peer-asn", None, "missing"),
        ]);
        let r = Refusal {
            cause: RefusalCause::Unparsable(errors),
            first_report: true,
        };
        assert_eq!(
            r.problems(),
            vec![
                "address-pools[0].addresses[0] = \"192.0.2.0/33\": invalid prefix length",
                "peers[1].peer-asn: missing"
            ]
        );
        let note = r.event_note();
        assert!(
            note.contains("address-pools[0].addresses[0] = \"192.0.2.0/33\": invalid prefix length; peers[1].peer-asn: missing"),
            "{note}"
        );
        assert!(!r.retried_on_service_change());
        let b = Refusal {
            cause: RefusalCause::Breaking(vec![breakage()]),
            first_report: true,
        };
        assert_eq!(
            b.problems(),
            vec!["service ns/a ip 192.0.2.1: outside every address pool of the new configuration"]
        );
        assert!(b
            .event_note()
            .contains("it would break service ns/a ip 192.0.2.1"));
        assert!(b.retried_on_service_change());
    }
}
