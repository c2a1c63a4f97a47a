//! The verdict of `ferrolb config check`: a [`Report`] built from the configuration's bytes and,
//! when given, the Services whose held addresses the configuration must keep; rendered as text
//! lines (each for stdout or stderr) or as JSON.
//!
//! Must not: do I/O. The binary reads the files, prints the lines and maps [`Report::ok`] to the
//! exit status.

use serde_json::json;

use crate::addr::{to_u128, IpRange};
use crate::compat::{breaking, held_addresses, Breakage};
use crate::errors::{ConfigError, ConfigWarning};
use crate::forms::{extract_with_warnings, read, InputForm};
use crate::model::Config;
use crate::service::{ServiceView, DEFAULT_CLASS};

/// Everything `config check` found out about one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Where the configuration was found (`None` when it is invalid).
    pub form: Option<InputForm>,
    /// The validated configuration (`None` when it is invalid).
    pub config: Option<Config>,
    /// Every problem; empty when the configuration is valid.
    pub errors: Vec<ConfigError>,
    /// What the user should hear even though it does not make the configuration invalid.
    pub warnings: Vec<ConfigWarning>,
    /// How many Services were checked (`None` without `--services`).
    pub services_checked: Option<usize>,
    /// How many addresses those Services hold.
    pub held: usize,
    /// The held addresses the configuration would no longer keep.
    pub breakages: Vec<Breakage>,
}

/// One line of text output, and the stream it belongs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Out(String),
    Err(String),
}

impl Report {
    /// Reads `input` (any input form) and checks it, and against `services` when given.
    pub fn build(input: &[u8], services: Option<&[ServiceView]>) -> Report {
        let mut report = Report {
            form: None,
            config: None,
            errors: Vec::new(),
            warnings: Vec::new(),
            services_checked: services.map(<[ServiceView]>::len),
            held: 0,
            breakages: Vec::new(),
        };
        let text = match std::str::from_utf8(input) {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(ConfigError::new(
                    "<input>",
                    None,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                ));
                return report;
            }
        };
        let found = match extract_with_warnings(text) {
            Ok(f) => f,
            Err(e) => {
                report.errors = e.0;
                return report;
            }
        };
        report.warnings = found.warnings.clone();
        match read(&found) {
            Err(e) => report.errors = e.0,
            Ok((config, warnings)) => {
                report.warnings = warnings;
                if let Some(svcs) = services {
                    let held = held_addresses(svcs, DEFAULT_CLASS);
                    report.held = held.len();
                    report.breakages = breaking(&config, &held);
                }
                report.form = Some(found.form);
                report.config = Some(config);
            }
        }
        report
    }

    /// Valid, and (with Services) breaks none of their addresses.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.breakages.is_empty()
    }

    /// The `--output json` document.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "valid": self.errors.is_empty(),
            "compatible": self.breakages.is_empty(),
            "form": self.form,
            "config": self.config,
            "errors": self.errors,
            "warnings": self.warnings,
            "services_checked": self.services_checked,
            "held_addresses": self.held,
            "breakages": self.breakages,
        })
    }

    /// The `--output text` lines, in order; `path` names the input as the user gave it.
    pub fn text(&self, path: &str) -> Vec<Line> {
        let mut lines: Vec<Line> = self
            .warnings
            .iter()
            .map(|w| Line::Err(format!("warning: {w}")))
            .collect();
        lines.extend(self.errors.iter().map(|e| Line::Err(e.to_string())));
        let (Some(form), Some(cfg)) = (&self.form, &self.config) else {
            lines.push(Line::Err(format!(
                "{path}: invalid ({} problem{})",
                self.errors.len(),
                plural(self.errors.len())
            )));
            return lines;
        };
        lines.push(Line::Out(format!(
            "{path}: valid ({form}): {} address pool{}, {} peer{}, {} communit{}",
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
        )));
        lines.extend(cfg.pools.iter().map(|p| Line::Out(pool_line(p))));
        lines.extend(cfg.peers.iter().map(|p| Line::Out(peer_line(p))));
        if let Some(n) = self.services_checked {
            let held = format!(
                "{} held address{}",
                self.held,
                if self.held == 1 { "" } else { "es" }
            );
            if self.breakages.is_empty() {
                lines.push(Line::Out(format!(
                    "{n} Service{} checked, {held}: the configuration keeps them all",
                    plural(n),
                )));
            } else {
                lines.extend(self.breakages.iter().map(|b| Line::Err(b.to_string())));
                lines.push(Line::Err(format!(
                    "{path}: breaking: {} of {held} would no longer be valid (ferrolb would refuse this configuration)",
                    self.breakages.len(),
                )));
            }
        }
        lines
    }
}

