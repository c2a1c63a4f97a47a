//! Churn soak (issue 8): waves of Service creates and deletes against a real kube-apiserver,
//! `ferrolb controller`, two `ferrolb speaker`s with membership and BIRD; statuses, pool usage,
//! ARP and BGP must agree at the end and memory must come back. 400 creates in `make test`,
//! 10 000 with `FERROLB_SOAK=1`. The plan and the agreement check are pure, in
//! `ferrolb_e2e::churn`.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_e2e::churn::{self, Op, Pool};
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{all_ingress, apply_config, create_lb_json, set_endpoints};
use ferrolb_e2e::k8s::speaker_lab::{SpeakerLab, BGP_BIRD};
use ferrolb_e2e::k8s::{self, TestEnv, APPS, SOAK_SERVICE_CIDR, SPEAKER_NS, WAIT};
use ferrolb_e2e::prereq::{require, Need::Program};
use ferrolb_e2e::routers::Bird;
use ferrolb_e2e::{probe, procfs};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DeleteParams;
use kube::{Api, Client};

/// One create or delete of the churn, with its EndpointSlice (ready on both nodes: the speakers
/// announce only Services with a ready endpoint).
async fn churn_op(client: &Client, op: &Op) -> anyhow::Result<()> {
    match op {
        Op::Create { name, pool, .. } => {
            create_lb_json(
                client,
                APPS,
                name,
                serde_json::json!({"metallb.universe.tf/address-pool": pool.name()}),
                serde_json::json!({"allocateLoadBalancerNodePorts": false}),
            )
            .await?;
            set_endpoints(client, name, &[("node-a", true), ("node-b", true)]).await
        }
        Op::Delete { name } => {
            Api::<Service>::namespaced(client.clone(), APPS)
                .delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("delete Service {name}"))?;
            match Api::<EndpointSlice>::namespaced(client.clone(), APPS)
                .delete(&format!("{name}-slice"), &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("delete EndpointSlice {name}-slice")),
            }
        }
    }
}

/// What the cluster, the controller and BIRD show now.
async fn churn_view(client: &Client, ctl: &Controller, bird: &Bird) -> anyhow::Result<churn::View> {
    let ingress = all_ingress(client, APPS).await?;
    let metrics = ctl.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let in_use = [Pool::Layer2, Pool::Bgp]
        .into_iter()
        .map(|p| (p, churn::pool_in_use(&metrics, p.name())))
        .collect();
    Ok(churn::View {
        ingress,
        in_use,
        bird_networks: churn::bird_prefixes(&bird.birdc(&["show", "route"])?),
        bird_count: churn::bird_route_count(&bird.birdc(&["show", "route", "count"])?),
    })
}

/// One round of ARP probes from the client, all at once: each of `live` must be answered by
/// exactly one node (two requests, two replies from the same node MAC), none of `dead` may be
/// answered. Returns the failures.
fn churn_arp_round(
    lab: &SpeakerLab,
    live: &[String],
    dead: &[String],
) -> anyhow::Result<Vec<String>> {
    let spawn = |vip: &str, count: u32| {
        lab.client_ns
            .command("arping")
            .args(["-c", &count.to_string(), "-w", &(count + 1).to_string()])
            .args(["-I", "eth0", vip])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    let mut probes = Vec::new();
    for vip in live {
        probes.push((vip, true, spawn(vip, 2)?));
    }
    for vip in dead {
        probes.push((vip, false, spawn(vip, 1)?));
    }
    let node_macs: Vec<&str> = lab.nodes.iter().map(|n| n.mac.as_str()).collect();
    let mut bad = Vec::new();
    for (vip, should_answer, child) in probes {
        let macs = probe::arping_macs(&String::from_utf8_lossy(&child.wait_with_output()?.stdout));
        let ok = if should_answer {
            macs.len() == 2 && macs[0] == macs[1] && node_macs.contains(&macs[0].as_str())
        } else {
            macs.is_empty()
        };
        if !ok {
            bad.push(format!(
                "{vip} ({}): replies {macs:?}",
                if should_answer { "live" } else { "deleted" }
            ));
        }
    }
    Ok(bad)
}

/// The metric series (non-comment lines) on node `i`'s speaker /metrics page, counted per
/// metric name.
fn speaker_series(lab: &SpeakerLab, i: usize) -> BTreeMap<String, usize> {
    let body = lab.nodes[i]
        .ns
        .exec_stdout("curl", &["-s", "-m", "2", "http://127.0.0.1:7473/metrics"])
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = l.split(['{', ' ']).next().unwrap_or(l).to_string();
        *out.entry(name).or_default() += 1;
    }
    out
}

