//! The planning engine every allocating mode runs (the Kubernetes controller and standalone
//! mode): the config gate, the incremental [`Planner`] and the per-Service decisions, behind one
//! call per pass.
//!
//! A source feeds it (new configuration text, Services as they appear, change and go); a pass
//! ([`Engine::pass`]) says what the gate concluded about the configuration and which writes to
//! carry out: the status each Service must get and the Event about it ([`Decision`]), releases
//! first so no address is ever held twice, at most `max_writes` at a time. The sink carries them
//! out (status patches and Events, or stdout and the state file) and reports back: done
//! ([`Engine::done`]), or failed and to be retried ([`Engine::retry`]).
//!
//! Must not: do I/O, read clocks, or know where Services and configuration come from.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::gate::{ConfigGate, ConfigVerdict};
use ferrolb_config::{Config, ConfigErrors, ServiceKey, ServiceView};

use crate::allocator::Allocator;
use crate::incremental::{Planner, Tracked};
use crate::reconcile::{decide, Allocation, Decision, StatusChange};

/// One write the sink must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub key: ServiceKey,
    /// What the allocator concluded (the sink reports it back through [`Engine::done`]).
    pub allocation: Allocation,
    pub decision: Decision,
}

/// What one pass produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// What the gate concluded about the newest configuration.
    pub verdict: ConfigVerdict,
    /// Writes in the order to carry them out (releases first, then key order).
    pub actions: Vec<Action>,
    /// True when the planner allocated in this pass (pool usage may have changed).
    pub planned: bool,
}

/// The gate, the planner and what was last reported per Service.
#[derive(Debug)]
pub struct Engine<M> {
    gate: ConfigGate,
    planner: Planner<M>,
    /// Reason of the last `AllocationFailed` reported per Service (one report per reason).
    last_failure: BTreeMap<ServiceKey, String>,
    /// A configuration read since the last pass (its parse result).
    offered: Option<Result<Config, ConfigErrors>>,
}

impl<M> Engine<M> {
    /// An engine for Services with no class or class `class`, with no configuration yet.
    pub fn new(class: impl Into<String>) -> Engine<M> {
        Engine {
            gate: ConfigGate::default(),
            planner: Planner::new(class),
            last_failure: BTreeMap::new(),
            offered: None,
        }
    }

    /// A new configuration was read (its parse result); the next pass evaluates it.
    pub fn offer_config(&mut self, parsed: Result<Config, ConfigErrors>) {
        self.offered = Some(parsed);
    }

    /// The gate (configuration in force, staleness).
    pub fn gate(&self) -> &ConfigGate {
        &self.gate
    }

    /// The configuration in force.
    pub fn config(&self) -> Option<&Config> {
        self.gate.active()
    }

    /// The Services and the allocator.
    pub fn planner(&self) -> &Planner<M> {
        &self.planner
    }

    /// The allocator of the last pass (assignments, pool usage).
    pub fn allocator(&self) -> Option<&Allocator> {
        self.planner.allocator()
    }

    /// The Service stored under `key`.
    pub fn get(&self, key: &ServiceKey) -> Option<&Tracked<M>> {
        self.planner.get(key)
    }

    /// Store a new or changed Service; true when it changed.
    pub fn upsert(&mut self, view: ServiceView, meta: M) -> bool {
        self.planner.upsert(view, meta)
    }

    /// Store the Service as the sink's write left it (its status is what a pass decided).
    pub fn written(&mut self, view: ServiceView, meta: M) {
        self.planner.written(view, meta);
    }

