//! Faults and hostile input against the real `ferrolb standalone` binary in network namespaces
//! (issue 8). Every test prints what it measured (`measured:` lines; run with `--nocapture`).
//!
//! Sizes: short by default (CI); `FERROLB_SOAK=1` (`make soak`) runs the long version.
//!
//! - `bgp_hostile_peer_*`: a "router" that is a bare TCP listener (socat relays bytes, the BGP
//!   bytes are written by hand here) sends malformed messages; the exact NOTIFICATION, the reset,
//!   the reconnect and the process staying up are checked; then a real BIRD gets the routes.
//! - `speaker_sigkill_restarts_*`: SIGKILL + restart with a BIRD peer, desired set changing.
//! - `router_flaps_*`: BIRD restarted N times; full set each time; RSS compared.
//! - `layer2_partition_*`, `arp_flood_*`: see their doc comments.
//!
//! Root only; every namespace is removed on drop (also on failure).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::routers::Bird;

fn soak() -> bool {
    std::env::var_os("FERROLB_SOAK").is_some_and(|v| v == "1")
}

/// `short` in CI, `long` with `FERROLB_SOAK=1`.
fn size(short: usize, long: usize) -> usize {
    if soak() {
        long
    } else {
        short
    }
}

fn skip(programs: &[&str]) -> bool {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(programs) {
        eprintln!("SKIP: needs root and {programs:?}");
        return true;
    }
    false
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Result<Dir> {
        let p = std::env::temp_dir().join(format!("flb-{}-faults-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Atomic write (the polling process never reads a half-written file).
    fn write(&self, name: &str, text: &str) -> Result<()> {
        let tmp = self.0.join(format!(".{name}.tmp"));
        fs::write(&tmp, text)?;
        fs::rename(&tmp, self.0.join(name))?;
        Ok(())
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `ferrolb standalone` in a namespace, output to `<dir>/<log>`; SIGKILLed on drop.
struct Standalone {
    child: Child,
}

impl Standalone {
    fn start(ns: &Netns, dir: &Path, node: &str, log: &str, extra: &[&str]) -> Result<Standalone> {
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))?;
        let child = ns
            .command(&bin.to_string_lossy())
            .args(["standalone", "--node", node])
            .args(["--config", "config.yaml", "--services", "services.yaml"])
            .args(["--state", &format!("state-{node}.json")])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Standalone { child })
    }

    /// The ferrolb process id (`ip netns exec` execs the program, so the child is ferrolb).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size in KiB (`VmRSS` in /proc/PID/status).
    fn rss_kib(&self) -> Result<u64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not within {limit:?}")
}

// ---------------------------------------------------------------------------------------------
// BGP wire bytes, by hand (RFC 4271), for the hostile peer.

const MARKER: [u8; 16] = [0xff; 16];

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = MARKER.to_vec();
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// An OPEN from the router: version, 2-octet AS, hold time, BGP id 192.0.2.1, capabilities
/// multiprotocol IPv4 unicast and 4-octet AS.
fn open(version: u8, asn: u16, hold: u16) -> Vec<u8> {
    let caps: &[u8] = &[
        1,
        4,
        0,
        1,
        0,
        1, // MP: AFI 1 SAFI 1
        65,
        4,
        0,
        0,
        (asn >> 8) as u8,
        asn as u8, // 4-octet AS
    ];
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&[192, 0, 2, 1]);
    b.push((caps.len() + 2) as u8);
    b.push(2); // optional parameter: capabilities
    b.push(caps.len() as u8);
    b.extend_from_slice(caps);
    message(1, &b)
}

fn keepalive() -> Vec<u8> {
    message(4, &[])
}

/// An UPDATE with the given path attribute bytes (withdrawn length 0) and one NLRI 203.0.113.0/24.
fn update(attrs: &[u8], declared_attr_len: Option<u16>) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(
        &declared_attr_len
            .unwrap_or(attrs.len() as u16)
            .to_be_bytes(),
    );
    b.extend_from_slice(attrs);
    b.extend_from_slice(&[24, 203, 0, 113]);
    message(2, &b)
}

