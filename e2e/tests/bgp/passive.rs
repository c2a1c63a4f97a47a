//! Passive peers (`--bgp-listen`): BIRD connecting to the node's listener with MD5 gets the
//! routes, a wrong key and a stranger are kept out; both sides dialling settle on one stable
//! session (RFC 4271 collision resolution).

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::routers::Bird;

use crate::lab::Simple;

/// ferrolb's own dialling cannot work (nothing listens on port 1790 at the router), so the
/// session exists only if BIRD's connection to `--bgp-listen` is accepted.
const LISTEN_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-port: 1790
  peer-asn: 64513
  my-asn: 64512
  password: listen-secret
- peer-address: 192.0.2.3
  peer-port: 1790
  peer-asn: 64513
  my-asn: 64512
  source-address: 192.0.2.5
  password: listen-secret
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  bgp-advertisements:
  - communities: [tag]
";

/// BIRD active (not passive): it connects to the node's port 179, with the MD5 key.
const LISTEN_BIRD: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp active4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 port 179 as 64512;
  password "listen-secret";
  connect delay time 1; connect retry time 2;
  ipv4 { import all; export none; };
}
protocol bgp wrong4 {
  local 192.0.2.3 as 64513; neighbor 192.0.2.5 port 179 as 64512;
  password "not-the-secret";
  connect delay time 1; connect retry time 2;
  ipv4 { import all; export none; };
}
"#;

