//! Standalone mode's decisions: given the newest config text's parse result and the Services from
//! the services file, keep the allocator up to date and say what to print and persist.
//!
//! Same rules as the Kubernetes controller: the first config loads unconditionally (then the
//! persisted addresses are restored before any new assignment); later configs that would put a
//! held address outside every pool are refused (the old one stays) and retried when the Services
//! change; an unparsable config is refused until the file changes.
//!
//! Memory (10k Services must fit a speaker's budget): a step neither copies the Services nor the
//! assignments. The persisted addresses are swapped into the caller's views for the step and
//! swapped back; after the first persisted change the allocator itself is the persisted state;
//! `reported` is updated in place and, because the allocator holds exactly the `Assigned`
//! outcomes of the last step (it releases on every error and `release_gone` drops the rest),
//! it also tells what changed.
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
    /// The last outcome of every served Service, by key.
    reported: BTreeMap<ServiceKey, Outcome>,
    /// The state file's addresses, each Service's status until the first changed step is
    /// persisted; from then on the allocator's assignments are what was persisted.
    persisted: Option<BTreeMap<ServiceKey, Vec<IpAddr>>>,
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
    /// An engine with no config yet; `persisted` is the state file's content.
    pub fn new(class: impl Into<String>, persisted: BTreeMap<ServiceKey, Vec<IpAddr>>) -> Engine {
        Engine {
            class: class.into(),
            alloc: None,
            pending: None,
            last_refusal: None,
            reported: BTreeMap::new(),
            persisted: Some(persisted),
        }
    }

    /// The config in force, if any.
    pub fn config(&self) -> Option<&Config> {
        self.alloc.as_ref().map(Allocator::config)
    }

    /// What `key` holds now.
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assigned> {
        self.alloc.as_ref()?.assignment(key)
    }

    /// Every assignment in force, in key order, borrowed.
    pub fn assigned(&self) -> impl Iterator<Item = (&ServiceKey, &Assigned)> + '_ {
        self.reported
            .keys()
            .filter_map(move |k| Some((k, self.assignment(k)?)))
    }

    /// Every assignment in force (a copy; tests).
    #[cfg(test)]
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

    /// Re-runs allocation over `services`, each with its persisted addresses (or, once a change
    /// was persisted, the addresses it holds) as its current status. Loads a pending config
    /// first when it no longer breaks anything. `services` is left as it was given.
    pub fn reconcile(&mut self, services: &mut [ServiceView]) -> Step {
        let mut saved: Vec<(usize, Vec<IpAddr>)> = Vec::new();
        for (i, v) in services.iter_mut().enumerate() {
            let held = match &self.persisted {
                Some(p) => p.get(&v.key).cloned(),
                None => self.assignment(&v.key).map(|a| a.ips.to_vec()),
            };
            if let Some(ips) = held {
                saved.push((i, std::mem::replace(&mut v.ingress_ips, ips)));
            }
        }
        let step = self.step(services);
        for (i, ips) in saved {
            services[i].ingress_ips = ips;
        }
        if step.changed {
            // The caller persists the allocator's assignments now.
            self.persisted = None;
        }
        step
    }

    fn step(&mut self, services: &[ServiceView]) -> Step {
        let mut step = Step::default();
        // Key order (stable: equal keys keep their input order), as indexes into `services`.
        let mut order: Vec<usize> = (0..services.len()).collect();
        order.sort_by(|&x, &y| services[x].key.cmp(&services[y].key));
        let sorted = Sorted { services, order };
        if let Some(new) = self.pending.take() {
            match &mut self.alloc {
                None => {
                    let (a, _) = Allocator::fresh(new, self.class.clone(), services);
                    self.alloc = Some(a);
                    step.lines.push("config loaded".to_string());
                }
                Some(a) => {
                    // Release Services that are gone first: their addresses do not block.
                    release_gone(a, &self.reported, &sorted);
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
        release_gone(a, &self.reported, &sorted);
        for v in sorted.iter() {
            if a.serves(v) && a.assignment(&v.key).is_none() && !v.ingress_ips.is_empty() {
                let _ = a.restore(v);
            }
        }
        // New outcomes in key order; of Services sharing a key, the last served one counts.
        let mut changed = false;
        let mut at = 0;
        while at < sorted.order.len() {
            let key = &sorted.get(at).key;
            let mut outcome = None;
            while at < sorted.order.len() && &sorted.get(at).key == key {
                let v = sorted.get(at);
                if a.serves(v) {
                    outcome = Some(match a.allocate(v) {
                        Ok(asg) => Outcome::Assigned(asg),
                        Err(e) => Outcome::Failed(e.to_string()),
                    });
                }
                at += 1;
            }
            let Some(o) = outcome else { continue };
            let old = self.reported.get_mut(key);
            if old.as_deref() == Some(&o) {
                continue;
            }
            step.lines.push(match &o {
                Outcome::Assigned(asg) => {
                    format!("{key} -> {} ({})", join_ips(asg.ips), asg.pool)
                }
                Outcome::Failed(reason) => format!("{key}: allocation failed: {reason}"),
            });
            let was_assigned = matches!(old.as_deref(), Some(Outcome::Assigned(_)));
            changed |= was_assigned || matches!(o, Outcome::Assigned(_));
            match old {
                Some(slot) => *slot = o,
                None => {
                    self.reported.insert(key.clone(), o);
                }
            }
        }
        // Services no longer served.
        let mut gone = Vec::new();
        for (k, o) in &self.reported {
            if !sorted.any_served(k, a) {
                if let Outcome::Assigned(asg) = o {
                    step.lines
                        .push(format!("{k} released {}", join_ips(asg.ips)));
                    changed = true;
                }
                gone.push(k.clone());
            }
        }
        for k in &gone {
            self.reported.remove(k);
        }
        // The allocator holds exactly the `Assigned` outcomes (it releases on every error). Should
        // that ever not hold, release the strays (what the full comparison used to do) and
        // persist.
        let held = self
            .reported
            .values()
            .filter(|o| matches!(o, Outcome::Assigned(_)))
            .count();
        if a.len() != held {
            let strays: Vec<ServiceKey> = a
                .assignments()
                .into_keys()
                .filter(|k| !matches!(self.reported.get(k), Some(Outcome::Assigned(_))))
                .collect();
            for k in &strays {
                a.release(k);
            }
            changed = true;
        }
        step.changed = changed;
        step
    }
}

/// `services` in key order, by index.
struct Sorted<'a> {
    services: &'a [ServiceView],
    order: Vec<usize>,
}

impl<'a> Sorted<'a> {
    fn get(&self, at: usize) -> &'a ServiceView {
        &self.services[self.order[at]]
    }

    fn iter(&self) -> impl Iterator<Item = &'a ServiceView> + '_ {
        self.order.iter().map(|&i| &self.services[i])
    }

    /// The positions of the Services with `key`.
    fn run(&self, key: &ServiceKey) -> std::ops::Range<usize> {
        let start = self.order.partition_point(|&i| self.services[i].key < *key);
        let end = self
            .order
            .partition_point(|&i| self.services[i].key <= *key);
        start..end
    }

    /// True when a Service with `key` is ours.
    fn any_served(&self, key: &ServiceKey, a: &Allocator) -> bool {
        self.run(key).any(|at| a.serves(self.get(at)))
    }

    /// True when the last Service with `key` is ours (later duplicates win).
    fn last_served(&self, key: &ServiceKey, a: &Allocator) -> bool {
        let r = self.run(key);
        r.end > r.start && a.serves(self.get(r.end - 1))
    }
}

