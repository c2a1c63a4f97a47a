//! The controller's long-lived allocation state: the Services it knows (as compact
//! [`ServiceView`]s), one [`Allocator`] kept from pass to pass, and which Services changed since
//! the last pass.
//!
//! A pass ([`Planner::pass`]) re-plans only the Services that changed since the previous one, plus
//! those whose last allocation failed (a deletion or a change may have freed an address or removed
//! a sharing conflict), so assigning n Services one burst after another costs O(n), not O(n) per
//! burst. Everything is re-planned from the Services' current status (restore every address first,
//! then allocate, in key order: exactly the restarted-controller path of [`Allocator::fresh`]) at
//! the first pass, when the configuration in force changes, after leadership is gained and after a
//! re-list ([`Planner::replan`]).
//!
//! Within an incremental pass the changed Services are handled the same way, restore first then
//! allocate: a Service whose `status.loadBalancer.ingress` differs from what the allocator holds
//! for it (written by a previous leader, by hand, or a write of ours that failed) has its status
//! taken as the truth again when it is still valid, as a restart would.
//!
//! Must not: do I/O, read clocks, or know about kube-rs types.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_config::{Breakage, Config, ServiceKey, ServiceView};

use crate::allocator::Allocator;
use crate::reconcile::Allocation;
use ferrolb_config::is_ours;

/// One Service as the planner keeps it: its view and whatever the shell needs to write to it
/// (`M`: for Kubernetes, the uid and resourceVersion the Events refer to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked<M> {
    pub view: ServiceView,
    pub meta: M,
}

/// Known Services, the allocator, and what changed since the last pass.
#[derive(Debug)]
pub struct Planner<M> {
    class: String,
    services: BTreeMap<ServiceKey, Tracked<M>>,
    /// `None` until the first pass, and while this replica is not the leader.
    alloc: Option<Allocator>,
    /// Services to re-plan at the next pass.
    dirty: BTreeSet<ServiceKey>,
    /// Services whose last allocation failed; retried after every pass that changed what the
    /// allocator holds.
    failed: BTreeSet<ServiceKey>,
    /// A Service the allocator held addresses for was removed since the last pass.
    freed: bool,
    /// Re-plan everything from the statuses at the next pass.
    replan: bool,
    /// While a (re-)list runs: the Services it has named so far (see [`Planner::start_list`]).
    listing: Option<BTreeSet<ServiceKey>>,
}

impl<M> Planner<M> {
    /// An empty planner for Services with no class or class `class`.
    pub fn new(class: impl Into<String>) -> Planner<M> {
        Planner {
            class: class.into(),
            services: BTreeMap::new(),
            alloc: None,
            dirty: BTreeSet::new(),
            failed: BTreeSet::new(),
            freed: false,
            replan: true,
            listing: None,
        }
    }

    /// Number of known Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no Service is known.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The Service stored under `key`.
    pub fn get(&self, key: &ServiceKey) -> Option<&Tracked<M>> {
        self.services.get(key)
    }

    /// Every known Service's view, in key order.
    pub fn views(&self) -> impl Iterator<Item = &ServiceView> {
        self.services.values().map(|t| &t.view)
    }

    /// The allocator of the last pass (`None` before the first one or while standing by).
    pub fn allocator(&self) -> Option<&Allocator> {
        self.alloc.as_ref()
    }

    /// True when the next [`Planner::pass`] under `config` has something to do.
    pub fn has_work(&self, config: &Config) -> bool {
        self.replan || self.is_stale(config) || self.freed || !self.dirty.is_empty()
    }

    /// True when there is no allocator for `config` (none yet, or one built for another config).
    fn is_stale(&self, config: &Config) -> bool {
        self.alloc.as_ref().is_none_or(|a| a.config() != config)
    }

    /// Store a new or updated Service. It is re-planned at the next pass when its view changed
    /// (an update that only touches fields the controller does not read costs nothing). Returns
    /// whether it changed.
    pub fn upsert(&mut self, view: ServiceView, meta: M) -> bool {
        match self.services.get_mut(&view.key) {
            Some(t) => {
                t.meta = meta;
                if t.view == view {
                    return false;
                }
                self.dirty.insert(view.key.clone());
                t.view = view;
            }
            None => {
                self.dirty.insert(view.key.clone());
                self.services
                    .insert(view.key.clone(), Tracked { view, meta });
            }
        }
        true
    }

