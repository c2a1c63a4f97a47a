//! BGP benchmark: how fast `ferrolb standalone` gets N VIPs installed at (and withdrawn from)
//! BIRD, and how many UPDATEs and bytes that takes on the wire, next to gobgpd and exabgp sending
//! the same prefixes into the same BIRD in the same run.
//!
//! Topology (namespaces `flb-<pid>-*`, removed on exit; `e2e/bench/bgp.sh` also removes them if
//! this program is killed):
//!
//! ```text
//!   router (BIRD, tcpdump) r0 ---- n0 node (sender: ferrolb | gobgpd | exabgp) n1 ---- f0 feeder
//!   192.0.2.1/30 2001:db8::1/64     192.0.2.2/30 2001:db8::2/64                   (ferrolb feeding
//!                                   192.0.2.5/30 2001:db8:0:1::1/64                gobgpd's RIB)
//! ```
//!
//! Measured per sender and size, median of 3 repetitions:
//! - install: BIRD's session turns Established (the sender's KEEPALIVE answering BIRD's OPEN, in
//!   the capture; or BIRD's state seen by polling, if earlier) -> BIRD has imported all N routes
//!   (BIRD's control socket polled, `show protocols all`, the channel's import counter; adaptively,
//!   so the polls do not slow the import they time, see `Ctl::wait_count`);
//! - withdraw: the first withdrawing UPDATE on the wire (tcpdump in the router namespace) ->
//!   BIRD has 0 routes (ferrolb: the services file emptied; gobgpd: its feeding peer disabled;
//!   exabgp: not measured, its static routes have no bulk withdrawal);
//! - UPDATE count, bytes (BGP message lengths) per VIP and the largest UPDATE, from the capture.
//!
//! VIPs: documentation ranges only. IPv4 tops out at 752 addresses (192.0.2.16-255 and two /24s),
//! so 10k and 100k are IPv6 /128s from 2001:db8:100::/108.
//!
//! JSON lines: `ratio` = reference / ferrolb (how many times faster, or fewer bytes, ferrolb is),
//! as in the other benchmarks.
//!
//! Usage: `bench_bgp [--smoke] [--senders ferrolb,gobgpd,exabgp] [--sizes 752,1000,10000,100000]`
//! as root, with `FERROLB_BIN` pointing at the binary to measure. `--senders` and `--sizes` pick a
//! subset (for quick checks; 752 or less is the IPv4 case, more is IPv6).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ferrolb_e2e::bench::{cell, json_line, median, num, print_table, ratio};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::routers::{Bird, Gobgp};

const REPS: usize = 3;
const POLL: Duration = Duration::from_micros(500);
/// Longest pause between two polls of BIRD while routes are still coming in or going out.
const POLL_MAX: Duration = Duration::from_millis(5);
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn router(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.1",
            Family::V6 => "2001:db8::1",
        }
    }
    fn node(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.2",
            Family::V6 => "2001:db8::2",
        }
    }
    /// The node's address on the feeder link, and the feeder's.
    fn node_feed(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.5",
            Family::V6 => "2001:db8:0:1::1",
        }
    }
    fn feeder(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.6",
            Family::V6 => "2001:db8:0:1::2",
        }
    }
    fn proto(self) -> &'static str {
        match self {
            Family::V4 => "sender4",
            Family::V6 => "sender6",
        }
    }
    fn k8s(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    fn gobgp_afi(self) -> &'static str {
        match self {
            Family::V4 => "ipv4-unicast",
            Family::V6 => "ipv6-unicast",
        }
    }
    fn gobgp_family(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    fn pool(self) -> &'static str {
        match self {
            Family::V4 => "  - 192.0.2.16-192.0.2.255\n  - 198.51.100.0/24\n  - 203.0.113.0/24\n",
            Family::V6 => "  - 2001:db8:100::/108\n",
        }
    }
    /// The i-th address of the pool (the same set ferrolb assigns when every address is used
    /// or, for IPv6, the first N of the /108; used for exabgp's static routes).
    fn vip(self, i: usize) -> String {
        match self {
            Family::V4 => {
                let (net, host) = if i < 240 {
                    ("192.0.2", 16 + i)
                } else if i < 496 {
                    ("198.51.100", i - 240)
                } else {
                    ("203.0.113", i - 496)
                };
                format!("{net}.{host}/32")
            }
            Family::V6 => format!("2001:db8:100::{:x}:{:x}/128", i >> 16, i & 0xffff),
        }
    }
}