/// Releases every held Service that is gone or no longer ours. Only Services reported in the
/// last step can hold addresses.
fn release_gone(a: &mut Allocator, reported: &BTreeMap<ServiceKey, Outcome>, sorted: &Sorted) {
    for k in reported.keys() {
        if !sorted.last_served(k, a) {
            a.release(k);
        }
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

    fn none() -> BTreeMap<ServiceKey, Vec<IpAddr>> {
        BTreeMap::new()
    }

    #[test]
    fn assigns_prints_and_refuses_breaking_config() {
        let mut e = Engine::new("ferrolb", none());
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        let s = e.reconcile(&mut [svc("a"), svc("b")]);
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
        let s = e.reconcile(&mut [svc("a"), svc("b")]);
        assert!(s.lines.is_empty() && !s.changed);
        // Breaking config: refused, naming the Service and the address; old config kept.
        e.offer_config(Ok(cfg("192.0.2.1/32")));
        let s = e.reconcile(&mut [svc("a"), svc("b")]);
        assert!(
            s.lines[0].contains("default/a") && s.lines[0].contains("192.0.2.0"),
            "{s:?}"
        );
        assert_eq!(e.config(), Some(&cfg("192.0.2.0/30")));
        // Deleting the offending Service lets it load on the next services change.
        let s = e.reconcile(&mut [svc("b")]);
        assert_eq!(
            s.lines,
            vec!["config loaded", "default/a released 192.0.2.0"]
        );
        assert_eq!(e.config(), Some(&cfg("192.0.2.1/32")));
    }

    #[test]
    fn persisted_addresses_are_restored_first() {
        let persisted = BTreeMap::from([(
            ServiceKey::new("default", "z"),
            vec!["192.0.2.0".parse().unwrap()],
        )]);
        let mut e = Engine::new("ferrolb", persisted);
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        let s = e.reconcile(&mut [svc("a"), svc("z")]);
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
    fn persisted_addresses_wait_for_their_service_until_a_change_is_persisted() {
        let z = ServiceKey::new("default", "z");
        let persisted = BTreeMap::from([(z.clone(), vec!["192.0.2.2".parse().unwrap()])]);
        let mut e = Engine::new("ferrolb", persisted);
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        // No Services: nothing changes, the state file's addresses stay in force.
        assert!(!e.reconcile(&mut []).changed);
        let s = e.reconcile(&mut [svc("z")]);
        assert_eq!(s.lines, vec!["default/z -> 192.0.2.2 (p)"]);
        assert!(s.changed);
        // Once persisted, what the allocator holds is the state: z gone and back is new.
        assert!(e.reconcile(&mut []).changed);
        let s = e.reconcile(&mut [svc("z")]);
        assert_eq!(s.lines, vec!["default/z -> 192.0.2.0 (p)"]);
    }

    #[test]
    fn the_services_are_left_as_given_and_assigned_is_borrowed_in_key_order() {
        let mut e = Engine::new("ferrolb", none());
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        let mut b = svc("b");
        b.ingress_ips = vec!["192.0.2.3".parse().unwrap()];
        let mut services = vec![b.clone(), svc("a")];
        e.reconcile(&mut services);
        assert_eq!(e.reconcile(&mut services), Step::default());
        assert_eq!(services, vec![b, svc("a")]);
        let held: Vec<(String, String)> = e
            .assigned()
            .map(|(k, a)| (k.to_string(), join_ips(a.ips)))
            .collect();
        assert_eq!(
            held,
            vec![
                ("default/a".to_string(), "192.0.2.0".to_string()),
                ("default/b".to_string(), "192.0.2.3".to_string())
            ]
        );
        assert_eq!(e.assigned().count(), e.assignments().len());
    }

    #[test]
    fn unparsable_config_is_reported_and_nothing_changes() {
        let mut e = Engine::new("ferrolb", none());
        e.offer_config(Ok(cfg("192.0.2.0/30")));
        e.reconcile(&mut [svc("a")]);
        let s = e.offer_config(Err("does not parse: bad yaml".into()));
        assert!(s.lines[0].contains("does not parse"));
        assert_eq!(e.config(), Some(&cfg("192.0.2.0/30")));
    }

    /// The engine before the memory rework (copies of the views and the assignments per step),
    /// kept as the reference the new one must match line for line.
    struct Reference {
        class: String,
        alloc: Option<Allocator>,
        pending: Option<Config>,
        last_refusal: Option<String>,
        reported: BTreeMap<ServiceKey, Outcome>,
        persisted: BTreeMap<ServiceKey, Vec<IpAddr>>,
    }

    impl Reference {
        fn assignments(&self) -> BTreeMap<ServiceKey, Assigned> {
            self.alloc
                .as_ref()
                .map(Allocator::assignments)
                .unwrap_or_default()
        }

        fn offer_config(&mut self, c: Config) {
            if self.alloc.as_ref().map(Allocator::config) == Some(&c) {
                self.pending = None;
            } else {
                self.pending = Some(c);
            }
            self.last_refusal = None;
        }

        fn release_gone(a: &mut Allocator, views: &[ServiceView]) {
            let served: BTreeMap<&ServiceKey, bool> =
                views.iter().map(|v| (&v.key, a.serves(v))).collect();
            let gone: Vec<ServiceKey> = a
                .assignments()
                .into_keys()
                .filter(|k| !served.get(k).copied().unwrap_or(false))
                .collect();
            for k in gone {
                a.release(&k);
            }
        }

        fn reconcile(&mut self, services: &[ServiceView]) -> Step {
            let mut step = Step::default();
            let mut views: Vec<ServiceView> = services.to_vec();
            views.sort_by(|a, b| a.key.cmp(&b.key));
            for v in &mut views {
                if let Some(ips) = self.persisted.get(&v.key) {
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
                        Self::release_gone(a, &views);
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
                                    step.lines.push("config refused: keeping the previous configuration; retried when the services change".to_string());
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
            Self::release_gone(a, &views);
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
                            format!("{k} -> {} ({})", join_ips(asg.ips), asg.pool)
                        }
                        Outcome::Failed(reason) => format!("{k}: allocation failed: {reason}"),
                    });
                }
            }
            for (k, o) in &self.reported {
                if !now.contains_key(k) {
                    if let Outcome::Assigned(asg) = o {
                        step.lines
                            .push(format!("{k} released {}", join_ips(asg.ips)));
                    }
                }
            }
            self.reported = now;
            step.changed = self.assignments() != before;
            if step.changed {
                self.persisted = self
                    .assignments()
                    .into_iter()
                    .map(|(k, a)| (k, a.ips.to_vec()))
                    .collect();
            }
            step
        }
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn matches_the_copying_reference_on_random_histories() {
        let pools = [
            "192.0.2.0/29",
            "192.0.2.0/30",
            "192.0.2.4/30",
            "192.0.2.0/28",
        ];
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let persisted: BTreeMap<ServiceKey, Vec<IpAddr>> = (0..rng.next(4))
                .map(|i| {
                    (
                        ServiceKey::new("default", format!("s{}", rng.next(8))),
                        vec![format!("192.0.2.{}", i + rng.next(6)).parse().unwrap()],
                    )
                })
                .collect();
            let mut e = Engine::new("ferrolb", persisted.clone());
            let mut r = Reference {
                class: "ferrolb".into(),
                alloc: None,
                pending: None,
                last_refusal: None,
                reported: BTreeMap::new(),
                persisted,
            };
            let mut services: Vec<ServiceView> = Vec::new();
            for step in 0..25 {
                match rng.next(5) {
                    0 => {
                        let c = cfg(pools[rng.next(pools.len() as u64) as usize]);
                        e.offer_config(Ok(c.clone()));
                        r.offer_config(c);
                    }
                    1 if !services.is_empty() => {
                        let i = rng.next(services.len() as u64) as usize;
                        services.remove(i);
                    }
                    2 if !services.is_empty() => {
                        // Type or class changes, a requested address, a status.
                        let i = rng.next(services.len() as u64) as usize;
                        match rng.next(4) {
                            0 => services[i].is_load_balancer ^= true,
                            1 => services[i].load_balancer_class = Some("other".into()),
                            2 => {
                                services[i].load_balancer_ip =
                                    Some(format!("192.0.2.{}", rng.next(16)))
                            }
                            _ => {
                                services[i].ingress_ips =
                                    vec![format!("192.0.2.{}", rng.next(16)).parse().unwrap()]
                            }
                        }
                    }
                    _ => {
                        // A new Service (names repeat: duplicate keys too).
                        services.push(svc(&format!("s{}", rng.next(8))));
                    }
                }
                let given = services.clone();
                let got = e.reconcile(&mut services);
                let want = r.reconcile(&services);
                assert_eq!(got, want, "seed {seed} step {step}");
                assert_eq!(services, given, "seed {seed} step {step}");
                assert_eq!(e.assignments(), r.assignments(), "seed {seed} step {step}");
                let borrowed: BTreeMap<ServiceKey, Assigned> =
                    e.assigned().map(|(k, a)| (k.clone(), a.clone())).collect();
                assert_eq!(borrowed, r.assignments(), "seed {seed} step {step}");
            }
        }
    }
}
