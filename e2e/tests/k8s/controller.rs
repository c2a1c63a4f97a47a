//! `ferrolb controller` against a real kube-apiserver: Services get addresses (sharing,
//! requested IPs, an exhausted pool), a breaking or unparsable config is refused until it can
//! load, restarts change no address, two replicas elect one leader, a Service that stops being a
//! LoadBalancer gives its address back.
//!
//! The 1.20 apiserver prunes `spec.loadBalancerClass`; class filtering is covered by the pure
//! tests in controller/src/reconcile.rs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{
    apply_config, create_lb, ingress, pool_config, wait_event, wait_ingress, wait_ingress_eq, Svc,
};
use ferrolb_e2e::k8s::{self, setup};
use ferrolb_e2e::prereq::require;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_ips_sharing_and_requested_ip() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-basic";
    let (env, client) = setup(ns).await?;
    apply_config(
        &client,
        ns,
        &pool_config(&[("default", "192.0.2.10-192.0.2.19")]),
    )
    .await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;

    create_lb(&client, ns, "web", Svc::default()).await?;
    let web = wait_ingress(&client, ns, "web").await?;
    assert_eq!(web, vec!["192.0.2.10"], "lowest free address of the pool");
    let ev = wait_event(&client, ns, "web", "IPAllocated").await?;
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert!(
        ev.note.as_deref().unwrap_or("").contains("192.0.2.10"),
        "{:?}",
        ev.note
    );

    // A requested address.
    create_lb(
        &client,
        ns,
        "fixed",
        Svc {
            load_balancer_ip: Some("192.0.2.15"),
            ..Svc::default()
        },
    )
    .await?;
    assert_eq!(
        wait_ingress(&client, ns, "fixed").await?,
        vec!["192.0.2.15"]
    );

    // Two Services sharing one address (same key, different ports).
    let share = [("metallb.universe.tf/allow-shared-ip", "k1")];
    create_lb(
        &client,
        ns,
        "dns-tcp",
        Svc {
            ports: &[(53, "TCP")],
            annotations: &share,
            ..Svc::default()
        },
    )
    .await?;
    let first = wait_ingress(&client, ns, "dns-tcp").await?;
    create_lb(
        &client,
        ns,
        "dns-udp",
        Svc {
            ports: &[(53, "UDP")],
            annotations: &share,
            ..Svc::default()
        },
    )
    .await?;
    let second = wait_ingress(&client, ns, "dns-udp").await?;
    assert_eq!(
        first, second,
        "same sharing key and no port overlap: one address"
    );
    assert_ne!(first, web);
    assert_ne!(first, vec!["192.0.2.15"]);

    // An unannotated Service never shares.
    create_lb(&client, ns, "other", Svc::default()).await?;
    let other = wait_ingress(&client, ns, "other").await?;
    for taken in [&web, &first, &vec!["192.0.2.15".to_string()]] {
        assert_ne!(&other, taken);
    }

    let (_, metrics) = ctl.get("/metrics")?;
    assert!(
        metrics.contains("metallb_allocator_addresses_in_use_total{pool=\"default\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metallb_allocator_addresses_total{pool=\"default\"} 10"),
        "{metrics}"
    );
    assert_eq!(
        ctl.metric("metallb_k8s_client_config_loaded_bool"),
        Some(1.0)
    );
    assert_eq!(
        ctl.metric("metallb_k8s_client_config_stale_bool"),
        Some(0.0)
    );
    assert!(
        ctl.metric("metallb_k8s_client_updates_total")
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(ctl.get("/healthz")?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_reports_allocation_failed() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-exhaust";
    let (env, client) = setup(ns).await?;
    apply_config(&client, ns, &pool_config(&[("tiny", "192.0.2.40/32")])).await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    create_lb(&client, ns, "first", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, ns, "first").await?,
        vec!["192.0.2.40"]
    );
    create_lb(&client, ns, "second", Svc::default()).await?;
    let ev = wait_event(&client, ns, "second", "AllocationFailed").await?;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(!ev.note.as_deref().unwrap_or("").is_empty());
    assert!(ingress(&client, ns, "second").await?.is_empty());
    // Freeing the address lets the waiting Service have it.
    Api::<Service>::namespaced(client.clone(), ns)
        .delete("first", &DeleteParams::default())
        .await?;
    wait_ingress_eq(&client, ns, "second", &["192.0.2.40"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_config_is_refused_until_the_offending_service_goes() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-breaking";
    let (env, client) = setup(ns).await?;
    apply_config(
        &client,
        ns,
        &pool_config(&[("old", "192.0.2.50-192.0.2.51")]),
    )
    .await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    create_lb(&client, ns, "keeper", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, ns, "keeper").await?,
        vec!["192.0.2.50"]
    );

    // The new config drops the address keeper holds: refused.
    apply_config(
        &client,
        ns,
        &pool_config(&[("new", "203.0.113.50-203.0.113.51")]),
    )
    .await?;
    let ev = wait_event(&client, ns, "config", "ConfigStale").await?;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let note = ev.note.unwrap_or_default();
    assert!(note.contains(&format!("{ns}/keeper")), "{note}");
    assert!(note.contains("192.0.2.50"), "{note}");
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    assert_eq!(ingress(&client, ns, "keeper").await?, vec!["192.0.2.50"]);
    // The old config stays in force for new Services too.
    create_lb(&client, ns, "newcomer", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, ns, "newcomer").await?,
        vec!["192.0.2.51"]
    );
    let log = std::fs::read_to_string(&ctl.log)?;
    assert!(
        log.contains("keeper") && log.contains("192.0.2.50") && log.contains("refused"),
        "the refusal is logged with the Service and IP"
    );

    // Deleting the offending Services lets the new config load.
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.delete("keeper", &DeleteParams::default()).await?;
    api.delete("newcomer", &DeleteParams::default()).await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 0.0)
        .await?;
    create_lb(&client, ns, "after", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, ns, "after").await?,
        vec!["203.0.113.50"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_config_is_refused_and_old_one_kept() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-unparsable";
    let (env, client) = setup(ns).await?;
    apply_config(&client, ns, &pool_config(&[("p", "192.0.2.60-192.0.2.61")])).await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    create_lb(&client, ns, "a", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "a").await?, vec!["192.0.2.60"]);
    apply_config(
        &client,
        ns,
        "address-pools: [ {name: p, addresses: [not-an-ip]} ]\n",
    )
    .await?;
    let ev = wait_event(&client, ns, "config", "ConfigStale").await?;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    // Two problems: the Event and the log name each with its field path.
    let note = ev.note.unwrap_or_default();
    for path in [
        "address-pools[0].protocol",
        "address-pools[0].addresses[0] = \"not-an-ip\"",
    ] {
        assert!(note.contains(path), "Event note names {path}: {note}");
    }
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    let log = std::fs::read_to_string(&ctl.log)?;
    for path in ["address-pools[0].protocol", "address-pools[0].addresses[0]"] {
        assert!(
            log.lines()
                .any(|l| l.contains("new configuration refused") && l.contains(path)),
            "a log line names {path}:\n{log}"
        );
    }
    create_lb(&client, ns, "b", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "b").await?, vec!["192.0.2.61"]);
    assert_eq!(ingress(&client, ns, "a").await?, vec!["192.0.2.60"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_changes_no_ip() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-restart";
    let (env, client) = setup(ns).await?;
    apply_config(&client, ns, &pool_config(&[("p", "192.0.2.70-192.0.2.79")])).await?;
    let mut ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    let names = ["s0", "s1", "s2", "s3", "s4"];
    let mut before = BTreeMap::new();
    for n in names {
        create_lb(&client, ns, n, Svc::default()).await?;
        before.insert(n, wait_ingress(&client, ns, n).await?);
    }
    ctl.terminate()?;
    // While it is down: the lowest address is freed and a new Service appears. A controller
    // that assigned before restoring would hand s1 the freed address.
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.delete("s0", &DeleteParams::default()).await?;
    before.remove("s0");
    create_lb(&client, ns, "late", Svc::default()).await?;

    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    let late = wait_ingress(&client, ns, "late").await?;
    for (n, ips) in &before {
        assert_eq!(&ingress(&client, ns, n).await?, ips, "{n} kept its address");
        assert_ne!(&late, ips, "late got a free address");
    }
    assert_eq!(late, vec!["192.0.2.70"], "the freed address");
    drop(ctl);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_new_config_reassigns_misfits() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-reassign";
    let (env, client) = setup(ns).await?;
    apply_config(
        &client,
        ns,
        &pool_config(&[
            ("a", "192.0.2.80-192.0.2.81"),
            ("b", "192.0.2.90-192.0.2.91"),
        ]),
    )
    .await?;
    let mut ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    create_lb(
        &client,
        ns,
        "fits",
        Svc {
            load_balancer_ip: Some("192.0.2.90"),
            ..Svc::default()
        },
    )
    .await?;
    create_lb(&client, ns, "misfit", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "fits").await?, vec!["192.0.2.90"]);
    assert_eq!(
        wait_ingress(&client, ns, "misfit").await?,
        vec!["192.0.2.80"]
    );
    // Pool a goes away: refused while running.
    apply_config(&client, ns, &pool_config(&[("b", "192.0.2.90-192.0.2.91")])).await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    ctl.terminate()?;
    // `kubectl delete pod`: the new controller loads the new config and re-assigns the misfit.
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    wait_ingress_eq(&client, ns, "misfit", &["192.0.2.91"]).await?;
    assert_eq!(ingress(&client, ns, "fits").await?, vec!["192.0.2.90"]);
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 0.0)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_leader_and_takeover() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-leader";
    let (env, client) = setup(ns).await?;
    apply_config(
        &client,
        ns,
        &pool_config(&[("p", "192.0.2.100-192.0.2.109")]),
    )
    .await?;
    let args = ["--lease-duration", "4"];
    let mut first = Controller::start(&env, ns, &args)?;
    first
        .wait_metric("ferrolb_controller_leader_bool", 1.0)
        .await?;
    let second = Controller::start(&env, ns, &args)?;
    second.wait_ready().await?;
    // The standby stays a standby while the leader renews.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(second.metric("ferrolb_controller_leader_bool"), Some(0.0));
    assert_eq!(first.metric("ferrolb_controller_leader_bool"), Some(1.0));
    create_lb(&client, ns, "one", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "one").await?, vec!["192.0.2.100"]);
    let first_pid = first.pid();

    // Crash the leader (no lease release): the standby takes over after the lease expires.
    first.kill();
    let killed = Instant::now();
    second
        .wait_metric("ferrolb_controller_leader_bool", 1.0)
        .await?;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL of the leader: {takeover:?} (lease 4 s)");
    assert!(
        takeover < Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    create_lb(&client, ns, "two", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "two").await?, vec!["192.0.2.101"]);
    assert_eq!(ingress(&client, ns, "one").await?, vec!["192.0.2.100"]);
    let lease: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(client.clone(), ns)
        .get("ferrolb-controller")
        .await?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.ends_with(&format!("-{}", second.pid())),
        "holder {holder}, first pid {first_pid}, second pid {}",
        second.pid()
    );
    // Only the leader of the moment wrote: each Event names the replica that sent it.
    let instance = |e: &Event| e.reporting_instance.clone().unwrap_or_default();
    let one = wait_event(&client, ns, "one", "IPAllocated").await?;
    assert!(
        instance(&one).ends_with(&format!("-{first_pid}")),
        "{}",
        instance(&one)
    );
    let two = wait_event(&client, ns, "two", "IPAllocated").await?;
    assert!(
        instance(&two).ends_with(&format!("-{}", second.pid())),
        "{}",
        instance(&two)
    );
    let all = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let allocated_one = all
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("IPAllocated")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("one")
        })
        .count();
    assert_eq!(allocated_one, 1, "the takeover did not re-allocate \"one\"");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_that_stops_being_a_load_balancer_is_cleared_and_its_ip_reused(
) -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-type-change";
    let (env, client) = setup(ns).await?;
    apply_config(&client, ns, &pool_config(&[("p", "192.0.2.130/32")])).await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;
    create_lb(&client, ns, "was-lb", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, ns, "was-lb").await?,
        vec!["192.0.2.130"]
    );
    create_lb(&client, ns, "waiting", Svc::default()).await?;
    wait_event(&client, ns, "waiting", "AllocationFailed").await?;
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.patch(
        "was-lb",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"type": "ClusterIP"}})),
    )
    .await?;
    wait_ingress_eq(&client, ns, "was-lb", &[]).await?;
    wait_ingress_eq(&client, ns, "waiting", &["192.0.2.130"]).await?;
    Ok(())
}