const V4_MAX: usize = 752;

struct Case {
    name: String,
    family: Family,
    n: usize,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- BIRD control socket

/// A persistent connection to BIRD's control socket (cheaper than one `birdc` per poll).
struct Ctl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

#[derive(Debug, Clone, Copy, Default)]
struct Status {
    established: bool,
    imported: u64,
}

impl Ctl {
    fn connect(path: &Path) -> Result<Ctl> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        let mut c = Ctl {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        };
        let mut greeting = String::new();
        c.reader.read_line(&mut greeting)?;
        Ok(c)
    }

    fn query(&mut self, cmd: &str) -> Result<String> {
        self.writer.write_all(format!("{cmd}\n").as_bytes())?;
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("BIRD closed the control socket");
            }
            let b = line.as_bytes();
            let last = b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' ';
            out.push_str(&line);
            if last {
                return Ok(out);
            }
        }
    }

    fn status(&mut self, proto: &str) -> Result<Status> {
        let out = self.query(&format!("show protocols all {proto}"))?;
        let mut s = Status {
            established: out.contains("Established"),
            imported: 0,
        };
        if let Some(l) = out.lines().find(|l| l.contains("Routes:")) {
            let words: Vec<&str> = l.split_whitespace().collect();
            if let Some(p) = words.iter().position(|w| w.starts_with("imported")) {
                s.imported = words
                    .get(p.wrapping_sub(1))
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(s)
    }

    /// Polls until the channel's import counter reaches `target` (at least `target` routes, or
    /// none for a `target` of 0); returns the wall-clock time it was first seen.
    ///
    /// Each poll makes BIRD format an answer in the same loop that reads the UPDATEs, so polling
    /// every [`POLL`] throughout slows the very import being timed (measured at 100k VIPs: the
    /// UPDATEs took 42-64 ms to cross the wire with 0.5 ms polls, 19-39 ms with 2 ms ones).
    /// So the wait adapts: once the counter has moved on two polls, it sleeps for half the time
    /// left at the rate between them (at most [`POLL_MAX`]); before that, and once the end is
    /// near, every [`POLL`]. The end is still seen within about one [`POLL`].
    fn wait_count(&mut self, proto: &str, limit: Duration, what: &str, target: u64) -> Result<f64> {
        let start = Instant::now();
        let reached = |c: u64| if target == 0 { c == 0 } else { c >= target };
        let first = self.status(proto)?.imported;
        let mut count = first;
        // When and where the counter was first seen moved (the rate is measured from there:
        // the time before the routes started to move says nothing about their pace).
        let mut moved: Option<(Instant, u64)> = None;
        loop {
            if reached(count) {
                return Ok(now());
            }
            if start.elapsed() > limit {
                bail!("{what}: not within {limit:?} (last count {count})");
            }
            let nap = match moved {
                Some((t0, c0)) if count != c0 => {
                    let per_route = t0.elapsed().as_secs_f64() / count.abs_diff(c0) as f64;
                    let left = count.abs_diff(target) as f64;
                    Duration::from_secs_f64((per_route * left / 2.0).min(POLL_MAX.as_secs_f64()))
                        .max(POLL)
                }
                _ => POLL,
            };
            std::thread::sleep(nap);
            count = self.status(proto)?.imported;
            if moved.is_none() && count != first {
                moved = Some((Instant::now(), count));
            }
        }
    }

    /// Polls until `pred` holds; returns the wall-clock time it was first seen.
    fn wait(
        &mut self,
        proto: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(Status) -> bool,
    ) -> Result<f64> {
        let start = Instant::now();
        loop {
            let s = self.status(proto)?;
            if pred(s) {
                return Ok(now());
            }
            if start.elapsed() > limit {
                bail!("{what}: not within {limit:?} (last {s:?})");
            }
            std::thread::sleep(POLL);
        }
    }
}

// ---------------------------------------------------------------- capture and BGP parsing

/// tcpdump on the router's link, writing a pcap; stopped with SIGINT so it flushes.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    fn start(router: &Netns, file: &Path) -> Result<Capture> {
        let err = file.with_extension("err");
        let child = router
            .command("tcpdump")
            // No --immediate-mode: it switches libpcap to fixed 256 KiB ring slots (so only a few
            // hundred packets fit and bursts of small UPDATEs are lost); packed blocks instead,
            // drained before the stop (see `finish`).
            .args(["-i", "r0", "-s", "0", "-B", "262144", "-U", "-n"])
            .arg("-w")
            .arg(file)
            .arg("tcp port 179")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err)?)
            .spawn()
            .context("could not start tcpdump")?;
        let start = Instant::now();
        while !fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("tcpdump did not start: {}", fs::read_to_string(&err)?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Capture {
            child: Some(child),
            file: file.to_path_buf(),
        })
    }

    /// Stops tcpdump and returns the BGP messages the node sent, in order.
    fn finish(mut self, from: IpAddr) -> Result<Vec<Msg>> {
        if let Some(mut c) = self.child.take() {
            // Let tcpdump drain the kernel's ring (blocks are handed over after at most 1 s) before
            // it stops: SIGINT drops what is still queued.
            std::thread::sleep(Duration::from_millis(1500));
            signal(c.id(), "INT");
            c.wait()?;
        }
        parse_pcap(&fs::read(&self.file)?, from)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Keepalive,
    Announce,
    Withdraw,
    EndOfRib,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Msg {
    ts: f64,
    len: usize,
    kind: Kind,
    /// Prefixes announced (Announce) or withdrawn (Withdraw).
    prefixes: usize,
}

fn be16(b: &[u8], i: usize) -> usize {
    usize::from(b[i]) << 8 | usize::from(b[i + 1])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Number of prefixes in an NLRI field.
fn count_prefixes(b: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        i += 1 + usize::from(b[i]).div_ceil(8);
        n += 1;
    }
    n
}

/// Classifies one BGP message (header included).
fn classify(m: &[u8]) -> (Kind, usize) {
    if m.len() == 19 && m[18] == 4 {
        return (Kind::Keepalive, 0);
    }
    if m.len() < 19 || m[18] != 2 || m.len() < 23 {
        return (Kind::Other, 0);
    }
    let wlen = be16(m, 19);
    let Some(alen_at) = 21usize.checked_add(wlen).filter(|a| a + 2 <= m.len()) else {
        return (Kind::Other, 0);
    };
    let mut withdrawn = count_prefixes(&m[21..alen_at]);
    let alen = be16(m, alen_at);
    let attrs_end = (alen_at + 2 + alen).min(m.len());
    let mut announced = count_prefixes(&m[attrs_end..]);
    let mut i = alen_at + 2;
    while i + 3 <= attrs_end {
        let flags = m[i];
        let typ = m[i + 1];
        let (len, hdr) = if flags & 0x10 != 0 {
            (be16(m, i + 2), 4)
        } else {
            (usize::from(m[i + 2]), 3)
        };
        let v = &m[(i + hdr).min(attrs_end)..(i + hdr + len).min(attrs_end)];
        match typ {
            14 if v.len() >= 5 => {
                let nh = usize::from(v[3]);
                if let Some(nlri) = v.get(5 + nh..) {
                    announced += count_prefixes(nlri);
                }
            }
            15 if v.len() >= 3 => withdrawn += count_prefixes(&v[3..]),
            _ => {}
        }
        i += hdr + len;
    }
    if announced > 0 {
        (Kind::Announce, announced)
    } else if withdrawn > 0 {
        (Kind::Withdraw, withdrawn)
    } else {
        (Kind::EndOfRib, 0)
    }
}

/// Reads a pcap (Ethernet, micro- or nanosecond stamps), reassembles every TCP stream sent by
/// `from` (sequence order; retransmitted bytes skipped) and splits it into BGP messages, each
/// stamped with the capture time of the packet that completed it.
fn parse_pcap(data: &[u8], from: IpAddr) -> Result<Vec<Msg>> {
    if data.len() < 24 {
        bail!("pcap too short");
    }
    let nanos = match le32(data, 0) {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        m => bail!("not a little-endian pcap (magic {m:#x})"),
    };
    if le32(data, 20) != 1 {
        bail!("pcap link type is not Ethernet");
    }
    // (next sequence number, unparsed bytes, resynchronising) per (source, destination) port.
    type Flow = (Option<u32>, Vec<u8>, bool);
    let mut flows: BTreeMap<(u16, u16), Flow> = BTreeMap::new();
    let mut lost = 0usize;
    let mut msgs = Vec::new();
    let mut i = 24;
    while i + 16 <= data.len() {
        let ts =
            f64::from(le32(data, i)) + f64::from(le32(data, i + 4)) / if nanos { 1e9 } else { 1e6 };
        let caplen = le32(data, i + 8) as usize;
        let Some(frame) = data.get(i + 16..i + 16 + caplen) else {
            break;
        };
        i += 16 + caplen;
        if frame.len() < 14 {
            continue;
        }
        let (ip, l4) = match be16(frame, 12) {
            0x0800 if frame.len() >= 34 => {
                let p = &frame[14..];
                let ihl = usize::from(p[0] & 0x0f) * 4;
                let total = be16(p, 2).min(p.len());
                if p[9] != 6 || ihl < 20 || total < ihl {
                    continue;
                }
                let src = IpAddr::from([p[12], p[13], p[14], p[15]]);
                (src, &p[ihl..total])
            }
            0x86dd if frame.len() >= 54 => {
                let p = &frame[14..];
                let plen = be16(p, 4).min(p.len() - 40);
                if p[6] != 6 {
                    continue;
                }
                let mut a = [0u8; 16];
                a.copy_from_slice(&p[8..24]);
                (IpAddr::from(a), &p[40..40 + plen])
            }
            _ => continue,
        };
        if ip != from || l4.len() < 20 {
            continue;
        }
        let (sport, dport) = (be16(l4, 0) as u16, be16(l4, 2) as u16);
        let seq = be32(l4, 4);
        let off = usize::from(l4[12] >> 4) * 4;
        let syn = l4[13] & 0x02 != 0;
        let flow = flows.entry((sport, dport)).or_default();
        if syn {
            *flow = (Some(seq.wrapping_add(1)), Vec::new(), false);
            continue;
        }
        let payload = l4.get(off..).unwrap_or_default();
        if payload.is_empty() {
            continue;
        }
        let next = *flow.0.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next) as i32;
        let skip = if ahead > 0 {
            // The capture missed bytes: count them, resynchronise on the next BGP marker.
            lost += ahead as usize;
            flow.1.clear();
            flow.2 = true;
            0
        } else {
            (-ahead) as usize
        };
        if skip >= payload.len() {
            continue;
        }
        flow.1.extend_from_slice(&payload[skip..]);
        flow.0 = Some(next.wrapping_add((payload.len() - skip) as u32));
        if flow.2 {
            match flow.1.windows(16).position(|w| w == [0xff; 16]) {
                Some(at) => {
                    flow.1.drain(..at);
                    flow.2 = false;
                }
                None => continue,
            }
        }
        while flow.1.len() >= 19 {
            let len = be16(&flow.1, 16);
            if len < 19 {
                bail!("malformed BGP message length {len}");
            }
            if flow.1.len() < len {
                break;
            }
            let (kind, prefixes) = classify(&flow.1[..len]);
            msgs.push(Msg {
                ts,
                len,
                kind,
                prefixes,
            });
            flow.1.drain(..len);
        }
    }
    if lost > 0 {
        eprintln!("  warning: the capture missed {lost} bytes; UPDATE counts are low");
    }
    Ok(msgs)
}

