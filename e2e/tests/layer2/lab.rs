//! The layer2 lab: a bridge, `n` node namespaces (192.0.2.11.., 2001:db8::11..) that hold the
//! service addresses on `lo` with the kernel kept silent, a client namespace (192.0.2.1), and
//! the files `ferrolb standalone` reads.
//!
//! Must not: leave a namespace or a speaker behind (both removed on drop; the speakers' logs
//! are kept only when the test fails).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferrolb_e2e::netns::{Netns, Switch};
use ferrolb_e2e::probe;
use ferrolb_e2e::wait::wait_for;

pub const VIP4: &str = "192.0.2.100";
pub const VIP6: &str = "2001:db8::100";

pub const CONFIG: &str = "\
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

pub const SERVICES: &str = "\
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

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub mac: String,
    /// Its port on the bridge (in the switch namespace).
    pub port: String,
    pub speaker: Option<Child>,
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
#[derive(Debug)]
pub struct Lab {
    pub nodes: Vec<Node>,
    /// The client on the bridge (192.0.2.1, 2001:db8::1).
    pub client: Netns,
    dir: PathBuf,
    // Dropped last: the segment outlives the hosts attached to it.
    pub switch: Switch,
}

impl Lab {
    pub fn new(n: usize) -> Result<Lab> {
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
    pub fn start_speaker(&mut self, i: usize) -> Result<()> {
        self.start_speaker_with(i, &[])
    }

    /// Starts `ferrolb standalone` on node `i` with `extra` arguments.
    pub fn start_speaker_with(&mut self, i: usize, extra: &[String]) -> Result<()> {
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
    pub fn kill_speaker(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].speaker.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.join(format!("{}.log", self.nodes[i].name))).unwrap_or_default()
    }

    /// Fails (with the speaker logs) when `what` is not true within `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, check: impl FnMut() -> bool) -> Result<()> {
        let logs = || {
            (0..self.nodes.len())
                .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        wait_for(limit, Duration::from_millis(100), what, check, logs)?;
        Ok(())
    }

    /// `arping -c COUNT` from the client: the MACs of every reply, lower-case.
    pub fn arping(&self, count: u32) -> Result<Vec<String>> {
        let replies = probe::arping(&self.client, &[], "eth0", VIP4, count)?;
        Ok(replies.into_iter().map(|(mac, _)| mac).collect())
    }

    /// `arping -b` (every probe broadcast, so every speaker that answers is seen) from the
    /// client: (MAC, round-trip ms) per reply.
    pub fn arping_broadcast(&self, count: u32) -> Result<Vec<(String, f64)>> {
        probe::arping(&self.client, &["-b"], "eth0", VIP4, count)
    }

    /// `ndisc6` from the client: the Target link-layer address of the Neighbor Advertisement.
    pub fn ndisc6(&self) -> Result<Option<String>> {
        let out = self
            .client
            .command("ndisc6")
            .args(["-n", "-r", "2", "-w", "500", VIP6, "eth0"])
            .output()?;
        Ok(probe::ndisc6_target(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The client's neighbour-table MAC for `ip`, if it has one.
    pub fn client_neigh(&self, ip: &str) -> Option<String> {
        let out = self.client.ip(&["neigh", "show", ip]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// A TCP server on the VIPs in node `i` that answers with the node's name.
    pub fn serve(&self, i: usize) -> Result<()> {
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
    pub fn tcp(&self, target: &str) -> Result<String> {
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
