//! A hostile BGP peer (issue 8): malformed messages from a router ferrolb dials and from one
//! connecting to `--bgp-listen`. Each gets the NOTIFICATION RFC 4271 requires (or RFC 7606
//! treat-as-withdraw), the connection closes, ferrolb reconnects and stays up; a connection from
//! an address that is no peer gets no byte.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};

use crate::lab::{bird_prefixes, desired_prefixes, services, size, wait_until, BgpLab, Standalone};
use crate::wire::{good_attrs, keepalive, message, open, update, RawPeer, MARKER};

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
    if !require(&[
        Root,
        Program("bird"),
        Program("birdc"),
        Program("socat"),
        Program("ss"),
    ])? {
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
    if !require(&[Root, Program("socat")])? {
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
