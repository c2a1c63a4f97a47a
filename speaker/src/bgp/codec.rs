//! Wire codec: our [`Message`] types <-> bytes, over `netgauze-bgp-pkt`.
//!
//! Framing checks (marker, length 19..=4096, type) happen here before the library sees a byte,
//! and every decode failure becomes the NOTIFICATION (code, subcode, data) to send. KEEPALIVE and
//! NOTIFICATION are written by hand (fixed layouts); OPEN goes through the library; UPDATEs are
//! built by `pack.rs` and travel as whole encoded messages. Must not: do I/O or keep session
//! state beyond the library's 4-octet-AS flag.

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::codec::{BgpCodec, BgpCodecDecoderError};
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use tokio_util::bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::msg::{code, Capabilities, Message, Notification, Open};

/// Largest BGP message without the extended-message capability (RFC 4271).
pub const MAX_MESSAGE: usize = 4096;
/// Header: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// AS_TRANS (RFC 6793) for a 4-octet ASN in the 2-octet OPEN field.
const AS_TRANS: u16 = 23456;

/// Failures writing a message.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("BGP library could not encode the {kind} message: {detail}")]
    Library { kind: &'static str, detail: String },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Failures reading a message: either the socket failed or the peer sent garbage, in which case
/// `notification` is what we answer before closing.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed BGP message ({}/{}): {detail}", notification.code, notification.subcode)]
    Malformed {
        notification: Notification,
        detail: String,
    },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// tokio-util codec for one session.
#[derive(Debug)]
pub struct Codec {
    inner: BgpCodec,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            inner: BgpCodec::new(true),
        }
    }
}

fn malformed(code_: u8, subcode: u8, data: Vec<u8>, detail: String) -> DecodeError {
    DecodeError::Malformed {
        notification: Notification {
            code: code_,
            subcode,
            data,
        },
        detail,
    }
}

impl Decoder for Codec {
    type Item = Message;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if buf[..16].iter().any(|b| *b != 0xff) {
            return Err(malformed(
                code::HEADER,
                1,
                Vec::new(),
                "marker is not all ones".into(),
            ));
        }
        let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
        if !(HEADER_LEN..=MAX_MESSAGE).contains(&len) {
            return Err(malformed(
                code::HEADER,
                2,
                buf[16..18].to_vec(),
                format!("length {len} outside 19..=4096"),
            ));
        }
        let kind = buf[18];
        if !(1..=5).contains(&kind) {
            return Err(malformed(
                code::HEADER,
                3,
                vec![kind],
                format!("message type {kind}"),
            ));
        }
        if buf.len() < len {
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        let raw = buf[..len].to_vec();
        if kind == 3 {
            // NOTIFICATION: read by hand, so a code the library does not know (or none) still
            // reaches the FSM as the peer's reason for closing.
            let _ = buf.split_to(len);
            return Ok(Some(Message::Notification(Notification {
                code: raw.get(HEADER_LEN).copied().unwrap_or(0),
                subcode: raw.get(HEADER_LEN + 1).copied().unwrap_or(0),
                data: raw
                    .get(HEADER_LEN + 2..)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            })));
        }
        match self.inner.decode(buf) {
            Ok(Some((BgpMessage::Update(_), _ignored))) => match unrecognized_well_known(&raw) {
                // RFC 4271 §6.3; RFC 7606 leaves this one a session reset. The library keeps
                // such attributes as "unknown" whatever their flags, so we look ourselves.
                Some(attr) => Err(malformed(
                    code::UPDATE,
                    code::UPDATE_UNRECOGNIZED_WELL_KNOWN,
                    attr.to_vec(),
                    format!("unrecognized well-known attribute type {}", attr[1]),
                )),
                None => Ok(Some(Message::Update(raw))),
            },
            Ok(Some((msg, _ignored))) => Ok(Some(from_library(msg, raw))),
            Ok(None) => Ok(None),
            Err(BgpCodecDecoderError::BgpMessageParsingError(e)) => {
                let detail = e.to_string();
                let n = notification_of(BgpNotificationMessage::from(e));
                Err(DecodeError::Malformed {
                    notification: n,
                    detail,
                })
            }
            Err(e) => Err(malformed(code::HEADER, 0, Vec::new(), e.to_string())),
        }
    }
}

