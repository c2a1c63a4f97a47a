//! What every long-running subcommand (`controller`, `speaker`, `standalone`) wires the same
//! way: logs on stderr and one malloc arena before any thread starts, a two-worker async runtime
//! and the exit code, SIGTERM/SIGINT, the Kubernetes client, and a Kubernetes role served next
//! to its `/metrics`, `/healthz`, `/readyz` responder.
//!
//! Must not: hold a role's logic or read its flags beyond the ones named here.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::{error, info};

use super::http;

/// Logs on stderr (`RUST_LOG`, default `info`) and one malloc arena (`super::malloc`). Call
/// first, before any thread is spawned.
pub fn prepare() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subcommand path may have set a subscriber already; keep the first one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    super::malloc::use_one_arena();
}

/// Runs `role` to its end on a two-worker runtime: exit 0 when it ends well, 1 (logged as
/// `NAME failed`) when it fails, 2 when the runtime cannot start.
pub fn run(name: &str, role: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "{name} failed");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received; shutting down"),
    }
}

/// A client from `kubeconfig`, else the in-cluster or default configuration.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster or default kubeconfig")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Runs `role` (named `name` in the log) while `endpoints` are served on `addr` (`--metrics-addr`);
/// the first to end ends both (a responder that cannot bind fails with the address).
pub async fn beside_metrics<E>(
    name: &str,
    addr: SocketAddr,
    endpoints: http::Endpoints,
    role: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let server = tokio::spawn(http::serve(addr, endpoints));
    tokio::pin!(role);
    let result = tokio::select! {
        r = &mut role => r.map_err(anyhow::Error::new),
        r = server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!("--metrics-addr {addr}"))),
            Err(e) => Err(anyhow::Error::from(e).context("metrics server task")),
        },
    };
    info!("{name} stopped");
    result
}
