//! `ferrolb controller`: process wiring for the Kubernetes controller (client, metrics/health
//! HTTP, signals). The work happens in `ferrolb_controller::k8s::run`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrolb_controller::k8s::{self, ControllerOptions};
use ferrolb_controller::metrics::ControllerMetrics;
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use tracing::{error, info};

use super::http;
use crate::cli::ControllerArgs;

pub fn run(args: &ControllerArgs) -> ExitCode {
    init_tracing();
    super::malloc::use_one_arena();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("controller: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "controller failed");
            ExitCode::from(1)
        }
    }
}

pub(super) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subcommand path may have set a subscriber already; keep the first one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn client(args: &ControllerArgs) -> anyhow::Result<kube::Client> {
    kube_client(args.kubeconfig.as_deref()).await
}

/// A client from `kubeconfig`, else the in-cluster or default configuration.
pub(super) async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> anyhow::Result<kube::Client> {
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

fn identity(args: &ControllerArgs) -> String {
    if let Some(id) = &args.identity {
        return id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferrolb".to_string());
    format!("{host}-{}", std::process::id())
}

pub(super) async fn shutdown_signal() {
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

async fn run_async(args: &ControllerArgs) -> anyhow::Result<()> {
    let client = client(args).await?;
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        http::Endpoints {
            registry: Arc::new(registry),
            ready: ready.clone(),
        },
    ));
    let opts = ControllerOptions {
        namespace: args.namespace.clone(),
        config_map: args.config_map.clone(),
        lease_name: args.lease_name.clone(),
        lease_duration: Duration::from_secs(args.lease_duration),
        identity: identity(args),
        load_balancer_class: args.load_balancer_class.clone(),
    };
    let controller = k8s::run(client, opts, metrics, ready, shutdown_signal());
    tokio::pin!(controller);
    let result = tokio::select! {
        r = &mut controller => r.map_err(anyhow::Error::from),
        r = server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!("--metrics-addr {}", args.metrics_addr))),
            Err(e) => Err(anyhow::Error::from(e).context("metrics server task")),
        },
    };
    info!("controller stopped");
    result
}
