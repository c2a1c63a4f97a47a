//! `ferrolb standalone`: process wiring for standalone mode: flags to [`Options`] and membership
//! settings, the announcers, logging and the runtime (`super::process`). The work happens in
//! `ferrolb_standalone`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use ferrolb_speaker::membership::MemberlistConfig;
use ferrolb_speaker::world::NodeInfo;
use prometheus_client::registry::Registry;

use super::process;
use crate::cli::StandaloneArgs;
use ferrolb_standalone::{self as standalone, Options};

/// Parses `k=v,k2=v2`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("--node-labels: {kv:?} is not key=value")),
        })
        .collect()
}

pub fn run(args: &StandaloneArgs) -> ExitCode {
    process::prepare();
    let labels = match args.node_labels.as_deref().map(parse_labels).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            eprintln!("standalone: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        config: args.config.clone(),
        services: args.services.clone(),
        state: args.state.clone(),
        node: NodeInfo {
            name: args.node.clone(),
            labels,
        },
        class: args.load_balancer_class.clone(),
        poll: Duration::from_millis(500),
        membership: None,
    };
    let mut opts = opts;
    if let Some(bind) = args.ml_bind {
        match MemberlistConfig::from_flags(
            &args.node,
            bind,
            &args.ml_join,
            args.ml_secret_file.as_deref(),
            args.ml_profile,
            &args.ml_timers.overrides(),
        ) {
            Ok(c) => opts.membership = Some(c),
            Err(e) => {
                eprintln!("standalone: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut registry = Registry::default();
    let announcers = match ferrolb_speaker::lifecycle::announcers(&mut registry, &args.bgp_listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("standalone: cannot start the announcers: {e:#}");
            return ExitCode::from(2);
        }
    };
    process::run("standalone", async move {
        standalone::run(opts, announcers)
            .await
            .map_err(anyhow::Error::new)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels("zone=a, rack=r1").unwrap();
        assert_eq!(l["zone"], "a");
        assert_eq!(l["rack"], "r1");
        assert!(parse_labels("nokey").is_err());
    }
}