/// Passive peers: `--bgp-listen` accepts BIRD's MD5-keyed connection from the configured
/// peer address and the routes reach BIRD over it; a configured peer with the wrong MD5 key
/// never connects; a connection from an address that is no peer (another namespace) is closed
/// without a byte and logged.
#[test]
fn bird_connecting_to_the_listener_gets_routes_and_strangers_are_closed() -> Result<()> {
    if !require(&[Root, Program("bird"), Program("birdc"), Program("socat")])? {
        return Ok(());
    }
    let lab = Simple::start("listen", LISTEN_CONFIG, &["--bgp-listen", "0.0.0.0:179"])?;
    lab.router.add_addr("r0", "192.0.2.3/24")?;
    lab.router.add_addr("r0", "192.0.2.9/24")?;
    let started = Instant::now();
    let bird = Bird::start(&lab.router, &lab.dir, LISTEN_BIRD)?;
    let limit = Duration::from_secs(30);
    lab.wait_for(limit, "route at BIRD over the accepted connection", || {
        bird.routes("active4")
            .map(|o| o.contains("198.51.100.10/32"))
            .unwrap_or(false)
    })?;
    eprintln!(
        "measured: BIRD (active, connect delay 1 s) start -> route over the accepted session in {:?}",
        started.elapsed()
    );
    let out = bird.routes("active4")?;
    assert!(out.contains("BGP.as_path: 64512"), "{out}");
    assert!(out.contains("BGP.next_hop: 192.0.2.2"), "{out}");
    assert!(out.contains("(64512,100)"), "{out}");
    let proto = bird.birdc(&["show", "protocols", "all", "active4"])?;
    assert!(proto.contains("Established"), "{proto}");

    // A stranger in the router namespace (192.0.2.9, not a peer): closed, no OPEN, no byte.
    let t = Instant::now();
    let out = lab
        .router
        .command("socat")
        .args([
            "-T",
            "5",
            "-u",
            "TCP:192.0.2.2:179,bind=192.0.2.9",
            "STDOUT",
        ])
        .stdin(Stdio::null())
        .output()?;
    let closed_in = t.elapsed();
    assert!(
        out.stdout.is_empty(),
        "bytes to an unconfigured address: {:?}",
        out.stdout
    );
    assert!(
        closed_in < Duration::from_secs(4),
        "not closed at once: {closed_in:?}"
    );
    lab.wait_for(
        Duration::from_secs(5),
        "refusal logged with the address",
        || {
            fs::read_to_string(lab.dir.join("node.log"))
                .map(|l| l.contains("not a configured peer") && l.contains("192.0.2.9"))
                .unwrap_or(false)
        },
    )?;
    eprintln!("measured: unconfigured 192.0.2.9 closed after {closed_in:?} with 0 bytes");
    let log = fs::read_to_string(lab.dir.join("node.log"))?;
    assert!(
        !log.lines()
            .any(|l| l.contains("accepted") && l.contains("192.0.2.3")),
        "wrong-key peer accepted:\n{log}"
    );
    // The real session is untouched; the peer with the wrong MD5 key never got through: the
    // node's kernel counts its SYNs failing the listening socket's key for 192.0.2.3.
    let md5_failures = || {
        lab.node
            .exec_stdout("nstat", &["-asz", "TcpExtTCPMD5Failure"])
            .ok()
            .and_then(|o| {
                o.lines()
                    .find_map(|l| l.strip_prefix("TcpExtTCPMD5Failure"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    lab.wait_for(
        Duration::from_secs(10),
        "wrong-key SYNs dropped by the node",
        || md5_failures() > 0,
    )?;
    assert!(bird.established("active4"));
    assert!(!bird.established("wrong4"));
    eprintln!(
        "measured: wrong-key peer: {} SYNs failed MD5 at the node, not established",
        md5_failures()
    );
    assert!(bird
        .routes("wrong4")?
        .lines()
        .all(|l| !l.contains("198.51.100.10")));
    Ok(())
}

/// Both sides active: ferrolb dials BIRD's port 179 and listens on its own; BIRD (router id
/// higher than the node's, so its connection wins a collision) dials too.
const BOTH_ACTIVE_BIRD: &str = r#"
router id 192.0.2.200;
protocol device {}
protocol bgp both4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512;
  connect delay time 1; connect retry time 1;
  ipv4 { import all; export none; };
}
"#;

/// Both ends dial and listen: whatever the race between the two connections (a collision is
/// resolved by RFC 4271 §6.8 on both sides), one session comes up and stays up. Which
/// race happens is up to timing (the decisions are printed); the forced collision in both
/// directions is the loopback test in `speaker/src/bgp/announcer.rs`.
#[test]
fn both_sides_active_settle_on_one_stable_session() -> Result<()> {
    if !require(&[Root, Program("bird"), Program("birdc")])? {
        return Ok(());
    }
    let config = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
";
    let lab = Simple::start("both", config, &["--bgp-listen", "192.0.2.2:179"])?;
    let bird = Bird::start(&lab.router, &lab.dir, BOTH_ACTIVE_BIRD)?;
    let limit = Duration::from_secs(30);
    lab.wait_for(limit, "route at BIRD", || {
        bird.routes("both4")
            .map(|o| o.contains("198.51.100.10/32"))
            .unwrap_or(false)
    })?;
    let since = |b: &Bird| {
        b.birdc(&["show", "protocols", "both4"])
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("both4"))
            .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
    };
    // Events in ferrolb's log: (sessions established, sessions down).
    let events = || -> (usize, usize) {
        let log = fs::read_to_string(lab.dir.join("node.log")).unwrap_or_default();
        let ups = log
            .lines()
            .filter(|l| l.contains("session established"))
            .count();
        let downs = log.lines().filter(|l| l.contains("session down")).count();
        (ups, downs)
    };
    // Wait for BIRD to hold the session (a race between two OPEN exchanges can cost one
    // reconnect: RFC 4271 §6.8 cannot see that the peer already went Established on the
    // connection we close), then it must stay: BIRD retries every second, so repeated
    // wrong collision decisions would show as a flap in this window.
    lab.wait_for(limit, "BIRD Established", || bird.established("both4"))?;
    let (first, before) = (since(&bird), events());
    std::thread::sleep(Duration::from_millis(2500));
    // BIRD prints the time of the last state change converted from its monotonic clock on each
    // call, so the same session's time can move by a millisecond (seen in CI: .193 then .194);
    // a restart within the window would move it by far more.
    let (a, b) = (since(&bird), first);
    let (ta, tb) = (
        a.as_deref().and_then(ms_of_day),
        b.as_deref().and_then(ms_of_day),
    );
    assert!(
        matches!((ta, tb), (Some(x), Some(y)) if x.abs_diff(y) <= 5),
        "BIRD's session restarted: {a:?} after {b:?}"
    );
    assert!(bird.established("both4"));
    let log = fs::read_to_string(lab.dir.join("node.log"))?;
    assert_eq!(events(), before, "ferrolb's session flapped:\n{log}");
    assert!(
        before.0 >= 1 && before.0 <= 2 && before.1 <= 1,
        "{before:?}\n{log}"
    );
    let decisions: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("decision=").nth(1))
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    eprintln!(
        "measured: both active: stable session, (established, down) before it {before:?}, collision decisions at ferrolb: {decisions:?}"
    );
    Ok(())
}

/// The milliseconds since midnight of the last `HH:MM:SS.mmm` word of `line` (BIRD's protocol
/// "since" column), if it has one.
fn ms_of_day(line: &str) -> Option<u64> {
    let word = line.split_whitespace().last()?;
    let (hms, frac) = word.split_once('.').unwrap_or((word, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

#[test]
fn bird_since_times_parse() {
    assert_eq!(ms_of_day("both4 BGP --- up 13:30:28.194"), Some(48_628_194));
    assert_eq!(ms_of_day("both4 BGP --- up 00:00:01.5"), Some(1_500));
    assert_eq!(ms_of_day("both4 BGP --- up 00:00:02"), Some(2_000));
    assert_eq!(ms_of_day("both4 BGP --- up"), None);
}
