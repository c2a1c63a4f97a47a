//! Subcommand implementations: each reads its inputs, calls the crates, and maps the result to
//! output and an exit code.

mod config_check;
mod config_convert;
mod config_render;
mod controller;
mod http;
mod malloc;
mod process;
mod speaker;
mod standalone;

use std::process::ExitCode;

use crate::cli::{Cli, Command, ConfigCommand};

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Config(ConfigCommand::Check(args)) => config_check::run(&args),
        Command::Config(ConfigCommand::Render(args)) => config_render::run(&args),
        Command::Config(ConfigCommand::Convert(args)) => config_convert::run(&args),
        Command::Config(ConfigCommand::Crds) => config_convert::crds(),
        Command::Controller(args) => controller::run(&args),
        Command::Standalone(args) => standalone::run(&args),
        Command::Speaker(args) => speaker::run(&args),
    }
}
