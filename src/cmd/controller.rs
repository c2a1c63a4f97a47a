//! `ferrolb controller`: process wiring for the Kubernetes controller: flags to
//! [`ControllerOptions`], the kube client, the metrics registry and responder, the shutdown
//! signal (`super::process`). The work happens in `ferrolb_controller::k8s::run`.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_controller::k8s::{self, ControllerOptions};
use ferrolb_controller::metrics::ControllerMetrics;
use prometheus_client::registry::Registry;

use super::{http, process};
use crate::cli::ControllerArgs;

pub fn run(args: &ControllerArgs) -> ExitCode {
    process::prepare();
    process::run("controller", run_async(args))
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

async fn run_async(args: &ControllerArgs) -> anyhow::Result<()> {
    let client = process::kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let endpoints = http::Endpoints {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let opts = ControllerOptions {
        namespace: args.namespace.clone(),
        config_map: args.config_map.clone(),
        config_source: args.config_source.into(),
        lease_name: args.lease_name.clone(),
        lease_duration: Duration::from_secs(args.lease_duration),
        identity: identity(args),
        load_balancer_class: args.load_balancer_class.clone(),
    };
    let controller = k8s::run(client, opts, metrics, ready, process::shutdown_signal());
    process::beside_metrics("controller", args.metrics_addr, endpoints, controller).await
}
