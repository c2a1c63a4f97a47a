//! What the fault tests share: `ferrolb standalone` as a process, the BGP lab (router and node
//! namespaces on one veth, 192.0.2.1 and 192.0.2.2) with its config, Services and BIRD, and the
//! desired and announced prefix sets.
//!
//! Must not: leave a namespace or a process behind (removed on drop).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::procfs;
use ferrolb_e2e::routers::Bird;
use ferrolb_e2e::scratch::Dir;
use ferrolb_e2e::wait::wait_for;

/// `short` in CI, `long` with `FERROLB_SOAK=1`.
pub fn size(short: usize, long: usize) -> usize {
    if ferrolb_e2e::soak() {
        long
    } else {
        short
    }
}

/// `ferrolb standalone` in a namespace, output to `<dir>/<log>`; SIGKILLed on drop.
#[derive(Debug)]
pub struct Standalone {
    child: Child,
}

impl Standalone {
    pub fn start(
        ns: &Netns,
        dir: &Path,
        node: &str,
        log: &str,
        extra: &[&str],
    ) -> Result<Standalone> {
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))?;
        let child = ns
            .command(&bin.to_string_lossy())
            .args(["standalone", "--node", node])
            .args(["--config", "config.yaml", "--services", "services.yaml"])
            .args(["--state", &format!("state-{node}.json")])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Standalone { child })
    }

    /// The ferrolb process id (`ip netns exec` execs the program, so the child is ferrolb).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> Result<u64> {
        procfs::rss_kib(self.pid())
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it holds (the time it took) or `limit` passes (an error).
pub fn wait_until(limit: Duration, what: &str, check: impl FnMut() -> bool) -> Result<Duration> {
    wait_for(limit, Duration::from_millis(50), what, check, String::new)
}

pub const BGP_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.0/25
";

/// `n` LoadBalancer Services `svc-<i>` for i in `ids`.
pub fn services(ids: impl IntoIterator<Item = usize>) -> String {
    let mut s = String::new();
    for i in ids {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80, protocol: TCP}}]\n"
        ));
    }
    s
}

/// Router and node namespaces on one veth (router 192.0.2.1, node 192.0.2.2), config written.
#[derive(Debug)]
pub struct BgpLab {
    pub dir: Dir,
    pub router: Netns,
    pub node: Netns,
}

impl BgpLab {
    pub fn new(tag: &str, svcs: &str) -> Result<BgpLab> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        router.add_addr("r0", "192.0.2.1/24")?;
        node.add_addr("n0", "192.0.2.2/24")?;
        let dir = Dir::new(&format!("faults-{tag}"))?;
        dir.write("config.yaml", BGP_CONFIG)?;
        dir.write("services.yaml", svcs)?;
        Ok(BgpLab { dir, router, node })
    }

    pub fn start(&self) -> Result<Standalone> {
        Standalone::start(&self.node, self.dir.path(), "node-0", "node.log", &[])
    }

    pub fn bird(&self) -> Result<Bird> {
        Bird::start(&self.router, self.dir.path(), BIRD_CONF)
    }
}

pub const BIRD_CONF: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp node0 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512; passive on;
  error wait time 1, 2;
  ipv4 { import all; export none; };
}
"#;

/// The prefixes BIRD holds from the node (`show route protocol node0`).
pub fn bird_prefixes(bird: &Bird) -> BTreeSet<String> {
    bird.birdc(&["show", "route", "protocol", "node0"])
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| w.starts_with("198.51.100.") && w.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The /32s ferrolb assigned (its `--state` file) to the Services `svc-<i>`, i in `ids`.
pub fn desired_prefixes(dir: &Dir, ids: &BTreeSet<usize>) -> BTreeSet<String> {
    let v: serde_json::Value =
        serde_json::from_str(&dir.read("state-node-0.json")).unwrap_or_default();
    let mut out = BTreeSet::new();
    if let Some(m) = v.get("assignments").and_then(|a| a.as_object()) {
        for (k, e) in m {
            let id = k
                .strip_prefix("default/svc-")
                .and_then(|n| n.parse::<usize>().ok());
            if !id.is_some_and(|i| ids.contains(&i)) {
                continue;
            }
            for ip in e
                .get("ips")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(s) = ip.as_str() {
                    out.insert(format!("{s}/32"));
                }
            }
        }
    }
    out
}
