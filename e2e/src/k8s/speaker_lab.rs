//! The speaker lab: `ferrolb speaker`s against the real apiserver, each inside its own node
//! namespace on a shared bridge, and a client namespace that probes with real `arping`.
//!
//! A namespace cannot reach the host's loopback, where the apiserver listens, so each node gets
//! a forwarder: inside the node, `socat` listens on 127.0.0.1:<apiserver port> and connects to a
//! unix socket on the host (a file, reachable from every namespace), where a host `socat`
//! forwards to the apiserver. The kubeconfig therefore works unchanged inside the namespaces
//! (same address and port, the certificate's 127.0.0.1 SAN still matches).
//!
//! Addresses: client 192.0.2.1, nodes 192.0.2.11, .12, ...; a router added with
//! [`SpeakerLab::add_host`] at 192.0.2.254 peers with them using [`BGP_BIRD`].
//!
//! Must not: attach anything to the host's interfaces (only the unix socket and loopback
//! forwarders are on the host), or leave a namespace or process behind (all removed on drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::objects::create_node;
use super::{TestEnv, APPS, SPEAKER_NS, WAIT};
use crate::netns::{Netns, Switch};
use crate::probe;
use crate::procfs::kill_with_children;
use crate::wait::wait_for;

/// What every speaker of the lab gets as `FERROLB_ML_SECRET` (the memberlist key).
pub const ML_SECRET: &str = "k8s-speaker-e2e-secret";

/// BIRD on a router at 192.0.2.254 (AS 64513), passive, importing from `node-a` (protocol
/// `from_a`) and `node-b` (`from_b`), both AS 64512.
pub const BGP_BIRD: &str = r#"
router id 192.0.2.254;
protocol device {}
protocol bgp from_a {
  local 192.0.2.254 as 64513; neighbor 192.0.2.11 as 64512; passive on;
  ipv4 { import all; export none; };
}
protocol bgp from_b {
  local 192.0.2.254 as 64513; neighbor 192.0.2.12 as 64512; passive on;
  ipv4 { import all; export none; };
}
"#;

/// The apiserver's port, from the kubeconfig's `server: https://127.0.0.1:PORT`.
pub fn apiserver_port(kubeconfig: &std::path::Path) -> anyhow::Result<u16> {
    let text = std::fs::read_to_string(kubeconfig)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .context("no server: https://127.0.0.1:PORT in the kubeconfig")
}

/// One node of the lab: a namespace on the bridge, its address and MAC, its speaker.
#[derive(Debug)]
pub struct SpeakerNode {
    /// The Node object's name (`node-a`, `node-b`, ...).
    pub name: String,
    pub ip: String,
    pub mac: String,
    /// `ferrolb speaker`, once started.
    pub speaker: Option<Child>,
    /// The speaker's stdout and stderr.
    pub log: PathBuf,
    // Dropped after the speaker: kills the forwarder and removes the namespace.
    pub ns: Netns,
}

impl Drop for SpeakerNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.speaker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bridge, node namespaces reaching the apiserver through forwarders, a client namespace.
#[derive(Debug)]
pub struct SpeakerLab {
    pub nodes: Vec<SpeakerNode>,
    /// The client on the bridge (192.0.2.1), where ARP probes come from.
    pub client_ns: Netns,
    /// The host end of the path to the apiserver (kill it to cut the speakers off).
    pub host_forwarder: Option<Child>,
    kubeconfig: PathBuf,
    /// The test environment's state directory (logs, the unix socket).
    pub dir: PathBuf,
    _switch: Switch,
}