fn pool_line(pool: &crate::model::Pool) -> String {
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
    if let Some(a) = &pool.service_allocation {
        let mut s = String::from("serviceAllocation");
        if a.priority != 0 {
            s.push_str(&format!(" priority {}", a.priority));
        }
        if let Some(ns) = &a.namespaces {
            let ns: Vec<&str> = ns.iter().map(String::as_str).collect();
            s.push_str(&format!(" namespaces [{}]", ns.join(",")));
        }
        if !a.service_selectors.is_empty() {
            s.push_str(&format!(
                " {} service selector(s)",
                a.service_selectors.len()
            ));
        }
        flags.push(s);
    }
    if !pool.interfaces.is_empty() {
        flags.push(format!("interfaces {}", pool.interfaces.join(",")));
    }
    for a in &pool.l2_advertisements {
        let on = if a.interfaces.is_empty() {
            "every interface".to_string()
        } else {
            a.interfaces.join(",")
        };
        flags.push(format!(
            "layer2 from nodes of {} selector(s) on {on}",
            a.node_selectors.len()
        ));
    }
    if pool.protocol.bgp() {
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
                for c in &a.large_communities {
                    s.push_str(&format!(" {c}"));
                }
                if !a.peers.is_empty() {
                    s.push_str(&format!(" peers {}", a.peers.join(",")));
                }
                if !a.node_selectors.is_empty() {
                    s.push_str(&format!(
                        " from nodes of {} selector(s)",
                        a.node_selectors.len()
                    ));
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
    format!(
        "  pool {} ({}): {} ({size} address{}){flags}",
        pool.name,
        pool.protocol,
        ranges.join(", "),
        if size == 1 { "" } else { "es" },
    )
}

fn peer_line(peer: &crate::model::Peer) -> String {
    let port = if peer.peer_address.is_ipv6() {
        format!("[{}]:{}", peer.peer_address, peer.peer_port)
    } else {
        format!("{}:{}", peer.peer_address, peer.peer_port)
    };
    let port = match &peer.name {
        Some(name) => format!("{name} {port}"),
        None => port,
    };
    format!(
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
    )
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
        let first = to_u128(&r.first());
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
    use crate::service::parse_services;

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

    fn out(lines: &[Line]) -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Out(s) => Some(s.as_str()),
                Line::Err(_) => None,
            })
            .collect()
    }

    fn err(lines: &[Line]) -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Err(s) => Some(s.as_str()),
                Line::Out(_) => None,
            })
            .collect()
    }

    const RICH: &str = "peers:\n- {my-asn: 64500, peer-asn: 64501, peer-address: '2001:db8::1', router-id: 192.0.2.9, password: x, node-selectors: [{match-labels: {rack: a}}]}\n- {my-asn: 64500, peer-asn: 64500, peer-address: 192.0.2.1, hold-time: 9s}\nbgp-communities: {ne: '65535:65281'}\naddress-pools:\n- {name: lan, protocol: layer2, avoid-buggy-ips: true, interfaces: [eth1], addresses: [192.0.2.0/24, 203.0.113.7-203.0.113.9]}\n- name: wan\n  protocol: bgp\n  auto-assign: false\n  addresses: [198.51.100.0/24]\n  bgp-advertisements:\n  - {aggregation-length: 24, localpref: 50, communities: [ne, '1:2']}\n";

    #[test]
    fn valid_text_lists_pools_and_peers_on_stdout() {
        let r = Report::build(RICH.as_bytes(), None);
        assert!(r.ok(), "{:?}", r.errors);
        let lines = r.text("c.yaml");
        assert_eq!(
            out(&lines),
            [
                "c.yaml: valid (raw config): 2 address pools, 2 peers, 1 community",
                "  pool lan (layer2): 192.0.2.0/24, 203.0.113.7-203.0.113.9 (259 addresses); avoid-buggy-ips; interfaces eth1",
                "  pool wan (bgp): 198.51.100.0/24 (256 addresses); auto-assign off; advertisements [aggregation-length 24/128 localpref 50 65535:65281 1:2]",
                "  peer [2001:db8::1]:179: my-asn 64500 peer-asn 64501 (eBGP), hold-time 90s, keepalive-time 30s, MD5 password, 1 node selector(s)",
                "  peer 192.0.2.1:179: my-asn 64500 peer-asn 64500 (iBGP), hold-time 9s, keepalive-time 3s",
            ]
        );
        assert!(err(&lines).is_empty());
    }

    #[test]
    fn invalid_and_breaking_go_to_stderr() {
        let r = Report::build(b"address-pools:\n- {name: a, protocol: layer3}\n", None);
        assert!(!r.ok());
        assert_eq!(r.form, None);
        let lines = r.text("bad.yaml");
        assert!(out(&lines).is_empty());
        assert_eq!(err(&lines).last(), Some(&"bad.yaml: invalid (2 problems)"));

        let r = Report::build(&[b'a', 0xff], None);
        assert_eq!(
            r.errors[0].to_string(),
            "<input>: not UTF-8 text (invalid byte at offset 1)"
        );

        let svcs = parse_services("kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 203.0.113.1}]}}\n").unwrap();
        let r = Report::build(RICH.as_bytes(), Some(&svcs));
        assert!(!r.ok());
        assert_eq!(r.services_checked, Some(1));
        let lines = r.text("c.yaml");
        assert_eq!(
            err(&lines),
            [
                "service default/a ip 203.0.113.1: outside every address pool of the new configuration",
                "c.yaml: breaking: 1 of 1 held address would no longer be valid (ferrolb would refuse this configuration)",
            ]
        );
        let svcs = parse_services("kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n").unwrap();
        let lines = Report::build(RICH.as_bytes(), Some(&svcs)).text("c.yaml");
        assert_eq!(
            out(&lines).last(),
            Some(&"1 Service checked, 1 held address: the configuration keeps them all")
        );
    }

    #[test]
    fn warnings_are_shown_valid_or_not() {
        let disabled = "kind: ClusterConfiguration\nspec:\n  addons:\n    addonsList:\n    - name: metallb\n      enabled: false\n      values: |-\n        configInline:\n          address-pools:\n          - {name: a, protocol: layer2, addresses: [192.0.2.0/28]}\n";
        let r = Report::build(disabled.as_bytes(), None);
        assert!(r.ok());
        let lines = r.text("cluster.yaml");
        assert_eq!(
            lines[0],
            Line::Err("warning: spec.addons.addonsList[0].enabled = \"false\": the metallb addon is disabled, so Konvoy does not deploy MetalLB; its configuration is read all the same".into())
        );
        assert_eq!(
            r.json()["warnings"][0]["path"],
            "spec.addons.addonsList[0].enabled"
        );
        assert_eq!(r.json()["valid"], true);

        let invalid = disabled.replace("layer2", "layer3");
        let r = Report::build(invalid.as_bytes(), None);
        assert!(!r.ok());
        assert_eq!(r.warnings.len(), 1, "the warning survives a refusal");
        let lines = r.text("cluster.yaml");
        assert!(matches!(&lines[0], Line::Err(l) if l.starts_with("warning: ")));
        assert_eq!(r.json()["valid"], false);
    }
}
