//! Failover with membership: one ARP answerer among three speakers, TCP resuming through the
//! new winner when the old one's namespace dies, and the `tuned` profile's failover time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};

use crate::lab::{Lab, VIP4};

/// With membership, three speakers agree on one winner per address: every ARP reply comes from a
/// single node. When that node dies (every process in it SIGKILLed), the survivors elect a new
/// winner, whose announcements move the client, and TCP resumes through it.
#[test]
fn one_winner_with_membership_and_failover_when_it_dies() -> Result<()> {
    if !require(&[Root, Program("arping"), Program("socat")])? {
        return Ok(());
    }
    let mut lab = Lab::new(3)?;
    let addrs: Vec<String> = (0..3).map(|i| format!("192.0.2.{}:7946", 11 + i)).collect();
    for i in 0..3 {
        lab.serve(i)?;
        let others: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| addrs[j].clone())
            .collect();
        let extra = vec![
            "--ml-bind".to_string(),
            addrs[i].clone(),
            "--ml-join".to_string(),
            others.join(","),
        ];
        lab.start_speaker_with(i, &extra)?;
    }
    let macs: Vec<String> = lab.nodes.iter().map(|n| n.mac.clone()).collect();
    // Until the members have found each other each node counts only itself: wait for one MAC.
    lab.wait_for(Duration::from_secs(20), "a single ARP answerer", || {
        lab.arping(3)
            .map(|m| m.len() == 3 && m.iter().all(|x| *x == m[0]))
            .unwrap_or(false)
    })?;
    let winner_mac = lab.arping(3)?.first().cloned().context("no reply")?;
    let winner = macs
        .iter()
        .position(|m| *m == winner_mac)
        .context("reply from an unknown MAC")?;
    let name = lab.nodes[winner].name.clone();
    assert_eq!(lab.tcp(&format!("TCP4:{VIP4}:8080"))?, name);

    lab.nodes[winner].ns.kill_all();
    let killed = Instant::now();
    let mut outage = None;
    while killed.elapsed() < Duration::from_secs(10) {
        let out = lab
            .client
            .command("socat")
            .args([
                "-T",
                "1",
                "-",
                &format!("TCP4:{VIP4}:8080,connect-timeout=0.2"),
            ])
            .stdin(Stdio::null())
            .output()?;
        let who = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !who.is_empty() && who != name {
            outage = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let outage = outage.context("TCP did not resume through another node within 10 s")?;
    eprintln!(
        "failover: TCP resumed {} ms after the winner was killed",
        outage.as_millis()
    );
    assert!(outage < Duration::from_secs(2), "outage {outage:?}");
    let after = lab.arping(3)?;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|m| *m == after[0] && *m != winner_mac),
        "{after:?}"
    );
    Ok(())
}

/// Issue 7: failover <= 300 ms with tuned settings. Three speakers with `--ml-profile tuned`; a
/// 5 ms `ping` from the client to the address; the winner's bridge port goes down and every
/// process in it is SIGKILLed (a silent death: no RST, so the TCP fallback ping waits its whole
/// timeout). Failover = port down -> first echo reply after it, which only the new winner can
/// send. Asserted with a generous bound for a loaded machine (< 600 ms: the default `fast`
/// profile cannot go below ~750 ms here, its TCP fallback alone waits 500 ms).
#[test]
fn tuned_profile_fails_over_in_well_under_a_second() -> Result<()> {
    if !require(&[Root, Program("ping"), Program("arping")])? {
        return Ok(());
    }
    let mut lab = Lab::new(3)?;
    let addrs: Vec<String> = (0..3).map(|i| format!("192.0.2.{}:7946", 11 + i)).collect();
    for i in 0..3 {
        let others: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| addrs[j].clone())
            .collect();
        let extra = vec![
            "--ml-bind".to_string(),
            addrs[i].clone(),
            "--ml-join".to_string(),
            others.join(","),
            "--ml-profile".to_string(),
            "tuned".to_string(),
        ];
        lab.start_speaker_with(i, &extra)?;
    }
    lab.wait_for(Duration::from_secs(20), "a single ARP answerer", || {
        lab.arping(3)
            .map(|m| m.len() == 3 && m.iter().all(|x| *x == m[0]))
            .unwrap_or(false)
    })?;
    // Settled: a few more gossip rounds, then the winner once more.
    std::thread::sleep(Duration::from_millis(500));
    let winner_mac = lab.arping(2)?.first().cloned().context("no reply")?;
    let winner = lab
        .nodes
        .iter()
        .position(|n| n.mac == winner_mac)
        .context("reply from an unknown MAC")?;

    let mut ping = lab
        .client
        .command("ping")
        .args(["-D", "-n", "-i", "0.005", "-w", "15", VIP4])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = ping.stdout.take().context("ping stdout")?;
    let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let sink = replies.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // `[1764447000.123456] 64 bytes from 192.0.2.100: ...`
            let ts = line
                .strip_prefix('[')
                .and_then(|l| l.split(']').next())
                .and_then(|t| t.parse::<f64>().ok());
            if let (true, Some(ts)) = (line.contains("bytes from"), ts) {
                if let Ok(mut v) = sink.lock() {
                    v.push(ts);
                }
            }
        }
    });
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    std::thread::sleep(Duration::from_millis(1000));
    let before = replies.lock().map(|v| v.len()).unwrap_or(0);
    let outcome = (|| -> Result<f64> {
        ensure!(
            before > 50,
            "ping not healthy before the kill: {before} replies in 1 s"
        );
        let t0 = epoch();
        lab.switch.set_port(&lab.nodes[winner].port, false)?;
        let t1 = epoch();
        lab.nodes[winner].ns.kill_all();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let first = replies
                .lock()
                .ok()
                .and_then(|v| v.iter().copied().find(|t| *t > t1));
            if let Some(t) = first {
                return Ok((t - t0) * 1e3);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("no echo reply within 10 s of the winner's death")
    })();
    let _ = ping.kill();
    let _ = ping.wait();
    let _ = reader.join();
    let ms = match outcome {
        Ok(ms) => ms,
        Err(e) => {
            let logs: Vec<String> = (0..3)
                .map(|i| format!("--- {} ---\n{}", lab.nodes[i].name, lab.log(i)))
                .collect();
            bail!("{e:#}\n{}", logs.join("\n"));
        }
    };
    eprintln!(
        "measured: tuned failover {ms:.0} ms (winner's link down + SIGKILL -> first echo reply, \
         5 ms ping)"
    );
    assert!(ms < 600.0, "tuned failover took {ms:.0} ms");
    let after = lab.arping(2)?;
    assert!(
        !after.is_empty() && after.iter().all(|m| *m == after[0] && *m != winner_mac),
        "{after:?}"
    );
    Ok(())
}