/// ORIGIN IGP, AS_PATH [64513] (4-octet), NEXT_HOP 192.0.2.1: a correct attribute set.
fn good_attrs() -> Vec<u8> {
    let mut a = vec![0x40, 1, 1, 0];
    a.extend_from_slice(&[0x40, 2, 6, 2, 1, 0, 0, 0xfb, 0xf9]);
    a.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
    a
}

/// Splits a byte stream into BGP messages (type, whole message); the rest stays in `buf`.
fn split_messages(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while buf.len() >= 19 {
        let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
        if len < 19 || buf.len() < len {
            break;
        }
        let m: Vec<u8> = buf.drain(..len).collect();
        out.push((m[18], m));
    }
    out
}

/// One accepted TCP connection on the router side: socat listens on 192.0.2.1:179 in the router
/// namespace, accepts one connection and relays its bytes to our pipes (no BGP library involved).
struct RawPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Option<Vec<u8>>>,
    buf: Vec<u8>,
    queue: std::collections::VecDeque<(u8, Vec<u8>)>,
}

impl RawPeer {
    fn listen(router: &Netns) -> Result<RawPeer> {
        RawPeer::spawn(router, "TCP-LISTEN:179,bind=192.0.2.1,reuseaddr")
    }

    /// The router connects from its configured address to the node's `--bgp-listen` port.
    fn connect(router: &Netns) -> Result<RawPeer> {
        RawPeer::spawn(router, "TCP:192.0.2.2:179,bind=192.0.2.1,connect-timeout=2")
    }

