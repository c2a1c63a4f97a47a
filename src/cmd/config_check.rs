//! `ferrolb config check`: exit 0 valid (and compatible), 1 invalid or breaking, 2 usage or I/O.
//!
//! Reads the files, has `ferrolb_config::check::Report` build the verdict and its lines, prints
//! them and maps the verdict to the exit status. Must not: validate or word anything itself.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ferrolb_config::check::{Line, Report};
use ferrolb_config::service::parse_services;

use crate::cli::{ConfigCheckArgs, OutputFormat};

pub fn run(args: &ConfigCheckArgs) -> ExitCode {
    if args.path.as_os_str() == "-" && args.services.as_deref() == Some(Path::new("-")) {
        eprintln!(
            "ferrolb config check: only one of PATH and --services may be - (standard input)"
        );
        return ExitCode::from(2);
    }
    let bytes = match read_input(&args.path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "ferrolb config check: cannot read {}: {e}",
                args.path.display()
            );
            return ExitCode::from(2);
        }
    };
    let services = match &args.services {
        None => None,
        Some(p) => match read_services(p) {
            Ok(s) => Some(s),
            Err(lines) => {
                for l in lines {
                    eprintln!("{l}");
                }
                return ExitCode::from(2);
            }
        },
    };
    let report = Report::build(&bytes, services.as_deref());
    let printed = match args.output {
        OutputFormat::Text => print_text(&report.text(&args.path.display().to_string())),
        OutputFormat::Json => print_json(&report.json()),
    };
    if let Err(e) = printed {
        // A closed stdout (e.g. `| head`) is not the config's fault.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("ferrolb config check: cannot write output: {e}");
        }
        return ExitCode::from(2);
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json(value: &serde_json::Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Each line on its stream, in order (stdout flushed before a stderr line follows it).
fn print_text(lines: &[Line]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for line in lines {
        match line {
            Line::Out(l) => writeln!(out, "{l}")?,
            Line::Err(l) => {
                out.flush()?;
                writeln!(err, "{l}")?;
            }
        }
    }
    out.flush()
}

fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut buf)?;
    } else {
        buf = std::fs::read(path)?;
    }
    Ok(buf)
}

/// The Services file, or the lines to print (an I/O or syntax problem is exit 2).
fn read_services(path: &Path) -> Result<Vec<ferrolb_config::ServiceView>, Vec<String>> {
    let bytes = read_input(path).map_err(|e| {
        vec![format!(
            "ferrolb config check: cannot read --services {}: {e}",
            path.display()
        )]
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        vec![format!(
            "ferrolb config check: --services {}: not UTF-8 text",
            path.display()
        )]
    })?;
    parse_services(text).map_err(|e| {
        e.iter()
            .map(|p| format!("--services {}: {p}", path.display()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(tag: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("ferrolb-check-{}-{tag}.yaml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn check(path: PathBuf, services: Option<PathBuf>) -> ExitCode {
        run(&ConfigCheckArgs {
            path,
            services,
            output: OutputFormat::Json,
        })
    }

    #[test]
    fn exit_codes() {
        let good = write(
            "good",
            "address-pools:\n- {name: a, protocol: layer2, addresses: [192.0.2.0/25]}\n",
        );
        let bad = write(
            "bad",
            "address-pools:\n- {name: a, protocol: layer3, addresses: [192.0.2.0/25]}\n",
        );
        let inside = write("in", "kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n");
        let outside = write("out", "kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.200}]}}\n");
        let other_class = write("class", "kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: other}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.200}]}}\n");
        let broken_yaml = write("broken", "items: [");
        assert_eq!(check(good.clone(), None), ExitCode::SUCCESS);
        assert_eq!(check(bad.clone(), None), ExitCode::from(1));
        assert_eq!(check(good.clone(), Some(inside.clone())), ExitCode::SUCCESS);
        assert_eq!(
            check(good.clone(), Some(outside.clone())),
            ExitCode::from(1)
        );
        assert_eq!(
            check(good.clone(), Some(other_class.clone())),
            ExitCode::SUCCESS
        );
        assert_eq!(
            check(good.clone(), Some(broken_yaml.clone())),
            ExitCode::from(2)
        );
        assert_eq!(
            check(PathBuf::from("/nonexistent/ferrolb.yaml"), None),
            ExitCode::from(2)
        );
        for p in [good, bad, inside, outside, other_class, broken_yaml] {
            let _ = std::fs::remove_file(p);
        }
    }
}
