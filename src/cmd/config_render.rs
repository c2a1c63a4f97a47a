//! `ferrolb config render`: turn any input form (raw file, `configInline` values, Konvoy
//! cluster.yaml) into the ConfigMap manifest ferrolb and MetalLB read. Exit 0 rendered, 1 invalid,
//! 2 I/O error. Warnings about the input (e.g. a disabled Konvoy addon) go to stderr. Must not:
//! render a configuration that does not validate.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::cli::ConfigRenderArgs;

pub fn run(args: &ConfigRenderArgs) -> ExitCode {
    let mut bytes = Vec::new();
    let read = if args.path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(&args.path).map(|b| bytes = b)
    };
    if let Err(e) = read {
        eprintln!(
            "ferrolb config render: cannot read {}: {e}",
            args.path.display()
        );
        return ExitCode::from(2);
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        eprintln!("<input>: not UTF-8 text");
        return ExitCode::from(1);
    };
    match ferrolb_config::forms::render_configmap(text, &args.namespace, &args.name) {
        Ok(rendered) => {
            for w in &rendered.warnings {
                eprintln!("warning: {w}");
            }
            match std::io::stdout()
                .lock()
                .write_all(rendered.manifest.as_bytes())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(2),
            }
        }
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}
