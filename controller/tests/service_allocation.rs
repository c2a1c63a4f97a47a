//! MetalLB's `serviceAllocation` through the allocator's public API, with the IPAddressPools of
//! MetalLB's documentation ("Advanced AddressPool configuration", addresses moved into the
//! documentation ranges): pools pinned to namespaces and Service labels, tried by priority before
//! the pools without one; a Service no pool admits, or that asks for a pool that excludes it,
//! stays without an address.

// Test helpers outside #[test] functions unwrap fixed, known-good inputs.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use ferrolb_config::service::annotations;
use ferrolb_config::{Config, ServiceKey, ServiceView};
use ferrolb_controller::allocator::{AllocError, Allocator};

const DOCS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: labelled, labels: {foo: bar}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: cheap, namespace: metallb-system}
spec:
  addresses: [198.51.100.0/30]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: expensive, namespace: metallb-system}
spec:
  addresses: [203.0.113.64/30]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: ippool-ns-service-alloc-sample, namespace: metallb-system}
spec:
  addresses: [192.0.2.0/24]
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [namespace-a, namespace-b]
    namespaceSelectors:
    - matchLabels: {foo: bar}
    serviceSelectors:
    - matchExpressions:
      - {key: app, operator: In, values: [bar]}
";

fn config() -> Config {
    ferrolb_config::parse(DOCS).unwrap()
}

fn svc(ns: &str, name: &str, app: Option<&str>) -> ServiceView {
    let mut v = ServiceView::new_load_balancer(ServiceKey::new(ns, name));
    if let Some(app) = app {
        v.labels.insert("app".into(), app.into());
    }
    v
}

fn got(a: &mut Allocator, v: &ServiceView) -> Result<(IpAddr, String), AllocError> {
    a.allocate(v)
        .map(|x| (x.ips.get(0).unwrap(), x.pool.to_string()))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn overlapping_pools_are_refused_with_both_objects_named() {
    let overlap = format!(
        "{DOCS}---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: another, namespace: metallb-system}}\nspec: {{addresses: [192.0.2.128/25]}}\n"
    );
    let e = ferrolb_config::parse(&overlap).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert!(
        e.0[0].to_string().starts_with(
            "IPAddressPool metallb-system/ippool-ns-service-alloc-sample spec.addresses[0] = \"192.0.2.0/24\": overlaps IPAddressPool metallb-system/another spec.addresses[0]"
        ),
        "{e}"
    );
}

#[test]
fn pinned_pools_serve_matching_services_first_and_others_fall_to_the_rest() {
    let mut a = Allocator::new(config(), "ferrolb");
    // In namespace-a with app=bar: the pinned pool (avoid-buggy-ips skips .0).
    assert_eq!(
        got(&mut a, &svc("namespace-a", "web", Some("bar"))).unwrap(),
        (ip("192.0.2.1"), "ippool-ns-service-alloc-sample".into())
    );
    // A namespace selected by its labels.
    assert_eq!(
        got(&mut a, &svc("labelled", "web", Some("bar"))).unwrap().1,
        "ippool-ns-service-alloc-sample"
    );
    // Wrong label, or wrong namespace: the pools without serviceAllocation (cheap; expensive is
    // not auto-assign).
    assert_eq!(
        got(&mut a, &svc("namespace-a", "db", Some("db"))).unwrap(),
        (ip("198.51.100.0"), "cheap".into())
    );
    assert_eq!(
        got(&mut a, &svc("namespace-c", "web", Some("bar")))
            .unwrap()
            .1,
        "cheap"
    );
    // Asking for the pinned pool by name from outside its namespaces: pending, as in MetalLB.
    let mut asks = svc("namespace-c", "asks", Some("bar"));
    asks.annotations.insert(
        annotations::ADDRESS_POOL.into(),
        "ippool-ns-service-alloc-sample".into(),
    );
    assert_eq!(
        got(&mut a, &asks),
        Err(AllocError::PoolExcludes {
            pool: "ippool-ns-service-alloc-sample".into()
        })
    );
    // Asking for an address of it too.
    let mut by_ip = svc("namespace-c", "by-ip", None);
    by_ip.load_balancer_ip = Some("192.0.2.77".into());
    assert!(matches!(
        got(&mut a, &by_ip),
        Err(AllocError::PoolExcludes { .. })
    ));
    // The expensive pool by name: served (no serviceAllocation), though not auto-assign.
    let mut rich = svc("namespace-c", "rich", None);
    rich.annotations
        .insert(annotations::ADDRESS_POOL.into(), "expensive".into());
    assert_eq!(got(&mut a, &rich).unwrap().1, "expensive");
}

#[test]
fn priorities_order_the_pinned_pools_and_no_pool_may_admit_a_service() {
    let text = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a-no-priority}
spec:
  addresses: [192.0.2.0/31]
  serviceAllocation: {namespaces: [team]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b-second}
spec:
  addresses: [198.51.100.0/31]
  serviceAllocation: {priority: 20, namespaces: [team]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: c-first}
spec:
  addresses: [203.0.113.0/32]
  serviceAllocation: {priority: 10, namespaces: [team]}
";
    let mut a = Allocator::new(ferrolb_config::parse(text).unwrap(), "ferrolb");
    let order: Vec<String> = (0..5)
        .map(|i| got(&mut a, &svc("team", &format!("s{i}"), None)).unwrap().1)
        .collect();
    assert_eq!(
        order,
        vec![
            "c-first",
            "b-second",
            "b-second",
            "a-no-priority",
            "a-no-priority"
        ]
    );
    assert_eq!(
        got(&mut a, &svc("other", "x", None)),
        Err(AllocError::NoPoolAdmits)
    );
}
