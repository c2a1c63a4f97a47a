//! `ferrolb standalone` end to end: the real binary, run inside a network namespace (only `lo`, so
//! its announcers touch nothing), killed with SIGKILL and restarted (same assignments), a breaking
//! config change refused (old assignments kept, loaded once the offending Service is gone), and
//! two nodes given the same files print the same assignments; the configuration as MetalLB's
//! custom resources (`serviceAllocation` honoured, a breaking change refused the same way); the OCI image built from the debug
//! binary runs `--version` and `config check` from its unpacked root filesystem.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrolb_e2e::netns::Netns;
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::scratch::Dir;

const WAIT: Duration = Duration::from_secs(15);

/// A running `ferrolb standalone` and the lines it printed on stdout.
struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(ns: &Netns, dir: &Path, node: &str) -> Result<Run> {
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let bin = bin.to_string_lossy().into_owned();
        let mut child = ns
            .command(&bin)
            .args([
                "standalone",
                "--config",
                "config.yaml",
                "--services",
                "services.yaml",
                "--node",
                node,
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ferrolb standalone")?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Run {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Waits until a printed line satisfies `pred`; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "timed out waiting for {what}; saw {:?}",
                self.seen
            );
            if let Ok(l) = self.lines.recv_timeout(left) {
                self.seen.push(l.clone());
                if pred(&l) {
                    return Ok(l);
                }
            }
        }
    }

    /// Waits until every Service in `names` has an assignment line; returns the last per Service.
    fn assignments(&mut self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        while names.iter().any(|n| !out.contains_key(*n)) {
            let l = self.wait_for("assignments", |l| l.contains(" -> "))?;
            if let Some((k, v)) = l.split_once(" -> ") {
                out.insert(k.to_string(), v.to_string());
            }
        }
        Ok(out)
    }

    fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then the exit status must be success within the wait.
    fn terminate(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        // The child is `ip netns exec`, which execs ferrolb: same pid.
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                anyhow::ensure!(st.success(), "exit status {st}");
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn config(cidr: &str) -> String {
    format!("address-pools:\n- name: pool-a\n  protocol: layer2\n  addresses: [{cidr}]\n")
}

fn services(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\n  namespace: default\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn state(dir: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("ferrolb-state.json"))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn sigkill_and_restart_keeps_every_assignment() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let ns = Netns::create("sa")?;
    let dir = Dir::new("standalone-restart")?;
    dir.write("config.yaml", &config("192.0.2.0/29"))?;
    dir.write("services.yaml", &services(&["c", "d"]))?;
    let mut run = Run::start(&ns, dir.path(), "node-1")?;
    let first = run.assignments(&["default/c", "default/d"])?;
    assert_eq!(first["default/c"], "192.0.2.0 (pool-a)");
    assert_eq!(first["default/d"], "192.0.2.1 (pool-a)");
    run.kill()?;
    assert_eq!(
        state(dir.path())?["assignments"]["default/c"]["ips"][0],
        "192.0.2.0"
    );

    // Services that sort first appear while it is down: a fresh computation would give them
    // .0 and .1; the restarted process keeps c and d where they were.
    dir.write("services.yaml", &services(&["a", "b", "c", "d"]))?;
    let mut run = Run::start(&ns, dir.path(), "node-1")?;
    let second = run.assignments(&["default/a", "default/b", "default/c", "default/d"])?;
    assert_eq!(second["default/c"], first["default/c"]);
    assert_eq!(second["default/d"], first["default/d"]);
    assert_eq!(second["default/a"], "192.0.2.2 (pool-a)");
    assert_eq!(second["default/b"], "192.0.2.3 (pool-a)");
    run.kill()?;

    // And once more: nothing moves.
    let mut run = Run::start(&ns, dir.path(), "node-1")?;
    let third = run.assignments(&["default/a", "default/b", "default/c", "default/d"])?;
    assert_eq!(third, second);
    run.terminate()
}

#[test]
fn breaking_config_change_is_refused_until_the_service_is_gone() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let ns = Netns::create("sb")?;
    let dir = Dir::new("standalone-refuse")?;
    dir.write("config.yaml", &config("192.0.2.0/29"))?;
    dir.write("services.yaml", &services(&["a", "b"]))?;
    let mut run = Run::start(&ns, dir.path(), "node-1")?;
    let before = run.assignments(&["default/a", "default/b"])?;
    assert_eq!(before["default/a"], "192.0.2.0 (pool-a)");

    dir.write("config.yaml", &config("192.0.2.1/32"))?;
    let refusal = run.wait_for("refusal", |l| l.starts_with("config refused: service"))?;
    assert!(
        refusal.contains("default/a") && refusal.contains("192.0.2.0"),
        "{refusal}"
    );
    run.wait_for("keeping", |l| {
        l.contains("keeping the previous configuration")
    })?;
    let st = state(dir.path())?;
    assert_eq!(st["assignments"]["default/a"]["ips"][0], "192.0.2.0");
    assert_eq!(st["assignments"]["default/b"]["ips"][0], "192.0.2.1");

    // Deleting the offending Service lets the new config load; b keeps its address.
    dir.write("services.yaml", &services(&["b"]))?;
    run.wait_for("config loaded", |l| l == "config loaded")?;
    run.wait_for("release", |l| l == "default/a released 192.0.2.0")?;
    let st = state(dir.path())?;
    assert!(st["assignments"].get("default/a").is_none());
    assert_eq!(st["assignments"]["default/b"]["ips"][0], "192.0.2.1");
    run.terminate()
}

