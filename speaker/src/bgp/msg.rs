//! Our own BGP message types: what the FSM and the packer speak.
//!
//! The wire format lives behind `codec.rs` (netgauze-bgp-pkt today), so the library can be
//! swapped without touching the FSM. Must not: do I/O or know about the wire layout.

use std::net::Ipv4Addr;

/// NOTIFICATION error codes (RFC 4271 §4.5) that the FSM sends.
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease (RFC 4486 subcodes).
    pub const CEASE: u8 = 6;
    /// OPEN subcode: Bad Peer AS.
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    /// OPEN subcode: Bad BGP Identifier.
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    /// OPEN subcode: Unacceptable Hold Time.
    pub const OPEN_BAD_HOLD_TIME: u8 = 6;
    /// UPDATE subcode: Unrecognized Well-known Attribute.
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// Cease subcode: Peer De-configured.
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// Cease subcode: Administrative Shutdown.
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Cease subcode: connection collision resolution (RFC 4486).
    pub const CEASE_CONNECTION_COLLISION: u8 = 7;
}

/// Capabilities we send and look for in the peer's OPEN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// 4-octet AS number capability (RFC 6793) with the full ASN.
    pub four_octet_asn: Option<u32>,
    /// Multiprotocol IPv4 unicast (RFC 4760).
    pub ipv4_unicast: bool,
    /// Multiprotocol IPv6 unicast (RFC 4760).
    pub ipv6_unicast: bool,
    /// Route refresh (RFC 2918).
    pub route_refresh: bool,
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS (the 4-octet value when the capability is present).
    pub asn: u32,
    /// Proposed hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub caps: Capabilities,
}

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    /// A notification without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

/// A message as the FSM sees it. UPDATE bodies stay opaque here: the speaker never installs
/// received routes, and the packer builds outgoing UPDATEs as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    /// A received UPDATE (content ignored) or an UPDATE to send (already encoded, whole message).
    Update(Vec<u8>),
    Notification(Notification),
    Keepalive,
    /// ROUTE-REFRESH for (AFI, SAFI).
    RouteRefresh {
        afi: u16,
        safi: u8,
    },
}
