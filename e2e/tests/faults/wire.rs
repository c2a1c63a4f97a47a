//! BGP wire bytes written by hand (RFC 4271), for the hostile peer: messages, OPEN, UPDATE,
//! framing, and [`RawPeer`], a "router" that is a bare TCP connection (socat relays bytes; no
//! BGP library involved).
//!
//! Must not: reuse ferrolb's codec (an independent encoder is the point).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrolb_e2e::netns::Netns;

pub const MARKER: [u8; 16] = [0xff; 16];

pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = MARKER.to_vec();
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// An OPEN from the router: version, 2-octet AS, hold time, BGP id 192.0.2.1, capabilities
/// multiprotocol IPv4 unicast and 4-octet AS.
pub fn open(version: u8, asn: u16, hold: u16) -> Vec<u8> {
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

pub fn keepalive() -> Vec<u8> {
    message(4, &[])
}

/// An UPDATE with the given path attribute bytes (withdrawn length 0) and one NLRI 203.0.113.0/24.
pub fn update(attrs: &[u8], declared_attr_len: Option<u16>) -> Vec<u8> {
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
pub fn good_attrs() -> Vec<u8> {
    let mut a = vec![0x40, 1, 1, 0];
    a.extend_from_slice(&[0x40, 2, 6, 2, 1, 0, 0, 0xfb, 0xf9]);
    a.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
    a
}

/// Splits a byte stream into BGP messages (type, whole message); the rest stays in `buf`.
pub fn split_messages(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
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
#[derive(Debug)]
pub struct RawPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Option<Vec<u8>>>,
    buf: Vec<u8>,
    queue: std::collections::VecDeque<(u8, Vec<u8>)>,
}

impl RawPeer {
    pub fn listen(router: &Netns) -> Result<RawPeer> {
        RawPeer::spawn(router, "TCP-LISTEN:179,bind=192.0.2.1,reuseaddr")
    }

    /// The router connects from its configured address to the node's `--bgp-listen` port.
    pub fn connect(router: &Netns) -> Result<RawPeer> {
        RawPeer::spawn(router, "TCP:192.0.2.2:179,bind=192.0.2.1,connect-timeout=2")
    }

    pub fn spawn(router: &Netns, addr: &str) -> Result<RawPeer> {
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

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let s = self.stdin.as_mut().context("closed")?;
        s.write_all(bytes)?;
        s.flush()?;
        Ok(())
    }

    /// The next message from ferrolb, `None` when the connection closed.
    pub fn next(&mut self, limit: Duration) -> Result<Option<(u8, Vec<u8>)>> {
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
    pub fn stays_open(&mut self, wait: Duration) -> bool {
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
    pub fn expect_open(&mut self, limit: Duration) -> Result<Vec<u8>> {
        match self.next(limit)? {
            Some((1, m)) => Ok(m),
            other => bail!("expected OPEN, got {other:?}"),
        }
    }

    /// Skips KEEPALIVEs and UPDATEs until a NOTIFICATION: returns (code, subcode, data), then
    /// checks that ferrolb closed the connection.
    pub fn expect_notification(&mut self) -> Result<(u8, u8, Vec<u8>)> {
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
    pub fn expect_update(&mut self) -> Result<()> {
        loop {
            match self.next(Duration::from_secs(10))? {
                Some((2, _)) => return Ok(()),
                Some((4, _)) => continue,
                other => bail!("expected UPDATE, got {other:?}"),
            }
        }
    }

    /// Answers the OPEN and KEEPALIVE: the session becomes Established on ferrolb's side.
    pub fn establish(&mut self) -> Result<()> {
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
