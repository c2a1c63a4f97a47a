//! Standalone mode's decisions: given the newest config text's parse result and the Services from
//! the services file, keep the allocator up to date and say what to print and persist.
//!
//! Same rules as the Kubernetes controller: the first config loads unconditionally (then the
//! persisted addresses are restored before any new assignment); later configs that would put a
//! held address outside every pool are refused (the old one stays) and retried when the Services
//! change; an unparsable config is refused until the file changes.
//!
//! Must not: do I/O or read clocks; `standalone/mod.rs` reads files, prints and persists.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_config::{Config, ServiceKey, ServiceView};
use ferrolb_controller::allocator::{Allocator, Assigned};
use ferrolb_controller::reconcile::join_ips;

/// The outcome for one Service, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Assigned(Assigned),
    Failed(String),
}

/// The standalone state machine.
#[derive(Debug)]
pub struct Engine {
    class: String,
    alloc: Option<Allocator>,
    /// A config that was refused (breaking), retried when the Services change.
    pending: Option<Config>,
    last_refusal: Option<String>,
    reported: BTreeMap<ServiceKey, Outcome>,
}

/// What one step produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Lines for standard output, in order.
    pub lines: Vec<String>,
    /// True when the assignments changed (persist them and re-announce).
    pub changed: bool,
}

impl Engine {
    pub fn new(class: impl Into<String>) -> Engine {
        Engine {
            class: class.into(),
            alloc: None,
            pending: None,
            last_refusal: None,
            reported: BTreeMap::new(),
        }
    }

    /// The config in force, if any.
    pub fn config(&self) -> Option<&Config> {
        self.alloc.as_ref().map(Allocator::config)
    }

    /// Every assignment in force.
    pub fn assignments(&self) -> BTreeMap<ServiceKey, Assigned> {
        self.alloc
            .as_ref()
            .map(Allocator::assignments)
            .unwrap_or_default()
    }

    /// The config file changed: `parsed` is its parse result (error as text).
    pub fn offer_config(&mut self, parsed: Result<Config, String>) -> Step {
        let mut step = Step::default();
        match parsed {
            Err(e) => {
                self.pending = None;
                step.lines.push(format!(
                    "config refused: {}; keeping the previous configuration",
                    e.trim()
                ));
            }
            Ok(c) => {
                if self.config() == Some(&c) {
                    self.pending = None;
                    self.last_refusal = None;
                } else {
                    self.pending = Some(c);
                    self.last_refusal = None;
                }
            }
        }
        step
    }

