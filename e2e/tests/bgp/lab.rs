//! The BGP labs: router and node namespaces on one veth link (192.0.2.0/24, 2001:db8::/64) and
//! `ferrolb standalone` on the node. [`Lab`] brings its own BIRD with four sessions (eBGP with
//! MD5, iBGP with a source address, a wrong MD5 key, IPv6); [`Simple`] leaves the router to the
//! test (BIRD, GoBGP or FRR).
//!
//! Must not: leave a namespace or a process behind (removed on drop).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::routers::Bird;
use ferrolb_e2e::wait::wait_for;

pub const CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
  hold-time: 3s
  password: right-secret
- peer-address: 192.0.2.3
  peer-asn: 64512
  my-asn: 64512
  source-address: 192.0.2.5
- peer-address: 192.0.2.4
  peer-asn: 64513
  my-asn: 64512
  password: wrong-secret
  source-address: 192.0.2.6
- peer-address: 2001:db8::1
  peer-asn: 64513
  my-asn: 64512
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  - 2001:db8:100::10/128
  bgp-advertisements:
  - localpref: 150
    communities: [tag]
";

pub const SVC4: &str = "\
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

pub const SVC6: &str = "\
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

pub const BIRD_CONF: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp ebgp4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512; passive on;
  password "right-secret";
  ipv4 { import all; export none; };
}
protocol bgp ibgp4 {
  local 192.0.2.3 as 64512; neighbor 192.0.2.5 as 64512; passive on;
  direct;
  ipv4 { import all; export none; };
}
protocol bgp wrong4 {
  local 192.0.2.4 as 64513; neighbor 192.0.2.6 as 64512; passive on;
  password "other-secret";
  ipv4 { import all; export none; };
}
protocol bgp ebgp6 {
  local 2001:db8::1 as 64513; neighbor 2001:db8::2 as 64512; passive on;
  ipv6 { import all; export none; };
}
"#;

#[derive(Debug)]
pub struct Lab {
    pub speaker: Option<Child>,
    pub bird: Bird,
    pub dir: PathBuf,
    pub router: Netns,
    pub node: Netns,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.speaker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Failures print the speaker's log themselves (wait_for).
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    pub fn new() -> Result<Lab> {
        Lab::start(CONFIG, &format!("{SVC4}---\n{SVC6}"), &[])
    }

    /// The lab with this configuration and these Services; `wrapper` (e.g. `setpriv ...`) runs
    /// ferrolb inside the node namespace when not empty.
    pub fn start(config: &str, services: &str, wrapper: &[&str]) -> Result<Lab> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        for a in [
            "192.0.2.1/24",
            "192.0.2.3/24",
            "192.0.2.4/24",
            "2001:db8::1/64",
        ] {
            router.add_addr("r0", a)?;
        }
        // One node address per session: Linux keys TCP MD5 by peer address, so BIRD's keys
        // for one address would apply to every session from it.
        for a in ["192.0.2.2/24", "192.0.2.5/24", "192.0.2.6/24"] {
            node.add_addr("n0", a)?;
        }
        node.add_addr("n0", "2001:db8::2/64")?;
        // One directory per lab (the router namespace's unique name): labs may run in parallel.
        let dir = std::env::temp_dir().join(format!("{}-bgp", router.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), config)?;
        fs::write(dir.join("services.yaml"), services)?;
        std::thread::sleep(Duration::from_millis(300));
        let bird = Bird::start(&router, &dir, BIRD_CONF)?;
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let log = fs::File::create(dir.join("node.log"))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = node.command(program);
                c.args(args).arg(&bin);
                c
            }
            None => node.command(&bin.to_string_lossy()),
        };
        let speaker = command
            .arg("standalone")
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--services")
            .arg(dir.join("services.yaml"))
            .arg("--node")
            .arg("node-0")
            .arg("--state")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Lab {
            speaker: Some(speaker),
            bird,
            dir,
            router,
            node,
        })
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Fails (with ferrolb's log and BIRD's protocols) when `check` is not true within `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, check: impl FnMut() -> bool) -> Result<()> {
        let diagnostics = || {
            format!(
                "--- ferrolb ---\n{}\n--- bird protocols ---\n{}",
                self.log(),
                self.bird.birdc(&["show", "protocols"]).unwrap_or_default()
            )
        };
        wait_for(limit, Duration::from_millis(100), what, check, diagnostics)?;
        Ok(())
    }

    pub fn route_has(&self, proto: &str, needle: &str) -> bool {
        self.bird
            .routes(proto)
            .map(|o| o.contains(needle))
            .unwrap_or(false)
    }
}

pub const SIMPLE_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
- peer-address: 2001:db8::1
  peer-asn: 64513
  my-asn: 64512
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64513
  source-address: 192.0.2.5
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  - 2001:db8:100::10/128
  bgp-advertisements:
  - localpref: 150
    communities: [tag]
";

/// Router and node namespaces on one veth link, a temp dir, ferrolb started on the node.
#[derive(Debug)]
pub struct Simple {
    pub speaker: Child,
    pub dir: PathBuf,
    pub node: Netns,
    pub router: Netns,
}

impl Drop for Simple {
    fn drop(&mut self) {
        let _ = self.speaker.kill();
        let _ = self.speaker.wait();
    }
}

impl Simple {
    pub fn new(tag: &str) -> Result<Simple> {
        Simple::start(tag, SIMPLE_CONFIG, &[])
    }

    /// The lab with this config; `args` go to `ferrolb standalone` after the usual ones.
    pub fn start(tag: &str, config: &str, args: &[&str]) -> Result<Simple> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        router.add_addr("r0", "192.0.2.1/24")?;
        router.add_addr("r0", "2001:db8::1/64")?;
        node.add_addr("n0", "192.0.2.2/24")?;
        // The iBGP session's source (the router's AS, peer-asn == my-asn).
        node.add_addr("n0", "192.0.2.5/24")?;
        node.add_addr("n0", "2001:db8::2/64")?;
        let dir = std::env::temp_dir().join(format!("flb-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), config)?;
        fs::write(dir.join("services.yaml"), format!("{SVC4}---\n{SVC6}"))?;
        std::thread::sleep(Duration::from_millis(300));
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let log = fs::File::create(dir.join("node.log"))?;
        let speaker = node
            .command(&bin.to_string_lossy())
            .args(["standalone", "--node", "node-0", "--config"])
            .arg(dir.join("config.yaml"))
            .arg("--services")
            .arg(dir.join("services.yaml"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Simple {
            speaker,
            dir,
            node,
            router,
        })
    }

    /// Fails (with ferrolb's log) when `check` is not true within `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, check: impl FnMut() -> bool) -> Result<()> {
        let log = || {
            let log = fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
            format!("--- ferrolb ---\n{log}")
        };
        wait_for(limit, Duration::from_millis(100), what, check, log)?;
        Ok(())
    }
}