/// The same pool as [`config`], written as MetalLB's custom resources (with a second pool pinned
/// to namespace `team` by `serviceAllocation`).
fn crd_config(cidr: &str) -> String {
    format!(
        "apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {{name: pool-a, namespace: metallb-system}}\n  spec: {{addresses: ['{cidr}']}}\n\
         - apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {{name: team, namespace: metallb-system}}\n  spec: {{addresses: [198.51.100.0/30], serviceAllocation: {{priority: 1, namespaces: [team]}}}}\n\
         - apiVersion: metallb.io/v1beta1\n  kind: L2Advertisement\n  metadata: {{name: all, namespace: metallb-system}}\n"
    )
}

#[test]
fn crd_config_assigns_by_service_allocation_and_a_breaking_change_is_refused() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let ns = Netns::create("sc")?;
    let dir = Dir::new("standalone-crds")?;
    dir.write("config.yaml", &crd_config("192.0.2.0/29"))?;
    let team = services(&["t"]).replace("namespace: default", "namespace: team");
    dir.write(
        "services.yaml",
        &format!("{}---\n{team}", services(&["a", "b"])),
    )?;
    let mut run = Run::start(&ns, dir.path(), "node-1")?;
    let before = run.assignments(&["default/a", "default/b", "team/t"])?;
    assert_eq!(before["default/a"], "192.0.2.0 (pool-a)");
    assert_eq!(before["team/t"], "198.51.100.0 (team)");

    // Shrinking the IPAddressPool away from a's address is refused, as a ConfigMap change is.
    dir.write("config.yaml", &crd_config("192.0.2.1/32"))?;
    let refusal = run.wait_for("refusal", |l| l.starts_with("config refused: service"))?;
    assert!(
        refusal.contains("default/a") && refusal.contains("192.0.2.0"),
        "{refusal}"
    );
    let st = state(dir.path())?;
    assert_eq!(st["assignments"]["default/a"]["ips"][0], "192.0.2.0");
    dir.write("services.yaml", &format!("{}---\n{team}", services(&["b"])))?;
    run.wait_for("config loaded", |l| l == "config loaded")?;
    let st = state(dir.path())?;
    assert!(st["assignments"].get("default/a").is_none());
    assert_eq!(st["assignments"]["default/b"]["ips"][0], "192.0.2.1");
    assert_eq!(st["assignments"]["team/t"]["ips"][0], "198.51.100.0");
    run.terminate()
}

#[test]
fn two_nodes_given_the_same_files_agree() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    let names = ["web", "api", "db", "cache", "queue"];
    let keys: Vec<String> = names.iter().map(|n| format!("default/{n}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut results = Vec::new();
    let mut runs = Vec::new();
    let mut keep = Vec::new();
    for node in ["node-1", "node-2"] {
        let ns = Netns::create("sn")?;
        let dir = Dir::new(&format!("standalone-{node}"))?;
        dir.write("config.yaml", &config("198.51.100.8/29"))?;
        dir.write("services.yaml", &services(&names))?;
        let mut run = Run::start(&ns, dir.path(), node)?;
        results.push(run.assignments(&keys)?);
        runs.push(run);
        keep.push((ns, dir));
    }
    assert_eq!(results[0], results[1]);
    for run in runs {
        run.terminate()?;
    }
    Ok(())
}

/// Namespaces whose name starts with `prefix` (`ip netns list`).
fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The demo script and its namespaces (`flb-demo-<script pid>-*`): on drop the script gets
/// SIGTERM (its trap removes what it made), and anything still left of it is removed by name.
struct Demo {
    child: Child,
    prefix: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for ns in namespaces_named(&self.prefix) {
            for pid in std::process::Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .status();
        }
    }
}

/// Reads a pipe to the end on a thread.
fn drain(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = BufReader::new(pipe).read_to_string(&mut text);
        text
    })
}