impl SpeakerLab {
    /// `n` nodes `node-a`, `node-b`, ... at 192.0.2.11, .12, ...; RBAC from the manifests, the
    /// speaker runs as the ServiceAccount `metallb-system/speaker`.
    pub async fn new(env: &TestEnv, n: usize) -> anyhow::Result<SpeakerLab> {
        crate::netns::remove_stale();
        let base = crate::workspace_root().join("manifests").join("base");
        env.apply_manifest(&base.join("namespace.yaml")).await?;
        env.apply_manifest(&base.join("rbac.yaml")).await?;
        env.namespace(APPS).await?;
        let dir = env.state_dir().to_path_buf();
        let port = apiserver_port(env.kubeconfig())?;
        let sock = dir.join("apiserver.sock");
        let host_forwarder = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the host socat forwarder")?;
        let mut switch = Switch::create()?;
        let client_ns = Netns::create("kcl")?;
        switch.attach(&client_ns, "eth0")?;
        client_ns.add_addr("eth0", "192.0.2.1/24")?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = Netns::create("knd")?;
            switch.attach(&ns, "eth0")?;
            let ip = format!("192.0.2.{}", 11 + i);
            ns.add_addr("eth0", &format!("{ip}/24"))?;
            ns.spawn(
                "socat",
                &[
                    &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                    &format!("UNIX-CONNECT:{}", sock.display()),
                ],
            )?;
            let name = format!("node-{}", (b'a' + i as u8) as char);
            nodes.push(SpeakerNode {
                mac: ns.mac("eth0")?,
                log: dir.join(format!("speaker-{name}.log")),
                name,
                ip,
                speaker: None,
                ns,
            });
        }
        let lab = SpeakerLab {
            nodes,
            client_ns,
            host_forwarder: Some(host_forwarder),
            kubeconfig: env.service_account_kubeconfig("speaker"),
            dir,
            _switch: switch,
        };
        for node in &lab.nodes {
            create_node(&env.client(), &node.name, &node.ip).await?;
        }
        Ok(lab)
    }

    /// Starts `ferrolb speaker` in node `i`'s namespace.
    pub fn start_speaker(&mut self, i: usize, extra: &[&str]) -> anyhow::Result<()> {
        let bin = crate::ferrolb_bin()?;
        let node = &mut self.nodes[i];
        let out = std::fs::File::create(&node.log)?;
        let child = node
            .ns
            .command(&bin.to_string_lossy())
            .arg("speaker")
            .args(["--node-name", &node.name, "--namespace", SPEAKER_NS])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--metrics-addr", "127.0.0.1:7473"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("FERROLB_ML_SECRET", ML_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .context("spawn ferrolb speaker")?;
        node.speaker = Some(child);
        Ok(())
    }

    /// Another host on the segment (e.g. a router) at `cidr`.
    pub fn add_host(&mut self, tag: &str, cidr: &str) -> anyhow::Result<Netns> {
        let ns = Netns::create(tag)?;
        self._switch.attach(&ns, "eth0")?;
        ns.add_addr("eth0", cidr)?;
        Ok(ns)
    }

    /// Memberlist flags for node `i`: bind on its address; peers from the Node objects.
    pub fn ml_flags(&self, i: usize) -> Vec<String> {
        vec![
            "--ml-bind".into(),
            format!("{}:7946", self.nodes[i].ip),
            "--ml-join-nodes".into(),
        ]
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `arping -c COUNT` from the client: the MAC of every reply.
    pub fn arping(&self, vip: &str, count: u32) -> anyhow::Result<Vec<String>> {
        let replies = probe::arping(&self.client_ns, &[], "eth0", vip, count)?;
        Ok(replies.into_iter().map(|(mac, _)| mac).collect())
    }

    /// Waits until `count` ARP requests in a row are all answered by node `want` (any node when
    /// `None`); returns the index of the answering node.
    pub fn wait_answered_by(
        &self,
        vip: &str,
        want: Option<usize>,
        limit: Duration,
    ) -> anyhow::Result<usize> {
        let start = Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < limit {
            last = self.arping(vip, 2)?;
            if last.len() == 2 && last[0] == last[1] {
                let who = self.nodes.iter().position(|n| n.mac == last[0]);
                if let Some(who) = who {
                    if want.is_none_or(|w| w == who) {
                        return Ok(who);
                    }
                }
            }
        }
        bail!(
            "{vip}: not answered by {:?} within {limit:?} (last replies {last:?})\n{}",
            want.map(|w| &self.nodes[w].name),
            self.logs()
        )
    }

    /// Probes `vip` from the client with a fresh one-shot `arping` every 25 ms (each waits up to
    /// 1 s for its reply; iputils takes whole seconds only) until one gets an answer from `mac`;
    /// returns how long after `since` that answer came.
    pub fn first_reply_from(
        &self,
        vip: &str,
        mac: &str,
        since: Instant,
        limit: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        let mut running: Vec<Child> = Vec::new();
        let mut next = Instant::now();
        let mut found = None;
        while found.is_none() && since.elapsed() < limit {
            if Instant::now() >= next {
                running.push(
                    self.client_ns
                        .command("arping")
                        .args(["-c", "1", "-w", "1", "-I", "eth0", vip])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()?,
                );
                next += Duration::from_millis(25);
            }
            let mut i = 0;
            while i < running.len() {
                if running[i].try_wait()?.is_some() {
                    let out = running.remove(i).wait_with_output()?;
                    let at = since.elapsed();
                    if found.is_none()
                        && probe::arping_macs(&String::from_utf8_lossy(&out.stdout))
                            .iter()
                            .any(|m| m == mac)
                    {
                        found = Some(at);
                    }
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for mut c in running {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(found)
    }

    /// The speaker's metric `name` on node `i` (through curl inside the namespace).
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let body = self.nodes[i]
            .ns
            .exec_stdout("curl", &["-s", "-m", "2", "http://127.0.0.1:7473/metrics"])
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn wait_metric(&self, i: usize, name: &str, value: f64) -> anyhow::Result<()> {
        let what = format!("{}: {name} = {value}", self.nodes[i].name);
        let check = || self.metric(i, name) == Some(value);
        let diagnostics = || format!("last {:?}\n{}", self.metric(i, name), self.logs());
        wait_for(WAIT, Duration::from_millis(200), &what, check, diagnostics)?;
        Ok(())
    }
}

impl Drop for SpeakerLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.nodes.clear();
        if let Some(mut f) = self.host_forwarder.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("apiserver.sock"));
    }
}

/// Starts `socat` on the host forwarding 127.0.0.1:`from` to 127.0.0.1:`to` (loopback only).
pub fn loopback_forwarder(from: u16, to: u16) -> anyhow::Result<Forwarder> {
    let child = Command::new("socat")
        .arg(format!("TCP-LISTEN:{from},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!("TCP:127.0.0.1:{to}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start a loopback socat forwarder")?;
    Ok(Forwarder(child))
}

/// A forwarder process, killed with its per-connection children on drop (also when the test
/// fails).
#[derive(Debug)]
pub struct Forwarder(Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        kill_with_children(&mut self.0);
    }
}
