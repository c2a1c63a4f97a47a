//! `ferrolb speaker`: process wiring for the Kubernetes speaker (client, announcers, membership
//! settings, metrics/health HTTP, signals). The work happens in `crate::speaker::run`.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ferrolb_speaker::membership::MemberlistConfig;
use prometheus_client::registry::Registry;
use tracing::{error, info};

use super::controller::{init_tracing, kube_client, shutdown_signal};
use super::http;
use crate::cli::SpeakerArgs;
use crate::speaker::{self, Options, SpeakerMetrics};

pub fn run(args: &SpeakerArgs) -> ExitCode {
    init_tracing();
    let membership = match args.ml_bind {
        Some(bind) => match MemberlistConfig::from_flags(
            &args.node_name,
            bind,
            &args.ml_join,
            args.ml_secret_file.as_deref(),
            args.ml_profile,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("speaker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("speaker: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        node: args.node_name.clone(),
        namespace: args.namespace.clone(),
        config_map: args.config_map.clone(),
        class: args.load_balancer_class.clone(),
        membership,
        join_from_nodes: args.ml_join_nodes,
    };
    match runtime.block_on(run_async(args, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "speaker failed");
            ExitCode::from(1)
        }
    }
}

async fn run_async(args: &SpeakerArgs, opts: Options) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = SpeakerMetrics::register(&mut registry);
    let announcers = crate::announce::announcers(&mut registry)?;
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        http::Endpoints {
            registry: Arc::new(registry),
            ready: ready.clone(),
        },
    ));
    let speaker = speaker::run(client, opts, metrics, ready, announcers, shutdown_signal());
    tokio::pin!(speaker);
    let result = tokio::select! {
        r = &mut speaker => r,
        r = server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!("--metrics-addr {}", args.metrics_addr))),
            Err(e) => Err(anyhow::Error::from(e).context("metrics server task")),
        },
    };
    info!("speaker stopped");
    result
}