/// `make demo` (e2e/demo/demo.sh) with the binary under test: every step passes, the output has
/// each section's key lines, the run takes under a minute, and its namespaces are gone after.
#[test]
fn demo_script_passes_every_step_and_cleans_up() -> Result<()> {
    let needs = [
        Root,
        Program("bird"),
        Program("birdc"),
        Program("arping"),
        Program("curl"),
        Program("python3"),
    ];
    if !require(&needs)? {
        return Ok(());
    }
    let script = ferrolb_e2e::workspace_root().join("e2e/demo/demo.sh");
    let started = Instant::now();
    let mut child = std::process::Command::new("bash")
        .arg(&script)
        .env("FERROLB_BIN", ferrolb_e2e::ferrolb_bin()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the demo script")?;
    let prefix = format!("flb-demo-{}-", child.id());
    let out = drain(child.stdout.take().context("no stdout")?);
    let err = drain(child.stderr.take().context("no stderr")?);
    let mut demo = Demo { child, prefix };
    let deadline = started + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = demo.child.try_wait()? {
            break st;
        }
        anyhow::ensure!(Instant::now() < deadline, "demo still running after 120 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    eprintln!("{out}");
    anyhow::ensure!(status.success(), "demo exited {status}\n{err}");
    for want in [
        "== 1. Assignments",
        "default/web -> 192.0.2.200 (lan)",
        "kube-system/dns -> 192.0.2.206 (lan)",
        "default/shop -> 198.51.100.16 (bgp)",
        "node-b printed the same 3 assignments.",
        "== 2. BGP",
        "via 192.0.2.11 on eth0",
        "via 192.0.2.12 on eth0",
        "Unicast reply from 192.0.2.200",
        "is the layer2 winner for 192.0.2.200",
        "== 4. curl",
        "-> hello from node-",
        "traffic stopped for ",
        "config refused: service kube-system/dns ip 192.0.2.206",
        "config refused: keeping the previous configuration",
        "(exit status 1)",
        "(exit status 0)",
        "config loaded",
        "demo: all 6 steps passed",
    ] {
        anyhow::ensure!(out.contains(want), "demo output lacks {want:?}");
    }
    let outage: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("traffic stopped for "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no outage figure")?;
    eprintln!(
        "demo: {:.1} s in all, layer2 failover outage {outage} ms",
        took.as_secs_f64()
    );
    anyhow::ensure!(outage < 2000, "failover outage {outage} ms");
    anyhow::ensure!(took < Duration::from_secs(60), "demo took {took:?}");
    let left = namespaces_named(&demo.prefix);
    anyhow::ensure!(left.is_empty(), "demo left namespaces {left:?}");
    Ok(())
}

/// The container image, built in CI without a Docker engine or a release build:
/// `e2e/image/build-image.sh` with the debug `ferrolb` (dynamically linked, so the image gets
/// it plus exactly the shared libraries `ldd` lists), assembled with umoci, unpacked again and
/// run as uid 65534 in fresh namespaces: `--version` prints this binary's version line, every
/// `manifests/examples` file passes `config check`, a broken config exits 1.
#[test]
fn image_built_from_the_debug_binary_runs_in_a_chroot() -> Result<()> {
    // Root: umoci unpack, unshare, chroot. e2e/scripts/install-deps.sh (run by CI) installs
    // umoci.
    let needs = [
        Root,
        Program("umoci"),
        Program("unshare"),
        Program("chroot"),
        Program("ldd"),
        Program("python3"),
    ];
    if !require(&needs)? {
        return Ok(());
    }
    let bin = ferrolb_e2e::ferrolb_bin()?;
    let host = std::process::Command::new(&bin).arg("--version").output()?;
    let version = String::from_utf8_lossy(&host.stdout).trim().to_owned();
    anyhow::ensure!(
        version.starts_with("ferrolb "),
        "host --version: {version:?}"
    );
    let dir = Dir::new("standalone-image")?;
    let script = ferrolb_e2e::workspace_root().join("e2e/image/build-image.sh");
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(dir.path().join("out"))
        .env("FERROLB_IMAGE_BIN", &bin)
        .stdin(Stdio::null())
        .output()
        .context("running e2e/image/build-image.sh")?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    anyhow::ensure!(out.status.success(), "build-image.sh exited {}", out.status);
    let in_image = stdout
        .lines()
        .skip_while(|l| !l.starts_with("== ferrolb --version (in the image"))
        .nth(1)
        .context("no --version output from the image")?;
    anyhow::ensure!(
        in_image == version,
        "the image printed {in_image:?}, the binary {version:?}"
    );
    anyhow::ensure!(
        stdout.contains("config check /check/broken.conf (in the image): exit 1"),
        "the broken config was not refused with exit 1"
    );
    anyhow::ensure!(
        stdout.contains("dynamically linked, with "),
        "the debug binary was not packed self-contained"
    );
    let layout = dir.path().join("out/oci/index.json");
    anyhow::ensure!(layout.exists(), "no OCI layout at {}", layout.display());
    eprintln!("image: built and run in {:.1} s", took.as_secs_f64());
    anyhow::ensure!(took < Duration::from_secs(30), "image build took {took:?}");
    Ok(())
}
