//! Hostile Service objects against `ferrolb controller` and a real kube-apiserver: each gets a
//! clear Warning Event, legal extremes are served, the controller stays up and no other Service
//! is disturbed.

use std::time::Instant;

use anyhow::Context;
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{
    apply_config, create_lb, create_lb_json, ingress, wait_event, wait_ingress, wait_ingress_eq,
    Svc,
};
use ferrolb_e2e::k8s::{self, setup};
use ferrolb_e2e::prereq::require;
use k8s_openapi::api::core::v1::Service;
use kube::Api;

/// Hostile Services (thousands of requested IPs, unparsable IPs, a 60 KiB sharing key, an
/// unknown pool, 10k ports, a family the pools cannot serve): each gets a Warning
/// `AllocationFailed` Event naming the problem (or, where the input is legal, its address), the
/// controller stays up, and ordinary Services around them get and keep their addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_services_get_clear_events_and_leave_others_alone() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-hostile";
    let (env, client) = setup(ns).await?;
    apply_config(
        &client,
        ns,
        "address-pools:\n\
         - name: default\n  protocol: layer2\n  addresses:\n  - 192.0.2.100-192.0.2.119\n\
         - name: v6only\n  protocol: layer2\n  auto-assign: false\n  addresses:\n  - 2001:db8::/120\n",
    )
    .await?;
    let mut ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    let started = Instant::now();
    create_lb(&client, ns, "before", Svc::default()).await?;
    let before = wait_ingress(&client, ns, "before").await?;

    let lb_ips = "metallb.universe.tf/loadBalancerIPs";
    let many: Vec<String> = (0..4000)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let big_key = "k".repeat(60 * 1024);
    let none = serde_json::json!({});
    // The first holder of the huge key: legal, gets an address.
    create_lb_json(
        &client,
        ns,
        "huge-key-a",
        serde_json::json!({"metallb.universe.tf/allow-shared-ip": big_key}),
        none.clone(),
    )
    .await?;
    let huge_a = wait_ingress(&client, ns, "huge-key-a").await?;
    // (name, annotations, spec, words the AllocationFailed note must contain)
    let cases: Vec<(&str, serde_json::Value, serde_json::Value, Vec<&str>)> = vec![
        (
            "many-ips",
            serde_json::json!({ lb_ips: many.join(",") }),
            none.clone(),
            vec!["loadBalancerIPs", "one per family"],
        ),
        (
            "bad-v4",
            serde_json::json!({ lb_ips: "999.1.1.1" }),
            none.clone(),
            vec!["loadBalancerIPs", "999.1.1.1", "not an IP address"],
        ),
        (
            "bad-v6",
            serde_json::json!({ lb_ips: "fe80::zz" }),
            none.clone(),
            vec!["loadBalancerIPs", "fe80::zz", "not an IP address"],
        ),
        (
            "unknown-pool",
            serde_json::json!({"metallb.universe.tf/address-pool": "no-such-pool"}),
            none.clone(),
            vec!["unknown address pool", "no-such-pool"],
        ),
        (
            "v6-ip-for-v4-service",
            serde_json::json!({ lb_ips: "2001:db8::5" }),
            none.clone(),
            vec!["2001:db8::5", "IPv6", "IPv4"],
        ),
        (
            "v4-service-in-v6-pool",
            serde_json::json!({"metallb.universe.tf/address-pool": "v6only"}),
            none.clone(),
            vec!["v6only", "IPv4"],
        ),
        (
            // The huge key again, asking for huge-key-a's address on the same port: refused,
            // with a note that stays within the Event size limit.
            "huge-key-clash",
            serde_json::json!({"metallb.universe.tf/allow-shared-ip": big_key,
                               lb_ips: huge_a[0]}),
            none.clone(),
            vec!["sharing conflict", huge_a[0].as_str(), "huge-key-a"],
        ),
    ];
    for (name, ann, spec, _) in &cases {
        create_lb_json(&client, ns, name, ann.clone(), spec.clone()).await?;
    }
    // 10k ports (no node ports: the node-port range holds fewer): legal, gets an address.
    let ports: Vec<serde_json::Value> = (1..=10_000)
        .map(|p| serde_json::json!({"name": format!("p{p}"), "port": p, "protocol": "TCP"}))
        .collect();
    create_lb_json(
        &client,
        ns,
        "ten-k-ports",
        none.clone(),
        serde_json::json!({"ports": ports, "allocateLoadBalancerNodePorts": false}),
    )
    .await?;
    // The huge key on another port: legal, shares huge-key-a's address.
    create_lb_json(
        &client,
        ns,
        "huge-key-share",
        serde_json::json!({"metallb.universe.tf/allow-shared-ip": big_key}),
        serde_json::json!({"ports": [{"port": 443, "protocol": "TCP"}]}),
    )
    .await?;
    // Dual-stack on this single-stack v1.20 apiserver (IPv6DualStack gate off): it drops
    // ipFamilies/ipFamilyPolicy, so the Service is plain IPv4 and must simply get an address.
    create_lb_json(
        &client,
        ns,
        "dual-stack",
        none.clone(),
        serde_json::json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
    )
    .await?;
    let stored = Api::<Service>::namespaced(client.clone(), ns)
        .get("dual-stack")
        .await?
        .spec
        .context("spec")?;
    assert_eq!(
        stored.ip_families, None,
        "the 1.20 apiserver drops ipFamilies"
    );
    create_lb(&client, ns, "alongside", Svc::default()).await?;
    let alongside = wait_ingress(&client, ns, "alongside").await?;

    for (name, _, _, words) in &cases {
        let ev = wait_event(&client, ns, name, "AllocationFailed").await?;
        assert_eq!(ev.type_.as_deref(), Some("Warning"), "{name}");
        let note = ev.note.unwrap_or_default();
        assert!(note.len() <= 1024, "{name}: note of {} bytes", note.len());
        for w in words {
            assert!(note.contains(w), "{name}: note {note:?} lacks {w:?}");
        }
        assert!(ingress(&client, ns, name).await?.is_empty(), "{name}");
        eprintln!("hostile {name}: AllocationFailed: {note}");
    }
    let ips = wait_ingress(&client, ns, "ten-k-ports").await?;
    let stored = Api::<Service>::namespaced(client.clone(), ns)
        .get("ten-k-ports")
        .await?;
    let n_ports = stored.spec.and_then(|s| s.ports).map_or(0, |p| p.len());
    assert_eq!(n_ports, 10_000, "the apiserver stored all ports");
    eprintln!("hostile ten-k-ports: accepted by the apiserver, got {ips:?}");
    assert!(ctl.pid() != 0);
    assert_eq!(ctl.get("/healthz")?.0, 200, "controller still serving");
    assert_eq!(
        ingress(&client, ns, "before").await?,
        before,
        "before kept its IP"
    );
    assert_eq!(ingress(&client, ns, "huge-key-a").await?, huge_a);
    wait_ingress_eq(&client, ns, "huge-key-share", &[huge_a[0].as_str()]).await?;
    assert_eq!(ingress(&client, ns, "alongside").await?, alongside);
    let dual = wait_ingress(&client, ns, "dual-stack").await?;
    assert!(dual.iter().all(|ip| ip.starts_with("192.0.2.")), "{dual:?}");
    let log = std::fs::read_to_string(&ctl.log)?;
    assert!(!log.contains("panicked"), "controller panicked:\n{log}");
    eprintln!(
        "hostile services: {} refused with clear Events in {} ms, controller up",
        cases.len(),
        started.elapsed().as_millis()
    );
    ctl.terminate()?;
    Ok(())
}