    /// Store the Service as our own status write returned it. Since the status is what the last
    /// pass decided, it is re-planned only when something else changed meanwhile.
    pub fn written(&mut self, view: ServiceView, meta: M) {
        match self.services.get_mut(&view.key) {
            Some(t) => {
                t.view.ingress_ips.clone_from(&view.ingress_ips);
                if t.view != view {
                    self.dirty.insert(view.key.clone());
                }
                t.view = view;
                t.meta = meta;
            }
            None => {
                self.upsert(view, meta);
            }
        }
    }

    /// Forget a deleted Service and free its addresses at once.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<Tracked<M>> {
        let t = self.services.remove(key)?;
        self.dirty.remove(key);
        self.failed.remove(key);
        if let Some(a) = &mut self.alloc {
            self.freed |= a.release(key).is_some();
        }
        Some(t)
    }

    /// A (re-)list begins. Listed Services are stored as they come ([`Planner::upsert`] and
    /// [`Planner::mark_listed`]) into the Services already known, so a re-list never holds a
    /// second copy of every Service; [`Planner::finish_list`] then drops the ones it did not name.
    pub fn start_list(&mut self) {
        self.listing = Some(BTreeSet::new());
    }

    /// The running list named `key` (call it whether or not the listed copy was stored).
    pub fn mark_listed(&mut self, key: &ServiceKey) {
        if let Some(seen) = &mut self.listing {
            seen.insert(key.clone());
        }
    }

    /// True while a list runs (between [`Planner::start_list`] and [`Planner::finish_list`]).
    pub fn is_listing(&self) -> bool {
        self.listing.is_some()
    }

    /// The list is complete: Services it did not name are gone (deleted while the watch was
    /// down) and are removed; everything is re-planned at the next pass. Returns the removed keys.
    pub fn finish_list(&mut self) -> Vec<ServiceKey> {
        let seen = self.listing.take().unwrap_or_default();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.remove(k);
        }
        self.replan();
        gone
    }

    /// Re-plan everything from the statuses at the next pass (restart path).
    pub fn replan(&mut self) {
        self.replan = true;
    }

    /// Re-check every Service at the next pass, keeping the allocator (periodic resync).
    pub fn recheck_all(&mut self) {
        if self.alloc.is_some() {
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// Re-plan `key` at the next pass (a write for it failed).
    pub fn touch(&mut self, key: &ServiceKey) {
        if self.services.contains_key(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Drop the allocator (standing by: another replica decides); the next pass re-plans all.
    pub fn forget_allocations(&mut self) {
        self.alloc = None;
        self.dirty.clear();
        self.failed.clear();
        self.freed = false;
        self.replan = true;
    }

    /// The addresses `candidate` would no longer allow among the Services ferrolb serves, by their
    /// current status (what users and the speakers see).
    pub fn breakages(&self, candidate: &Config) -> Vec<Breakage> {
        ferrolb_config::breakages_of(candidate, &self.class, self.views())
    }

    /// Plan the Services that need it under `config` (the configuration in force) and return
    /// their outcomes in key order. Re-plans everything when the allocator was built for another
    /// configuration, or after [`Planner::replan`].
    pub fn pass(&mut self, config: &Config) -> Vec<(ServiceKey, Allocation)> {
        if self.replan || self.is_stale(config) {
            return self.rebuild(config);
        }
        if self.dirty.is_empty() && !self.freed {
            return Vec::new();
        }
        let keys = std::mem::take(&mut self.dirty);
        let Some(alloc) = self.alloc.as_mut() else {
            return Vec::new();
        };
        let tracked: Vec<&Tracked<M>> = keys.iter().filter_map(|k| self.services.get(k)).collect();
        for t in &tracked {
            restore_if_differs(alloc, &t.view);
        }
        let mut out = Vec::with_capacity(tracked.len());
        let mut changed = std::mem::take(&mut self.freed);
        for t in tracked {
            let held = alloc.assignment(&t.view.key).is_some();
            let outcome = allocate_one(alloc, &t.view);
            changed |= held || !matches!(outcome, Allocation::Failed { .. });
            note_failure(&mut self.failed, &t.view.key, &outcome);
            out.push((t.view.key.clone(), outcome));
        }
        if changed {
            retry_failed(alloc, &self.services, &mut self.failed, &mut out);
        }
        out
    }

    /// A new allocator from every Service's status: restore all (key order), then allocate all.
    fn rebuild(&mut self, config: &Config) -> Vec<(ServiceKey, Allocation)> {
        let mut alloc = Allocator::new(config.clone(), self.class.clone());
        let class = self.class.as_str();
        let served: Vec<&ServiceView> = self
            .services
            .values()
            .map(|t| &t.view)
            .filter(|v| is_ours(v, class))
            .collect();
        self.failed.clear();
        let mut out = Vec::with_capacity(self.services.len());
        // In key order, each key once: the map's order.
        let mut results = alloc.rebuild(&served);
        for t in self.services.values() {
            let outcome = if is_ours(&t.view, class) {
                Allocation::from(results.next().expect("one outcome per served Service"))
            } else {
                Allocation::NotOurs
            };
            note_failure(&mut self.failed, &t.view.key, &outcome);
            out.push((t.view.key.clone(), outcome));
        }
        debug_assert!(results.next().is_none(), "an outcome per served Service");
        drop(results);
        drop(served);
        retry_failed(&mut alloc, &self.services, &mut self.failed, &mut out);
        self.alloc = Some(alloc);
        self.dirty.clear();
        self.freed = false;
        self.replan = false;
        out
    }
}

/// Take `v`'s status as the truth again when it names addresses the allocator does not hold for
/// it (a failed restore records nothing; [`allocate`] then gives it what fits).
fn restore_if_differs(alloc: &mut Allocator, v: &ServiceView) {
    if v.ingress_ips.is_empty() || !is_ours(v, alloc.class()) {
        return;
    }
    let same = alloc
        .assignment(&v.key)
        .is_some_and(|a| a.ips == *v.ingress_ips.as_slice());
    if !same {
        let _ = alloc.restore(v);
    }
}

/// The Services whose allocation failed get another try, in key order, against the state the
/// pass left (an address freed, or a sharing key indexed, after they were tried), as in a full
/// plan, where they would be allocated after every restore; rounds repeat while one succeeds
/// (a success can enable sharing for another). Their new outcome replaces the one in `out` (kept
/// in key order).
fn retry_failed<M>(
    alloc: &mut Allocator,
    services: &BTreeMap<ServiceKey, Tracked<M>>,
    failed: &mut BTreeSet<ServiceKey>,
    out: &mut Vec<(ServiceKey, Allocation)>,
) {
    if failed.is_empty() {
        return;
    }
    let mut retried: BTreeMap<ServiceKey, Allocation> = BTreeMap::new();
    loop {
        let mut progressed = false;
        for key in failed.clone() {
            let Some(t) = services.get(&key) else {
                failed.remove(&key);
                continue;
            };
            let outcome = allocate_one(alloc, &t.view);
            if !matches!(outcome, Allocation::Failed { .. }) {
                progressed = true;
            }
            note_failure(failed, &key, &outcome);
            retried.insert(key, outcome);
        }
        if !progressed || failed.is_empty() {
            break;
        }
    }
    if retried.is_empty() {
        return;
    }
    let mut merged: BTreeMap<ServiceKey, Allocation> = std::mem::take(out).into_iter().collect();
    merged.extend(retried);
    *out = merged.into_iter().collect();
}

fn allocate_one(alloc: &mut Allocator, v: &ServiceView) -> Allocation {
    if !alloc.serves(v) {
        alloc.release(&v.key);
        return Allocation::NotOurs;
    }
    Allocation::from(alloc.allocate(v))
}

fn note_failure(failed: &mut BTreeSet<ServiceKey>, key: &ServiceKey, outcome: &Allocation) {
    if matches!(outcome, Allocation::Failed { .. }) {
        failed.insert(key.clone());
    } else {
        failed.remove(key);
    }
}

#[cfg(test)]
mod tests {
    //! The incremental path against the full plan ([`crate::reconcile::plan`], the restart path):
    //! applying Service changes one pass at a time, with every decided status written back as the
    //! shell does, must end where a full plan of the final Services ends, and a restart then changes
    //! nothing.

    use super::*;
    use crate::reconcile::{decide, plan, StatusChange};
    use ferrolb_config::service::annotations;
    use ferrolb_config::{IpFamily, IpFamilyPolicy, ServicePort};
    use proptest::prelude::*;
    use std::net::IpAddr;

    const CONFIG: &str = "address-pools:
- name: small
  protocol: layer2
  addresses: [192.0.2.0/29, 2001:db8:1::/125]
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [203.0.113.0/30]
- name: v6
  protocol: layer2
  addresses: [2001:db8:2::/126]
";

    const BIGGER: &str = "address-pools:
- name: small
  protocol: layer2
  addresses: [192.0.2.0/28, 2001:db8:1::/125]
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [203.0.113.0/30]
- name: v6
  protocol: layer2
  addresses: [2001:db8:2::/126]
";

    fn config(text: &str) -> Config {
        ferrolb_config::parse(text).unwrap_or_default()
    }

    fn key(n: u8) -> ServiceKey {
        ServiceKey::new("ns", format!("s{n:02}"))
    }

    /// Service `n` with a shape chosen by `shape` (family, dual-stack, sharing, requests, class).
    fn view(n: u8, shape: u8) -> ServiceView {
        let mut v = ServiceView::new_load_balancer(key(n));
        v.ports = vec![ServicePort {
            protocol: "TCP".into(),
            port: 80 + u16::from(shape % 3),
        }];
        match shape % 11 {
            0..=2 => {}
            3 => v.ip_families = vec![IpFamily::V6],
            4 => {
                v.ip_families = vec![IpFamily::V4, IpFamily::V6];
                v.ip_family_policy = IpFamilyPolicy::PreferDualStack;
            }
            5 => {
                v.ip_families = vec![IpFamily::V6, IpFamily::V4];
                v.ip_family_policy = IpFamilyPolicy::RequireDualStack;
            }
            6 => {
                v.annotations
                    .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
            }
            7 => v.load_balancer_ip = Some(format!("192.0.2.{}", shape % 8)),
            8 => {
                v.annotations
                    .insert(annotations::ADDRESS_POOL.into(), "manual".into());
            }
            9 => v.load_balancer_class = Some("other.example/lb".into()),
            _ => v.is_load_balancer = false,
        }
        v
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u8, u8),
        Delete(u8),
        /// Someone writes an address into a Service's status by hand.
        ForeignStatus(u8, u8),
        Pass,
        Config(bool),
        Resync,
        /// A re-list after a watch gap in which Service n (if any) was deleted.
        Relist(Option<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u8..20, 0u8..40).prop_map(|(n, s)| Op::Upsert(n, s)),
            3 => (0u8..20).prop_map(Op::Delete),
            1 => (0u8..20, 0u8..8).prop_map(|(n, o)| Op::ForeignStatus(n, o)),
            4 => Just(Op::Pass),
            1 => proptest::bool::ANY.prop_map(Op::Config),
            1 => Just(Op::Resync),
            1 => proptest::option::of(0u8..20).prop_map(Op::Relist),
        ]
    }

    /// The shell's part of a pass: decide each outcome and write the status it asks for.
    fn run_pass(p: &mut Planner<()>, config: &Config) -> Vec<(ServiceKey, Allocation)> {
        let outcomes = p.pass(config);
        for (k, a) in &outcomes {
            let Some(t) = p.get(k) else { continue };
            let d = decide(&t.view, a, |ip| config.pool_containing(ip).is_some(), None);
            let mut written = t.view.clone();
            match d.status {
                StatusChange::Keep => continue,
                StatusChange::Set(ips) => written.ingress_ips = ips,
                StatusChange::Clear => written.ingress_ips.clear(),
            }
            p.written(written, ());
        }
        outcomes
    }

    /// Passes until nothing is left to do (bounded).
    fn settle(p: &mut Planner<()>, config: &Config) {
        for _ in 0..10 {
            if !p.has_work(config) {
                return;
            }
            run_pass(p, config);
        }
        panic!("planner does not settle");
    }

    fn views_of(p: &Planner<()>) -> Vec<ServiceView> {
        p.views().cloned().collect()
    }

    fn assigned(
        plan_allocations: &BTreeMap<ServiceKey, Allocation>,
    ) -> BTreeMap<ServiceKey, Vec<IpAddr>> {
        plan_allocations
            .iter()
            .filter_map(|(k, a)| match a {
                Allocation::Assigned { ips, .. } => Some((k.clone(), ips.clone())),
                _ => None,
            })
            .collect()
    }

    fn held(p: &Planner<()>) -> BTreeMap<ServiceKey, Vec<IpAddr>> {
        p.allocator()
            .map(|a| a.assignments())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, a)| (k, a.ips.to_vec()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn deltas_end_where_a_full_plan_ends(ops in proptest::collection::vec(op(), 1..60)) {
            let mut cfg = config(CONFIG);
            let mut p: Planner<()> = Planner::new("ferrolb");
            for op in ops {
                match op {
                    Op::Upsert(n, s) => {
                        let mut v = view(n, s);
                        v.ingress_ips = p.get(&v.key).map(|t| t.view.ingress_ips.clone()).unwrap_or_default();
                        p.upsert(v, ());
                    }
                    Op::Delete(n) => { p.remove(&key(n)); }
                    Op::ForeignStatus(n, o) => {
                        if let Some(t) = p.get(&key(n)) {
                            let mut v = t.view.clone();
                            v.ingress_ips = vec![IpAddr::from([192, 0, 2, o])];
                            p.upsert(v, ());
                        }
                    }
                    Op::Pass => { run_pass(&mut p, &cfg); }
                    Op::Config(bigger) => {
                        // A configuration change the gate accepted (the bigger one keeps every
                        // address; going back is only accepted when nothing would break).
                        let next = config(if bigger { BIGGER } else { CONFIG });
                        if p.breakages(&next).is_empty() {
                            cfg = next;
                        }
                    }
                    Op::Resync => p.recheck_all(),
                    Op::Relist(gone) => {
                        // The watch was down: a re-list names every Service but `gone`
                        // (deleted meanwhile), each as it is now.
                        let listed: Vec<ServiceView> = p.views().filter(|v| Some(&v.key) != gone.map(key).as_ref()).cloned().collect();
                        p.start_list();
                        for v in listed {
                            p.mark_listed(&v.key);
                            p.upsert(v, ());
                        }
                        prop_assert!(p.is_listing());
                        let removed = p.finish_list();
                        prop_assert!(!p.is_listing());
                        if let Some(n) = gone {
                            prop_assert!(p.get(&key(n)).is_none());
                            prop_assert!(removed.len() <= 1);
                        } else {
                            prop_assert!(removed.is_empty());
                        }
                    }
                }
            }
            settle(&mut p, &cfg);
            let views = views_of(&p);
            // Every status says what the allocator holds.
            for v in &views {
                let holds = p.allocator().and_then(|a| a.assignment(&v.key)).map(|a| a.ips);
                if is_ours(v, "ferrolb") {
                    prop_assert_eq!(holds.unwrap_or_default(), v.ingress_ips.clone(), "{}", v.key);
                } else {
                    prop_assert!(holds.is_none());
                }
            }
            // A full plan of the final Services (a restart) holds the same and writes nothing.
            let full = plan(&cfg, "ferrolb", &views);
            prop_assert_eq!(assigned(&full.allocations), held(&p));
            for v in &views {
                let d = decide(v, &full.allocations[&v.key], |ip| cfg.pool_containing(ip).is_some(), None);
                prop_assert_eq!(d.status, StatusChange::Keep, "{}", v.key);
            }
            // And a restarted planner agrees outcome by outcome.
            let mut restarted: Planner<()> = Planner::new("ferrolb");
            for v in views { restarted.upsert(v, ()); }
            let outcomes: BTreeMap<ServiceKey, Allocation> = restarted.pass(&cfg).into_iter().collect();
            prop_assert_eq!(outcomes, full.allocations);
        }

        #[test]
        fn first_pass_is_the_full_plan(shapes in proptest::collection::vec((0u8..20, 0u8..40, proptest::option::of(0u8..8)), 0..40)) {
            let cfg = config(CONFIG);
            let mut p: Planner<()> = Planner::new("ferrolb");
            for (n, s, ip) in shapes {
                let mut v = view(n, s);
                v.ingress_ips = ip.map(|o| vec![IpAddr::from([192, 0, 2, o])]).unwrap_or_default();
                p.upsert(v, ());
            }
            let views = views_of(&p);
            let got: BTreeMap<ServiceKey, Allocation> = p.pass(&cfg).into_iter().collect();
            // The same as the full plan, except that a Service the plan fails may already get an
            // address another Service gave up later in the same plan (the plan gives it at the
            // next pass).
            let full = plan(&cfg, "ferrolb", &views).allocations;
            prop_assert_eq!(got.len(), full.len());
            for (k, a) in &full {
                if !matches!(a, Allocation::Failed { .. }) {
                    prop_assert_eq!(Some(a), got.get(k), "{}", k);
                }
            }
        }

        #[test]
        fn creating_in_key_order_in_bursts_equals_one_plan(shapes in proptest::collection::vec((0u8..40, proptest::bool::ANY), 1..40)) {
            let cfg = config(BIGGER);
            let mut p: Planner<()> = Planner::new("ferrolb");
            run_pass(&mut p, &cfg);
            let mut all = Vec::new();
            for (i, (s, pass_after)) in shapes.into_iter().enumerate() {
                let v = view(u8::try_from(i).unwrap_or(u8::MAX), s);
                all.push(v.clone());
                p.upsert(v, ());
                if pass_after {
                    run_pass(&mut p, &cfg);
                }
            }
            settle(&mut p, &cfg);
            prop_assert_eq!(held(&p), assigned(&plan(&cfg, "ferrolb", &all).allocations));
        }
    }

    #[test]
    fn a_pass_plans_only_what_changed() {
        let cfg = config(BIGGER);
        let mut p: Planner<()> = Planner::new("ferrolb");
        for n in 0..10 {
            p.upsert(view(n, 0), ());
        }
        assert_eq!(run_pass(&mut p, &cfg).len(), 10, "first pass plans all");
        assert!(!p.has_work(&cfg), "our own status writes need no new pass");
        assert!(p.pass(&cfg).is_empty());
        // An update the allocator does not see (same view) costs nothing.
        let same = p.get(&key(3)).map(|t| t.view.clone()).unwrap();
        assert!(!p.upsert(same, ()));
        assert!(!p.has_work(&cfg));
        p.upsert(view(10, 0), ());
        let out = run_pass(&mut p, &cfg);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1,
            Allocation::Assigned {
                ips: vec![IpAddr::from([192, 0, 2, 10])],
                pool: "small".into()
            }
        );
    }

    #[test]
    fn a_deletion_frees_the_address_for_a_failed_service() {
        let cfg = config(CONFIG); // 8 IPv4 addresses in auto-assign pools
        let mut p: Planner<()> = Planner::new("ferrolb");
        for n in 0..9 {
            p.upsert(view(n, 0), ());
        }
        let out = run_pass(&mut p, &cfg);
        assert!(matches!(out[8].1, Allocation::Failed { .. }), "{out:?}");
        let freed = p
            .allocator()
            .and_then(|a| a.assignment(&key(2)))
            .unwrap()
            .ips;
        p.remove(&key(2));
        assert!(p.has_work(&cfg));
        let out = run_pass(&mut p, &cfg);
        assert_eq!(
            out,
            vec![(
                key(8),
                Allocation::Assigned {
                    ips: freed.to_vec(),
                    pool: "small".into()
                }
            )]
        );
        assert!(!p.has_work(&cfg));
    }

    #[test]
    fn config_change_and_leadership_replan_everything() {
        let mut p: Planner<()> = Planner::new("ferrolb");
        for n in 0..4 {
            p.upsert(view(n, 0), ());
        }
        run_pass(&mut p, &config(CONFIG));
        let before = held(&p);
        assert_eq!(
            run_pass(&mut p, &config(BIGGER)).len(),
            4,
            "new config: full plan"
        );
        assert_eq!(held(&p), before, "a compatible config keeps every address");
        p.forget_allocations();
        assert!(p.allocator().is_none());
        assert_eq!(
            run_pass(&mut p, &config(BIGGER)).len(),
            4,
            "leader again: full plan"
        );
        assert_eq!(held(&p), before, "restored from the statuses");
    }

    #[test]
    fn a_foreign_status_is_restored_when_valid() {
        let cfg = config(BIGGER);
        let mut p: Planner<()> = Planner::new("ferrolb");
        p.upsert(view(0, 0), ());
        p.upsert(view(1, 0), ());
        run_pass(&mut p, &cfg);
        // By hand: s00 moves to .9 (free, valid): kept. s01 to .0 (s00's old one, freed): kept.
        let mut v = p.get(&key(0)).unwrap().view.clone();
        v.ingress_ips = vec![IpAddr::from([192, 0, 2, 9])];
        p.upsert(v, ());
        let mut w = p.get(&key(1)).unwrap().view.clone();
        w.ingress_ips = vec![IpAddr::from([192, 0, 2, 0])];
        p.upsert(w, ());
        let out = run_pass(&mut p, &cfg);
        let ips: Vec<Vec<IpAddr>> = out
            .into_iter()
            .map(|(_, a)| match a {
                Allocation::Assigned { ips, .. } => ips,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ips,
            vec![
                vec![IpAddr::from([192, 0, 2, 9])],
                vec![IpAddr::from([192, 0, 2, 0])]
            ]
        );
    }
}
