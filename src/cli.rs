//! Command-line definition (clap). Every subcommand has `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ferrolb: a bare-metal LoadBalancer for Kubernetes that reads MetalLB's configuration.
#[derive(Debug, Parser)]
#[command(name = "ferrolb", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with MetalLB-format configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the Kubernetes controller: give every LoadBalancer Service an address and keep it.
    Controller(ControllerArgs),
    /// Allocate addresses with no cluster: config and Service manifests from files, assignments
    /// persisted in a state file, announced by this node.
    Standalone(StandaloneArgs),
    /// Run the Kubernetes speaker on one node: announce the addresses of LoadBalancer Services
    /// (layer2 ARP/NDP, BGP) from the cluster's Services, EndpointSlices, Nodes and config.
    Speaker(SpeakerArgs),
}

/// `--config-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigSource {
    Configmap,
    Crds,
    Auto,
}

impl From<ConfigSource> for ferrolb_config::source::Source {
    fn from(s: ConfigSource) -> Self {
        match s {
            ConfigSource::Configmap => ferrolb_config::source::Source::ConfigMap,
            ConfigSource::Crds => ferrolb_config::source::Source::Crds,
            ConfigSource::Auto => ferrolb_config::source::Source::Auto,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and, with --services, check that it keeps every assigned address.
    Check(ConfigCheckArgs),
    /// Print the ConfigMap manifest for a configuration given in any form (validated first).
    Render(ConfigRenderArgs),
    /// Print the MetalLB custom resources (metallb.io) equivalent to a configuration given in any
    /// form (validated first), for MetalLB 0.13 and later or ferrolb with `--config-source crds`.
    Convert(ConfigConvertArgs),
    /// Print the CustomResourceDefinitions of MetalLB's resources as ferrolb serves them
    /// (manifests/base/crds.yaml).
    Crds,
}

#[derive(Debug, Args)]
pub struct ConfigConvertArgs {
    /// The configuration: raw config YAML, a ConfigMap manifest, addon values with
    /// `configInline`, or a cluster.yaml with a metallb addon. `-` reads standard input.
    pub path: PathBuf,
    /// Namespace of the objects (where ferrolb or MetalLB runs).
    #[arg(long, default_value = "metallb-system")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct ConfigRenderArgs {
    /// The configuration: raw config YAML, addon values with `configInline`, a cluster.yaml with
    /// a metallb addon, or a ConfigMap. `-` reads standard input.
    pub path: PathBuf,
    /// Namespace of the ConfigMap.
    #[arg(long, default_value = "metallb-system")]
    pub namespace: String,
    /// Name of the ConfigMap.
    #[arg(long, default_value = "config")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The configuration: raw config YAML, a ConfigMap manifest, addon values with
    /// `configInline`, a cluster.yaml with a metallb addon, or MetalLB custom resources
    /// (metallb.io objects, several documents or a `kind: List`). `-` reads standard input.
    pub path: PathBuf,
    /// Services as `kubectl get svc -A -o yaml` prints them; report every Service whose current
    /// address the configuration would break.
    #[arg(long)]
    pub services: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// kubeconfig file; without it the in-cluster configuration (or $KUBECONFIG,
    /// ~/.kube/config) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the config ConfigMap and the leader Lease.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
    pub namespace: String,
    /// Name of the ConfigMap holding the MetalLB-format configuration (key `config`).
    #[arg(long, default_value = "config")]
    pub config_map: String,
    /// Where the configuration comes from: the ConfigMap (MetalLB 0.12), MetalLB's custom
    /// resources in the namespace (metallb.io, MetalLB 0.13 and later), or `auto`: whichever is
    /// there; both there must mean the same, else the new configuration is refused.
    #[arg(long, value_enum, env = "FERROLB_CONFIG_SOURCE", default_value_t = ConfigSource::Auto)]
    pub config_source: ConfigSource,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, default_value = "ferrolb-controller")]
    pub lease_name: String,
    /// Lease duration in seconds: a standby replica takes over at most this long after the
    /// leader stops renewing.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration: u64,
    /// This replica's identity in the Lease (default: $POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The spec.loadBalancerClass ferrolb serves, besides Services without a class.
    #[arg(long, default_value = ferrolb_config::service::DEFAULT_CLASS)]
    pub load_balancer_class: String,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7472")]
    pub metrics_addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// The configuration in any form `ferrolb config check` reads; watched for changes.
    #[arg(long)]
    pub config: PathBuf,
    /// v1 Service manifests (a List, or multi-document YAML); watched for changes.
    #[arg(long)]
    pub services: PathBuf,
    /// This node's name (used by the announcers).
    #[arg(long)]
    pub node: String,
    /// This node's labels, `key=value,key2=value2` (for peer node selectors).
    #[arg(long)]
    pub node_labels: Option<String>,
    /// Where assignments persist across restarts (written atomically).
    #[arg(long, default_value = "ferrolb-state.json")]
    pub state: PathBuf,
    /// The spec.loadBalancerClass served, besides Services without a class.
    #[arg(long = "class", default_value = ferrolb_config::service::DEFAULT_CLASS)]
    pub load_balancer_class: String,
    /// Memberlist bind address (UDP + TCP), e.g. `192.0.2.11:7946`; without it membership is
    /// off and this node counts only itself as alive.
    #[arg(long)]
    pub ml_bind: Option<std::net::SocketAddr>,
    /// Memberlist peers to join, `ADDR:PORT,...` (retried every second while alone).
    #[arg(long, value_delimiter = ',')]
    pub ml_join: Vec<std::net::SocketAddr>,
    /// File holding the shared memberlist secret (else $FERROLB_ML_SECRET; never logged).
    #[arg(long)]
    pub ml_secret_file: Option<PathBuf>,
    /// Failure-detection timers: `fast` (crash detected in about 0.4 s), `tuned` (failover
    /// under 0.3 s on a quiet LAN; more false suspicions under load) or `lan` (about 3 s).
    #[arg(long, default_value = "fast")]
    pub ml_profile: ferrolb_speaker::membership::Profile,
    #[command(flatten)]
    pub ml_timers: MlTimerArgs,
    /// Accept BGP connections on `ADDR:PORT` (repeatable, e.g. `0.0.0.0:179` and `[::]:179`),
    /// only from a configured peer's `peer-address`; off by default (sessions are dialled out).
    #[arg(long, value_delimiter = ',')]
    pub bgp_listen: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SpeakerArgs {
    /// This node's name (the Node object, and the memberlist member name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// kubeconfig file; without it the in-cluster configuration (or $KUBECONFIG,
    /// ~/.kube/config) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the config ConfigMap.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
    pub namespace: String,
    /// Name of the ConfigMap holding the MetalLB-format configuration (key `config`).
    #[arg(long, default_value = "config")]
    pub config_map: String,
    /// Where the configuration comes from: the ConfigMap (MetalLB 0.12), MetalLB's custom
    /// resources in the namespace (metallb.io, MetalLB 0.13 and later), or `auto`: whichever is
    /// there; both there must mean the same, else the new configuration is refused.
    #[arg(long, value_enum, env = "FERROLB_CONFIG_SOURCE", default_value_t = ConfigSource::Auto)]
    pub config_source: ConfigSource,
    /// The spec.loadBalancerClass served, besides Services without a class.
    #[arg(long, default_value = ferrolb_config::service::DEFAULT_CLASS)]
    pub load_balancer_class: String,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7473")]
    pub metrics_addr: std::net::SocketAddr,
    /// Memberlist bind address (UDP + TCP), e.g. `192.0.2.11:7946`; without it membership is
    /// off and a node counts as alive while its Node is Ready.
    #[arg(long)]
    pub ml_bind: Option<std::net::SocketAddr>,
    /// Memberlist peers to join, `ADDR:PORT,...` (retried every second while alone).
    #[arg(long, value_delimiter = ',')]
    pub ml_join: Vec<std::net::SocketAddr>,
    /// Also join every other Node's InternalIP at the --ml-bind port (speakers on the host
    /// network).
    #[arg(long)]
    pub ml_join_nodes: bool,
    /// File holding the shared memberlist secret (else $FERROLB_ML_SECRET; never logged).
    #[arg(long)]
    pub ml_secret_file: Option<PathBuf>,
    /// Failure-detection timers: `fast` (crash detected in about 0.4 s), `tuned` (failover
    /// under 0.3 s on a quiet LAN; more false suspicions under load) or `lan` (about 3 s).
    #[arg(long, default_value = "fast")]
    pub ml_profile: ferrolb_speaker::membership::Profile,
    #[command(flatten)]
    pub ml_timers: MlTimerArgs,
    /// Accept BGP connections on `ADDR:PORT` (repeatable, e.g. `0.0.0.0:179` and `[::]:179`),
    /// only from a configured peer's `peer-address`; off by default (sessions are dialled out).
    #[arg(long, value_delimiter = ',')]
    pub bgp_listen: Vec<std::net::SocketAddr>,
}

/// Overrides of single memberlist timers (on top of `--ml-profile`), validated together at start.
#[derive(Debug, Clone, Default, Args)]
pub struct MlTimerArgs {
    /// How often each speaker probes one peer, e.g. `50ms` (profile's value if unset).
    #[arg(long, value_name = "DURATION", value_parser = ferrolb_speaker::membership::parse_duration)]
    pub ml_probe_interval: Option<std::time::Duration>,
    /// How long a probe waits for a direct ack before asking others; shorter than the probe
    /// interval (default: the profile's, or half an overridden interval).
    #[arg(long, value_name = "DURATION", value_parser = ferrolb_speaker::membership::parse_duration)]
    pub ml_probe_timeout: Option<std::time::Duration>,
    /// Suspicion lasts this many probe intervals before a suspect is declared dead (1-100).
    #[arg(long, value_name = "N")]
    pub ml_suspicion_mult: Option<usize>,
    /// How often gossip (including suspect/dead news) is sent, e.g. `20ms`.
    #[arg(long, value_name = "DURATION", value_parser = ferrolb_speaker::membership::parse_duration)]
    pub ml_gossip_interval: Option<std::time::Duration>,
    /// TCP timeout: joins, state exchange, and the fallback ping of a failed probe (how long a
    /// silent peer, e.g. one whose link is down, is waited for before it becomes suspect).
    #[arg(long, value_name = "DURATION", value_parser = ferrolb_speaker::membership::parse_duration)]
    pub ml_tcp_timeout: Option<std::time::Duration>,
}

impl MlTimerArgs {
    /// The overrides these flags ask for.
    pub fn overrides(&self) -> ferrolb_speaker::membership::Overrides {
        ferrolb_speaker::membership::Overrides {
            probe_interval: self.ml_probe_interval,
            probe_timeout: self.ml_probe_timeout,
            suspicion_mult: self.ml_suspicion_mult,
            gossip_interval: self.ml_gossip_interval,
            tcp_timeout: self.ml_tcp_timeout,
        }
    }
}
