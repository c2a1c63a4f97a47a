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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and, with --services, check that it keeps every assigned address.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The configuration: raw config YAML, a ConfigMap manifest, addon values with
    /// `configInline`, or a cluster.yaml with a metallb addon. `-` reads standard input.
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
