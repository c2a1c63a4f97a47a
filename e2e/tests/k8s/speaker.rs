//! `ferrolb speaker` against a real kube-apiserver, in the speaker lab (node namespaces on a
//! bridge, a client probing with `arping`, BIRD as a router): one ARP answerer and failover with
//! membership, `externalTrafficPolicy: Local` following the ready endpoint, a refused config and
//! a lost apiserver leaving announcements alone, BGP peers chosen by Node labels.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrolb_e2e::k8s::objects::{
    apply_config, create_lb_with_ip, label_node, pool_config, set_endpoints, wait_event_note,
};
use ferrolb_e2e::k8s::speaker_lab::{SpeakerLab, BGP_BIRD};
use ferrolb_e2e::k8s::{self, TestEnv, SPEAKER_NS, WAIT};
use ferrolb_e2e::prereq::{require, Need::Program};
use ferrolb_e2e::procfs::kill_with_children;

/// Two speakers with membership (peers found from the Node objects): one answers ARP for the
/// Service's address, a `nodeAssigned` Event names it; SIGKILL it and the other answers, timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_in_namespaces_answer_arp_and_fail_over() -> anyhow::Result<()> {
    if !require(&k8s::lab_needs(&[]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    apply_config(
        &client,
        SPEAKER_NS,
        &pool_config(&[("l2", "192.0.2.100-192.0.2.110")]),
    )
    .await?;
    let vip = "192.0.2.100";
    create_lb_with_ip(&client, "web", "Cluster", vip).await?;
    set_endpoints(&client, "web", &[("node-a", true)]).await?;
    for i in 0..2 {
        let flags = lab.ml_flags(i);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        lab.start_speaker(i, &flags)?;
    }
    let started = Instant::now();
    // Until the two have found each other each counts only itself: wait for one answerer.
    let winner = lab.wait_answered_by(vip, None, Duration::from_secs(30))?;
    eprintln!(
        "speaker: {vip} answered by one node ({}) within {} ms of both speakers starting",
        lab.nodes[winner].name,
        started.elapsed().as_millis()
    );
    let one = lab.arping(vip, 1)?;
    assert_eq!(
        one,
        vec![lab.nodes[winner].mac.clone()],
        "exactly one reply"
    );
    let winner_name = lab.nodes[winner].name.clone();
    wait_event_note(&client, "web", "nodeAssigned", &winner_name).await?;
    lab.wait_metric(winner, "metallb_k8s_client_config_loaded_bool", 1.0)?;
    lab.wait_metric(winner, "metallb_k8s_client_config_stale_bool", 0.0)?;

    // Kill the winner, then probe from the client until the survivor answers.
    let survivor = 1 - winner;
    let survivor_mac = lab.nodes[survivor].mac.clone();
    if let Some(mut c) = lab.nodes[winner].speaker.take() {
        c.kill()?;
        c.wait()?;
    }
    let killed = Instant::now();
    let took = lab.first_reply_from(vip, &survivor_mac, killed, Duration::from_secs(10))?;
    let took = took.with_context(|| format!("no answer from the survivor\n{}", lab.logs()))?;
    eprintln!(
        "speaker failover: {} answered ARP for {vip} {} ms after the winner's speaker was SIGKILLed",
        lab.nodes[survivor].name,
        took.as_millis()
    );
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    assert_eq!(
        lab.arping(vip, 2)?,
        vec![survivor_mac.clone(), survivor_mac]
    );
    let survivor_name = lab.nodes[survivor].name.clone();
    wait_event_note(&client, "web", "nodeAssigned", &survivor_name).await?;

    // SIGTERM: the survivor leaves cleanly and stops answering.
    let mut c = lab.nodes[survivor].speaker.take().context("survivor")?;
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = c.try_wait()? {
            break s;
        }
        anyhow::ensure!(Instant::now() < deadline, "speaker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "speaker exit {status}\n{}", lab.logs());
    assert!(
        lab.arping(vip, 1)?.is_empty(),
        "nobody answers after SIGTERM"
    );
    Ok(())
}

/// Without membership (liveness from Node Ready): an `externalTrafficPolicy: Local` Service is
/// answered only by the node with a ready endpoint, and moves with it; a breaking config is
/// refused (stale metric) while announcements go on; losing the apiserver changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_local_policy_follows_the_ready_endpoint_and_survives_refusal_and_apiserver_loss(
) -> anyhow::Result<()> {
    if !require(&k8s::lab_needs(&[]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    apply_config(
        &client,
        SPEAKER_NS,
        &pool_config(&[("l2", "192.0.2.100-192.0.2.110")]),
    )
    .await?;
    let vip = "192.0.2.101";
    create_lb_with_ip(&client, "local", "Local", vip).await?;
    set_endpoints(&client, "local", &[("node-a", false), ("node-b", true)]).await?;
    lab.start_speaker(0, &[])?;
    lab.start_speaker(1, &[])?;
    lab.wait_answered_by(vip, Some(1), Duration::from_secs(30))?;
    let macs = lab.arping(vip, 3)?;
    assert_eq!(
        macs,
        vec![lab.nodes[1].mac.clone(); 3],
        "only node-b answers"
    );
    wait_event_note(&client, "local", "nodeAssigned", "node-b").await?;

    // The endpoint moves to node-a: node-a takes over.
    set_endpoints(&client, "local", &[("node-a", true), ("node-b", false)]).await?;
    let moved = Instant::now();
    let took = lab
        .first_reply_from(vip, &lab.nodes[0].mac, moved, Duration::from_secs(10))?
        .context("node-a never answered after the endpoint moved")?;
    eprintln!(
        "speaker: EndpointSlice moved to node-a, node-a answered ARP {} ms after the update",
        took.as_millis()
    );
    lab.wait_answered_by(vip, Some(0), Duration::from_secs(10))?;
    wait_event_note(&client, "local", "nodeAssigned", "node-a").await?;

    // A breaking config (the pool no longer holds the address) is refused; node-a keeps answering.
    apply_config(
        &client,
        SPEAKER_NS,
        &pool_config(&[("l2", "192.0.2.105/32")]),
    )
    .await?;
    for i in 0..2 {
        lab.wait_metric(i, "metallb_k8s_client_config_stale_bool", 1.0)?;
    }
    assert_eq!(lab.arping(vip, 2)?, vec![lab.nodes[0].mac.clone(); 2]);
    let log = std::fs::read_to_string(&lab.nodes[0].log)?;
    assert!(log.contains("new configuration refused"), "{log}");

    // The apiserver becomes unreachable: the speakers keep running and node-a keeps answering.
    // (socat's per-connection children must go too, or the established watches stay up.)
    if let Some(mut f) = lab.host_forwarder.take() {
        kill_with_children(&mut f);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.arping(vip, 2)?, vec![lab.nodes[0].mac.clone(); 2]);
    for n in &mut lab.nodes {
        let c = n.speaker.as_mut().context("speaker")?;
        assert!(
            c.try_wait()?.is_none(),
            "{} exited without the apiserver",
            n.name
        );
    }
    Ok(())
}

const BGP_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.254
  peer-asn: 64513
  my-asn: 64512
  node-selectors:
  - match-labels:
      ferrolb-bgp: 'yes'
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 203.0.113.10/32
";

/// BGP from the Kubernetes speaker: only the node whose labels match the peer's
/// `node-selectors` peers with BIRD and announces the Service's address; labelling the other
/// Node brings its session up too; SIGTERM sends a Cease and the route is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_speaker_peers_by_node_labels_and_announces_the_service() -> anyhow::Result<()> {
    if !require(&k8s::lab_needs(&[Program("bird"), Program("birdc")]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    let router = lab.add_host("krt", "192.0.2.254/24")?;
    let bird = ferrolb_e2e::routers::Bird::start(&router, &lab.dir, BGP_BIRD)?;
    apply_config(&client, SPEAKER_NS, BGP_CONFIG).await?;
    label_node(&client, "node-a", "ferrolb-bgp", Some("yes")).await?;
    let vip = "203.0.113.10";
    create_lb_with_ip(&client, "bgp-web", "Cluster", vip).await?;
    set_endpoints(&client, "bgp-web", &[("node-b", true)]).await?;
    let started = Instant::now();
    lab.start_speaker(0, &[])?;
    lab.start_speaker(1, &[])?;
    let wait = |lab: &SpeakerLab,
                what: &str,
                limit: Duration,
                check: &dyn Fn() -> bool|
     -> anyhow::Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if check() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{what}: not within {limit:?}\n{}\n--- bird ---\n{}",
            lab.logs(),
            bird.birdc(&["show", "protocols", "all"])
                .unwrap_or_default()
        )
    };
    let has_route = |proto: &str| {
        bird.routes(proto)
            .map(|r| r.contains(&format!("{vip}/32")))
            .unwrap_or(false)
    };
    let at = wait(&lab, "route from node-a at BIRD", WAIT, &|| {
        has_route("from_a")
    })?;
    eprintln!(
        "speaker bgp: {vip}/32 from node-a at BIRD {} ms after the speakers started",
        at.as_millis()
    );
    let r = bird.routes("from_a")?;
    assert!(r.contains("BGP.as_path: 64512\n"), "{r}");
    assert!(r.contains("BGP.next_hop: 192.0.2.11"), "{r}");
    // node-b does not match the selector: no session.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!bird.established("from_b"), "node-b must not peer");

    // Label node-b: its speaker sees the Node change and peers too.
    let labelled = Instant::now();
    label_node(&client, "node-b", "ferrolb-bgp", Some("yes")).await?;
    wait(&lab, "route from node-b at BIRD", WAIT, &|| {
        has_route("from_b")
    })?;
    eprintln!(
        "speaker bgp: node-b labelled -> its route at BIRD after {} ms",
        labelled.elapsed().as_millis()
    );

    // SIGTERM node-a: withdraw + Cease; BIRD drops the session and its route.
    let mut c = lab.nodes[0].speaker.take().context("node-a speaker")?;
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()?;
    let stopped = Instant::now();
    let status = c.wait()?;
    assert!(status.success(), "speaker exit {status}\n{}", lab.logs());
    wait(
        &lab,
        "node-a's route withdrawn",
        Duration::from_secs(10),
        &|| !has_route("from_a"),
    )?;
    eprintln!(
        "speaker bgp: SIGTERM -> node-a's route gone at BIRD after {} ms",
        stopped.elapsed().as_millis()
    );
    let p = bird.birdc(&["show", "protocols", "all", "from_a"])?;
    assert!(p.to_lowercase().contains("administrative shutdown"), "{p}");
    assert!(has_route("from_b"), "node-b still announces");
    Ok(())
}