    /// Re-runs allocation over `services` (after the persisted addresses in `persisted` were
    /// merged: they count as each Service's current status). Loads a pending config first when
    /// it no longer breaks anything.
    pub fn reconcile(
        &mut self,
        services: &[ServiceView],
        persisted: &BTreeMap<ServiceKey, Vec<IpAddr>>,
    ) -> Step {
        let mut step = Step::default();
        let mut views: Vec<ServiceView> = services.to_vec();
        views.sort_by(|a, b| a.key.cmp(&b.key));
        for v in &mut views {
            if let Some(ips) = persisted.get(&v.key) {
                v.ingress_ips = ips.clone();
            }
        }
        let before = self.assignments();
        if let Some(new) = self.pending.take() {
            match &mut self.alloc {
                None => {
                    let (a, _) = Allocator::fresh(new, self.class.clone(), &views);
                    self.alloc = Some(a);
                    step.lines.push("config loaded".to_string());
                }
                Some(a) => {
                    // Release Services that are gone first: their addresses do not block.
                    release_gone(a, &views);
                    match a.set_config(new.clone()) {
                        Ok(()) => {
                            self.last_refusal = None;
                            step.lines.push("config loaded".to_string());
                        }
                        Err(broken) => {
                            let summary: Vec<String> =
                                broken.iter().map(ToString::to_string).collect();
                            let summary = summary.join("; ");
                            if self.last_refusal.as_deref() != Some(summary.as_str()) {
                                for b in &broken {
                                    step.lines.push(format!("config refused: {b}"));
                                }
                                step.lines.push(
                                    "config refused: keeping the previous configuration; retried when the services change"
                                        .to_string(),
                                );
                                self.last_refusal = Some(summary);
                            }
                            self.pending = Some(new);
                        }
                    }
                }
            }
        }
        let Some(a) = self.alloc.as_mut() else {
            return step;
        };
        release_gone(a, &views);
        for v in &views {
            if a.serves(v) && a.assignment(&v.key).is_none() && !v.ingress_ips.is_empty() {
                let _ = a.restore(v);
            }
        }
        let mut now: BTreeMap<ServiceKey, Outcome> = BTreeMap::new();
        for v in &views {
            if !a.serves(v) {
                continue;
            }
            let o = match a.allocate(v) {
                Ok(asg) => Outcome::Assigned(asg),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            now.insert(v.key.clone(), o);
        }
        for (k, o) in &now {
            if self.reported.get(k) != Some(o) {
                step.lines.push(match o {
                    Outcome::Assigned(asg) => {
                        format!("{k} -> {} ({})", join_ips(&asg.ips), asg.pool)
                    }
                    Outcome::Failed(reason) => format!("{k}: allocation failed: {reason}"),
                });
            }
        }
        for (k, o) in &self.reported {
            if !now.contains_key(k) {
                if let Outcome::Assigned(asg) = o {
                    step.lines
                        .push(format!("{k} released {}", join_ips(&asg.ips)));
                }
            }
        }
        self.reported = now;
        step.changed = self.assignments() != before;
        step
    }
}

/// Releases every held Service that is gone from `views` or no longer ours.
fn release_gone(a: &mut Allocator, views: &[ServiceView]) {
    let served: BTreeMap<&ServiceKey, bool> = views.iter().map(|v| (&v.key, a.serves(v))).collect();
    let gone: Vec<ServiceKey> = a
        .assignments()
        .into_keys()
        .filter(|k| !served.get(k).copied().unwrap_or(false))
        .collect();
    for k in gone {
        a.release(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cidr: &str) -> Config {
        ferrolb_config::parse(&format!(
            "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [{cidr}]\n"
        ))
        .unwrap()
    }

    fn svc(name: &str) -> ServiceView {
        ServiceView::new_load_balancer(ServiceKey::new("default", name))
    }

    #[test]
    fn assigns_prints_and_refuses_breaking_config() {
        let mut e = Engine::new("ferrolb");
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        let s = e.reconcile(&[svc("a"), svc("b")], &BTreeMap::new());
        assert_eq!(
            s.lines,
            vec![
                "config loaded",
                "default/a -> 192.0.2.0 (p)",
                "default/b -> 192.0.2.1 (p)"
            ]
        );
        assert!(s.changed);
        // Nothing new: nothing printed.
        let s = e.reconcile(&[svc("a"), svc("b")], &BTreeMap::new());
        assert!(s.lines.is_empty() && !s.changed);
        // Breaking config: refused, naming the Service and the address; old config kept.
        e.offer_config(Ok(cfg("192.0.2.1/32")));
        let s = e.reconcile(&[svc("a"), svc("b")], &BTreeMap::new());
        assert!(
            s.lines[0].contains("default/a") && s.lines[0].contains("192.0.2.0"),
            "{s:?}"
        );
        assert_eq!(e.config(), Some(&cfg("192.0.2.0/30")));
        // Deleting the offending Service lets it load on the next services change.
        let s = e.reconcile(&[svc("b")], &BTreeMap::new());
        assert_eq!(
            s.lines,
            vec!["config loaded", "default/a released 192.0.2.0"]
        );
        assert_eq!(e.config(), Some(&cfg("192.0.2.1/32")));
    }

    #[test]
    fn persisted_addresses_are_restored_first() {
        let mut e = Engine::new("ferrolb");
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        let persisted = BTreeMap::from([(
            ServiceKey::new("default", "z"),
            vec!["192.0.2.0".parse().unwrap()],
        )]);
        let s = e.reconcile(&[svc("a"), svc("z")], &persisted);
        assert!(
            s.lines.contains(&"default/z -> 192.0.2.0 (p)".to_string()),
            "{s:?}"
        );
        assert!(
            s.lines.contains(&"default/a -> 192.0.2.1 (p)".to_string()),
            "{s:?}"
        );
    }

    #[test]
    fn unparsable_config_is_reported_and_nothing_changes() {
        let mut e = Engine::new("ferrolb");
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        e.reconcile(&[svc("a")], &BTreeMap::new());
        let s = e.offer_config(Err("does not parse: bad yaml".into()));
        assert!(s.lines[0].contains("does not parse"));
        assert_eq!(e.config(), Some(&cfg("192.0.2.0/30")));
    }
}
