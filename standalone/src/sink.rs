//! Standalone mode's source and sink around the shared [`Engine`]: the services file's Services
//! go in (each keeping the status it holds: the addresses persisted in the state file at start,
//! then those the engine gave it), and each pass's writes come out as lines for stdout and a new
//! status per Service, which the shell persists in the state file. The same engine, gate and
//! decisions as the Kubernetes controller, whose sink is status patches and Events.
//!
//! Must not: do I/O or read clocks (`standalone/mod.rs` reads files, prints and persists).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::gate::ConfigVerdict;
use ferrolb_config::{ServiceKey, ServiceView};
use ferrolb_controller::engine::{Engine, Pass};
use ferrolb_controller::reconcile::{join_ips, Allocation, ServiceEvent, StatusChange};

/// What a step produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Lines for standard output, in order.
    pub lines: Vec<String>,
    /// True when a Service's addresses changed (persist them and re-announce).
    pub changed: bool,
}

/// The Services of the services file replace those the engine knows. Each keeps the status it
/// holds in the engine; a Service new to the engine takes its addresses from `persisted` (the
/// state file, read at start) or else its own `status` in the file. Services no longer listed
/// are removed; their addresses are released.
pub fn sync_services(
    engine: &mut Engine<()>,
    listed: Vec<ServiceView>,
    persisted: &mut BTreeMap<ServiceKey, Vec<IpAddr>>,
    unprinted: &mut BTreeSet<ServiceKey>,
) -> Step {
    let mut step = Step::default();
    let mut keep: BTreeMap<ServiceKey, ()> = BTreeMap::new();
    for mut view in listed {
        match engine.get(&view.key) {
            Some(t) => view.ingress_ips.clone_from(&t.view.ingress_ips),
            None => {
                if let Some(ips) = persisted.remove(&view.key) {
                    view.ingress_ips = ips;
                }
                if !view.ingress_ips.is_empty() {
                    unprinted.insert(view.key.clone());
                }
            }
        }
        keep.insert(view.key.clone(), ());
        engine.upsert(view, ());
    }
    let gone: Vec<ServiceKey> = engine
        .planner()
        .views()
        .map(|v| &v.key)
        .filter(|k| !keep.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        unprinted.remove(&key);
        if let Some(t) = engine.remove(&key) {
            if !t.view.ingress_ips.is_empty() {
                step.lines
                    .push(format!("{key} released {}", join_ips(&t.view.ingress_ips)));
                step.changed = true;
            }
        }
    }
    step
}

/// The lines about the configuration's verdict.
pub fn verdict_lines(verdict: &ConfigVerdict) -> Vec<String> {
    match verdict {
        ConfigVerdict::Unchanged => Vec::new(),
        ConfigVerdict::Loaded => vec!["config loaded".to_string()],
        ConfigVerdict::Refused(r) if !r.first_report => Vec::new(),
        ConfigVerdict::Refused(r) => {
            let mut lines: Vec<String> = r
                .problems()
                .into_iter()
                .map(|p| format!("config refused: {p}"))
                .collect();
            lines.push(if r.retried_on_service_change() {
                "config refused: keeping the previous configuration; retried when the services change"
                    .to_string()
            } else {
                "config refused: keeping the previous configuration; read again when the file changes"
                    .to_string()
            });
            lines
        }
    }
}

/// Carries out a pass's writes: per Service its new status (stored back into
/// the engine, as a status write would be) and its line. A Service in `unprinted` (it came with
/// addresses: restored, not assigned) gets its line once its addresses are confirmed.
pub fn carry_out(
    engine: &mut Engine<()>,
    pass: Pass,
    unprinted: &mut BTreeSet<ServiceKey>,
) -> Step {
    let mut step = Step::default();
    for action in pass.actions {
        unprinted.remove(&action.key);
        let Some(t) = engine.get(&action.key) else {
            continue;
        };
        let mut view = t.view.clone();
        let key = &action.key;
        let failure = match &action.decision.event {
            Some(ServiceEvent::AllocationFailed { reason }) => Some(reason),
            _ => None,
        };
        match &action.decision.status {
            StatusChange::Set(ips) => {
                let pool = match &action.allocation {
                    Allocation::Assigned { pool, .. } => pool.as_str(),
                    _ => "",
                };
                step.lines
                    .push(format!("{key} -> {} ({pool})", join_ips(ips)));
                view.ingress_ips.clone_from(ips);
                step.changed = true;
            }
            StatusChange::Clear => {
                if failure.is_none() {
                    step.lines
                        .push(format!("{key} released {}", join_ips(&view.ingress_ips)));
                }
                view.ingress_ips.clear();
                step.changed = true;
            }
            StatusChange::Keep => {}
        }
        if let Some(reason) = failure {
            step.lines
                .push(format!("{key}: allocation failed: {reason}"));
        }
        engine.written(view, ());
        engine.done(&action);
    }
    if pass.planned {
        print_kept(engine, unprinted, &mut step.lines);
    }
    step
}

