//! Layer2 end to end: `ferrolb standalone` in node namespaces on one bridge, a client namespace
//! that uses `arping`, `ndisc6`, `ping` and real TCP (`socat`) against the service address.
//!
//! Each node has the address on `lo` (as kube-proxy IPVS would) with `arp_ignore=1` /
//! `arp_announce=2`, so the kernel stays silent and every ARP/NDP answer comes from ferrolb; the
//! tests first prove that silence. Root only; every namespace is removed on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferrolb_e2e::netns::{Netns, Switch};

const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";

const CONFIG: &str = "\
address-pools:
- name: l2-v4
  protocol: layer2
  addresses:
  - 192.0.2.100/32
- name: l2-v6
  protocol: layer2
  addresses:
  - 2001:db8::100/128
";

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports:
  - port: 8080
    protocol: TCP
---
apiVersion: v1
kind: Service
metadata:
  name: web6
  namespace: default
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  ports:
  - port: 8080
    protocol: TCP
";

fn skip() -> bool {
    if !ferrolb_e2e::is_root() {
        eprintln!("SKIP: needs root for network namespaces");
        return true;
    }
    false
}

struct Node {
    name: String,
    ns: Netns,
    mac: String,
    /// Its port on the bridge (in the switch namespace).
    port: String,
    speaker: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.speaker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bridge, `n` node namespaces and a client, with the files `ferrolb standalone` reads.
struct Lab {
    nodes: Vec<Node>,
    client: Netns,
    dir: PathBuf,
    // Dropped last: the segment outlives the hosts attached to it.
    switch: Switch,
}

impl Lab {
    fn new(n: usize) -> Result<Lab> {
        ferrolb_e2e::netns::remove_stale();
        let mut switch = Switch::create()?;
        let client = Netns::create("cl")?;
        switch.attach(&client, "eth0")?;
        client.add_addr("eth0", "192.0.2.1/24")?;
        client.add_addr("eth0", "2001:db8::1/64")?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = Netns::create("nd")?;
            let port = switch.attach(&ns, "eth0")?;
            ns.add_addr("eth0", &format!("192.0.2.{}/24", 11 + i))?;
            ns.add_addr("eth0", &format!("2001:db8::{}/64", 11 + i))?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            ns.add_addr("lo", &format!("{VIP4}/32"))?;
            ns.add_addr("lo", &format!("{VIP6}/128"))?;
            let mac = ns.mac("eth0")?;
            nodes.push(Node {
                name: format!("node-{i}"),
                ns,
                mac,
                port,
                speaker: None,
            });
        }
        // Unique per lab: tests with the same node count run in parallel.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flb-{}-l2-{n}-{k}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), CONFIG)?;
        fs::write(dir.join("services.yaml"), SERVICES)?;
        // Link-local addresses and IPv6 addresses need a moment (no DAD, but the links just
        // came up).
        std::thread::sleep(Duration::from_millis(500));
        Ok(Lab {
            nodes,
            client,
            dir,
            switch,
        })
    }

    /// Starts `ferrolb standalone` on node `i`, logging to `<dir>/<node>.log`.
    fn start_speaker(&mut self, i: usize) -> Result<()> {
        self.start_speaker_with(i, &[])
    }

