//! `ferrolb config check`: exit 0 valid (and compatible), 1 invalid or breaking, 2 usage or I/O.
//!
//! Reads the files, calls `ferrolb_config::{parse_with_form, parse_services, breaking}` and prints
//! the verdict. Must not: validate anything itself.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ferrolb_config::compat::held_addresses;
use ferrolb_config::service::{parse_services, DEFAULT_CLASS};
use ferrolb_config::{
    breaking, parse_with_form, Breakage, Config, ConfigError, InputForm, IpRange, Protocol,
};

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
    let outcome = match std::str::from_utf8(&bytes) {
        Err(e) => Err(vec![ConfigError::new(
            "<input>",
            None,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )]),
        Ok(text) => parse_with_form(text).map_err(|e| e.0),
    };
    let report = match outcome {
        Err(errors) => Report {
            form: None,
            config: None,
            errors,
            services_checked: services.as_ref().map(|s| s.len()),
            held: 0,
            breakages: Vec::new(),
        },
        Ok((form, config)) => {
            let (checked, held, breakages) = match &services {
                None => (None, 0, Vec::new()),
                Some(svcs) => {
                    let held = held_addresses(svcs, DEFAULT_CLASS);
                    (Some(svcs.len()), held.len(), breaking(&config, &held))
                }
            };
            Report {
                form: Some(form),
                config: Some(config),
                errors: Vec::new(),
                services_checked: checked,
                held,
                breakages,
            }
        }
    };
    let ok = report.errors.is_empty() && report.breakages.is_empty();
    let printed = match args.output {
        OutputFormat::Text => report.print_text(&args.path),
        OutputFormat::Json => report.print_json(),
    };
    if let Err(e) = printed {
        // A closed stdout (e.g. `| head`) is not the config's fault.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("ferrolb config check: cannot write output: {e}");
        }
        return ExitCode::from(2);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
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

#[derive(Debug)]
struct Report {
    form: Option<InputForm>,
    config: Option<Config>,
    errors: Vec<ConfigError>,
    services_checked: Option<usize>,
    held: usize,
    breakages: Vec<Breakage>,
}

impl Report {
    fn print_json(&self) -> std::io::Result<()> {
        let value = serde_json::json!({
            "valid": self.errors.is_empty(),
            "compatible": self.breakages.is_empty(),
            "form": self.form,
            "config": self.config,
            "errors": self.errors,
            "services_checked": self.services_checked,
            "held_addresses": self.held,
            "breakages": self.breakages,
        });
        let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
        writeln!(std::io::stdout().lock(), "{text}")
    }

