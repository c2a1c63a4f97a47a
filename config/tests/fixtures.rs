//! Golden fixtures and robustness properties for the config crate.
//!
//! `tests/data/valid/NAME.yaml` must parse; its input form and validated model (as JSON) must equal
//! `NAME.json`. `tests/data/invalid/NAME.yaml` must be refused with exactly the problems in
//! `NAME.err` (one per line, as `ferrolb config check` prints them). `FERROLB_BLESS=1 cargo test -p
//! ferrolb-config --test fixtures` rewrites the expected files from the current output (review the
//! diff before committing).

#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};

use ferrolb_config::service::parse_services;
use ferrolb_config::{parse, parse_with_form};
use proptest::prelude::*;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(data(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

fn bless() -> bool {
    std::env::var_os("FERROLB_BLESS").is_some_and(|v| v == "1")
}

/// Compares `got` with the golden file (or writes it when blessing); returns a mismatch message.
fn check_golden(golden: &Path, got: &str) -> Option<String> {
    if bless() {
        fs::write(golden, got).unwrap();
        return None;
    }
    match fs::read_to_string(golden) {
        Ok(want) if want == got => None,
        Ok(want) => Some(format!(
            "{}: output differs\n--- want\n{want}\n--- got\n{got}",
            golden.display()
        )),
        Err(e) => Some(format!(
            "{}: {e} (run with FERROLB_BLESS=1)",
            golden.display()
        )),
    }
}

#[test]
fn valid_fixtures_parse_to_their_golden_model() {
    let files = yaml_files("valid");
    assert!(
        files.len() >= 10,
        "expected the valid fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        match parse_with_form(&text) {
            Err(e) => failures.push(format!("{}: refused:\n{e}", f.display())),
            Ok((form, cfg)) => {
                let got = serde_json::to_string_pretty(&serde_json::json!({
                    "form": form,
                    "config": cfg,
                }))
                .unwrap()
                    + "\n";
                failures.extend(check_golden(&f.with_extension("json"), &got));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_fixtures_report_their_golden_errors() {
    let files = yaml_files("invalid");
    assert!(
        files.len() >= 40,
        "expected one fixture per rule, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        match parse(&text) {
            Ok(_) => failures.push(format!("{}: accepted, expected errors", f.display())),
            Err(e) => {
                assert!(!e.is_empty());
                failures.extend(check_golden(&f.with_extension("err"), &format!("{e}\n")));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What a file of `tests/data/konvoy-page/` must do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PageCase {
    /// Valid, no warning; renders to `NAME.configmap`.
    Valid,
    /// Valid with the warnings in `NAME.warnings`; renders to `NAME.configmap`.
    Warns,
    /// Refused with exactly the problems in `NAME.err`.
    Refused,
}

/// Konvoy's load-balancing page: its two `cluster.yaml` examples copied byte for byte
/// (`layer2.yaml`, `bgp.yaml`: the page's map-shaped `spec.addons.addonsList`) are valid and
/// render (namespace `kubeaddons`, the page's) to their golden ConfigMap; each variant broken in
/// one way gets its own message naming the field path.
#[test]
fn konvoy_page_examples_and_their_broken_variants() {
    use ferrolb_config::forms::render_configmap;
    use ferrolb_config::{parse_with_warnings, InputForm};
    use PageCase::*;
    let cases = [
        ("layer2", Valid),
        ("bgp", Valid),
        ("disabled", Warns),
        ("no-metallb-addon", Refused),
        ("no-values", Refused),
        ("values-not-a-string", Refused),
        ("no-configinline", Refused),
        ("configinline-not-a-mapping", Refused),
    ];
    let dir = data("konvoy-page");
    assert_eq!(
        yaml_files("konvoy-page").len(),
        cases.len(),
        "a file without a case"
    );
    let mut failures = Vec::new();
    let mut messages = Vec::new();
    for (name, case) in cases {
        let file = dir.join(format!("{name}.yaml"));
        let text = fs::read_to_string(&file).unwrap();
        match (parse_with_warnings(&text), case) {
            (Err(e), Refused) => {
                for p in e.iter() {
                    assert!(p.path.starts_with("spec.addons"), "{name}: {p}");
                }
                messages.push(e.to_string());
                failures.extend(check_golden(&file.with_extension("err"), &format!("{e}\n")));
            }
            (Ok(parsed), Valid | Warns) => {
                assert_eq!(parsed.form, InputForm::KonvoyClusterYaml, "{name}");
                let warnings: String = parsed.warnings.iter().map(|w| format!("{w}\n")).collect();
                if case == Warns {
                    assert!(!warnings.is_empty(), "{name}: no warning");
                    messages.push(warnings.clone());
                    failures.extend(check_golden(&file.with_extension("warnings"), &warnings));
                } else {
                    assert_eq!(warnings, "", "{name}");
                }
                let rendered = render_configmap(&text, "kubeaddons", "config").unwrap();
                assert_eq!(rendered.warnings, parsed.warnings, "{name}");
                failures.extend(check_golden(
                    &file.with_extension("configmap"),
                    &rendered.manifest,
                ));
                // What is rendered reads back as the same configuration.
                let back = parse_with_form(&rendered.manifest).unwrap();
                assert_eq!(
                    back,
                    (
                        InputForm::ConfigMap {
                            namespace: "kubeaddons".into(),
                            name: "config".into()
                        },
                        parsed.config
                    ),
                    "{name}"
                );
            }
            (Ok(_), Refused) => failures.push(format!("{name}: accepted, expected errors")),
            (Err(e), _) => failures.push(format!("{name}: refused:\n{e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let distinct: std::collections::BTreeSet<&String> = messages.iter().collect();
    assert_eq!(
        distinct.len(),
        messages.len(),
        "two variants share a message"
    );

    // The examples' content, field by field.
    let l2 = parse(&fs::read_to_string(dir.join("layer2.yaml")).unwrap()).unwrap();
    assert_eq!(l2.pools.len(), 1);
    assert_eq!(l2.pools[0].name, "default");
    assert_eq!(l2.pools[0].ranges[0].to_string(), "10.0.50.25-10.0.50.50");
    assert!(l2.peers.is_empty());
    let bgp = parse(&fs::read_to_string(dir.join("bgp.yaml")).unwrap()).unwrap();
    assert_eq!(bgp.pools[0].name, "my-ip-space");
    assert_eq!(bgp.pools[0].ranges[0].len(), 256);
    assert_eq!(bgp.peers.len(), 1);
    assert_eq!(bgp.peers[0].peer_address.to_string(), "172.17.0.4");
    assert_eq!((bgp.peers[0].my_asn, bgp.peers[0].peer_asn), (64500, 64500));
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let text = "peers:\n- my-asn: 0\n  peer-asn: 64500\n  peer-address: nope\naddress-pools:\n- name: a\n  protocol: bgp\n  addresses: [192.0.2.0/33]\n- protocol: layer2\n  addresses: [198.51.100.9-198.51.100.1]\n";
    let e = parse(text).unwrap_err();
    let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "peers[0].my-asn",
            "peers[0].peer-address",
            "address-pools[0].addresses[0]",
            "address-pools[1].name",
            "address-pools[1].addresses[0]",
        ]
    );
}

#[test]
fn all_input_forms_give_the_same_model() {
    let raw =
        "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [192.0.2.10-192.0.2.20]\n";
    let configmap = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: metallb-system\n  name: config\ndata:\n  config: |\n{}",
        raw.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let helm = format!(
        "controller:\n  image: x\nconfigInline:\n{}",
        raw.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let konvoy = format!(
        "kind: ClusterProvisioner\napiVersion: konvoy.mesosphere.io/v1beta2\nspec:\n  provider: none\n---\nkind: ClusterConfiguration\napiVersion: konvoy.mesosphere.io/v1beta2\nspec:\n  addons:\n  - configRepository: https://github.com/mesosphere/kubernetes-base-addons\n    addonsList:\n    - name: traefik\n      enabled: true\n    - name: metallb\n      enabled: true\n      values: |-\n        configInline:\n{}",
        raw.lines().map(|l| format!("          {l}\n")).collect::<String>()
    );
    let want = parse(raw).unwrap();
    assert_eq!(want.pools.len(), 1);
    for (name, text) in [
        ("configmap", &configmap),
        ("helm", &helm),
        ("konvoy", &konvoy),
    ] {
        assert_eq!(parse(text).as_ref(), Ok(&want), "{name}:\n{text}");
    }
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let e = parse("address-pools:\n- name: a\n  protocol: [layer2\n").unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e.0[0].line.is_some() && e.0[0].column.is_some(), "{e}");
    assert!(e.to_string().contains("YAML syntax error"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
        let _ = parse_services(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_like_text(text in "[-a-z0-9:./ \\[\\]{}\n|>'\"#&*!%@,]{0,300}") {
        let _ = parse(&text);
        let _ = parse_services(&text);
    }

    #[test]
    fn parse_never_panics_on_mutated_valid_configs(
        pos in 0usize..600,
        ch in prop::sample::select(vec!["", "-", ":", "\n", " ", "0", "/", "x", "[", "'", "99999999999", "::"]),
    ) {
        let base = "peers:\n- my-asn: 64512\n  peer-asn: 64500\n  peer-address: 192.0.2.1\n  hold-time: 1m30s\n  node-selectors:\n  - match-expressions:\n    - {key: rack, operator: In, values: [a]}\nbgp-communities: {ne: '65535:65281'}\naddress-pools:\n- name: a\n  protocol: bgp\n  addresses: [198.51.100.0/24, '2001:db8::-2001:db8::ff']\n  bgp-advertisements:\n  - {aggregation-length: 24, aggregation-length-v6: 120, localpref: 100, communities: [ne, '1:2']}\n";
        let cut = pos.min(base.len());
        let cut = (0..=cut).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}{}", &base[..cut], ch, &base[cut..]);
        let _ = parse(&text);
        let _ = parse_services(&text);
    }
}

#[test]
fn kubectl_get_svc_output_reads_and_checks() {
    use ferrolb_config::compat::{breaking, held_addresses};
    use ferrolb_config::{IpFamily, IpFamilyPolicy, ServiceKey, TrafficPolicy};
    let text = fs::read_to_string(data("services").join("kubectl-get-svc-A.yaml")).unwrap();
    let svcs = parse_services(&text).unwrap();
    let keys: Vec<String> = svcs.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        vec!["default/kubernetes", "infra/dns-tcp", "shop/pending"]
    );
    assert!(!svcs[0].is_load_balancer);
    let dns = &svcs[1];
    assert!(dns.is_load_balancer);
    assert_eq!(dns.ip_families, vec![IpFamily::V4, IpFamily::V6]);
    assert_eq!(dns.ip_family_policy, IpFamilyPolicy::PreferDualStack);
    assert_eq!(dns.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(dns.load_balancer_ip.as_deref(), Some("198.51.100.53"));
    assert_eq!(dns.cluster_ips.len(), 2);
    assert_eq!(
        dns.annotations
            .get("metallb.universe.tf/allow-shared-ip")
            .map(String::as_str),
        Some("dns")
    );
    assert_eq!(dns.ports.len(), 1);
    assert_eq!(
        (dns.ports[0].protocol.as_str(), dns.ports[0].port),
        ("TCP", 53)
    );
    assert_eq!(svcs[2].ports[0].protocol, "UDP");
    assert!(svcs[2].ingress_ips.is_empty());

    let held = held_addresses(&svcs, ferrolb_config::service::DEFAULT_CLASS);
    assert_eq!(held.len(), 2);
    let v4_only =
        parse("address-pools:\n- {name: a, protocol: bgp, addresses: [198.51.100.0/24]}\n")
            .unwrap();
    let b = breaking(&v4_only, &held);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].service, ServiceKey::new("infra", "dns-tcp"));
    assert_eq!(b[0].ip.to_string(), "2001:db8:53::53");
    let dual = parse("address-pools:\n- {name: a, protocol: bgp, addresses: [198.51.100.0/24, '2001:db8:53::/64']}\n").unwrap();
    assert!(breaking(&dual, &held).is_empty());
}

/// Seconds of fuzzing: 3 in `cargo test`, 180 with `FERROLB_SOAK=1` (`make soak`), or
/// `FERROLB_FUZZ_SECS`.
fn fuzz_budget() -> std::time::Duration {
    let secs = std::env::var("FERROLB_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(
            if std::env::var_os("FERROLB_SOAK").is_some_and(|v| v == "1") {
                180
            } else {
                3
            },
        );
    std::time::Duration::from_secs(secs)
}

/// xorshift64*: a reproducible stream of pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that sit on the edges of what the parser reads: numbers around type limits, odd
/// addresses and ranges, Go durations, YAML tags, anchors and aliases, empty and huge strings.
const FUZZ_SCALARS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4294967295",
    "4294967296",
    "65535",
    "65536",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e309",
    "-0",
    "0x10",
    "0o7",
    ".inf",
    "nan",
    "~",
    "null",
    "true",
    "''",
    "\"\"",
    "0.0.0.0",
    "255.255.255.255",
    "192.0.2.1",
    "192.0.2.0/33",
    "192.0.2.0/-1",
    "192.0.2.10-192.0.2.1",
    "192.0.2.1-2001:db8::1",
    "::",
    "::/0",
    "0.0.0.0/0",
    "2001:db8::/129",
    "2001:db8::ffff:ffff-2001:db8::",
    "fe80::1%eth0",
    "1.2.3",
    "1:2",
    "65535:65535",
    "65536:1",
    "1:65536",
    "large:1:2:3",
    "0s",
    "1ns",
    "1h2m3s",
    "-5s",
    "9999999999h",
    "1.5.5s",
    "3",
    "90s",
    "!!binary aGVsbG8=",
    "!!str 1",
    "!!int x",
    "&a x",
    "*a",
    "*nope",
    "<<: *a",
    "[]",
    "{}",
    "[[[]]]",
    "{a: {b: {c: {}}}}",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "ü",
    "日本",
    "\t",
    "|",
    ">",
    "- -",
    "? x",
    "bgp",
    "layer2",
    "BGP",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "LoadBalancer",
    "IPv4",
    "IPv6",
    "RequireDualStack",
    "PreferDualStack",
    "Local",
    "Cluster",
];

/// One structural mutation of a YAML document, line-aware so most results still parse as YAML
/// and reach the validators (random bytes mostly die in the YAML scanner).
fn mutate(rng: &mut Rng, text: &str, corpus: &[String]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let i = rng.below(lines.len());
    match rng.below(12) {
        // Replace a scalar value (after `key:` or `- `) with an edge value.
        0..=3 => {
            let l = &lines[i];
            let v = rng.pick(FUZZ_SCALARS);
            lines[i] = if let Some(p) = l.find(": ") {
                format!("{}: {v}", &l[..p])
            } else if let Some(p) = l.find("- ") {
                format!("{}- {v}", &l[..p])
            } else {
                format!("{l} {v}")
            };
        }
        4 => {
            lines.remove(i);
        }
        5 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        6 => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
        // Change indentation by one or two spaces.
        7 => {
            if rng.below(2) == 0 {
                lines[i] = format!("  {}", lines[i]);
            } else if let Some(s) = lines[i].strip_prefix(' ') {
                lines[i] = s.to_string();
            }
        }
        // Splice in a line from another fixture (valid keys in the wrong place).
        8 => {
            let other = rng.pick(corpus);
            let ol: Vec<&str> = other.lines().collect();
            if !ol.is_empty() {
                lines.insert(i, ol[rng.below(ol.len())].to_string());
            }
        }
        // Blow a value up: a huge string or a long list.
        9 => {
            let n = 1 + rng.below(5000);
            lines[i] = if rng.below(2) == 0 {
                format!("{}{}", lines[i], "9".repeat(n))
            } else {
                format!(
                    "{} [{}]",
                    lines[i],
                    vec!["192.0.2.1"; n.min(2000)].join(",")
                )
            };
        }
        // Truncate the document.
        10 => lines.truncate(i),
        // Flip a byte.
        _ => {
            let mut b = lines[i].clone().into_bytes();
            if !b.is_empty() {
                let k = rng.below(b.len());
                b[k] = (rng.next() & 0x7f) as u8;
            }
            lines[i] = String::from_utf8_lossy(&b).into_owned();
        }
    }
    lines.join("\n")
}

/// Time-bounded fuzzing of `parse` and `parse_services`: mutated valid fixtures (1–4 structural
/// mutations each) and raw random bytes. A panic fails the test and prints the input.
#[test]
fn fuzz_config_and_service_parsers_never_panic() {
    let mut corpus: Vec<String> = yaml_files("valid")
        .iter()
        .chain(yaml_files("services").iter())
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    corpus.push(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b, annotations: {metallb.universe.tf/allow-shared-ip: k, metallb.universe.tf/loadBalancerIPs: '192.0.2.1,2001:db8::1'}}\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 192.0.2.1\n  externalTrafficPolicy: Local\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  ports:\n  - {port: 80, protocol: TCP}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n".to_string(),
    );
    let seed = std::env::var("FERROLB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    let mut rng = Rng(seed);
    let budget = fuzz_budget();
    let start = std::time::Instant::now();
    let (mut inputs, mut accepted, mut svc_accepted) = (0u64, 0u64, 0u64);
    let mut slowest = std::time::Duration::ZERO;
    while start.elapsed() < budget {
        let text = if rng.below(10) == 0 {
            let n = rng.below(600);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let mut t = rng.pick(&corpus).clone();
            for _ in 0..1 + rng.below(4) {
                t = mutate(&mut rng, &t, &corpus);
            }
            t
        };
        let t0 = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| (parse(&text).is_ok(), parse_services(&text).is_ok()));
        slowest = slowest.max(t0.elapsed());
        match r {
            Ok((c, s)) => {
                accepted += u64::from(c);
                svc_accepted += u64::from(s);
            }
            Err(_) => panic!("parser panicked (seed {seed}) on input:\n{text}"),
        }
        inputs += 1;
    }
    eprintln!(
        "measured: {inputs} fuzz inputs in {:?} (seed {seed}): {accepted} accepted as config, \
         {svc_accepted} as services, 0 panics, slowest input {slowest:?}",
        start.elapsed()
    );
    assert!(inputs > 100, "fuzzer ran only {inputs} inputs");
}