// ---------------------------------------------------------------- one repetition's numbers

#[derive(Debug, Clone, Copy)]
struct Rep {
    install_ms: f64,
    /// Established at BIRD -> first announcing UPDATE on the wire.
    first_ms: f64,
    withdraw_ms: f64,
    /// First to last announcing UPDATE on the wire.
    wire_ms: f64,
    updates: f64,
    bytes_per_vip: f64,
    max_update: f64,
    prefixes: f64,
}

fn summarize(msgs: &[Msg], polled_est: f64, t_inst: f64, t_zero: Option<f64>, n: usize) -> Rep {
    let ann: Vec<&Msg> = msgs.iter().filter(|m| m.kind == Kind::Announce).collect();
    // BIRD turns Established when the sender's KEEPALIVE (answering BIRD's OPEN) arrives: its
    // capture time is the start, unless polling saw Established earlier (BIRD's control socket
    // may answer late while BIRD is busy reading UPDATEs).
    let keepalive = ann.first().and_then(|a| {
        msgs.iter()
            .filter(|m| m.kind == Kind::Keepalive && m.ts <= a.ts)
            .map(|m| m.ts)
            .next_back()
    });
    let t_est = keepalive.map_or(polled_est, |k| k.min(polled_est));
    let bytes: usize = ann.iter().map(|m| m.len).sum();
    let first_wd = msgs
        .iter()
        .filter(|m| m.kind == Kind::Withdraw && m.ts > t_inst - 0.001)
        .map(|m| m.ts)
        .fold(f64::NAN, f64::min);
    let max_update = msgs
        .iter()
        .filter(|m| m.kind != Kind::Other)
        .map(|m| m.len)
        .max()
        .unwrap_or(0);
    let wire = match (ann.first(), ann.last()) {
        (Some(a), Some(b)) => (b.ts - a.ts) * 1e3,
        _ => f64::NAN,
    };
    Rep {
        install_ms: (t_inst - t_est) * 1e3,
        first_ms: ann.first().map_or(f64::NAN, |a| (a.ts - t_est) * 1e3),
        withdraw_ms: t_zero.map_or(f64::NAN, |z| (z - first_wd) * 1e3),
        wire_ms: wire,
        updates: ann.len() as f64,
        bytes_per_vip: bytes as f64 / n as f64,
        max_update: max_update as f64,
        prefixes: ann.iter().map(|m| m.prefixes).sum::<usize>() as f64,
    }
}

