//! Membership end to end: three `ferrolb standalone` processes in node namespaces on one bridge
//! gossip over memberlist (`--ml-bind`, `--ml-join`, shared secret); a SIGKILLed speaker must be
//! dropped from the others' live set quickly, a SIGTERMed one leaves at once, and a speaker with
//! another secret never joins.
//!
//! Detection is read from the survivors' logs (`membership: live set changed ... event=Leave`),
//! polled every 5 ms. Root only; every namespace is removed on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_e2e::netns::{Netns, Switch};
use ferrolb_e2e::prereq::{require, Need::Root};
use ferrolb_e2e::wait::wait_for;

const CONFIG: &str = "\
address-pools:
- name: l2
  protocol: layer2
  addresses:
  - 198.51.100.100/32
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
";

const PORT: u16 = 7946;

struct Node {
    name: String,
    ip: String,
    ns: Netns,
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

struct Lab {
    nodes: Vec<Node>,
    dir: PathBuf,
    // Dropped last: the segment outlives the hosts attached to it.
    _switch: Switch,
}

impl Lab {
    fn new(n: usize, tag: &str) -> Result<Lab> {
        ferrolb_e2e::netns::remove_stale();
        let mut switch = Switch::create()?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = Netns::create("ml")?;
            switch.attach(&ns, "eth0")?;
            let ip = format!("198.51.100.{}", 11 + i);
            ns.add_addr("eth0", &format!("{ip}/24"))?;
            nodes.push(Node {
                name: format!("node-{i}"),
                ip,
                ns,
                speaker: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("flb-{}-ml-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), CONFIG)?;
        fs::write(dir.join("services.yaml"), SERVICES)?;
        fs::write(dir.join("secret"), "e2e-shared-secret\n")?;
        fs::write(dir.join("wrong-secret"), "another-secret\n")?;
        Ok(Lab {
            nodes,
            dir,
            _switch: switch,
        })
    }

    /// Starts `ferrolb standalone` on node `i`, joining node 0, with the secret file `secret`.
    fn start(&mut self, i: usize, secret: &str) -> Result<()> {
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let seed = format!("{}:{PORT}", self.nodes[0].ip);
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
            .arg("--ml-bind")
            .arg(format!("{}:{PORT}", node.ip))
            .arg("--ml-join")
            .arg(&seed)
            .arg("--ml-secret-file")
            .arg(self.dir.join(secret))
            .env("RUST_LOG", "info")
            .env_remove("FERROLB_ML_SECRET")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        node.speaker = Some(child);
        Ok(())
    }

    fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.join(format!("{}.log", self.nodes[i].name))).unwrap_or_default()
    }

    /// The live set node `i` logged last (from `membership: live set changed ... live=a,b`).
    fn last_live(&self, i: usize) -> Option<String> {
        self.log(i)
            .lines()
            .filter(|l| l.contains("membership: live set changed"))
            .filter_map(|l| l.split("live=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .next_back()
    }

    /// Waits until `check` holds, polling every 5 ms; returns the time it took or fails with
    /// every log after `limit`.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        check: impl FnMut() -> bool,
    ) -> Result<Duration> {
        let logs = || {
            (0..self.nodes.len())
                .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        wait_for(limit, Duration::from_millis(5), what, check, logs)
    }

    fn all_see(&self, live: &str) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].speaker.is_some() {
                self.wait_for(
                    Duration::from_secs(10),
                    &format!("node-{i} sees {live}"),
                    || self.last_live(i).as_deref() == Some(live),
                )?;
            }
        }
        Ok(())
    }

    fn signal(&mut self, i: usize, sig: &str) -> Result<()> {
        let child = self.nodes[i]
            .speaker
            .as_mut()
            .context("speaker not running")?;
        let st = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        anyhow::ensure!(st.success(), "kill {sig} failed");
        Ok(())
    }
}

#[test]
fn sigkilled_speaker_is_dropped_in_under_a_second() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let mut lab = Lab::new(3, "kill")?;
    for i in 0..3 {
        lab.start(i, "secret")?;
    }
    lab.all_see("node-0,node-1,node-2")?;
    // SIGKILL: no leave message, the process is simply gone.
    lab.signal(2, "-KILL")?;
    let took = lab.wait_for(Duration::from_secs(2), "node-0 drops node-2", || {
        lab.last_live(0).as_deref() == Some("node-0,node-1")
    })?;
    lab.wait_for(Duration::from_secs(2), "node-1 drops node-2", || {
        lab.last_live(1).as_deref() == Some("node-0,node-1")
    })?;
    println!(
        "membership e2e: SIGKILLed speaker dropped by node-0 after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(2), "detection took {took:?}");
    Ok(())
}

#[test]
fn sigtermed_speaker_leaves_and_wrong_secret_never_joins() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let mut lab = Lab::new(3, "term")?;
    lab.start(0, "secret")?;
    lab.start(1, "secret")?;
    lab.all_see("node-0,node-1")?;
    lab.start(2, "wrong-secret")?;
    // Several join attempts (one a second) and many gossip rounds.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(lab.last_live(0).as_deref(), Some("node-0,node-1"));
    assert_eq!(lab.last_live(1).as_deref(), Some("node-0,node-1"));
    let intruder = lab.nodes[2]
        .speaker
        .as_mut()
        .context("node-2 not started")?;
    assert!(
        intruder.try_wait()?.is_none(),
        "node-2 exited:\n{}",
        lab.log(2)
    );
    assert!(lab.log(2).contains("memberlist started"), "{}", lab.log(2));
    assert!(
        !lab.log(2).contains("live set changed"),
        "node-2 (wrong secret) saw a peer:\n{}",
        lab.log(2)
    );
    lab.signal(1, "-TERM")?;
    let took = lab.wait_for(Duration::from_secs(2), "node-0 sees node-1 leave", || {
        lab.last_live(0).as_deref() == Some("node-0")
    })?;
    for i in 0..3 {
        let log = lab.log(i);
        assert!(
            !log.contains("e2e-shared-secret") && !log.contains("another-secret"),
            "secret logged:\n{log}"
        );
    }
    println!(
        "membership e2e: SIGTERMed speaker gone from node-0 after {} ms",
        took.as_millis()
    );
    Ok(())
}