impl Encoder<Message> for Codec {
    type Error = EncodeError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match msg {
            Message::Keepalive => write_raw(dst, 4, &[]),
            Message::Notification(n) => {
                let mut body = vec![n.code, n.subcode];
                body.extend_from_slice(&n.data);
                write_raw(dst, 3, &body);
            }
            Message::RouteRefresh { afi, safi } => {
                let [a, b] = afi.to_be_bytes();
                write_raw(dst, 5, &[a, b, 0, safi]);
            }
            Message::Update(bytes) => dst.extend_from_slice(&bytes),
            Message::Open(open) => {
                self.inner
                    .encode(BgpMessage::Open(to_library(&open)), dst)
                    .map_err(|e| EncodeError::Library {
                        kind: "OPEN",
                        detail: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }
}

/// Attribute type codes ferrolb recognizes: the well-known ones (ORIGIN, AS_PATH, NEXT_HOP,
/// LOCAL_PREF, ATOMIC_AGGREGATE) and the optional ones the library parses. A mis-flagged
/// recognized attribute is not "unrecognized"; RFC 7606 treats it as withdraw (a no-op here:
/// ferrolb imports no routes).
fn recognized_attribute(kind: u8) -> bool {
    matches!(kind, 1..=10 | 14..=18 | 22 | 23 | 25 | 26 | 29 | 32 | 35 | 40 | 128)
}

/// The first path attribute (flags, type, length, value) of an UPDATE whose Optional bit is
/// clear although its type is not one we recognize: an unrecognized well-known attribute.
/// `raw` is a whole UPDATE the library accepted; every read is still bounds-checked.
fn unrecognized_well_known(raw: &[u8]) -> Option<&[u8]> {
    let len16 = |at: usize| -> Option<usize> {
        let b = raw.get(at..at + 2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let withdrawn = len16(HEADER_LEN)?;
    let attrs_at = HEADER_LEN + 2 + withdrawn;
    let total = len16(attrs_at)?;
    let attrs = raw.get(attrs_at + 2..attrs_at + 2 + total)?;
    let mut at = 0;
    while at + 3 <= attrs.len() {
        let (flags, kind) = (attrs[at], attrs[at + 1]);
        let (value_len, head) = if flags & 0x10 != 0 {
            let b = attrs.get(at + 2..at + 4)?;
            (usize::from(u16::from_be_bytes([b[0], b[1]])), 4)
        } else {
            (usize::from(attrs[at + 2]), 3)
        };
        let end = at + head + value_len;
        let attr = attrs.get(at..end)?;
        if flags & 0x80 == 0 && !recognized_attribute(kind) {
            return Some(attr);
        }
        at = end;
    }
    None
}

/// Writes a message with a fixed body.
fn write_raw(dst: &mut BytesMut, kind: u8, body: &[u8]) {
    dst.reserve(HEADER_LEN + body.len());
    dst.put_slice(&[0xff; 16]);
    // Bodies written here are at most a NOTIFICATION's data, far below 4096.
    dst.put_u16((HEADER_LEN + body.len()) as u16);
    dst.put_u8(kind);
    dst.put_slice(body);
}

/// Code, subcode and data of a library NOTIFICATION, read back from its own encoding (so every
/// variant the library knows maps without a hand-written table).
fn notification_of(n: BgpNotificationMessage) -> Notification {
    let mut buf = BytesMut::new();
    let mut enc = BgpCodec::new(true);
    match enc.encode(BgpMessage::Notification(n), &mut buf) {
        Ok(()) if buf.len() >= HEADER_LEN + 2 => Notification {
            code: buf[HEADER_LEN],
            subcode: buf[HEADER_LEN + 1],
            data: buf[HEADER_LEN + 2..].to_vec(),
        },
        _ => Notification::new(code::HEADER, 0),
    }
}

fn from_library(msg: BgpMessage, raw: Vec<u8>) -> Message {
    match msg {
        BgpMessage::Open(o) => {
            let mut caps = Capabilities::default();
            for c in o.capabilities() {
                match c {
                    BgpCapability::FourOctetAs(a) => caps.four_octet_asn = Some(a.asn4()),
                    BgpCapability::RouteRefresh => caps.route_refresh = true,
                    BgpCapability::MultiProtocolExtensions(mp) => match mp.address_type() {
                        AddressType::Ipv4Unicast => caps.ipv4_unicast = true,
                        AddressType::Ipv6Unicast => caps.ipv6_unicast = true,
                        _ => {}
                    },
                    _ => {}
                }
            }
            Message::Open(Open {
                asn: o.my_asn4(),
                hold_time: o.hold_time(),
                router_id: o.bgp_id(),
                caps,
            })
        }
        BgpMessage::Update(_) => Message::Update(raw),
        BgpMessage::KeepAlive => Message::Keepalive,
        BgpMessage::RouteRefresh(_) => {
            // AFI and SAFI sit right after the header (RFC 2918).
            let afi = raw
                .get(HEADER_LEN..HEADER_LEN + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let safi = raw.get(HEADER_LEN + 3).copied().unwrap_or(0);
            Message::RouteRefresh { afi, safi }
        }
        BgpMessage::Notification(_) => Message::Notification(Notification {
            code: raw.get(HEADER_LEN).copied().unwrap_or(0),
            subcode: raw.get(HEADER_LEN + 1).copied().unwrap_or(0),
            data: raw
                .get(HEADER_LEN + 2..)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        }),
    }
}

fn to_library(open: &Open) -> BgpOpenMessage {
    let mut caps = Vec::new();
    if open.caps.ipv4_unicast {
        caps.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(AddressType::Ipv4Unicast),
        ));
    }
    if open.caps.ipv6_unicast {
        caps.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(AddressType::Ipv6Unicast),
        ));
    }
    if open.caps.route_refresh {
        caps.push(BgpCapability::RouteRefresh);
    }
    if let Some(asn) = open.caps.four_octet_asn {
        caps.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)));
    }
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    BgpOpenMessage::new(
        my_as,
        open.hold_time,
        open.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn roundtrip(m: Message) -> Message {
        let mut c = Codec::default();
        let mut buf = BytesMut::new();
        c.encode(m, &mut buf).unwrap();
        let out = c.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn open_roundtrips_with_capabilities_and_4_octet_asn() {
        let open = Open {
            asn: 4_200_000_001,
            hold_time: 3,
            router_id: Ipv4Addr::new(192, 0, 2, 2),
            caps: Capabilities {
                four_octet_asn: Some(4_200_000_001),
                ipv4_unicast: true,
                ipv6_unicast: true,
                route_refresh: true,
            },
        };
        assert_eq!(roundtrip(Message::Open(open.clone())), Message::Open(open));
    }

    #[test]
    fn keepalive_notification_route_refresh_roundtrip_and_bytes() {
        let mut c = Codec::default();
        let mut buf = BytesMut::new();
        c.encode(Message::Keepalive, &mut buf).unwrap();
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0, 19, 4]);
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(roundtrip(Message::Keepalive), Message::Keepalive);
        let n = Notification::new(code::CEASE, code::CEASE_ADMIN_SHUTDOWN);
        assert_eq!(
            roundtrip(Message::Notification(n.clone())),
            Message::Notification(n)
        );
        let rr = Message::RouteRefresh { afi: 2, safi: 1 };
        assert_eq!(roundtrip(rr.clone()), rr);
    }

    #[test]
    fn notification_with_unknown_code_still_decodes() {
        let bytes = [vec![0xff; 16], vec![0, 21, 3, 0, 0]].concat();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            Codec::default().decode(&mut buf).unwrap(),
            Some(Message::Notification(Notification::new(0, 0)))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_message_waits_for_more_bytes() {
        let mut c = Codec::default();
        let mut full = BytesMut::new();
        c.encode(Message::Keepalive, &mut full).unwrap();
        let mut buf = BytesMut::from(&full[..10]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn bad_marker_length_and_type_map_to_header_errors() {
        let cases: [(Vec<u8>, u8); 4] = [
            ([vec![0u8; 16], vec![0, 19, 4]].concat(), 1),
            ([vec![0xff; 16], vec![0, 18, 4]].concat(), 2),
            ([vec![0xff; 16], vec![0x10, 1, 4]].concat(), 2),
            ([vec![0xff; 16], vec![0, 19, 9]].concat(), 3),
        ];
        for (bytes, sub) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            match Codec::default().decode(&mut buf) {
                Err(DecodeError::Malformed { notification, .. }) => {
                    assert_eq!((notification.code, notification.subcode), (1, sub));
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    /// An UPDATE for 203.0.113.0/24 with ORIGIN, AS_PATH [64513], NEXT_HOP and `extra`.
    fn update_with(extra: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfb, 0xf9];
        attrs.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
        attrs.extend_from_slice(extra);
        let mut body = vec![0, 0];
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        body.extend_from_slice(&[24, 203, 0, 113]);
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        m.push(2);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn unrecognized_well_known_attribute_is_update_error_2_with_the_attribute() {
        // Regression (issue 8): the library kept it as an unknown attribute and the session
        // went on; RFC 4271 §6.3 wants NOTIFICATION 3/2 with the attribute as data.
        for attr in [vec![0x40, 99, 1, 7], vec![0x50, 200, 0, 2, 1, 2]] {
            let mut buf = BytesMut::from(&update_with(&attr)[..]);
            match Codec::default().decode(&mut buf) {
                Err(DecodeError::Malformed { notification, .. }) => {
                    assert_eq!((notification.code, notification.subcode), (code::UPDATE, 2));
                    assert_eq!(notification.data, attr);
                }
                other => panic!("{attr:?}: {other:?}"),
            }
        }
        // Optional unknown attributes (transitive or not) are fine, and so are known ones.
        for attr in [
            vec![0xc0, 99, 1, 7],
            vec![0x80, 99, 0],
            vec![0xc0, 8, 4, 0, 1, 0, 2],
        ] {
            let raw = update_with(&attr);
            let mut buf = BytesMut::from(&raw[..]);
            assert_eq!(
                Codec::default().decode(&mut buf).unwrap(),
                Some(Message::Update(raw)),
                "{attr:?}"
            );
        }
    }

    #[test]
    fn truncated_mp_reach_is_an_error_not_a_panic() {
        // UPDATE: no withdrawals, 5 bytes of attributes: MP_REACH (optional, type 14) claiming
        // 20 bytes but carrying 2.
        let mut body = vec![0, 0, 0, 5, 0x80, 14, 20, 0, 2];
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(2);
        bytes.append(&mut body);
        let mut buf = BytesMut::from(&bytes[..]);
        match Codec::default().decode(&mut buf) {
            Err(DecodeError::Malformed { notification, .. }) => {
                assert!(notification.code == code::UPDATE || notification.code == code::HEADER);
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Codec::default().decode(&mut buf);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header_never_panic(
            kind in 1u8..=5,
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut bytes = vec![0xff; 16];
            bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
            bytes.push(kind);
            bytes.extend_from_slice(&body);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut c = Codec::default();
            // Decode everything there is; each step either yields, waits or fails.
            while let Ok(Some(_)) = c.decode(&mut buf) {}
        }
    }
}
