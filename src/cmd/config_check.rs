//! `ferrolb config check`: exit 0 valid (and compatible), 1 invalid or breaking, 2 usage or I/O.

use std::process::ExitCode;

use crate::cli::ConfigCheckArgs;

pub fn run(args: &ConfigCheckArgs) -> ExitCode {
    // Filled in by the config-crate work (issue 2).
    let _ = args;
    eprintln!("config check: not built yet");
    ExitCode::from(2)
}