    /// A Service is gone: its addresses are free at the next pass.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<Tracked<M>> {
        self.last_failure.remove(key);
        self.planner.remove(key)
    }

    /// A (re-)list of every Service starts: see [`Planner::start_list`].
    pub fn start_list(&mut self) {
        self.planner.start_list();
    }

    /// `key` was named by the running list.
    pub fn mark_listed(&mut self, key: &ServiceKey) {
        self.planner.mark_listed(key);
    }

    /// True while a list runs.
    pub fn is_listing(&self) -> bool {
        self.planner.is_listing()
    }

    /// The list is complete: Services it did not name are removed (returned) and everything is
    /// re-planned from the statuses at the next pass.
    pub fn finish_list(&mut self) -> Vec<ServiceKey> {
        let gone = self.planner.finish_list();
        for key in &gone {
            self.last_failure.remove(key);
        }
        gone
    }

    /// Re-plan everything from the statuses at the next pass (e.g. after leadership was gained).
    pub fn replan(&mut self) {
        self.planner.replan();
    }

    /// Check every Service again at the next pass (a periodic resync).
    pub fn recheck_all(&mut self) {
        self.planner.recheck_all();
    }

    /// Drop the allocations (this replica stopped deciding); the next pass re-plans.
    pub fn forget_allocations(&mut self) {
        self.planner.forget_allocations();
    }

    /// True when the next pass has something to do: a configuration to evaluate, or Services to
    /// plan.
    pub fn has_work(&self) -> bool {
        self.offered.is_some() || self.planner_has_work()
    }

    fn planner_has_work(&self) -> bool {
        self.gate.active().is_some_and(|c| self.planner.has_work(c))
    }

    /// Evaluate the newest configuration (a refused breaking one again when the Services
    /// changed: the offending one may be gone), then plan the Services that need it under the
    /// one in force, and decide every write: at most `max_writes` actions (the rest are planned
    /// again at the next pass).
    pub fn pass(&mut self, max_writes: usize) -> Pass {
        let services_changed = self.planner_has_work();
        let planner = &self.planner;
        let verdict = self
            .gate
            .turn(self.offered.take(), services_changed, |candidate| {
                planner.breakages(candidate)
            });
        let Some(config) = self.gate.active() else {
            return Pass {
                verdict,
                actions: Vec::new(),
                planned: false,
            };
        };
        if !self.planner.has_work(config) {
            return Pass {
                verdict,
                actions: Vec::new(),
                planned: false,
            };
        }
        let outcomes = self.planner.pass(config);
        let owns = |ip: &IpAddr| config.pool_containing(ip).is_some();
        let mut actions = Vec::new();
        for (key, allocation) in outcomes {
            let Some(t) = self.planner.get(&key) else {
                continue;
            };
            let decision = decide(
                &t.view,
                &allocation,
                owns,
                self.last_failure.get(&key).map(String::as_str),
            );
            if decision.status == StatusChange::Keep && decision.event.is_none() {
                note_failure(&mut self.last_failure, &key, &allocation);
            } else {
                actions.push(Action {
                    key,
                    allocation,
                    decision,
                });
            }
        }
        // Clear released addresses before handing them to another Service, so no address is
        // ever in two Services' status at once (the sort is stable: key order otherwise).
        actions.sort_by_key(|a| a.decision.status != StatusChange::Clear);
        if actions.len() > max_writes {
            for a in actions.drain(max_writes..) {
                self.planner.touch(&a.key);
            }
        }
        Pass {
            verdict,
            actions,
            planned: true,
        }
    }

    /// The sink carried `action` out (its status write succeeded or was not needed, its Event
    /// was sent): a failure is not reported again for the same reason.
    pub fn done(&mut self, action: &Action) {
        note_failure(&mut self.last_failure, &action.key, &action.allocation);
    }

    /// The sink could not carry out the write for `key`: plan it again at the next pass.
    pub fn retry(&mut self, key: &ServiceKey) {
        self.planner.touch(key);
    }
}