/// Churn soak (issue 8): a real apiserver, `ferrolb controller`, two `ferrolb speaker`s with
/// membership in node namespaces, a layer2 pool and a bgp pool peering with a real BIRD. Waves of
/// concurrent creates and deletes (some Services kept throughout, some deleted, some re-created
/// under the same name; each with an EndpointSlice ready on both nodes): 400 creates in CI,
/// 10 000 with FERROLB_SOAK=1 (`FERROLB_CHURN_TOTAL`, `FERROLB_CHURN_LIVE` and
/// `FERROLB_CHURN_WAVE` override the total, the live Services per wave and the creates per
/// wave). At the end the Services'
/// statuses, the controller's pool usage and BIRD's table agree exactly with the Services that
/// exist, a sample of live layer2 addresses is answered by exactly one node and a sample of
/// freed ones by none; after deleting everything, nothing is held or announced and the RSS of
/// the controller and both speakers is within max(20 %, 8 MiB) of the baseline before the churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_soak_keeps_status_pools_arp_and_bgp_in_agreement_and_memory_returns(
) -> anyhow::Result<()> {
    use futures::StreamExt;
    if !require(&k8s::lab_needs(&[Program("bird"), Program("birdc")]))? {
        return Ok(());
    }
    let soak = std::env::var_os("FERROLB_SOAK").is_some_and(|v| v == "1");
    let mut size = if soak {
        churn::Size {
            total_creates: 10_000,
            live: 300,
            wave: 140,
            layer2_every: 5,
            keep: 60,
            recreate_every: 4,
        }
    } else {
        churn::Size {
            total_creates: 400,
            live: 120,
            wave: 60,
            layer2_every: 5,
            keep: 24,
            recreate_every: 4,
        }
    };
    // FERROLB_CHURN_PACED=1: wait after each wave until every Service has its status (for
    // measuring the convergence after each wave; the unpaced soak passes too since 92e5c4d).
    let paced = std::env::var_os("FERROLB_CHURN_PACED").is_some_and(|v| v == "1");
    let env_size = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let Some(n) = env_size("FERROLB_CHURN_TOTAL") {
        size.total_creates = n;
    }
    if let Some(n) = env_size("FERROLB_CHURN_LIVE") {
        size.live = n;
        size.keep = n / 5;
    }
    if let Some(n) = env_size("FERROLB_CHURN_WAVE") {
        size.wave = n;
    }
    let plan = churn::plan(&size, 0x5eed);
    // Pools hold 160 (l2) and 512 (bgp) addresses: the plan stays well inside them.
    anyhow::ensure!(
        plan.peak_per_pool.get(&Pool::Layer2).copied().unwrap_or(0) <= 120
            && plan.peak_per_pool.get(&Pool::Bgp).copied().unwrap_or(0) <= 400,
        "plan exceeds the pools: {:?}",
        plan.peak_per_pool
    );
    // Room for the ClusterIPs of up to ~450 Services at once (the default /24 holds 254).
    // Virtual addresses in etcd only: nothing configures or routes them.
    std::env::set_var("SERVICE_CIDR", SOAK_SERVICE_CIDR);
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    let router = lab.add_host("krt", "192.0.2.254/24")?;
    let bird = Bird::start(&router, &lab.dir, BGP_BIRD)?;
    apply_config(&client, SPEAKER_NS, churn::CONFIG).await?;
    let mut ctl = Controller::start(&env, SPEAKER_NS, &[])?;
    ctl.wait_ready().await?;
    for i in 0..2 {
        let flags = lab.ml_flags(i);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        lab.start_speaker(i, &flags)?;
    }
    // Settled: both sessions up, both speakers see each other.
    let t = Instant::now();
    while !(bird.established("from_a")
        && bird.established("from_b")
        && lab.nodes.iter().all(|n| {
            std::fs::read_to_string(&n.log).is_ok_and(|l| l.contains("live=node-a,node-b"))
        }))
    {
        anyhow::ensure!(
            t.elapsed() < WAIT,
            "speakers not settled (BGP sessions, membership)\n{}\n{}",
            lab.logs(),
            bird.birdc(&["show", "protocols"]).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids: Vec<(String, u32)> = std::iter::once(("controller".to_string(), ctl.pid()))
        .chain(lab.nodes.iter().map(|n| {
            (
                format!("speaker {}", n.name),
                n.speaker.as_ref().map(Child::id).unwrap_or(0),
            )
        }))
        .collect();
    for (what, pid) in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        anyhow::ensure!(comm.trim() == "ferrolb", "{what}: pid {pid} is {comm:?}");
    }
    let baseline: Vec<u64> = pids
        .iter()
        .map(|(_, p)| procfs::rss_kib(*p))
        .collect::<anyhow::Result<_>>()?;
    let sampler = procfs::RssSampler::start(
        pids.iter().map(|(_, p)| *p).collect(),
        Duration::from_millis(100),
    );
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|(_, p)| procfs::cpu_secs(*p).unwrap_or(0.0))
        .collect();
    let series_before: Vec<BTreeMap<String, usize>> =
        (0..2).map(|i| speaker_series(&lab, i)).collect();

    // The churn: waves one after the other, each wave's operations 16 at a time.
    let t0 = Instant::now();
    let mut freed_l2: std::collections::BTreeSet<String> = Default::default();
    let mut l2_seen: BTreeMap<String, String> = BTreeMap::new();
    let mut wave_secs = Vec::new();
    let mut pace_secs = Vec::new();
    for (w, wave) in plan.waves.iter().enumerate() {
        // Remember the layer2 addresses of Services about to be deleted (for the ARP check).
        let tw = Instant::now();
        {
            for (name, ips) in all_ingress(&client, APPS).await? {
                if let Some(ip) = ips
                    .first()
                    .filter(|ip| churn::pool_of(ip) == Some(Pool::Layer2))
                {
                    l2_seen.insert(name, ip.clone());
                }
            }
        }
        for op in wave {
            if let Op::Delete { name } = op {
                if let Some(ip) = l2_seen.remove(name) {
                    freed_l2.insert(ip);
                }
            }
        }
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(wave)
            .map(|op| {
                let client = client.clone();
                async move { churn_op(&client, op).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.with_context(|| format!("wave {w}"))?;
        }
        wave_secs.push(tw.elapsed().as_secs_f64());
        if paced {
            // Paced: the next wave starts once every Service has its status.
            let want = churn::live_after_wave(&plan, w);
            let tp = Instant::now();
            loop {
                let now = all_ingress(&client, APPS).await?;
                if now.len() == want && now.values().all(|v| v.len() == 1) {
                    break;
                }
                anyhow::ensure!(
                    tp.elapsed() < Duration::from_secs(120),
                    "paced: wave {w} not assigned within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pace_secs.push(tp.elapsed().as_secs_f64());
        }
    }
    let churn_time = t0.elapsed();

    // Convergence: statuses, pool usage and BIRD agree with the plan's final Services.
    let limit = if soak {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(120)
    };
    let t1 = Instant::now();
    let view = loop {
        let view = churn_view(&client, &ctl, &bird).await?;
        let bad = churn::disagreements(&view, &plan.final_live);
        if bad.is_empty() {
            break view;
        }
        anyhow::ensure!(
            t1.elapsed() < limit,
            "not converged {limit:?} after the churn: {} disagreements, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let converged = t1.elapsed();
    // ARP: live layer2 addresses answered by one node each, freed ones (not re-used) by none.
    let live_l2: Vec<String> = view
        .ingress
        .values()
        .filter_map(|ips| ips.first())
        .filter(|ip| churn::pool_of(ip) == Some(Pool::Layer2))
        .cloned()
        .collect();
    let held: std::collections::BTreeSet<&String> = view.ingress.values().flatten().collect();
    // Freed addresses seen at a wave start come first; unpaced, a Service is often deleted
    // before its status was seen, so the rest of the sample is any pool address no Service
    // holds (none may be answered either).
    let freed_dead: Vec<String> = freed_l2
        .iter()
        .filter(|ip| !held.contains(ip))
        .cloned()
        .collect();
    let unheld: Vec<String> = churn::l2_addresses()
        .into_iter()
        .filter(|ip| !held.contains(ip) && !freed_l2.contains(ip))
        .collect();
    let mut dead_sample = churn::sample(&freed_dead, 12);
    dead_sample.extend(churn::sample(&unheld, 12 - dead_sample.len()));
    let live_sample = churn::sample(&live_l2, 12);
    anyhow::ensure!(!live_sample.is_empty(), "no live layer2 Service to probe");
    anyhow::ensure!(
        dead_sample.len() == 12,
        "fewer than 12 unheld layer2 addresses to probe"
    );
    let t2 = Instant::now();
    loop {
        let bad = churn_arp_round(&lab, &live_sample, &dead_sample)?;
        if bad.is_empty() {
            break;
        }
        anyhow::ensure!(
            t2.elapsed() < Duration::from_secs(30),
            "ARP disagrees with the Services: {bad:?}\n{}",
            lab.logs()
        );
    }
    let arp_time = t2.elapsed();
    let after_churn: Vec<u64> = pids
        .iter()
        .map(|(_, p)| procfs::rss_kib(*p))
        .collect::<anyhow::Result<_>>()?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu_after: Vec<f64> = pids
        .iter()
        .map(|(_, p)| procfs::cpu_secs(*p).unwrap_or(0.0))
        .collect();

    // Everything goes: nothing held, nothing announced, memory back near the baseline.
    let t3 = Instant::now();
    let last: Vec<Op> = plan
        .final_live
        .keys()
        .map(|name| Op::Delete { name: name.clone() })
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(&last)
        .map(|op| {
            let client = client.clone();
            async move { churn_op(&client, op).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.context("final delete")?;
    }
    let nothing = BTreeMap::new();
    loop {
        let bad = churn::disagreements(&churn_view(&client, &ctl, &bird).await?, &nothing);
        if bad.is_empty() {
            break;
        }
        anyhow::ensure!(
            t3.elapsed() < limit,
            "not empty {limit:?} after deleting everything: {:?}",
            &bad[..bad.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let emptied = t3.elapsed();
    let gone_sample = churn::sample(&live_l2, 12);
    let t4 = Instant::now();
    loop {
        let bad = churn_arp_round(&lab, &[], &gone_sample)?;
        if bad.is_empty() {
            break;
        }
        anyhow::ensure!(
            t4.elapsed() < Duration::from_secs(30),
            "still answered after deleting everything: {bad:?}"
        );
    }
    // Memory may be handed back lazily: poll up to 20 s for every process to be within bounds.
    let bounds: Vec<u64> = baseline.iter().map(|&b| churn::rss_bound_kib(b)).collect();
    let t5 = Instant::now();
    let after_delete = loop {
        let now: Vec<u64> = pids
            .iter()
            .map(|(_, p)| procfs::rss_kib(*p))
            .collect::<anyhow::Result<_>>()?;
        if now.iter().zip(&bounds).all(|(n, b)| n <= b) || t5.elapsed() > Duration::from_secs(20) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let peaks = sampler.peaks();
    drop(sampler);
    let series_after: Vec<BTreeMap<String, usize>> =
        (0..2).map(|i| speaker_series(&lab, i)).collect();
    let hwm: Vec<u64> = pids
        .iter()
        .map(|(_, p)| procfs::hwm_kib(*p).unwrap_or(0))
        .collect();
    for n in &mut lab.nodes {
        let c = n.speaker.as_mut().context("speaker")?;
        anyhow::ensure!(c.try_wait()?.is_none(), "{} exited", n.name);
    }
    anyhow::ensure!(
        ctl.child
            .as_mut()
            .context("controller")?
            .try_wait()?
            .is_none(),
        "controller exited"
    );

    eprintln!(
        "measured: churn {} Services created ({} of them re-created under a deleted name) and \
         {} deleted in {} waves in {:.1} s ({:.0} ops/s, EndpointSlices not counted); live at \
         most {} at once (l2 {:?}, bgp {:?}), {} at the end ({} kept throughout)",
        plan.creates,
        plan.recreates,
        plan.deletes,
        plan.waves.len(),
        churn_time.as_secs_f64(),
        (plan.creates + plan.deletes) as f64 / churn_time.as_secs_f64(),
        plan.peak_live,
        plan.peak_per_pool.get(&Pool::Layer2),
        plan.peak_per_pool.get(&Pool::Bgp),
        plan.final_live.len(),
        size.keep,
    );
    eprintln!(
        "measured: churn converged {:.1} s after the last operation: {} statuses (one unique IP \
         each, from its pool), pool usage l2 {:?} bgp {:?}, BIRD {:?} (routes, networks) = the \
         bgp Services' set; ARP: {} live layer2 addresses answered by exactly one node, {} unheld \
         ones ({} of them freed during the churn) by none ({:.1} s); all {} deleted: nothing held \
         or announced after {:.1} s",
        converged.as_secs_f64(),
        view.ingress.len(),
        view.in_use[&Pool::Layer2],
        view.in_use[&Pool::Bgp],
        view.bird_count,
        live_sample.len(),
        dead_sample.len(),
        freed_dead.len().min(12),
        arp_time.as_secs_f64(),
        last.len(),
        emptied.as_secs_f64(),
    );
    if paced {
        let (pmin, pmed, pmax) = churn::spread(&pace_secs);
        eprintln!(
            "measured: churn paced: after each wave every status was in place after min \
             {pmin:.2} s, median {pmed:.2} s, max {pmax:.2} s (included in the churn time)"
        );
    }
    let (wmin, wmed, wmax) = churn::spread(&wave_secs);
    let quarter = (wave_secs.len() / 4).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    eprintln!(
        "measured: churn wave time min {wmin:.2} s, median {wmed:.2} s, max {wmax:.2} s; mean of \
         the first quarter of waves {:.2} s, of the last quarter {:.2} s",
        mean(&wave_secs[..quarter.min(wave_secs.len())]),
        mean(&wave_secs[wave_secs.len().saturating_sub(quarter)..]),
    );
    eprintln!(
        "measured: churn load (1/5/15 min) before {} after {}; CPU used during churn and \
         convergence: {}",
        load_before.trim(),
        load_after.trim(),
        pids.iter()
            .enumerate()
            .map(|(i, (what, _))| format!("{what} {:.1} s", cpu_after[i] - cpu_before[i]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let total = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    eprintln!(
        "measured: churn speaker /metrics series before/after deleting all: node-a {}/{}, node-b \
         {}/{}; node-a after: {:?}",
        total(&series_before[0]),
        total(&series_after[0]),
        total(&series_before[1]),
        total(&series_after[1]),
        series_after[0]
    );
    let mut over = Vec::new();
    for (i, (what, _)) in pids.iter().enumerate() {
        eprintln!(
            "measured: churn RSS {what}: baseline {} KiB, peak {} KiB (sampled; VmHWM {} KiB), \
             after the churn {} KiB ({} live), after deleting all {} KiB; bound {} KiB",
            baseline[i],
            peaks[i],
            hwm[i],
            after_churn[i],
            plan.final_live.len(),
            after_delete[i],
            bounds[i]
        );
        if after_churn[i] > bounds[i] || after_delete[i] > bounds[i] {
            over.push(what.clone());
        }
    }
    anyhow::ensure!(
        over.is_empty(),
        "RSS above baseline + max(20 %, 8 MiB): {over:?}"
    );
    ctl.terminate()?;
    // The controller's debug log of a soak is long: keep only its size on success.
    let log = std::fs::read_to_string(&ctl.log).unwrap_or_default();
    eprintln!(
        "measured: churn controller log: {} status writes, {} failed (\"could not write status\", \
         e.g. 404 for a Service deleted meanwhile)",
        log.matches("status written").count(),
        log.matches("could not write status").count()
    );
    let len = log.len();
    std::fs::write(
        &ctl.log,
        format!("(controller log: {len} bytes, not shown)\n"),
    )?;
    Ok(())
}