    fn spawn(router: &Netns, addr: &str) -> Result<RawPeer> {
        let mut child = router
            .command("socat")
            .args(["-b", "65536", "STDIO", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("socat")?;
        let mut out = child.stdout.take().context("stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 65536];
            loop {
                match out.read(&mut b) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Some(b[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(RawPeer {
            child,
            stdin,
            rx,
            buf: Vec::new(),
            queue: Default::default(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let s = self.stdin.as_mut().context("closed")?;
        s.write_all(bytes)?;
        s.flush()?;
        Ok(())
    }

    /// The next message from ferrolb, `None` when the connection closed.
    fn next(&mut self, limit: Duration) -> Result<Option<(u8, Vec<u8>)>> {
        let deadline = Instant::now() + limit;
        loop {
            self.queue.extend(split_messages(&mut self.buf));
            if let Some(m) = self.queue.pop_front() {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => bail!("no message from ferrolb within {limit:?}"),
            }
        }
    }

    /// True when the connection is still open after `wait` (bytes that arrive are kept).
    fn stays_open(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                true
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => false,
            Err(RecvTimeoutError::Timeout) => true,
        }
    }

    /// Reads until ferrolb's OPEN arrives (the connection was accepted).
    fn expect_open(&mut self, limit: Duration) -> Result<Vec<u8>> {
        match self.next(limit)? {
            Some((1, m)) => Ok(m),
            other => bail!("expected OPEN, got {other:?}"),
        }
    }

    /// Skips KEEPALIVEs and UPDATEs until a NOTIFICATION: returns (code, subcode, data), then
    /// checks that ferrolb closed the connection.
    fn expect_notification(&mut self) -> Result<(u8, u8, Vec<u8>)> {
        loop {
            match self.next(Duration::from_secs(10))? {
                Some((3, m)) => {
                    let n = (m[19], m[20], m[21..].to_vec());
                    match self.next(Duration::from_secs(5)) {
                        Ok(None) => return Ok(n),
                        other => bail!("connection not closed after NOTIFICATION: {other:?}"),
                    }
                }
                // OPEN: on the listener ferrolb answers our OPEN with its own first.
                Some((1 | 2 | 4, _)) => continue,
                other => bail!("expected NOTIFICATION, got {other:?}"),
            }
        }
    }

    /// Skips KEEPALIVEs until an UPDATE arrives (fails on a NOTIFICATION or a close).
    fn expect_update(&mut self) -> Result<()> {
        loop {
            match self.next(Duration::from_secs(10))? {
                Some((2, _)) => return Ok(()),
                Some((4, _)) => continue,
                other => bail!("expected UPDATE, got {other:?}"),
            }
        }
    }

    /// Answers the OPEN and KEEPALIVE: the session becomes Established on ferrolb's side.
    fn establish(&mut self) -> Result<()> {
        self.send(&open(4, 64513, 90))?;
        self.send(&keepalive())?;
        // ferrolb's KEEPALIVE confirms our OPEN; then its full set ends with End-of-RIB (an
        // empty UPDATE, 23 bytes).
        loop {
            match self.next(Duration::from_secs(10))? {
                Some((4, _)) => break,
                // On the listener ferrolb's OPEN comes only now, answering ours.
                Some((1, _)) => continue,
                other => bail!("expected KEEPALIVE, got {other:?}"),
            }
        }
        loop {
            match self.next(Duration::from_secs(10))? {
                Some((2, m)) if m.len() == 23 => return Ok(()),
                Some((2 | 4, _)) => continue,
                other => bail!("expected UPDATEs and End-of-RIB, got {other:?}"),
            }
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BGP_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.0/25
";

/// `n` LoadBalancer Services `svc-<i>` for i in `ids`.
fn services(ids: impl IntoIterator<Item = usize>) -> String {
    let mut s = String::new();
    for i in ids {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80, protocol: TCP}}]\n"
        ));
    }
    s
}

/// Router and node namespaces on one veth (router 192.0.2.1, node 192.0.2.2), config written.
struct BgpLab {
    dir: Dir,
    router: Netns,
    node: Netns,
}

impl BgpLab {
    fn new(tag: &str, svcs: &str) -> Result<BgpLab> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        router.add_addr("r0", "192.0.2.1/24")?;
        node.add_addr("n0", "192.0.2.2/24")?;
        let dir = Dir::new(tag)?;
        dir.write("config.yaml", BGP_CONFIG)?;
        dir.write("services.yaml", svcs)?;
        Ok(BgpLab { dir, router, node })
    }

    fn start(&self) -> Result<Standalone> {
        Standalone::start(&self.node, self.dir.path(), "node-0", "node.log", &[])
    }

    fn bird(&self) -> Result<Bird> {
        Bird::start(&self.router, self.dir.path(), BIRD_CONF)
    }
}

const BIRD_CONF: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp node0 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512; passive on;
  error wait time 1, 2;
  ipv4 { import all; export none; };
}
"#;

/// The prefixes BIRD holds from the node (`show route protocol node0`).
fn bird_prefixes(bird: &Bird) -> BTreeSet<String> {
    bird.birdc(&["show", "route", "protocol", "node0"])
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| w.starts_with("198.51.100.") && w.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The /32s ferrolb assigned (its `--state` file) to the Services `svc-<i>`, i in `ids`.
fn desired_prefixes(dir: &Dir, ids: &BTreeSet<usize>) -> BTreeSet<String> {
    let v: serde_json::Value =
        serde_json::from_str(&dir.read("state-node-0.json")).unwrap_or_default();
    let mut out = BTreeSet::new();
    if let Some(m) = v.get("assignments").and_then(|a| a.as_object()) {
        for (k, e) in m {
            let id = k
                .strip_prefix("default/svc-")
                .and_then(|n| n.parse::<usize>().ok());
            if !id.is_some_and(|i| ids.contains(&i)) {
                continue;
            }
            for ip in e
                .get("ips")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(s) = ip.as_str() {
                    out.insert(format!("{s}/32"));
                }
            }
        }
    }
    out
}

/// One hostile input: what the router sends (after a good handshake, or instead of its OPEN) and
/// the NOTIFICATION RFC 4271 §6 requires in answer.
struct Hostile {
    name: &'static str,
    established_first: bool,
    send: Vec<u8>,
    code: u8,
    subcode: u8,
    /// Expected NOTIFICATION data, when RFC 4271 fixes it.
    data: Option<Vec<u8>>,
}

/// `code` 0 in a [`Hostile`]: RFC 7606 "treat-as-withdraw", no NOTIFICATION, the session stays.
const TREAT_AS_WITHDRAW: u8 = 0;

fn hostile_cases() -> Vec<Hostile> {
    let mut bad_marker = keepalive();
    bad_marker[3] = 0;
    let mut short = keepalive();
    short[17] = 18;
    let long = {
        let mut m = MARKER.to_vec();
        m.extend_from_slice(&4097u16.to_be_bytes());
        m.push(2);
        m
    };
    let mut unknown_well_known = good_attrs();
    unknown_well_known.extend_from_slice(&[0x40, 99, 1, 7]);
    let mut origin_len2 = vec![0x40, 1, 2, 0, 0];
    origin_len2.extend_from_slice(&good_attrs()[4..]);
    let no_origin = good_attrs()[4..].to_vec();
    vec![
        Hostile {
            name: "marker not all ones",
            established_first: true,
            send: bad_marker,
            code: 1,
            subcode: 1,
            data: None,
        },
        Hostile {
            name: "OPEN version 3",
            established_first: false,
            send: open(3, 64513, 90),
            code: 2,
            subcode: 1,
            // The largest version we support.
            data: Some(vec![0, 4]),
        },
        Hostile {
            name: "header length 18",
            established_first: true,
            send: short,
            code: 1,
            subcode: 2,
            data: Some(vec![0, 18]),
        },
        Hostile {
            name: "OPEN from AS 64999 (configured 64513)",
            established_first: false,
            send: open(4, 64999, 90),
            code: 2,
            subcode: 2,
            data: None,
        },
        Hostile {
            name: "header length 4097",
            established_first: true,
            send: long,
            code: 1,
            subcode: 2,
            data: Some(vec![0x10, 0x01]),
        },
        Hostile {
            name: "OPEN hold time 1",
            established_first: false,
            send: open(4, 64513, 1),
            code: 2,
            subcode: 6,
            data: None,
        },
        Hostile {
            name: "message type 7",
            established_first: true,
            send: message(7, &[]),
            code: 1,
            subcode: 3,
            data: Some(vec![7]),
        },
        Hostile {
            name: "OPEN hold time 2",
            established_first: false,
            send: open(4, 64513, 2),
            code: 2,
            subcode: 6,
            data: None,
        },
        Hostile {
            name: "UPDATE total attribute length past the message (truncated attributes)",
            established_first: true,
            send: update(&good_attrs(), Some(200)),
            code: 3,
            subcode: 1,
            data: None,
        },
        Hostile {
            name: "UPDATE ORIGIN with length 2 (RFC 7606 7.1: treat-as-withdraw)",
            established_first: true,
            send: update(&origin_len2, None),
            code: TREAT_AS_WITHDRAW,
            subcode: 0,
            data: None,
        },
        Hostile {
            name: "UPDATE unknown well-known attribute type 99",
            established_first: true,
            send: update(&unknown_well_known, None),
            code: 3,
            subcode: 2,
            data: Some(vec![0x40, 99, 1, 7]),
        },
        Hostile {
            name: "UPDATE without the mandatory ORIGIN (RFC 7606 3.d: treat-as-withdraw)",
            established_first: true,
            send: update(&no_origin, None),
            code: TREAT_AS_WITHDRAW,
            subcode: 0,
            data: None,
        },
    ]
}

/// Runs every hostile case `rounds` times. `next_peer` yields the next connection with
/// ferrolb's OPEN already read. Returns (messages sent, reconnect times, wrong answers).
fn hostile_rounds(
    speaker: &mut Standalone,
    rounds: usize,
    mut next_peer: impl FnMut() -> Result<RawPeer>,
) -> Result<(usize, Vec<Duration>, Vec<String>)> {
    let cases = hostile_cases();
    let mut failures = Vec::new();
    let mut reconnects = Vec::new();
    let mut tried = 0;
    let mut peer = next_peer()?;
    for round in 0..rounds {
        for c in &cases {
            if c.established_first {
                peer.establish()?;
            }
            peer.send(&c.send)?;
            tried += 1;
            if c.code == TREAT_AS_WITHDRAW {
                // The session must survive: a ROUTE-REFRESH is answered with our routes.
                peer.send(&message(5, &[0, 1, 0, 1]))?;
                match peer.expect_update() {
                    Ok(()) if round == 0 => eprintln!(
                        "measured: {:<70} -> no NOTIFICATION, session kept (ROUTE-REFRESH answered)",
                        c.name
                    ),
                    Ok(()) => {}
                    Err(e) => failures.push(format!("{}: session not kept: {e:#}", c.name)),
                }
            } else {
                match peer.expect_notification() {
                    Ok((code, sub, data)) => {
                        if round == 0 {
                            eprintln!(
                                "measured: {:<70} -> NOTIFICATION {code}/{sub} data {data:02x?}",
                                c.name
                            );
                        }
                        if (code, sub) != (c.code, c.subcode)
                            || c.data.as_ref().is_some_and(|d| *d != data)
                        {
                            failures.push(format!(
                                "{}: got {code}/{sub} {data:02x?}, want {}/{} {:02x?}",
                                c.name, c.code, c.subcode, c.data
                            ));
                        }
                    }
                    Err(e) => failures.push(format!("{}: {e:#}", c.name)),
                }
            }
            anyhow::ensure!(speaker.alive(), "ferrolb exited after {}", c.name);
            let t = Instant::now();
            drop(peer);
            peer = next_peer().with_context(|| format!("no new session after {}", c.name))?;
            reconnects.push(t.elapsed());
        }
    }
    Ok((tried, reconnects, failures))
}

/// A hostile "router" (a bare TCP listener that ferrolb dials; the bytes are written by hand
/// above) sends malformed messages. For each: the exact NOTIFICATION, the connection closed,
/// ferrolb reconnects, the process stays up. Then, without `--bgp-listen`, nothing listens on TCP
/// 179 on the node (a peer that is not configured cannot open a session), and a real BIRD gets
/// the routes.
#[test]
fn bgp_hostile_peer_gets_notifications_and_speaker_survives() -> Result<()> {
    if skip(&["bird", "birdc", "socat", "ss"]) {
        return Ok(());
    }
    let lab = BgpLab::new("hostile", &services(0..3))?;
    let first = RawPeer::listen(&lab.router)?;
    std::thread::sleep(Duration::from_millis(200));
    let mut speaker = lab.start()?;
    let rounds = size(1, 10);
    let mut first = Some(first);
    let (tried, reconnects, failures) = hostile_rounds(&mut speaker, rounds, || {
        // A fresh listener for ferrolb's next dial (spawned right after the previous close).
        let mut p = match first.take() {
            Some(p) => p,
            None => RawPeer::listen(&lab.router)?,
        };
        p.expect_open(Duration::from_secs(40))
            .with_context(|| lab.dir.read("node.log"))?;
        Ok(p)
    })?;
    anyhow::ensure!(speaker.alive(), "ferrolb exited");
    let max = reconnects.iter().max().copied().unwrap_or_default();
    eprintln!(
        "measured: {tried} hostile messages ({} kinds x {rounds}), {} reconnects, slowest \
         reconnect {max:?}, speaker still running",
        hostile_cases().len(),
        reconnects.len()
    );
    anyhow::ensure!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );

    // Without --bgp-listen nothing listens on TCP 179 on the node, a connection is refused.
    let listening = lab.node.exec_stdout("ss", &["-Hltn", "sport = :179"])?;
    anyhow::ensure!(
        listening.trim().is_empty(),
        "something listens on 179: {listening}"
    );
    let attempt = lab
        .router
        .command("socat")
        .args(["-T", "2", "-", "TCP:192.0.2.2:179,connect-timeout=2"])
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        !attempt.status.success(),
        "connection to the node's port 179 succeeded"
    );
    eprintln!(
        "measured: node listens on no TCP 179 (ss empty); unconfigured peer's connect: {}",
        String::from_utf8_lossy(&attempt.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("refused")
    );

    // A real router still gets the routes.
    let bird = lab.bird()?;
    let want = desired_prefixes(&lab.dir, &(0..3).collect());
    anyhow::ensure!(want.len() == 3, "state: {want:?}");
    let took = wait_until(
        Duration::from_secs(60),
        "routes at BIRD after the hostile peer",
        || bird_prefixes(&bird) == want,
    )
    .with_context(|| lab.dir.read("node.log"))?;
    eprintln!("measured: after the hostile cases BIRD holds exactly {want:?} ({took:?})");
    anyhow::ensure!(speaker.alive(), "ferrolb exited");
    Ok(())
}

/// The same hostile messages from a router that connects from its configured address to the
/// node's `--bgp-listen` (passive mode). Plus: a connection from an address that is no
/// configured peer gets no byte and is closed.
#[test]
fn bgp_hostile_peer_on_the_listener_gets_notifications_and_speaker_survives() -> Result<()> {
    if skip(&["socat"]) {
        return Ok(());
    }
    let lab = BgpLab::new("hostile-listen", &services(0..3))?;
    lab.router.add_addr("r0", "192.0.2.9/24")?;
    let mut speaker = Standalone::start(
        &lab.node,
        lab.dir.path(),
        "node-0",
        "node.log",
        &["--bgp-listen", "192.0.2.2:179"],
    )?;
    let rounds = size(1, 5);
    let (tried, reconnects, failures) = hostile_rounds(&mut speaker, rounds, || {
        let deadline = Instant::now() + Duration::from_secs(40);
        // The listener waits for our OPEN before it sends its own: a connection that is still
        // open after 200 ms was accepted.
        loop {
            let mut p = RawPeer::connect(&lab.router)?;
            if p.stays_open(Duration::from_millis(200)) {
                return Ok(p);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the listener accepts no connection\n{}",
                lab.dir.read("node.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })?;
    anyhow::ensure!(speaker.alive(), "ferrolb exited");
    let max = reconnects.iter().max().copied().unwrap_or_default();
    eprintln!(
        "measured: listener: {tried} hostile messages ({} kinds x {rounds}), {} new sessions, \
         slowest {max:?}, speaker still running",
        hostile_cases().len(),
        reconnects.len()
    );
    anyhow::ensure!(
        failures.is_empty(),
        "wrong answers on the listener:\n{}",
        failures.join("\n")
    );
    // An unconfigured address: closed without a byte.
    let t = Instant::now();
    let out = lab
        .router
        .command("socat")
        .args([
            "-T",
            "3",
            "STDIO",
            "TCP:192.0.2.2:179,bind=192.0.2.9,connect-timeout=2",
        ])
        .stdin(Stdio::piped())
        .output()?;
    anyhow::ensure!(
        out.stdout.is_empty(),
        "unconfigured peer got {} bytes",
        out.stdout.len()
    );
    eprintln!(
        "measured: listener: connection from unconfigured 192.0.2.9 closed after {:?} with 0 bytes",
        t.elapsed()
    );
    anyhow::ensure!(speaker.alive(), "ferrolb exited");
    Ok(())
}

/// SIGKILL and restart `ferrolb standalone` (5 times in CI, 20 with FERROLB_SOAK=1) while BIRD
/// peers with it; between kill and restart one Service is removed and another added, so a stale
/// route would show. After every restart BIRD holds exactly the desired set.
#[test]
fn speaker_sigkill_restarts_leave_exactly_the_desired_routes() -> Result<()> {
    if skip(&["bird", "birdc"]) {
        return Ok(());
    }
    let mut ids: BTreeSet<usize> = (0..20).collect();
    let lab = BgpLab::new("restarts", &services(ids.iter().copied()))?;
    let bird = lab.bird()?;
    let mut speaker = lab.start()?;
    let limit = Duration::from_secs(60);
    wait_until(limit, "first full set", || {
        let want = desired_prefixes(&lab.dir, &ids);
        want.len() == ids.len() && bird_prefixes(&bird) == want
    })
    .with_context(|| lab.dir.read("node.log"))?;
    let restarts = size(5, 20);
    let mut took = Vec::new();
    for k in 0..restarts {
        speaker.kill();
        // Change the desired set while the speaker is dead.
        let gone = *ids.iter().next().context("ids")?;
        ids.remove(&gone);
        ids.insert(20 + k);
        lab.dir
            .write("services.yaml", &services(ids.iter().copied()))?;
        let t = Instant::now();
        speaker = lab.start()?;
        let mut last = BTreeSet::new();
        let r = wait_until(limit, "desired set after restart", || {
            let want = desired_prefixes(&lab.dir, &ids);
            last = bird_prefixes(&bird);
            want.len() == ids.len() && last == want
        });
        if let Err(e) = r {
            bail!(
                "restart {k}: {e}\nBIRD holds {last:?}\nwant {:?}\n{}",
                desired_prefixes(&lab.dir, &ids),
                lab.dir.read("node.log")
            );
        }
        took.push(t.elapsed());
    }
    let final_set = bird_prefixes(&bird);
    anyhow::ensure!(final_set == desired_prefixes(&lab.dir, &ids));
    eprintln!(
        "measured: {restarts} SIGKILL+restarts, {} routes each; restart -> exact set at BIRD: \
         min {:?} max {:?}; final set equals desired ({} prefixes, no stale)",
        ids.len(),
        took.iter().min().copied().unwrap_or_default(),
        took.iter().max().copied().unwrap_or_default(),
        final_set.len()
    );
    Ok(())
}

/// BIRD killed and restarted (10 times in CI, 100 with FERROLB_SOAK=1): each time the session
/// comes back and the full set of 50 routes is re-sent; ferrolb's RSS afterwards within 10% of
/// before.
#[test]
fn router_flaps_resend_the_full_set_without_leaking() -> Result<()> {
    if skip(&["bird", "birdc"]) {
        return Ok(());
    }
    let ids: BTreeSet<usize> = (0..50).collect();
    let lab = BgpLab::new("flaps", &services(ids.iter().copied()))?;
    let mut bird = lab.bird()?;
    let speaker = lab.start()?;
    let limit = Duration::from_secs(60);
    let full = |bird: &Bird| {
        let want = desired_prefixes(&lab.dir, &ids);
        want.len() == ids.len() && bird_prefixes(bird) == want
    };
    wait_until(limit, "first full set", || full(&bird))
        .with_context(|| lab.dir.read("node.log"))?;
    let before = speaker.rss_kib()?;
    let flaps = size(10, 100);
    let mut took = Vec::new();
    for k in 0..flaps {
        bird.restart()?;
        let t = Instant::now();
        wait_until(limit, "full set after BIRD restart", || full(&bird))
            .with_context(|| format!("flap {k}\n{}", lab.dir.read("node.log")))?;
        took.push(t.elapsed());
    }
    // Let freed memory settle (tokio tasks finish) before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let after = speaker.rss_kib()?;
    let growth = (after as f64 - before as f64) / before as f64 * 100.0;
    took.sort();
    eprintln!(
        "measured: {flaps} BIRD restarts, 50 routes re-sent each time; routes back after \
         min {:?} median {:?} max {:?}; ferrolb RSS {before} KiB -> {after} KiB ({growth:+.1}%)",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    anyhow::ensure!(growth <= 10.0, "RSS grew {growth:.1}%");
    Ok(())
}

const L2_CONFIG: &str = "\
address-pools:
- name: l2
  protocol: layer2
  avoid-buggy-ips: false
  addresses:
  - 192.0.2.0/24
- name: spare
  protocol: layer2
  auto-assign: false
  addresses:
  - 198.51.100.0/28
";

/// Garbage made from `L2_CONFIG`: one of a few structural mutations, chosen by `k`.
fn garbage_config(k: usize, seed: &mut u64) -> String {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut lines: Vec<String> = L2_CONFIG.lines().map(str::to_string).collect();
    let tokens = [
        "",
        "-",
        ":",
        "{",
        "[",
        "'",
        "\"",
        "*a",
        "&a",
        "!!binary",
        "0/0",
        "::",
        "192.0.2.0/33",
        "999999999999999999999",
        "-1",
        "\t",
        "bgp",
        "null",
        "~",
        "ü",
    ];
    let i = (next() % lines.len() as u64) as usize;
    let tok = tokens[(next() % tokens.len() as u64) as usize];
    match k % 6 {
        0 => lines[i] = format!("{}{tok}", lines[i]),
        1 => {
            lines.remove(i);
        }
        2 => lines[i] = format!("  {}", lines[i]),
        3 => lines.truncate(i),
        4 => {
            if let Some(p) = lines[i].find(": ") {
                lines[i] = format!("{}: {tok}", &lines[i][..p]);
            } else {
                lines[i] = tok.to_string();
            }
        }
        _ => {
            let bytes: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    // Unique, so every write is a change.
    format!("{}\n# garbage {k}\n", lines.join("\n"))
}

/// A running `ferrolb standalone` (namespace with only `lo`) is fed garbage configurations, 20
/// (CI) / 300 (soak), one every 0.6 s (it polls every 0.5 s): it never exits, no Service's
/// address changes, unparsable ones are refused with a reason; the valid config afterwards works.
#[test]
fn standalone_survives_garbage_configs_and_keeps_every_address() -> Result<()> {
    if skip(&[]) {
        return Ok(());
    }
    ferrolb_e2e::netns::remove_stale();
    let ns = Netns::create("gb")?;
    let dir = Dir::new("garbage")?;
    dir.write("config.yaml", L2_CONFIG)?;
    dir.write("services.yaml", &services(0..5))?;
    let mut sa = Standalone::start(&ns, dir.path(), "node-0", "node.log", &[])?;
    let state = || desired_prefixes(&dir, &(0..6).collect());
    wait_until(Duration::from_secs(20), "5 assignments", || {
        state().len() == 5
    })
    .with_context(|| dir.read("node.log"))?;
    let before = state();
    let n = size(20, 300);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for k in 0..n {
        dir.write("config.yaml", &garbage_config(k, &mut seed))?;
        std::thread::sleep(Duration::from_millis(600));
        anyhow::ensure!(
            sa.alive(),
            "exited on garbage {k}:\n{}",
            dir.read("node.log")
        );
        anyhow::ensure!(
            state() == before,
            "addresses changed on garbage {k}: {:?}",
            state()
        );
    }
    let log = dir.read("node.log");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("config refused: "))
        .collect();
    let loaded = log.lines().filter(|l| *l == "config loaded").count();
    anyhow::ensure!(!refused.is_empty(), "nothing refused:\n{log}");
    anyhow::ensure!(
        refused
            .iter()
            .all(|l| l.trim_start_matches("config refused: ").len() > 10),
        "a refusal without a reason:\n{log}"
    );
    // Back to the valid config, and a new Service: it gets an address, the old ones are kept.
    dir.write("config.yaml", L2_CONFIG)?;
    dir.write("services.yaml", &services(0..6))?;
    wait_until(
        Duration::from_secs(20),
        "the sixth Service's address",
        || state().len() == 6,
    )
    .with_context(|| dir.read("node.log"))?;
    anyhow::ensure!(before.is_subset(&state()));
    eprintln!(
        "measured: {n} garbage configs to a running standalone: {} refusal lines, {} loads (of \
         mutations that still parse and break nothing), no exit, no address changed; valid \
         config back -> new Service assigned",
        refused.len(),
        loaded.saturating_sub(1)
    );
    Ok(())
}