    fn print_text(&self, path: &Path) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        for e in &self.errors {
            writeln!(err, "{e}")?;
        }
        let (Some(form), Some(cfg)) = (&self.form, &self.config) else {
            writeln!(
                err,
                "{}: invalid ({} problem{})",
                path.display(),
                self.errors.len(),
                plural(self.errors.len())
            )?;
            return Ok(());
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}: valid ({form}): {} address pool{}, {} peer{}, {} communit{}",
            path.display(),
            cfg.pools.len(),
            plural(cfg.pools.len()),
            cfg.peers.len(),
            plural(cfg.peers.len()),
            cfg.communities.len(),
            if cfg.communities.len() == 1 {
                "y"
            } else {
                "ies"
            },
        )?;
        for pool in &cfg.pools {
            let size = pool
                .ranges
                .iter()
                .fold(0u128, |acc, r| acc.saturating_add(r.len()));
            let ranges: Vec<String> = pool.ranges.iter().map(range_text).collect();
            let mut flags = Vec::new();
            if !pool.auto_assign {
                flags.push("auto-assign off".to_string());
            }
            if pool.avoid_buggy_ips {
                flags.push("avoid-buggy-ips".to_string());
            }
            if !pool.interfaces.is_empty() {
                flags.push(format!("interfaces {}", pool.interfaces.join(",")));
            }
            if pool.protocol == Protocol::Bgp {
                let ads: Vec<String> = pool
                    .bgp_advertisements
                    .iter()
                    .map(|a| {
                        let mut s = format!(
                            "aggregation-length {}/{}",
                            a.aggregation_length, a.aggregation_length_v6
                        );
                        if let Some(lp) = a.local_pref {
                            s.push_str(&format!(" localpref {lp}"));
                        }
                        for c in &a.communities {
                            s.push_str(&format!(" {c}"));
                        }
                        s
                    })
                    .collect();
                flags.push(format!("advertisements [{}]", ads.join("; ")));
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!("; {}", flags.join("; "))
            };
            writeln!(
                out,
                "  pool {} ({}): {} ({size} address{}){flags}",
                pool.name,
                pool.protocol,
                ranges.join(", "),
                if size == 1 { "" } else { "es" },
            )?;
        }
        for peer in &cfg.peers {
            let port = if peer.peer_address.is_ipv6() {
                format!("[{}]:{}", peer.peer_address, peer.peer_port)
            } else {
                format!("{}:{}", peer.peer_address, peer.peer_port)
            };
            writeln!(
                out,
                "  peer {port}: my-asn {} peer-asn {} ({}), hold-time {}s, keepalive-time {}s{}{}",
                peer.my_asn,
                peer.peer_asn,
                if peer.is_ebgp() { "eBGP" } else { "iBGP" },
                peer.hold_time.as_secs(),
                peer.keepalive_time.as_secs(),
                if peer.password.is_some() {
                    ", MD5 password"
                } else {
                    ""
                },
                if peer.node_selectors.is_empty() {
                    String::new()
                } else {
                    format!(", {} node selector(s)", peer.node_selectors.len())
                },
            )?;
        }
        if let Some(n) = self.services_checked {
            if self.breakages.is_empty() {
                writeln!(
                    out,
                    "{n} Service{} checked, {} held address{}: the configuration keeps them all",
                    plural(n),
                    self.held,
                    if self.held == 1 { "" } else { "es" },
                )?;
            } else {
                out.flush()?;
                for b in &self.breakages {
                    writeln!(err, "{b}")?;
                }
                writeln!(
                    err,
                    "{}: breaking: {} of {} held address{} would no longer be valid (ferrolb would refuse this configuration)",
                    path.display(),
                    self.breakages.len(),
                    self.held,
                    if self.held == 1 { "" } else { "es" },
                )?;
            }
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `192.0.2.0/24` when the range is exactly one CIDR block, else `first-last`.
fn range_text(r: &IpRange) -> String {
    let bits: u32 = if r.first().is_ipv4() { 32 } else { 128 };
    let len = r.len();
    if len.is_power_of_two() {
        let host_bits = len.trailing_zeros();
        let first = ferrolb_config::addr::to_u128(&r.first());
        if host_bits < 128 && first.trailing_zeros() >= host_bits {
            return format!("{}/{}", r.first(), bits - host_bits);
        }
    }
    if r.len() == 1 {
        return format!("{}/{bits}", r.first());
    }
    r.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn range(a: &str, b: &str) -> IpRange {
        IpRange::new(a.parse().unwrap(), b.parse().unwrap()).unwrap()
    }

    #[test]
    fn ranges_print_as_cidrs_when_they_are_one() {
        assert_eq!(
            range_text(&range("192.0.2.0", "192.0.2.255")),
            "192.0.2.0/24"
        );
        assert_eq!(range_text(&range("192.0.2.7", "192.0.2.7")), "192.0.2.7/32");
        assert_eq!(
            range_text(&range("192.0.2.1", "192.0.2.2")),
            "192.0.2.1-192.0.2.2"
        );
        assert_eq!(
            range_text(&range("2001:db8::", "2001:db8::ff")),
            "2001:db8::/120"
        );
        assert_eq!(
            range_text(&range("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

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
