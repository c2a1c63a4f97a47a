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
    _switch: Switch,
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
            switch.attach(&ns, "eth0")?;
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
                speaker: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("flb-{}-l2-{}", std::process::id(), n));
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
            _switch: switch,
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
