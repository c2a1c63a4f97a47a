//! The `ferrolb` binary: CLI parsing and process wiring only; the logic lives in the crates.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cmd::run(cli)
}