// ---------------------------------------------------------------- the lab

struct Lab {
    dir: PathBuf,
    bin: PathBuf,
    ctl: Ctl,
    _bird: Bird,
    // Dropped last (kills everything inside).
    feeder: Netns,
    node: Netns,
    router: Netns,
}

const BIRD_CONF: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp sender4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv4 { import all; export none; };
}
protocol bgp sender6 {
  local 2001:db8::1 as 64513; neighbor 2001:db8::2 as 64512;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv6 { import all; export none; };
}
"#;

impl Lab {
    fn new() -> Result<Lab> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("brt")?;
        let node = Netns::create("bnd")?;
        let feeder = Netns::create("bfd")?;
        veth(&router, "r0", &node, "n0")?;
        veth(&node, "n1", &feeder, "f0")?;
        router.add_addr("r0", "192.0.2.1/30")?;
        router.add_addr("r0", "2001:db8::1/64")?;
        node.add_addr("n0", "192.0.2.2/30")?;
        node.add_addr("n0", "2001:db8::2/64")?;
        node.add_addr("n1", "192.0.2.5/30")?;
        node.add_addr("n1", "2001:db8:0:1::1/64")?;
        feeder.add_addr("f0", "192.0.2.6/30")?;
        feeder.add_addr("f0", "2001:db8:0:1::2/64")?;
        let dir = std::env::temp_dir().join(format!("flb-{}-bench-bgp", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        std::thread::sleep(Duration::from_millis(300));
        let bird = Bird::start(&router, &dir, BIRD_CONF)?;
        let ctl = Ctl::connect(&dir.join("bird.ctl"))?;
        Ok(Lab {
            bin: ferrolb_e2e::ferrolb_bin()?,
            dir,
            ctl,
            _bird: bird,
            feeder,
            node,
            router,
        })
    }

    fn ferrolb(&self, ns: &Netns, tag: &str, config: &Path, services: &Path) -> Result<Child> {
        let _ = fs::remove_file(self.dir.join(format!("state-{tag}")));
        let log = fs::File::create(self.dir.join(format!("{tag}.log")))?;
        ns.command(&self.bin.to_string_lossy())
            .args(["standalone", "--node", "node-0", "--config"])
            .arg(config)
            .arg("--services")
            .arg(services)
            .arg("--state")
            .arg(self.dir.join(format!("state-{tag}")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")
    }

    fn down(&mut self, proto: &str) -> Result<()> {
        self.ctl
            .wait(proto, LIMIT, "session down", |s| !s.established)?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("FLB_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn services_yaml(family: Family, n: usize) -> String {
    let mut s = String::with_capacity(n * 220);
    for i in 0..n {
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: bench\nspec:\n  type: LoadBalancer\n  ipFamilies: [{}]\n  ipFamilyPolicy: SingleStack\n  ports:\n  - port: 80\n    protocol: TCP\n---\n",
            family.k8s()
        );
    }
    s
}

const NO_SERVICES: &str = "apiVersion: v1\nkind: List\nitems: []\n";

fn sender_config(family: Family, peer: &str, peer_asn: u32, my_asn: u32) -> String {
    format!(
        "peers:\n- peer-address: {peer}\n  peer-asn: {peer_asn}\n  my-asn: {my_asn}\naddress-pools:\n- name: bench\n  protocol: bgp\n  addresses:\n{}",
        family.pool()
    )
}

// ---------------------------------------------------------------- the three senders

fn run_ferrolb(lab: &mut Lab, case: &Case) -> Result<Vec<Rep>> {
    let f = case.family;
    let config = lab.dir.join("ferrolb.yaml");
    let services = lab.dir.join("services.yaml");
    let full = services_yaml(f, case.n);
    fs::write(&config, sender_config(f, f.router(), 64513, 64512))?;
    let mut reps = Vec::new();
    for rep in 0..REPS {
        fs::write(&services, &full)?;
        let cap = Capture::start(&lab.router, &lab.dir.join("ferrolb.pcap"))?;
        let mut child = lab.ferrolb(&lab.node, "sender", &config, &services)?;
        let result = (|| -> Result<(f64, f64, f64)> {
            let t_est = lab
                .ctl
                .wait(f.proto(), LIMIT, "Established", |s| s.established)?;
            let n = case.n as u64;
            let t_inst = lab.ctl.wait_count(f.proto(), LIMIT, "all installed", n)?;
            std::thread::sleep(Duration::from_millis(300));
            fs::write(&services, NO_SERVICES)?;
            let t_zero = lab.ctl.wait_count(f.proto(), LIMIT, "all withdrawn", 0)?;
            Ok((t_est, t_inst, t_zero))
        })();
        signal(child.id(), "TERM");
        let _ = child.wait();
        let (t_est, t_inst, t_zero) = result
            .with_context(|| fs::read_to_string(lab.dir.join("sender.log")).unwrap_or_default())?;
        lab.down(f.proto())?;
        let msgs = cap.finish(f.node().parse()?)?;
        let r = summarize(&msgs, t_est, t_inst, Some(t_zero), case.n);
        eprintln!("  ferrolb {} rep {rep}: {r:?}", case.name);
        reps.push(r);
    }
    Ok(reps)
}

fn gobgp_conf(f: Family) -> String {
    format!(
        r#"
[global.config]
  as = 64512
  router-id = "192.0.2.2"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{feeder}"
    peer-as = 64520
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{afi}"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{router}"
    peer-as = 64513
    admin-down = true
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{afi}"
"#,
        feeder = f.feeder(),
        router = f.router(),
        afi = f.gobgp_afi()
    )
}

/// Destinations in gobgpd's global RIB for the family.
fn gobgp_count(g: &Gobgp, f: Family) -> u64 {
    g.gobgp(&["global", "rib", "-a", f.gobgp_family(), "summary"])
        .ok()
        .and_then(|o| {
            let at = o.find("Destination:")?;
            o[at + 12..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn wait_gobgp(g: &Gobgp, f: Family, want: u64) -> Result<()> {
    let start = Instant::now();
    while gobgp_count(g, f) != want {
        if start.elapsed() > LIMIT {
            bail!("gobgpd RIB did not reach {want} routes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn run_gobgpd(lab: &mut Lab, case: &Case) -> Result<Vec<Rep>> {
    let f = case.family;
    let feed_cfg = lab.dir.join("feeder.yaml");
    let services = lab.dir.join("services.yaml");
    fs::write(&feed_cfg, sender_config(f, f.node_feed(), 64512, 64520))?;
    fs::write(&services, services_yaml(f, case.n))?;
    let g = Gobgp::start(&lab.node, &lab.dir, &gobgp_conf(f))?;
    let mut feeder = lab.ferrolb(&lab.feeder, "feeder", &feed_cfg, &services)?;
    let result = (|| -> Result<Vec<Rep>> {
        wait_gobgp(&g, f, case.n as u64)?;
        let mut reps = Vec::new();
        for rep in 0..REPS {
            let cap = Capture::start(&lab.router, &lab.dir.join("gobgpd.pcap"))?;
            g.gobgp(&["neighbor", f.router(), "enable"])?;
            let t_est = lab
                .ctl
                .wait(f.proto(), LIMIT, "Established", |s| s.established)?;
            let n = case.n as u64;
            let t_inst = lab.ctl.wait_count(f.proto(), LIMIT, "all installed", n)?;
            std::thread::sleep(Duration::from_millis(300));
            // Withdraw everything at once: the feeding session goes, its routes with it.
            g.gobgp(&["neighbor", f.feeder(), "disable"])?;
            let t_zero = lab.ctl.wait_count(f.proto(), LIMIT, "all withdrawn", 0)?;
            g.gobgp(&["neighbor", f.router(), "disable"])?;
            lab.down(f.proto())?;
            let msgs = cap.finish(f.node().parse()?)?;
            let r = summarize(&msgs, t_est, t_inst, Some(t_zero), case.n);
            eprintln!("  gobgpd {} rep {rep}: {r:?}", case.name);
            reps.push(r);
            g.gobgp(&["neighbor", f.feeder(), "enable"])?;
            wait_gobgp(&g, f, case.n as u64)?;
        }
        Ok(reps)
    })();
    signal(feeder.id(), "KILL");
    let _ = feeder.wait();
    drop(g);
    result
}

fn exabgp_conf(f: Family, n: usize) -> String {
    let fam = match f {
        Family::V4 => "ipv4 unicast",
        Family::V6 => "ipv6 unicast",
    };
    let mut s = format!(
        "neighbor {router} {{\n  router-id 192.0.2.2;\n  local-address {node};\n  local-as 64512;\n  peer-as 64513;\n  family {{ {fam}; }}\n  static {{\n",
        router = f.router(),
        node = f.node()
    );
    for i in 0..n {
        let _ = writeln!(s, "    route {} next-hop {};", f.vip(i), f.node());
    }
    s.push_str("  }\n}\n");
    s
}

fn run_exabgp(lab: &mut Lab, case: &Case) -> Result<Vec<Rep>> {
    let f = case.family;
    let conf = lab.dir.join("exabgp.conf");
    fs::write(&conf, exabgp_conf(f, case.n))?;
    let mut reps = Vec::new();
    for rep in 0..REPS {
        let cap = Capture::start(&lab.router, &lab.dir.join("exabgp.pcap"))?;
        let log = fs::File::create(lab.dir.join("exabgp.log"))?;
        let mut child = lab
            .node
            .command("env")
            .args([
                "exabgp.daemon.user=root",
                "exabgp.daemon.drop=false",
                "exabgp.log.destination=stdout",
                "exabgp.log.level=WARNING",
                "exabgp",
            ])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start exabgp")?;
        let result = (|| -> Result<(f64, f64)> {
            let t_est = lab
                .ctl
                .wait(f.proto(), LIMIT, "Established", |s| s.established)?;
            let n = case.n as u64;
            let t_inst = lab.ctl.wait_count(f.proto(), LIMIT, "all installed", n)?;
            std::thread::sleep(Duration::from_millis(300));
            Ok((t_est, t_inst))
        })();
        signal(child.id(), "TERM");
        let _ = child.wait();
        let (t_est, t_inst) = result
            .with_context(|| fs::read_to_string(lab.dir.join("exabgp.log")).unwrap_or_default())?;
        lab.down(f.proto())?;
        let msgs = cap.finish(f.node().parse()?)?;
        let r = summarize(&msgs, t_est, t_inst, None, case.n);
        eprintln!("  exabgp {} rep {rep}: {r:?}", case.name);
        reps.push(r);
    }
    Ok(reps)
}

// ---------------------------------------------------------------- report

struct Row {
    case: String,
    sender: &'static str,
    n: usize,
    install: f64,
    first: f64,
    withdraw: f64,
    wire: f64,
    updates: f64,
    bpv: f64,
    max_update: f64,
    prefixes: f64,
}

fn row(case: &Case, sender: &'static str, reps: &[Rep]) -> Row {
    let m = |f: fn(&Rep) -> f64| median(&reps.iter().map(f).collect::<Vec<_>>());
    Row {
        case: case.name.clone(),
        sender,
        n: case.n,
        install: m(|r| r.install_ms),
        first: m(|r| r.first_ms),
        withdraw: m(|r| r.withdraw_ms),
        wire: m(|r| r.wire_ms),
        updates: m(|r| r.updates),
        bpv: m(|r| r.bytes_per_vip),
        max_update: reps.iter().map(|r| r.max_update).fold(f64::NAN, f64::max),
        prefixes: m(|r| r.prefixes),
    }
}

fn nan_row(case: &Case, sender: &'static str) -> Row {
    row(case, sender, &[])
}

/// The comma-separated values after `flag` on the command line, if given.
fn arg_list(flag: &str) -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == flag)?;
    Some(
        args.get(at + 1)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn main() -> Result<()> {
    if !ferrolb_e2e::prereq::is_root()
        || !ferrolb_e2e::prereq::have_programs(&["bird", "tcpdump", "gobgpd", "gobgp", "exabgp"])
    {
        bail!("needs root, bird2, tcpdump, gobgpd and exabgp (make deps)");
    }
    let smoke = ferrolb_e2e::bench::smoke();
    let senders = arg_list("--senders");
    let wants = |name: &str| senders.as_ref().is_none_or(|s| s.iter().any(|x| x == name));
    let sizes: Option<Vec<usize>> = arg_list("--sizes")
        .map(|v| v.iter().map(|s| s.parse()).collect::<Result<_, _>>())
        .transpose()
        .context("--sizes: numbers")?;
    let cases: Vec<Case> = if let Some(sizes) = sizes {
        sizes
            .into_iter()
            .map(|n| {
                if n <= V4_MAX {
                    (Family::V4, n)
                } else {
                    (Family::V6, n)
                }
            })
            .collect()
    } else if smoke {
        vec![(Family::V4, 100), (Family::V6, 1000)]
    } else {
        vec![
            (Family::V4, V4_MAX),
            (Family::V6, 1000),
            (Family::V6, 10_000),
            (Family::V6, 100_000),
        ]
    }
    .into_iter()
    .map(|(family, n)| {
        let size = if n >= 1000 && n % 1000 == 0 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        };
        let fam = if family == Family::V4 { "v4" } else { "v6" };
        Case {
            name: format!("{size}_{fam}"),
            family,
            n,
        }
    })
    .collect();
    let mut lab = Lab::new()?;
    let mut rows = Vec::new();
    for case in &cases {
        eprintln!("case {} ({} VIPs)", case.name, case.n);
        rows.push(row(case, "ferrolb", &run_ferrolb(&mut lab, case)?));
        for (name, run) in [
            (
                "gobgpd",
                run_gobgpd as fn(&mut Lab, &Case) -> Result<Vec<Rep>>,
            ),
            ("exabgp", run_exabgp),
        ] {
            if !wants(name) {
                continue;
            }
            match run(&mut lab, case) {
                Ok(reps) => rows.push(row(case, name, &reps)),
                Err(e) => {
                    eprintln!("  {name} {}: not measured: {e:#}", case.name);
                    rows.push(nan_row(case, name));
                }
            }
        }
    }
    drop(lab);

    println!(
        "\nBGP: Established -> N routes imported at BIRD, withdrawal, wire (median of {REPS})\n"
    );
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let base = rows
                .iter()
                .find(|b| b.case == r.case && b.sender == "ferrolb")
                .map_or(f64::NAN, |b| b.install);
            vec![
                r.case.clone(),
                r.sender.to_string(),
                cell(r.install, 1),
                cell(ratio(r.install, base), 2),
                cell(r.first, 1),
                cell(r.withdraw, 1),
                cell(r.wire, 1),
                cell(r.updates, 0),
                cell(r.prefixes, 0),
                cell(r.bpv, 2),
                cell(r.max_update, 0),
            ]
        })
        .collect();
    print_table(
        &[
            "case",
            "sender",
            "install ms",
            "x ferrolb",
            "1st UPDATE ms",
            "withdraw ms",
            "wire ms",
            "UPDATEs",
            "prefixes",
            "bytes/VIP",
            "max UPDATE",
        ],
        &table,
    );
    println!();
    for r in rows.iter().filter(|r| r.sender == "ferrolb") {
        for reference in ["gobgpd", "exabgp"] {
            let Some(b) = rows
                .iter()
                .find(|b| b.case == r.case && b.sender == reference)
            else {
                continue;
            };
            json_line(
                "bgp",
                &format!("{}_install", r.case),
                &[
                    ("vips", r.n.into()),
                    ("ferrolb_ms", num(r.install)),
                    ("reference", reference.into()),
                    ("reference_ms", num(b.install)),
                    ("ratio", num(ratio(b.install, r.install))),
                ],
            );
            if reference == "gobgpd" {
                json_line(
                    "bgp",
                    &format!("{}_withdraw", r.case),
                    &[
                        ("vips", r.n.into()),
                        ("ferrolb_ms", num(r.withdraw)),
                        ("reference", reference.into()),
                        ("reference_ms", num(b.withdraw)),
                        ("ratio", num(ratio(b.withdraw, r.withdraw))),
                    ],
                );
            }
            json_line(
                "bgp",
                &format!("{}_wire", r.case),
                &[
                    ("vips", r.n.into()),
                    ("ferrolb_updates", num(r.updates)),
                    ("ferrolb_bytes_per_vip", num(r.bpv)),
                    ("ferrolb_max_update", num(r.max_update)),
                    ("reference", reference.into()),
                    ("reference_updates", num(b.updates)),
                    ("reference_bytes_per_vip", num(b.bpv)),
                    ("reference_max_update", num(b.max_update)),
                    ("ratio", num(ratio(b.bpv, r.bpv))),
                ],
            );
        }
    }
    Ok(())
}