    /// Starts `ferrolb standalone` on node `i` with `extra` arguments.
    fn start_speaker_with(&mut self, i: usize, extra: &[String]) -> Result<()> {
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let node = &mut self.nodes[i];
        let log = fs::File::create(self.dir.join(format!("{}.log", node.name)))?;
        let child = node
            .ns
            .command(&bin.to_string_lossy())
            .arg("standalone")
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .arg("--services")
            .arg(self.dir.join("services.yaml"))
            .arg("--node")
            .arg(&node.name)
            .arg("--state")
            .arg(self.dir.join(format!("state-{}", node.name)))
            .args(extra)
            .env("RUST_LOG", "info")
            .env("FERROLB_ML_SECRET", "layer2-e2e-shared-secret")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        node.speaker = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`'s speaker.
    fn kill_speaker(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].speaker.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.join(format!("{}.log", self.nodes[i].name))).unwrap_or_default()
    }

    /// Fails (with the speaker logs) when `what` is not true within `limit`.
    fn wait_for(&self, limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = (0..self.nodes.len())
            .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i)))
            .collect();
        bail!("{what}: not within {limit:?}\n{}", logs.join("\n"))
    }

    /// `arping -c COUNT` from the client: the MACs of every reply, lower-case.
    fn arping(&self, count: u32) -> Result<Vec<String>> {
        let out = self
            .client
            .command("arping")
            .args(["-c", &count.to_string(), "-w", &(count + 1).to_string()])
            .args(["-I", "eth0", VIP4])
            .output()?;
        Ok(reply_macs(&String::from_utf8_lossy(&out.stdout)))
    }

    /// `ndisc6` from the client: the Target link-layer address of the Neighbor Advertisement.
    fn ndisc6(&self) -> Result<Option<String>> {
        let out = self
            .client
            .command("ndisc6")
            .args(["-n", "-r", "2", "-w", "500", VIP6, "eth0"])
            .output()?;
        Ok(target_ll(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The client's neighbour-table MAC for `ip`, if it has one.
    fn client_neigh(&self, ip: &str) -> Option<String> {
        let out = self.client.ip(&["neigh", "show", ip]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// A TCP server on the VIPs in node `i` that answers with the node's name.
    fn serve(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let reply = format!("SYSTEM:echo {}", node.name);
        for listen in [
            format!("TCP4-LISTEN:8080,bind={VIP4},fork,reuseaddr"),
            format!("TCP6-LISTEN:8080,bind=[{VIP6}],fork,reuseaddr"),
        ] {
            node.ns.spawn("socat", &[&listen, &reply])?;
        }
        Ok(())
    }

    /// Connects from the client to `target` (socat address) and returns what the server said.
    fn tcp(&self, target: &str) -> Result<String> {
        let out = self
            .client
            .command("socat")
            .args(["-T", "2", "-", &format!("{target},connect-timeout=2")])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "socat to {target} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Speakers first (Node::drop), then namespaces; keep the logs only on failure.
        self.nodes.clear();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("speaker logs kept in {}", self.dir.display());
        }
    }
}

/// MACs from `arping` output lines like `Unicast reply from 192.0.2.100 [66:E0:..]  0.6ms`.
fn reply_macs(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.find(']')?;
            Some(l[start..end].to_lowercase())
        })
        .collect()
}

/// The MAC from `ndisc6` output `Target link-layer address: 66:E0:..`.
fn target_ll(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Target link-layer address:"))
        .map(|m| m.trim().to_lowercase())
}

#[test]
fn parsers_read_real_tool_output() {
    let arping = "ARPING 192.0.2.100 from 192.0.2.1 eth0\n\
        Unicast reply from 192.0.2.100 [66:E0:69:81:0C:72]  0.637ms\n\
        Unicast reply from 192.0.2.100 [66:E0:69:81:0C:73]  0.632ms\n\
        Sent 2 probes (1 broadcast(s))\nReceived 2 response(s)\n";
    assert_eq!(
        reply_macs(arping),
        vec![
            "66:e0:69:81:0c:72".to_string(),
            "66:e0:69:81:0c:73".to_string()
        ]
    );
    let ndisc = "Soliciting 2001:db8::100 (2001:db8::100) on eth0...\n\
        Target link-layer address: 66:E0:69:81:0C:72\n from 2001:db8::100\n";
    assert_eq!(target_ll(ndisc).as_deref(), Some("66:e0:69:81:0c:72"));
    assert_eq!(target_ll("Timed out.\nNo response.\n"), None);
}

/// ARP and NDP for the service addresses are answered by ferrolb (the kernel is silent), from the
/// speaker's MAC only, and real TCP reaches a server bound to the address on that node.
#[test]
fn arp_ndp_and_tcp_reach_the_announcing_node() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let mut lab = Lab::new(3)?;
    // Without ferrolb nobody answers: the kernel is silent for an address on lo.
    assert_eq!(lab.arping(2)?, Vec::<String>::new(), "kernel answered ARP");
    assert_eq!(lab.ndisc6()?, None, "kernel answered NS");

    lab.start_speaker(1)?;
    let want = lab.nodes[1].mac.clone();
    lab.wait_for(Duration::from_secs(20), "first ARP reply", || {
        lab.arping(1).map(|m| !m.is_empty()).unwrap_or(false)
    })?;

    let macs = lab.arping(3)?;
    assert_eq!(macs.len(), 3, "3 probes, 3 replies: {macs:?}");
    assert!(
        macs.iter().all(|m| *m == want),
        "replies {macs:?}, want {want}"
    );

    assert_eq!(lab.ndisc6()?.as_deref(), Some(want.as_str()));

    lab.serve(1)?;
    lab.wait_for(Duration::from_secs(5), "TCP over IPv4", || {
        lab.tcp(&format!("TCP4:{VIP4}:8080")).ok().as_deref() == Some("node-1")
    })?;
    lab.wait_for(Duration::from_secs(5), "TCP over IPv6", || {
        lab.tcp(&format!("TCP6:[{VIP6}]:8080")).ok().as_deref() == Some("node-1")
    })?;
    assert_eq!(lab.client_neigh(VIP4).as_deref(), Some(want.as_str()));
    assert_eq!(lab.client_neigh(VIP6).as_deref(), Some(want.as_str()));
    Ok(())
}

/// When another node takes the address over, its gratuitous ARP / unsolicited NA rewrite the
/// client's existing neighbour entries without the client asking, and TCP follows. (Which node
/// takes over is decided by membership; here the old speaker is SIGKILLed and a new one started.)
#[test]
fn takeover_announcements_move_the_client_without_it_asking() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    lab.serve(0)?;
    lab.serve(1)?;
    lab.start_speaker(0)?;
    let (old, new) = (lab.nodes[0].mac.clone(), lab.nodes[1].mac.clone());
    lab.wait_for(Duration::from_secs(20), "TCP to node-0", || {
        lab.tcp(&format!("TCP4:{VIP4}:8080")).ok().as_deref() == Some("node-0")
            && lab.tcp(&format!("TCP6:[{VIP6}]:8080")).ok().as_deref() == Some("node-0")
    })?;
    assert_eq!(lab.client_neigh(VIP4).as_deref(), Some(old.as_str()));
    assert_eq!(lab.client_neigh(VIP6).as_deref(), Some(old.as_str()));
    // Let the entries' 1 s lock time pass, as it would in a running cluster.
    std::thread::sleep(Duration::from_millis(1200));

    lab.kill_speaker(0)?;
    let start = Instant::now();
    lab.start_speaker(1)?;
    // The client's entries are REACHABLE (for 15-45 s): it does not ask again by itself, so only
    // the new speaker's announcements can move them this quickly.
    lab.wait_for(
        Duration::from_secs(3),
        "client neighbour entries moved",
        || {
            lab.client_neigh(VIP4).as_deref() == Some(new.as_str())
                && lab.client_neigh(VIP6).as_deref() == Some(new.as_str())
        },
    )?;
    eprintln!(
        "neighbour entries moved {} ms after the new speaker was started (includes its startup)",
        start.elapsed().as_millis()
    );
    assert_eq!(lab.tcp(&format!("TCP4:{VIP4}:8080"))?, "node-1");
    assert_eq!(lab.tcp(&format!("TCP6:[{VIP6}]:8080"))?, "node-1");
    Ok(())
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    ensure!(f.len() > 13, "short /proc stat");
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// A flood of other traffic on the segment does not reach the speaker (the kernel filter drops
/// it before user space), and ARP keeps being answered meanwhile.
#[test]
fn arp_is_answered_during_a_flood_of_other_traffic() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    lab.start_speaker(0)?;
    let want = lab.nodes[0].mac.clone();
    lab.wait_for(Duration::from_secs(20), "first ARP reply", || {
        lab.arping(1).map(|m| !m.is_empty()).unwrap_or(false)
    })?;
    let pid = lab.nodes[0]
        .speaker
        .as_ref()
        .map(Child::id)
        .context("no speaker")?;
    let cpu_before = cpu_seconds(pid)?;
    // ICMP to the node's own address and IPv6 multicast pings: frames the speaker must not see.
    let mut floods = vec![
        lab.client
            .spawn("ping", &["-f", "-q", "-c", "30000", "192.0.2.11"])?,
        lab.client.spawn(
            "ping",
            &["-6", "-f", "-q", "-c", "30000", "-I", "eth0", "ff02::1"],
        )?,
    ];
    let macs = lab.arping(3)?;
    for f in &mut floods {
        f.wait()?;
    }
    let cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!("speaker CPU during a 60k-frame flood plus 3 ARP probes: {cpu:.2} s");
    assert_eq!(macs.len(), 3, "replies during the flood: {macs:?}");
    assert!(macs.iter().all(|m| *m == want));
    Ok(())
}

/// With membership, three speakers agree on one winner per address: every ARP reply comes from a
/// single node. When that node dies (every process in it SIGKILLed), the survivors elect a new
/// winner, whose announcements move the client, and TCP resumes through it.
#[test]
fn one_winner_with_membership_and_failover_when_it_dies() -> Result<()> {
    if skip() {
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
    if skip() || !ferrolb_e2e::have_programs(&["ping", "arping"]) {
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

/// `short` in CI, `long` with `FERROLB_SOAK=1` (`make soak`).
fn size(short: u64, long: u64) -> u64 {
    if std::env::var_os("FERROLB_SOAK").is_some_and(|v| v == "1") {
        long
    } else {
        short
    }
}

/// `arping -b` (every probe broadcast, so every speaker that answers is seen) from the client:
/// (MAC, round-trip ms) per reply.
fn arping_broadcast(client: &Netns, count: u32) -> Result<Vec<(String, f64)>> {
    let out = client
        .command("arping")
        .args([
            "-b",
            "-c",
            &count.to_string(),
            "-w",
            &(count + 1).to_string(),
        ])
        .args(["-I", "eth0", VIP4])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let mac = l[l.find('[')? + 1..l.find(']')?].to_lowercase();
            let ms = l
                .split_whitespace()
                .find_map(|w| w.strip_suffix("ms"))?
                .parse()
                .ok()?;
            Some((mac, ms))
        })
        .collect())
}

/// Partition. Topology: one bridge; client on port p0, node-0 on p1, node-1 on p2. The cut sets
/// p1 and p2 `isolated` (bridge port isolation): the nodes no longer reach each other, the
/// client (a non-isolated port) still reaches both. memberlist then sees two halves of one
/// member each, both elect themselves and both answer ARP for the address: every broadcast probe
/// gets two replies and the client's neighbour entry holds whichever came last. When the cut
/// heals, the nodes re-join (each retries its join every second while alone) and the original
/// winner is again the only one answering.
#[test]
fn layer2_partition_both_halves_answer_then_heal_to_one_winner() -> Result<()> {
    if skip() || !ferrolb_e2e::have_programs(&["bridge", "arping"]) {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    let addrs = ["192.0.2.11:7946", "192.0.2.12:7946"];
    for i in 0..2 {
        lab.serve(i)?;
        let extra = vec![
            "--ml-bind".to_string(),
            addrs[i].to_string(),
            "--ml-join".to_string(),
            addrs[1 - i].to_string(),
        ];
        lab.start_speaker_with(i, &extra)?;
    }
    let one_answerer = |lab: &Lab| {
        arping_broadcast(&lab.client, 3)
            .map(|r| r.len() == 3 && r.iter().all(|(m, _)| *m == r[0].0))
            .unwrap_or(false)
    };
    lab.wait_for(Duration::from_secs(20), "a single ARP answerer", || {
        one_answerer(&lab)
    })?;
    let winner = arping_broadcast(&lab.client, 1)?
        .first()
        .map(|(m, _)| m.clone())
        .context("no reply")?;
    let macs: Vec<String> = lab.nodes.iter().map(|n| n.mac.clone()).collect();

    let cuts = size(1, 5);
    for round in 0..cuts {
        let joins = |lab: &Lab, i: usize| lab.log(i).matches("event=Join").count();
        let joins_before = [joins(&lab, 0), joins(&lab, 1)];
        let sw = lab.switch.netns();
        for p in ["p1", "p2"] {
            sw.exec("bridge", &["link", "set", "dev", p, "isolated", "on"])?;
        }
        let cut = Instant::now();
        let mut replies = Vec::new();
        lab.wait_for(Duration::from_secs(15), "both halves answer", || {
            replies = arping_broadcast(&lab.client, 2).unwrap_or_default();
            macs.iter().all(|m| replies.iter().any(|(r, _)| r == m))
        })?;
        let split_after = cut.elapsed();
        // TCP goes to whichever MAC the client's neighbour entry holds.
        let served = lab.tcp(&format!("TCP4:{VIP4}:8080")).unwrap_or_default();
        let neigh = lab.client_neigh(VIP4).unwrap_or_default();
        eprintln!(
            "measured: partition {round}: both nodes answer ARP {} ms after the cut \
             ({} replies to 2 broadcast probes); client entry -> {neigh}, TCP served by {served}",
            split_after.as_millis(),
            replies.len()
        );
        ensure!(macs.contains(&neigh), "client entry {neigh}");

        for p in ["p1", "p2"] {
            sw.exec("bridge", &["link", "set", "dev", p, "isolated", "off"])?;
        }
        let healed = Instant::now();
        lab.wait_for(Duration::from_secs(20), "both see each other again", || {
            (0..2).all(|i| joins(&lab, i) > joins_before[i])
        })?;
        let rejoined = healed.elapsed();
        lab.wait_for(Duration::from_secs(20), "one answerer after heal", || {
            one_answerer(&lab)
        })?;
        let after = arping_broadcast(&lab.client, 3)?;
        eprintln!(
            "measured: heal {round}: members see each other {} ms after the cut is undone; \
             one ARP answerer confirmed after {} ms (3-probe arping checks included)",
            rejoined.as_millis(),
            healed.elapsed().as_millis()
        );
        ensure!(
            after.iter().all(|(m, _)| *m == winner),
            "after heal {after:?}, want {winner}"
        );
        // The loser's takeover traffic stopped; the winner's announcements move the client back.
        lab.wait_for(
            Duration::from_secs(10),
            "client entry back at the winner",
            || {
                lab.client_neigh(VIP4).as_deref() == Some(winner.as_str())
                    || arping_broadcast(&lab.client, 1)
                        .map(|r| r.iter().all(|(m, _)| *m == winner))
                        .unwrap_or(false)
            },
        )?;
    }
    Ok(())
}

/// A Python AF_PACKET sender (stdlib only) in the client namespace: broadcast ARP requests for
/// 200 other addresses (198.51.100.1-200) at `rate` frames/s for `secs`; prints `sent N in S`.
const ARP_FLOOD: &str = r#"
import socket, sys, time
rate, secs, dev = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
mac = bytes.fromhex(open('/sys/class/net/%s/address' % dev).read().strip().replace(':', ''))
frames = [b'\xff' * 6 + mac + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x01' + mac
          + bytes([192, 0, 2, 1]) + b'\x00' * 6 + bytes([198, 51, 100, 1 + i]) for i in range(200)]
batch = max(1, rate // 1000)
start = time.monotonic()
sent = 0
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    due = int(now * rate)
    if sent >= due:
        time.sleep(0.0005)
        continue
    for i in range(min(batch, due - sent)):
        try:
            s.send(frames[(sent + i) % 200])
        except OSError:
            pass
    sent += min(batch, due - sent)
print('sent %d in %.3f' % (sent, time.monotonic() - start))
"#;

/// ARP flood: ARP requests for other addresses (which the kernel filter must pass, it cannot
/// know the addresses) at 100k frames/s or as fast as the sender gets; the speaker's user CPU is
/// measured and ARP for the VIP keeps its latency.
#[test]
fn arp_flood_for_other_addresses_keeps_vip_answers_fast() -> Result<()> {
    if skip() || !ferrolb_e2e::have_programs(&["python3", "arping"]) {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    lab.start_speaker(0)?;
    let want = lab.nodes[0].mac.clone();
    lab.wait_for(Duration::from_secs(20), "first ARP reply", || {
        lab.arping(1).map(|m| !m.is_empty()).unwrap_or(false)
    })?;
    let pid = lab.nodes[0]
        .speaker
        .as_ref()
        .map(Child::id)
        .context("no speaker")?;
    let quiet = arping_broadcast(&lab.client, 5)?;
    ensure!(quiet.len() == 5, "{quiet:?}");
    let secs = size(5, 60);
    let (u0, s0) = user_sys_ticks(pid)?;
    let t0 = Instant::now();
    // Two senders of 50k frames/s each: one Python process tops out around 25-30k/s here.
    let floods = (0..2)
        .map(|_| {
            lab.client
                .command("python3")
                .args(["-c", ARP_FLOOD, "50000", &secs.to_string(), "eth0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let during = arping_broadcast(&lab.client, (secs as u32).saturating_sub(2).max(3))?;
    let mut sent = 0.0;
    let mut report = String::new();
    for f in floods {
        let out = f.wait_with_output()?;
        let r = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        sent += r
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| {
                format!("flood sender: {r} {}", String::from_utf8_lossy(&out.stderr))
            })?;
        report.push_str(&format!("[{r}]"));
    }
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1) = user_sys_ticks(pid)?;
    let ms = |r: &[(String, f64)]| {
        let mut v: Vec<f64> = r.iter().map(|x| x.1).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (q_med, q_max) = ms(&quiet);
    ensure!(!during.is_empty(), "no ARP reply during the flood");
    let (d_med, d_max) = ms(&during);
    let user = (u1 - u0) as f64 / 100.0;
    let sys = (s1 - s0) as f64 / 100.0;
    eprintln!(
        "measured: ARP flood {:.0} frames/s for {secs} s ({report}); speaker CPU user {user:.2} s \
         ({:.1}% of a core), sys {sys:.2} s; VIP arping quiet median {q_med} ms max {q_max} ms, \
         during flood median {d_med} ms max {d_max} ms ({} of {} probes answered)",
        sent / secs as f64,
        user / wall * 100.0,
        during.len(),
        (secs as u32).saturating_sub(2).max(3)
    );
    ensure!(during.iter().all(|(m, _)| *m == want));
    Ok(())
}

/// User and system CPU ticks (fields 14 and 15 of /proc/PID/stat).
fn user_sys_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    ensure!(f.len() > 13, "short /proc stat");
    Ok((f[11].parse()?, f[12].parse()?))
}
