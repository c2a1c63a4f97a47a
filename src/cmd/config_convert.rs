//! `ferrolb config convert`: any input form (ConfigMap, raw file, `configInline` values, Konvoy
//! cluster.yaml) to the equivalent MetalLB custom resources, as multi-document YAML on stdout;
//! what changed on the way (a pool renamed, priorities added) as comments on stderr. Exit 0
//! converted, 1 invalid, 2 I/O error. `ferrolb config crds` prints the CRDs themselves.
//!
//! Must not: convert a configuration that does not validate.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::cli::ConfigConvertArgs;

pub fn run(args: &ConfigConvertArgs) -> ExitCode {
    let mut bytes = Vec::new();
    let read = if args.path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(&args.path).map(|b| bytes = b)
    };
    if let Err(e) = read {
        eprintln!(
            "ferrolb config convert: cannot read {}: {e}",
            args.path.display()
        );
        return ExitCode::from(2);
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        eprintln!("<input>: not UTF-8 text");
        return ExitCode::from(1);
    };
    let parsed = match ferrolb_config::parse_with_warnings(text) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    for w in &parsed.warnings {
        eprintln!("warning: {w}");
    }
    let converted = match ferrolb_crds::convert(&parsed.config, &args.namespace) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrolb config convert: {e}");
            return ExitCode::from(1);
        }
    };
    for n in &converted.notes {
        eprintln!("note: {n}");
    }
    write(&converted.yaml)
}

/// `ferrolb config crds`.
pub fn crds() -> ExitCode {
    match ferrolb_crds::manifest() {
        Ok(m) => write(&m),
        Err(e) => {
            eprintln!("ferrolb config crds: {e}");
            ExitCode::from(2)
        }
    }
}

fn write(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}
