//! `ferrolb speaker`: process wiring for the Kubernetes speaker: flags to
//! [`ferrolb_speaker::k8s::Options`] and membership settings, the kube client, the announcers,
//! the metrics registry and responder, the shutdown signal (`super::process`). The work happens
//! in [`ferrolb_speaker::k8s::run`].

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ferrolb_runtime::config::ClientMetrics;
use ferrolb_speaker::k8s::{self, Options};
use ferrolb_speaker::lifecycle;
use ferrolb_speaker::membership::MemberlistConfig;
use prometheus_client::registry::Registry;

use super::{http, process};
use crate::cli::SpeakerArgs;

pub fn run(args: &SpeakerArgs) -> ExitCode {
    process::prepare();
    let membership = match args.ml_bind {
        Some(bind) => match MemberlistConfig::from_flags(
            &args.node_name,
            bind,
            &args.ml_join,
            args.ml_secret_file.as_deref(),
            args.ml_profile,
            &args.ml_timers.overrides(),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("speaker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let opts = Options {
        node: args.node_name.clone(),
        namespace: args.namespace.clone(),
        config_map: args.config_map.clone(),
        config_source: args.config_source.into(),
        class: args.load_balancer_class.clone(),
        membership,
        join_from_nodes: args.ml_join_nodes,
    };
    process::run("speaker", run_async(args, opts))
}

async fn run_async(args: &SpeakerArgs, opts: Options) -> anyhow::Result<()> {
    let client = process::kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    let announcers = lifecycle::announcers(&mut registry, &args.bgp_listen)?;
    let ready = Arc::new(AtomicBool::new(false));
    let endpoints = http::Endpoints {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let speaker = k8s::run(
        client,
        opts,
        metrics,
        ready,
        announcers,
        process::shutdown_signal(),
    );
    process::beside_metrics("speaker", args.metrics_addr, endpoints, speaker).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    /// The DaemonSet's `args:` (with `$(VAR)` filled in) parse as `ferrolb speaker` flags.
    #[test]
    fn manifest_args_are_the_flags_we_implement() {
        let manifest = include_str!("../../manifests/base/speaker.yaml");
        let block = manifest
            .split("        args:\n")
            .nth(1)
            .expect("speaker.yaml has args:");
        let args: Vec<String> = block
            .lines()
            .map_while(|l| l.strip_prefix("        - "))
            .map(|a| {
                a.replace("$(NODE_NAME)", "node-1")
                    .replace("$(POD_NAMESPACE)", "metallb-system")
                    .replace("$(HOST_IP)", "192.0.2.11")
            })
            .collect();
        assert_eq!(
            args.first().map(String::as_str),
            Some("speaker"),
            "{args:?}"
        );
        let cli = Cli::try_parse_from(std::iter::once("ferrolb".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("manifests/base/speaker.yaml args: {e}"));
        let Command::Speaker(s) = cli.command else {
            panic!("not the speaker subcommand");
        };
        assert_eq!(s.node_name, "node-1");
        assert_eq!(s.namespace, "metallb-system");
        assert_eq!(s.metrics_addr.to_string(), "192.0.2.11:7473");
        assert_eq!(
            s.ml_bind.map(|a| a.to_string()).as_deref(),
            Some("192.0.2.11:7946")
        );
        assert!(s.ml_join_nodes);
        assert!(s.bgp_listen.is_empty(), "no BGP listener unless asked");
    }

    /// `--ml-profile tuned` and the single-timer flags parse in both modes; a bad combination
    /// is refused at start with the flag and its value, an unparsable duration by clap.
    #[test]
    fn membership_timer_flags_parse_and_validate_in_speaker_and_standalone() {
        use ferrolb_speaker::membership::{MemberlistConfig, Profile};
        use std::time::Duration;
        let timers = [
            "--ml-profile",
            "tuned",
            "--ml-probe-interval",
            "40ms",
            "--ml-suspicion-mult",
            "3",
            "--ml-gossip-interval",
            "10ms",
            "--ml-tcp-timeout",
            "150ms",
        ];
        let speaker = Cli::try_parse_from(
            ["ferrolb", "speaker", "--node-name", "n"]
                .into_iter()
                .chain(timers),
        )
        .unwrap();
        let Command::Speaker(s) = speaker.command else {
            panic!("not the speaker subcommand");
        };
        assert_eq!(s.ml_profile, Profile::Tuned);
        let o = s.ml_timers.overrides();
        assert_eq!(o.probe_interval, Some(Duration::from_millis(40)));
        assert_eq!(o.probe_timeout, None);
        assert_eq!(o.suspicion_mult, Some(3));
        assert_eq!(o.gossip_interval, Some(Duration::from_millis(10)));
        assert_eq!(o.tcp_timeout, Some(Duration::from_millis(150)));
        let bind = "192.0.2.11:7946".parse().unwrap();
        let cfg = MemberlistConfig::from_flags("n", bind, &[], None, s.ml_profile, &o).unwrap();
        assert_eq!(cfg.timers.probe_interval, Duration::from_millis(40));
        // The tuned profile's 25 ms ack timeout fits the 40 ms interval and stays.
        assert_eq!(cfg.timers.probe_timeout, Duration::from_millis(25));

        let standalone = Cli::try_parse_from([
            "ferrolb",
            "standalone",
            "--config",
            "c",
            "--services",
            "s",
            "--node",
            "n",
            "--ml-probe-timeout",
            "80ms",
            "--ml-probe-interval",
            "50ms",
        ])
        .unwrap();
        let Command::Standalone(a) = standalone.command else {
            panic!("not the standalone subcommand");
        };
        assert_eq!(a.ml_profile, Profile::Fast);
        let err = MemberlistConfig::from_flags(
            "n",
            bind,
            &[],
            None,
            a.ml_profile,
            &a.ml_timers.overrides(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("membership: --ml-probe-timeout 80ms: must be shorter than the probe interval (50ms)"),
            "{err}"
        );
        for bad in [["--ml-probe-interval", "50"], ["--ml-suspicion-mult", "x"]] {
            let e = Cli::try_parse_from(
                ["ferrolb", "speaker", "--node-name", "n"]
                    .into_iter()
                    .chain(bad),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(bad[0]) && e.contains(bad[1]), "{e}");
        }
        assert!(Cli::try_parse_from([
            "ferrolb",
            "speaker",
            "--node-name",
            "n",
            "--ml-profile",
            "turbo"
        ])
        .is_err());
    }

    /// `--bgp-listen` takes several addresses (repeated or comma-separated), in both modes.
    #[test]
    fn bgp_listen_parses_in_speaker_and_standalone() {
        let speaker = Cli::try_parse_from([
            "ferrolb",
            "speaker",
            "--node-name",
            "n",
            "--bgp-listen",
            "0.0.0.0:179,[::]:179",
        ])
        .unwrap();
        let Command::Speaker(s) = speaker.command else {
            panic!("not the speaker subcommand");
        };
        let want: Vec<std::net::SocketAddr> =
            vec!["0.0.0.0:179".parse().unwrap(), "[::]:179".parse().unwrap()];
        assert_eq!(s.bgp_listen, want);
        let standalone = Cli::try_parse_from([
            "ferrolb",
            "standalone",
            "--config",
            "c",
            "--services",
            "s",
            "--node",
            "n",
            "--bgp-listen",
            "0.0.0.0:179",
            "--bgp-listen",
            "[::]:179",
        ])
        .unwrap();
        let Command::Standalone(s) = standalone.command else {
            panic!("not the standalone subcommand");
        };
        assert_eq!(s.bgp_listen, want);
        assert!(Cli::try_parse_from([
            "ferrolb",
            "speaker",
            "--node-name",
            "n",
            "--bgp-listen",
            "179"
        ])
        .is_err());
    }
}
