//! Real routers for the BGP end-to-end tests: write a config into a temp dir, start the daemon
//! inside a namespace, query it with its own CLI, restart or stop it.
//!
//! BIRD 2 (`bird -f`, `birdc -s SOCKET`), GoBGP (`gobgpd`, `gobgp`) and FRR (`bgpd`, `vtysh`). Must not: touch anything outside the namespace
//! and the given directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// A BIRD daemon running in a namespace; killed on drop.
#[derive(Debug)]
pub struct Bird {
    ns_name: String,
    conf: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Writes `config` to `<dir>/bird.conf` and starts BIRD in `ns`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Bird> {
        let conf = dir.join("bird.conf");
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let mut b = Bird {
            ns_name: ns.name().to_string(),
            conf,
            sock: dir.join("bird.ctl"),
            log: dir.join("bird.out"),
            child: None,
        };
        b.spawn()?;
        Ok(b)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = fs::remove_file(&self.sock);
        let out = fs::File::create(&self.log)?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "bird", "-f", "-c"])
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.sock)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("could not start bird")?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.birdc(&["show", "status"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "bird did not come up: {}",
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Runs `birdc -s SOCKET ARGS` and returns its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .context("could not run birdc")?;
        if !out.status.success() {
            bail!("birdc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `show route all protocol NAME`.
    pub fn routes(&self, protocol: &str) -> Result<String> {
        self.birdc(&["show", "route", "all", "protocol", protocol])
    }

    /// `show protocols NAME` contains "Established".
    pub fn established(&self, protocol: &str) -> bool {
        self.birdc(&["show", "protocols", protocol])
            .map(|o| o.contains("Established"))
            .unwrap_or(false)
    }

    /// Kills BIRD.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts BIRD again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A GoBGP daemon running in a namespace (gRPC API on the namespace's own 127.0.0.1); killed on
/// drop.
#[derive(Debug)]
pub struct Gobgp {
    ns_name: String,
    child: Option<Child>,
    log: PathBuf,
    conf: PathBuf,
}

impl Gobgp {
    /// Writes `config` (TOML) to `<dir>/gobgpd.toml` and starts gobgpd in `ns`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Gobgp> {
        let conf = dir.join("gobgpd.toml");
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let mut g = Gobgp {
            ns_name: ns.name().to_string(),
            child: None,
            log: dir.join("gobgpd.out"),
            conf,
        };
        g.spawn()?;
        Ok(g)
    }

    fn spawn(&mut self) -> Result<()> {
        let out = fs::File::create(&self.log)?;
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "gobgpd",
                "-t",
                "toml",
                "-p",
                "-f",
            ])
            .arg(&self.conf)
            .args(["--api-hosts", "127.0.0.1:50051", "--pprof-disable"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("could not start gobgpd")?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.gobgp(&["global"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "gobgpd did not come up: {}",
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Kills gobgpd (SIGKILL) and starts it again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `gobgp ARGS` against this daemon.
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .output()
            .context("could not run gobgp")?;
        if !out.status.success() {
            bail!("gobgp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `gobgp global rib -a FAMILY`.
    pub fn rib(&self, family: &str) -> Result<String> {
        self.gobgp(&["global", "rib", "-a", family])
    }

    /// `gobgp neighbor` lists `addr` as Establ.
    pub fn established(&self, addr: &str) -> bool {
        self.gobgp(&["neighbor"])
            .map(|o| o.lines().any(|l| l.contains(addr) && l.contains("Establ")))
            .unwrap_or(false)
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// FRR's `bgpd` alone (no zebra, no kernel routes) in a namespace, queried with `vtysh`; killed
/// on drop.
#[derive(Debug)]
pub struct Frr {
    ns_name: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Frr {
    /// Writes `config` to `<dir>/frr/bgpd.conf` and starts `bgpd` in `ns`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Frr> {
        let dir = dir.join("frr");
        fs::create_dir_all(&dir)?;
        let conf = dir.join("bgpd.conf");
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let mut f = Frr {
            ns_name: ns.name().to_string(),
            dir,
            child: None,
        };
        f.spawn()?;
        Ok(f)
    }

    fn spawn(&mut self) -> Result<()> {
        let dir = &self.dir;
        let out = fs::File::create(dir.join("bgpd.out"))?;
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "/usr/lib/frr/bgpd",
                "-Z",
                "-S",
                "-n",
            ])
            .args(["-u", "root", "-g", "root", "-P", "0", "-f"])
            .arg(dir.join("bgpd.conf"))
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("could not start bgpd")?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.vtysh("show bgp summary").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "bgpd did not come up: {}",
            fs::read_to_string(self.dir.join("bgpd.out")).unwrap_or_default()
        )
    }

    /// Kills bgpd (SIGKILL) and starts it again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `vtysh --vty_socket DIR -c COMMAND`.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let out = std::process::Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", command])
            .output()
            .context("could not run vtysh")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "vtysh {command:?}: {}{text}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop();
    }
}