/// Remember the reason of a failed allocation (one `AllocationFailed` per distinct reason),
/// forget it once the Service is served.
fn note_failure(
    last_failure: &mut BTreeMap<ServiceKey, String>,
    key: &ServiceKey,
    allocation: &Allocation,
) {
    match allocation {
        Allocation::Failed { reason } => {
            last_failure.insert(key.clone(), reason.clone());
        }
        _ => {
            last_failure.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::ServiceEvent;
    use ferrolb_config::gate::RefusalCause;

    fn config(range: &str) -> Config {
        ferrolb_config::parse(&format!(
            "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [{range}]\n"
        ))
        .unwrap()
    }

    fn lb(name: &str) -> ServiceView {
        ServiceView::new_load_balancer(ServiceKey::new("ns", name))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Carries out every action as a sink would: the status written back, done reported.
    fn carry_out(e: &mut Engine<()>, pass: &Pass) {
        for a in &pass.actions {
            let mut v = e.get(&a.key).unwrap().view.clone();
            match &a.decision.status {
                StatusChange::Set(ips) => v.ingress_ips.clone_from(ips),
                StatusChange::Clear => v.ingress_ips.clear(),
                StatusChange::Keep => {}
            }
            e.written(v, ());
            e.done(a);
        }
    }

    #[test]
    fn nothing_is_planned_before_a_configuration() {
        let mut e: Engine<()> = Engine::new("ferrolb");
        e.upsert(lb("a"), ());
        let p = e.pass(10);
        assert_eq!(p.verdict, ConfigVerdict::Unchanged);
        assert!(p.actions.is_empty() && !p.planned);
        e.offer_config(Ok(config("192.0.2.0/30")));
        assert!(e.has_work());
        let p = e.pass(10);
        assert_eq!(p.verdict, ConfigVerdict::Loaded);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(
            p.actions[0].decision.status,
            StatusChange::Set(vec![ip("192.0.2.0")])
        );
        carry_out(&mut e, &p);
        assert!(!e.has_work());
        assert!(e.pass(10).actions.is_empty(), "the written status is kept");
    }

    #[test]
    fn a_breaking_configuration_is_refused_until_the_service_goes() {
        let mut e: Engine<()> = Engine::new("ferrolb");
        e.offer_config(Ok(config("192.0.2.0/30")));
        e.upsert(lb("a"), ());
        let p = e.pass(10);
        carry_out(&mut e, &p);
        e.offer_config(Ok(config("198.51.100.0/30")));
        let p = e.pass(10);
        match &p.verdict {
            ConfigVerdict::Refused(r) => {
                assert!(r.first_report);
                assert!(
                    matches!(&r.cause, RefusalCause::Breaking(b) if b[0].ip == ip("192.0.2.0"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.config(),
            Some(&config("192.0.2.0/30")),
            "old one in force"
        );
        // A newcomer gets an address from the configuration in force.
        e.upsert(lb("b"), ());
        let p = e.pass(10);
        assert!(matches!(&p.verdict, ConfigVerdict::Refused(r) if !r.first_report));
        assert_eq!(
            p.actions[0].decision.status,
            StatusChange::Set(vec![ip("192.0.2.1")])
        );
        carry_out(&mut e, &p);
        e.remove(&ServiceKey::new("ns", "a"));
        e.remove(&ServiceKey::new("ns", "b"));
        assert!(e.has_work());
        assert_eq!(e.pass(10).verdict, ConfigVerdict::Loaded);
    }

    #[test]
    fn a_refused_configuration_does_not_keep_the_engine_busy() {
        let mut e: Engine<()> = Engine::new("ferrolb");
        e.offer_config(Ok(config("192.0.2.0/30")));
        e.upsert(lb("a"), ());
        let p = e.pass(10);
        carry_out(&mut e, &p);
        e.offer_config(Err(ConfigErrors::one(ferrolb_config::ConfigError::new(
            "address-pools",
            None,
            "bad",
        ))));
        assert!(e.has_work());
        assert!(matches!(e.pass(10).verdict, ConfigVerdict::Refused(_)));
        assert!(!e.has_work(), "nothing to do until something changes");
        e.offer_config(Ok(config("198.51.100.0/30")));
        assert!(matches!(e.pass(10).verdict, ConfigVerdict::Refused(_)));
        assert!(!e.has_work());
        // A Service change retries the breaking one (reported once).
        e.upsert(lb("b"), ());
        let p = e.pass(10);
        assert!(matches!(&p.verdict, ConfigVerdict::Refused(r) if !r.first_report));
        assert_eq!(
            p.actions.len(),
            1,
            "b is served by the configuration in force"
        );
    }

    #[test]
    fn releases_come_first_and_writes_are_capped() {
        let mut e: Engine<()> = Engine::new("ferrolb");
        e.offer_config(Ok(config("192.0.2.0/31")));
        for n in ["a", "b"] {
            e.upsert(lb(n), ());
        }
        let p = e.pass(10);
        carry_out(&mut e, &p);
        // "a" leaves our class (its address is cleared), "c" and "d" arrive.
        let mut a = e.get(&ServiceKey::new("ns", "a")).unwrap().view.clone();
        a.load_balancer_class = Some("other".into());
        e.upsert(a, ());
        e.upsert(lb("c"), ());
        e.upsert(lb("d"), ());
        let p = e.pass(2);
        assert_eq!(p.actions.len(), 2, "capped");
        assert_eq!(p.actions[0].key.name, "a");
        assert_eq!(p.actions[0].decision.status, StatusChange::Clear);
        carry_out(&mut e, &p);
        let p = e.pass(10);
        assert!(
            !p.actions.is_empty(),
            "the capped writes come in the next pass"
        );
    }

    #[test]
    fn a_failure_is_reported_once_per_reason_and_retried_writes_come_back() {
        let mut e: Engine<()> = Engine::new("ferrolb");
        e.offer_config(Ok(config("192.0.2.0/32")));
        e.upsert(lb("a"), ());
        e.upsert(lb("b"), ());
        let p = e.pass(10);
        let failed: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a.decision.event,
                    Some(ServiceEvent::AllocationFailed { .. })
                )
            })
            .collect();
        assert_eq!(failed.len(), 1);
        carry_out(&mut e, &p);
        e.recheck_all();
        assert!(
            e.pass(10).actions.is_empty(),
            "same reason: not reported again"
        );
        // A write that failed is planned again.
        e.upsert(lb("c"), ());
        e.remove(&ServiceKey::new("ns", "a"));
        let p = e.pass(10);
        assert!(!p.actions.is_empty());
        for a in &p.actions {
            e.retry(&a.key);
        }
        assert!(e.has_work());
    }
}
