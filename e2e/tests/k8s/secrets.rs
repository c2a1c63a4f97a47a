//! Secrets stay secret with a real kube-apiserver, the controller and two speakers: a BGP
//! password and a memberlist key in use appear in no log, Event or metrics page.

use std::time::{Duration, Instant};

use anyhow::bail;
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{
    apply_config, create_lb, label_node, set_endpoints, wait_event, wait_ingress, Svc,
};
use ferrolb_e2e::k8s::speaker_lab::{SpeakerLab, ML_SECRET};
use ferrolb_e2e::k8s::{self, TestEnv, APPS, SPEAKER_NS, WAIT};
use ferrolb_e2e::prereq::{require, Need::Program};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::Api;

const SECRET_BGP_PASSWORD: &str = "flb-bgp-Pw-4f9c2e71";
/// What `SpeakerLab::start_speaker` passes as `FERROLB_ML_SECRET`.
const SECRET_ML_KEY: &str = ML_SECRET;

/// Secrets stay secret: with a BGP peer password (in force, and again inside a refused config)
/// and a memberlist key in use, neither appears in the controller's or speakers' logs, in any
/// Event (core/v1 or events.k8s.io/v1, all namespaces) or in either /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_events_or_metrics() -> anyhow::Result<()> {
    if !require(&k8s::lab_needs(&[Program("bird"), Program("birdc")]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    let router = lab.add_host("krt", "192.0.2.254/24")?;
    let bird_conf = format!(
        "router id 192.0.2.254;\nprotocol device {{}}\nprotocol bgp from_a {{\n  \
         local 192.0.2.254 as 64513; neighbor 192.0.2.11 as 64512; passive on;\n  \
         password \"{SECRET_BGP_PASSWORD}\";\n  ipv4 {{ import all; export none; }};\n}}\n"
    );
    let bird = ferrolb_e2e::routers::Bird::start(&router, &lab.dir, &bird_conf)?;
    let config = format!(
        "peers:\n- peer-address: 192.0.2.254\n  peer-asn: 64513\n  my-asn: 64512\n  \
         password: {SECRET_BGP_PASSWORD}\n  node-selectors:\n  - match-labels:\n      \
         ferrolb-bgp: 'yes'\naddress-pools:\n- name: bgp\n  protocol: bgp\n  addresses:\n  \
         - 203.0.113.10/32\n"
    );
    apply_config(&client, SPEAKER_NS, &config).await?;
    label_node(&client, "node-a", "ferrolb-bgp", Some("yes")).await?;
    let mut ctl = Controller::start(&env, SPEAKER_NS, &[])?;
    ctl.wait_ready().await?;
    create_lb(&client, APPS, "secret-web", Svc::default()).await?;
    let vip = wait_ingress(&client, APPS, "secret-web").await?;
    set_endpoints(&client, "secret-web", &[("node-a", true)]).await?;
    for i in 0..2 {
        let flags = lab.ml_flags(i);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        lab.start_speaker(i, &flags)?;
    }
    // The password is in use: the MD5-protected session carries the route.
    let t = Instant::now();
    while !bird
        .routes("from_a")
        .map(|r| r.contains(&format!("{}/32", vip[0])))
        .unwrap_or(false)
    {
        if t.elapsed() > WAIT {
            bail!("no route at BIRD over the MD5 session\n{}", lab.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The memberlist key is in use: both speakers gossip encrypted and see each other.
    let t = Instant::now();
    while !lab.nodes.iter().all(|n| {
        std::fs::read_to_string(&n.log)
            .map(|l| l.contains("encrypted=true") && l.contains("live=node-a,node-b"))
            .unwrap_or(false)
    }) {
        if t.elapsed() > WAIT {
            bail!(
                "speakers did not form an encrypted memberlist\n{}",
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A refused config that carries the password next to an error.
    let bad = config.replace("peer-address: 192.0.2.254", "peer-address: 999.0.0.254");
    apply_config(&client, SPEAKER_NS, &bad).await?;
    let ev = wait_event(&client, SPEAKER_NS, "config", "ConfigStale").await?;
    eprintln!("secrets: ConfigStale note: {:?}", ev.note);
    // Give the speakers time to see and refuse it too.
    std::thread::sleep(Duration::from_secs(2));

    let mut sources: Vec<(String, String)> = vec![
        ("controller log".into(), std::fs::read_to_string(&ctl.log)?),
        ("controller /metrics".into(), ctl.get("/metrics")?.1),
    ];
    for node in &lab.nodes {
        sources.push((
            format!("speaker {} log", node.name),
            std::fs::read_to_string(&node.log)?,
        ));
        let metrics = node
            .ns
            .exec_stdout("curl", &["-s", "-m", "2", "http://127.0.0.1:7473/metrics"])?;
        anyhow::ensure!(
            metrics.contains("metallb_"),
            "no metrics from {}",
            node.name
        );
        sources.push((format!("speaker {} /metrics", node.name), metrics));
    }
    let new_events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let core_events = Api::<k8s_openapi::api::core::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    anyhow::ensure!(!core_events.items.is_empty(), "no Events at all");
    sources.push((
        format!("{} events.k8s.io/v1 Events", new_events.items.len()),
        serde_json::to_string(&new_events.items)?,
    ));
    sources.push((
        format!("{} core/v1 Events", core_events.items.len()),
        serde_json::to_string(&core_events.items)?,
    ));
    for (what, text) in &sources {
        for secret in [SECRET_BGP_PASSWORD, SECRET_ML_KEY] {
            assert!(
                !text.contains(secret),
                "{what} contains the secret {secret:?}:\n{text}"
            );
        }
        eprintln!("secrets: {what}: {} bytes, no secret", text.len());
    }
    ctl.terminate()?;
    Ok(())
}
