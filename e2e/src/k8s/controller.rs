//! A running `ferrolb controller` (the real binary) against a [`TestEnv`]: started with the
//! test's kubeconfig or another one, read through its metrics and health endpoints, stopped
//! with SIGTERM or SIGKILL, killed on drop. Its log is printed when a test fails.
//!
//! Must not: listen anywhere but 127.0.0.1, or outlive the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{free_port, TestEnv, WAIT};

/// A running `ferrolb controller`; killed on drop. Its log is printed when a test fails.
#[derive(Debug)]
pub struct Controller {
    /// The process; `None` once killed or terminated.
    pub child: Option<Child>,
    metrics: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Controller {
    pub fn start(env: &TestEnv, ns: &str, extra: &[&str]) -> anyhow::Result<Controller> {
        Controller::start_as(env, env.kubeconfig(), ns, extra)
    }

    pub fn start_as(
        env: &TestEnv,
        kubeconfig: &std::path::Path,
        ns: &str,
        extra: &[&str],
    ) -> anyhow::Result<Controller> {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = env
            .state_dir()
            .join(format!("controller-{}.log", metrics.port()));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(crate::ferrolb_bin()?)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns, "--metrics-addr", &metrics.to_string()])
            .args(extra)
            .env("RUST_LOG", "info,ferrolb_controller=debug")
            .env_remove("POD_NAME")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .context("spawn ferrolb controller")?;
        Ok(Controller {
            child: Some(child),
            metrics,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "controller exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                bail!("controller did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash, no lease release.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, out))
    }

    /// The value of an unlabelled metric, once the endpoint answers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    pub async fn wait_metric(&self, name: &str, value: f64) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.metric(name) == Some(value) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{name} never became {value} (last {:?})", self.metric(name))
    }

    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if matches!(self.get("/readyz"), Ok((200, _))) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("controller never became ready")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        // Captured by the test harness: shown only when the test fails.
        if let Ok(log) = std::fs::read_to_string(&self.log) {
            eprintln!("---- {} ----\n{log}", self.log.display());
        }
    }
}