/// The lines of the Services in `unprinted` whose addresses the pass kept (restored ones).
fn print_kept(engine: &Engine<()>, unprinted: &mut BTreeSet<ServiceKey>, lines: &mut Vec<String>) {
    let Some(alloc) = engine.allocator() else {
        return;
    };
    for key in std::mem::take(unprinted) {
        if let Some(a) = alloc.assignment(&key) {
            lines.push(format!("{key} -> {} ({})", join_ips(a.ips), a.pool));
        }
    }
}

/// Standalone's allocation state: the engine, the state file's addresses not yet handed to a
/// Service, and the Services whose restored addresses are not printed yet.
#[derive(Debug)]
pub struct Standalone {
    pub engine: Engine<()>,
    persisted: BTreeMap<ServiceKey, Vec<IpAddr>>,
    unprinted: BTreeSet<ServiceKey>,
}

impl Standalone {
    /// No configuration yet; `persisted` is the state file's content.
    pub fn new(class: impl Into<String>, persisted: BTreeMap<ServiceKey, Vec<IpAddr>>) -> Self {
        Standalone {
            engine: Engine::new(class),
            persisted,
            unprinted: BTreeSet::new(),
        }
    }

    /// One step: the services (when the file changed) into the engine, one pass, carried out.
    pub fn step(&mut self, listed: Option<Vec<ServiceView>>) -> Step {
        let released = match listed {
            Some(l) => sync_services(
                &mut self.engine,
                l,
                &mut self.persisted,
                &mut self.unprinted,
            ),
            None => Step::default(),
        };
        if !self.engine.has_work() {
            return released;
        }
        // No cap on the writes: standalone writes to memory and one file, nothing to pace.
        let pass = self.engine.pass(usize::MAX);
        // The configuration's verdict first, then what left, then what the pass decided.
        let mut out = Step {
            lines: verdict_lines(&pass.verdict),
            changed: released.changed,
        };
        out.lines.extend(released.lines);
        let s = carry_out(&mut self.engine, pass, &mut self.unprinted);
        out.lines.extend(s.lines);
        out.changed |= s.changed;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::{ConfigError, ConfigErrors};

    fn cfg(cidr: &str) -> ferrolb_config::Config {
        ferrolb_config::parse(&format!(
            "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [{cidr}]\n"
        ))
        .unwrap()
    }

    fn svc(name: &str) -> ServiceView {
        ServiceView::new_load_balancer(ServiceKey::new("default", name))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn held(e: &Engine<()>, name: &str) -> Vec<IpAddr> {
        e.get(&ServiceKey::new("default", name))
            .map(|t| t.view.ingress_ips.clone())
            .unwrap_or_default()
    }

    #[test]
    fn first_config_assigns_and_prints_each_service_once() {
        let mut st = Standalone::new("ferrolb", BTreeMap::new());
        st.engine.offer_config(Ok(cfg("192.0.2.0/30")));
        let s = st.step(Some(vec![svc("a"), svc("b")]));
        assert_eq!(
            s.lines,
            vec![
                "config loaded",
                "default/a -> 192.0.2.0 (p)",
                "default/b -> 192.0.2.1 (p)"
            ]
        );
        assert!(s.changed);
        let again = st.step(Some(vec![svc("a"), svc("b")]));
        assert_eq!(again, Step::default(), "the same file changes nothing");
        let s = st.step(Some(vec![svc("b")]));
        assert_eq!(s.lines, vec!["default/a released 192.0.2.0"]);
        assert!(s.changed);
    }

    #[test]
    fn persisted_addresses_are_restored_before_anything_is_assigned() {
        let mut st = Standalone::new(
            "ferrolb",
            BTreeMap::from([(ServiceKey::new("default", "b"), vec![ip("192.0.2.0")])]),
        );
        st.engine.offer_config(Ok(cfg("192.0.2.0/30")));
        let s = st.step(Some(vec![svc("a"), svc("b")]));
        assert_eq!(held(&st.engine, "b"), vec![ip("192.0.2.0")]);
        assert_eq!(
            held(&st.engine, "a"),
            vec![ip("192.0.2.1")],
            "a does not take b's address"
        );
        assert_eq!(
            s.lines,
            vec![
                "config loaded",
                "default/a -> 192.0.2.1 (p)",
                "default/b -> 192.0.2.0 (p)"
            ]
        );
        assert!(
            st.persisted.is_empty(),
            "the state file's addresses are taken once"
        );
    }

    #[test]
    fn a_breaking_config_is_refused_until_the_services_change() {
        let mut st = Standalone::new("ferrolb", BTreeMap::new());
        st.engine.offer_config(Ok(cfg("192.0.2.0/30")));
        st.step(Some(vec![svc("a")]));
        st.engine.offer_config(Ok(cfg("198.51.100.0/30")));
        let s = st.step(None);
        assert_eq!(
            s.lines,
            vec![
                "config refused: service default/a ip 192.0.2.0: outside every address pool of the new configuration",
                "config refused: keeping the previous configuration; retried when the services change"
            ]
        );
        assert!(!s.changed);
        assert_eq!(st.step(None), Step::default(), "reported once");
        let s = st.step(Some(vec![]));
        assert_eq!(
            s.lines,
            vec!["config loaded", "default/a released 192.0.2.0"]
        );
        let s = st.step(Some(vec![svc("c")]));
        assert_eq!(s.lines, vec!["default/c -> 198.51.100.0 (p)"]);
    }

    #[test]
    fn an_invalid_config_names_each_problem_and_keeps_the_old_one() {
        let mut st = Standalone::new("ferrolb", BTreeMap::new());
        st.engine.offer_config(Ok(cfg("192.0.2.0/30")));
        st.step(Some(vec![svc("a")]));
        st.engine.offer_config(Err(ConfigErrors(vec![
            ConfigError::new("address-pools[0].protocol", None, "required"),
            ConfigError::new(
                "address-pools[0].addresses[0]",
                Some("x".into()),
                "not an address",
            ),
        ])));
        let s = st.step(Some(vec![svc("a"), svc("b")]));
        assert_eq!(
            s.lines,
            vec![
                "config refused: address-pools[0].protocol: required",
                "config refused: address-pools[0].addresses[0] = \"x\": not an address",
                "config refused: keeping the previous configuration; read again when the file changes",
                "default/b -> 192.0.2.1 (p)"
            ]
        );
    }

    #[test]
    fn a_failure_is_printed_once_and_its_address_released() {
        let mut st = Standalone::new("ferrolb", BTreeMap::new());
        st.engine.offer_config(Ok(cfg("192.0.2.0/32")));
        let s = st.step(Some(vec![svc("a"), svc("b")]));
        assert_eq!(s.lines[1], "default/a -> 192.0.2.0 (p)");
        assert!(
            s.lines[2].starts_with("default/b: allocation failed: "),
            "{:?}",
            s.lines
        );
        assert_eq!(st.step(Some(vec![svc("a"), svc("b")])), Step::default());
        // a asks for an address outside the pool: it loses its own and fails.
        let mut a = svc("a");
        a.load_balancer_ip = Some("203.0.113.1".into());
        let s = st.step(Some(vec![a, svc("b")]));
        assert!(
            s.lines
                .iter()
                .any(|l| l.starts_with("default/a: allocation failed: ")),
            "{:?}",
            s.lines
        );
        assert!(
            s.lines.contains(&"default/b -> 192.0.2.0 (p)".to_string()),
            "{:?}",
            s.lines
        );
        assert!(held(&st.engine, "a").is_empty());
    }

    #[test]
    fn a_service_leaving_our_class_is_released() {
        let mut st = Standalone::new("ferrolb", BTreeMap::new());
        st.engine.offer_config(Ok(cfg("192.0.2.0/30")));
        st.step(Some(vec![svc("a")]));
        let mut a = svc("a");
        a.load_balancer_class = Some("other".into());
        let s = st.step(Some(vec![a]));
        assert_eq!(s.lines, vec!["default/a released 192.0.2.0"]);
        assert!(s.changed);
    }
}
