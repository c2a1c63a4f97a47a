//! Network namespaces and links for tests, removed when dropped (also on panic).
//!
//! Names are `flb-<pid>-<tag>`: unique per test process, and [`remove_stale`] can tell which
//! leftovers belong to a process that no longer runs (a test killed by SIGKILL) and remove just
//! those, by name. Links are created directly inside namespaces, never in the root namespace.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};

const PREFIX: &str = "flb-";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// A network namespace owned by this test process. Dropping it kills every process inside and
/// deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `flb-<pid>-<tag><n>` with `lo` up. `tag` should be short (a few letters).
    pub fn create(tag: &str) -> Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{tag}{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program ARGS` inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        run(self.command(program).args(args))
    }

    /// Runs `program ARGS` inside the namespace and returns its stdout; fails on a non-zero exit.
    pub fn exec_stdout(&self, program: &str, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(program, args)?.stdout).into_owned())
    }

    /// Starts `program ARGS` inside the namespace in the background (output discarded unless the
    /// caller changes it on the returned command first; see [`Netns::command`]).
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Child> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {program} in {}", self.name))
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.conf.all.arp_ignore`, `1`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Adds an address to an interface inside the namespace (`nodad` for IPv6 so it is usable at once).
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }

    /// The MAC address of an interface inside the namespace, lower-case `aa:bb:..`.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let out = self.exec_stdout("cat", &[&format!("/sys/class/net/{dev}/address")])?;
        Ok(out.trim().to_lowercase())
    }

    /// Kills every process running inside the namespace (SIGKILL).
    pub fn kill_all(&self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Connects `a:a_dev` and `b:b_dev` with a veth pair, both ends up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])?;
    Ok(())
}

/// A layer-2 segment: a namespace holding bridge `br0`, to which hosts attach by veth.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
    ports: usize,
}

impl Switch {
    pub fn create() -> Result<Switch> {
        let ns = Netns::create("sw")?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        // No STP delay: ports forward at once.
        ns.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Switch { ns, ports: 0 })
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Attaches `host` to the bridge; the host side is called `dev`. Returns the bridge port name.
    pub fn attach(&mut self, host: &Netns, dev: &str) -> Result<String> {
        let port = format!("p{}", self.ports);
        self.ports += 1;
        veth(host, dev, &self.ns, &port)?;
        self.ns.ip(&["link", "set", &port, "master", "br0"])?;
        Ok(port)
    }

    /// Takes a bridge port down or up (to cut a host off the segment without killing it).
    pub fn set_port(&self, port: &str, up: bool) -> Result<()> {
        self.ns
            .ip(&["link", "set", port, if up { "up" } else { "down" }])?;
        Ok(())
    }
}

/// Deletes `flb-<pid>-*` namespaces whose process no longer runs (left by a killed test run).
/// Touches nothing else.
pub fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
