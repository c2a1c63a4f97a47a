//! ARP and NDP frames: classify a received frame, build replies and gratuitous announcements.
//!
//! Pure: bytes in, bytes or a [`DropReason`] out. Nothing here opens sockets, reads clocks or
//! knows which node wins an address; the caller passes the set of addresses this interface answers
//! for. Frames are built the way the Linux kernel builds its own replies (no padding, IPv6 source =
//! the target address), so a reply can be compared byte for byte with the kernel's.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;

/// An Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);

    /// True for group addresses (broadcast included): the low bit of the first octet.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The Ethernet multicast address of `ip`'s solicited-node group (33:33:ff:xx:xx:xx).
    pub fn solicited_node(ip: &Ipv6Addr) -> Mac {
        let o = ip.octets();
        Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(format!("MAC address {s:?} does not have 6 octets"));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .map_err(|e| format!("MAC address {s:?}: octet {p:?}: {e}"))?;
        }
        Ok(Mac(out))
    }
}

/// The solicited-node multicast address of `ip` (ff02::1:ffxx:xxxx, RFC 4291 2.7.1).
pub fn solicited_node_ip(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Why a received frame gets no answer. Every variant is counted (metrics label: [`Self::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims to carry.
    Truncated,
    /// Sent by this interface (packet sockets also see outgoing frames).
    OwnFrame,
    /// Ethernet destination is unicast to another host.
    NotForUs,
    /// Neither ARP nor IPv6 (the kernel filter should have removed it).
    UnsupportedEtherType,
    /// ARP for something other than IPv4 over Ethernet.
    ArpNotEthernetIpv4,
    /// An ARP reply or another operation: only requests are answered.
    ArpNotRequest,
    /// A gratuitous ARP from another host (sender address = target address): an announcement,
    /// not a question.
    ArpGratuitous,
    /// IPv6 but not ICMPv6 directly after the fixed header.
    NotIcmpv6,
    /// ICMPv6 but not a Neighbor Solicitation.
    NotNeighborSolicit,
    /// Neighbor Solicitation with a hop limit other than 255 (RFC 4861 7.1.1: it came through a
    /// router).
    NsHopLimit,
    /// Neighbor Solicitation whose ICMPv6 checksum is wrong.
    NsBadChecksum,
    /// Neighbor Solicitation that is malformed: non-zero code, multicast target, or an option of
    /// length zero.
    NsMalformed,
    /// Duplicate address detection probe (source ::): the prober is not asking for our MAC.
    NsUnspecifiedSource,
    /// The target address is not one this node announces on this interface.
    NotOwned,
}

impl DropReason {
    /// Every reason, in order (for tables and metrics that list zero counts too).
    pub const ALL: [DropReason; 14] = [
        DropReason::Truncated,
        DropReason::OwnFrame,
        DropReason::NotForUs,
        DropReason::UnsupportedEtherType,
        DropReason::ArpNotEthernetIpv4,
        DropReason::ArpNotRequest,
        DropReason::ArpGratuitous,
        DropReason::NotIcmpv6,
        DropReason::NotNeighborSolicit,
        DropReason::NsHopLimit,
        DropReason::NsBadChecksum,
        DropReason::NsMalformed,
        DropReason::NsUnspecifiedSource,
        DropReason::NotOwned,
    ];

    /// Snake-case name, used as a metrics label and in logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::OwnFrame => "own_frame",
            DropReason::NotForUs => "not_for_us",
            DropReason::UnsupportedEtherType => "unsupported_ethertype",
            DropReason::ArpNotEthernetIpv4 => "arp_not_ethernet_ipv4",
            DropReason::ArpNotRequest => "arp_not_request",
            DropReason::ArpGratuitous => "arp_gratuitous",
            DropReason::NotIcmpv6 => "not_icmpv6",
            DropReason::NotNeighborSolicit => "not_neighbor_solicit",
            DropReason::NsHopLimit => "ns_hop_limit",
            DropReason::NsBadChecksum => "ns_bad_checksum",
            DropReason::NsMalformed => "ns_malformed",
            DropReason::NsUnspecifiedSource => "ns_unspecified_source",
            DropReason::NotOwned => "not_owned",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A question this node must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer an ARP request for `target` to `to_mac`/`to_ip` (the requester).
    ArpReply {
        target: Ipv4Addr,
        to_mac: Mac,
        to_ip: Ipv4Addr,
    },
    /// Answer a Neighbor Solicitation for `target` to `to_mac`/`to_ip` (the solicitor).
    NeighborAdvert {
        target: Ipv6Addr,
        to_mac: Mac,
        to_ip: Ipv6Addr,
    },
}

impl Action {
    /// The address asked about.
    pub fn target(&self) -> IpAddr {
        match self {
            Action::ArpReply { target, .. } => IpAddr::V4(*target),
            Action::NeighborAdvert { target, .. } => IpAddr::V6(*target),
        }
    }

    /// The reply frame, sent from `own`.
    pub fn reply(&self, own: Mac) -> Vec<u8> {
        match *self {
            Action::ArpReply {
                target,
                to_mac,
                to_ip,
            } => arp_frame(to_mac, own, ARP_REPLY, own, target, to_mac, to_ip),
            Action::NeighborAdvert {
                target,
                to_mac,
                to_ip,
            } => neighbor_advert(own, to_mac, target, to_ip, NA_SOLICITED | NA_OVERRIDE),
        }
    }
}

const ETH_HDR: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HDR: usize = 40;
const NS_MIN: usize = 24;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;

/// Decides whether `frame`, received on an interface with MAC `own`, is a question about one of
/// `owned`, and if so what to answer.
pub fn classify(frame: &[u8], own: Mac, owned: &BTreeSet<IpAddr>) -> Result<Action, DropReason> {
    let eth = EthernetPacket::new(frame).ok_or(DropReason::Truncated)?;
    let src = Mac(eth.get_source().octets());
    let dst = Mac(eth.get_destination().octets());
    if src == own {
        return Err(DropReason::OwnFrame);
    }
    if dst != own && !dst.is_multicast() {
        return Err(DropReason::NotForUs);
    }
    match eth.get_ethertype() {
        EtherTypes::Arp => classify_arp(eth.payload(), owned),
        EtherTypes::Ipv6 => classify_ns(eth.payload(), src, owned),
        _ => Err(DropReason::UnsupportedEtherType),
    }
}

fn classify_arp(payload: &[u8], owned: &BTreeSet<IpAddr>) -> Result<Action, DropReason> {
    if payload.len() < ARP_LEN {
        return Err(DropReason::Truncated);
    }
    let arp = ArpPacket::new(payload).ok_or(DropReason::Truncated)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(DropReason::ArpNotEthernetIpv4);
    }
    if arp.get_operation() != ArpOperations::Request {
        return Err(DropReason::ArpNotRequest);
    }
    let sender_ip = arp.get_sender_proto_addr();
    let target = arp.get_target_proto_addr();
    if sender_ip == target {
        return Err(DropReason::ArpGratuitous);
    }
    if !owned.contains(&IpAddr::V4(target)) {
        return Err(DropReason::NotOwned);
    }
    Ok(Action::ArpReply {
        target,
        to_mac: Mac(arp.get_sender_hw_addr().octets()),
        to_ip: sender_ip,
    })
}

fn classify_ns(
    payload: &[u8],
    eth_src: Mac,
    owned: &BTreeSet<IpAddr>,
) -> Result<Action, DropReason> {
    let ip = Ipv6Packet::new(payload).ok_or(DropReason::Truncated)?;
    let body_len = usize::from(ip.get_payload_length());
    if payload.len() < IPV6_HDR + body_len {
        return Err(DropReason::Truncated);
    }
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
        return Err(DropReason::NotIcmpv6);
    }
    let body = &payload[IPV6_HDR..IPV6_HDR + body_len];
    let icmp = Icmpv6Packet::new(body).ok_or(DropReason::Truncated)?;
    if icmp.get_icmpv6_type() != Icmpv6Types::NeighborSolicit {
        return Err(DropReason::NotNeighborSolicit);
    }
    if body.len() < NS_MIN {
        return Err(DropReason::Truncated);
    }
    if ip.get_hop_limit() != 255 {
        return Err(DropReason::NsHopLimit);
    }
    let (src_ip, dst_ip) = (ip.get_source(), ip.get_destination());
    if icmpv6::checksum(&icmp, &src_ip, &dst_ip) != icmp.get_checksum() {
        return Err(DropReason::NsBadChecksum);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&body[8..24]);
    let target = Ipv6Addr::from(t);
    if icmp.get_icmpv6_code().0 != 0 || target.is_multicast() {
        return Err(DropReason::NsMalformed);
    }
    let source_ll = ndp_source_ll(&body[NS_MIN..])?;
    if src_ip.is_unspecified() {
        return Err(DropReason::NsUnspecifiedSource);
    }
    if !owned.contains(&IpAddr::V6(target)) {
        return Err(DropReason::NotOwned);
    }
    Ok(Action::NeighborAdvert {
        target,
        // A unicast NS (neighbour unreachability detection) may omit the option: answer to the
        // frame's sender then.
        to_mac: source_ll.unwrap_or(eth_src),
        to_ip: src_ip,
    })
}

/// Walks NDP options; returns the Source Link-Layer Address if present.
fn ndp_source_ll(mut opts: &[u8]) -> Result<Option<Mac>, DropReason> {
    let mut found = None;
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(DropReason::NsMalformed);
        }
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return Err(DropReason::NsMalformed);
        }
        if opts[0] == OPT_SOURCE_LL && len >= 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[2..8]);
            found = Some(Mac(m));
        }
        opts = &opts[len..];
    }
    Ok(found)
}

/// Gratuitous ARP for `vip` from `own`, in both forms receivers accept: a broadcast request and a
/// broadcast reply, each with sender and target address = `vip`.
pub fn gratuitous_arp(own: Mac, vip: Ipv4Addr) -> [Vec<u8>; 2] {
    [
        arp_frame(Mac::BROADCAST, own, ARP_REQUEST, own, vip, Mac::ZERO, vip),
        arp_frame(
            Mac::BROADCAST,
            own,
            ARP_REPLY,
            own,
            vip,
            Mac::BROADCAST,
            vip,
        ),
    ]
}

/// Unsolicited Neighbor Advertisement for `vip` from `own` to all nodes (ff02::1), Override set,
/// so receivers replace the link-layer address they had.
pub fn unsolicited_na(own: Mac, vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    neighbor_advert(
        own,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        vip,
        all_nodes,
        NA_OVERRIDE,
    )
}

fn arp_frame(
    eth_dst: Mac,
    own: Mac,
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR + ARP_LEN);
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&own.0);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&target_mac.0);
    f.extend_from_slice(&target_ip.octets());
    f
}

fn neighbor_advert(own: Mac, eth_dst: Mac, target: Ipv6Addr, dst: Ipv6Addr, flags: u8) -> Vec<u8> {
    let icmp_len: u16 = 32; // 24 fixed + 8 for the Target Link-Layer Address option
    let mut f = Vec::with_capacity(ETH_HDR + IPV6_HDR + usize::from(icmp_len));
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&own.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class, no flow label
    f.extend_from_slice(&icmp_len.to_be_bytes());
    f.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255
    f.extend_from_slice(&target.octets()); // source: the address we answer for, as Linux does
    f.extend_from_slice(&dst.octets());
    let icmp_start = f.len();
    f.extend_from_slice(&[136, 0, 0, 0, flags, 0, 0, 0]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&[OPT_TARGET_LL, 1]);
    f.extend_from_slice(&own.0);
    let sum = Icmpv6Packet::new(&f[icmp_start..])
        .map(|p| icmpv6::checksum(&p, &target, &dst))
        .unwrap_or(0);
    f[icmp_start + 2..icmp_start + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with tcpdump between two namespaces: `arping -I a0 192.0.2.2` from 02:..:0a:01
    // (192.0.2.1) and the Linux kernel's reply from 02:..:0b:01.
    const ARP_REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0xc0, 0x00,
        0x02, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0x00, 0x02, 0x02,
    ];
    const KERNEL_ARP_REPLY: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0xc0, 0x00,
        0x02, 0x02, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0xc0, 0x00, 0x02, 0x01,
    ];
    // `ndisc6 2001:db8::2 a0` from fe80::ff:fe00:a01 and the kernel's Neighbor Advertisement.
    const NS: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x86, 0xdd, 0x60,
        0x0d, 0x4e, 0x6c, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x0a, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x02, 0x87, 0x00, 0x38, 0x5f, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01,
    ];
    const KERNEL_NA: [u8; 86] = [
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x0a, 0x01, 0x88, 0x00, 0xa5, 0xaa, 0x60, 0x00,
        0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01,
    ];

    const CLIENT: Mac = Mac([2, 0, 0, 0, 0x0a, 1]);
    const OWN: Mac = Mac([2, 0, 0, 0, 0x0b, 1]);

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn owned(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// RFC 1071 one's-complement sum over the IPv6 pseudo-header and the ICMPv6 message, written
    /// independently of pnet.
    fn icmpv6_sum_ok(frame: &[u8]) -> bool {
        let ip = &frame[ETH_HDR..];
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let mut data = Vec::new();
        data.extend_from_slice(&ip[8..40]);
        data.extend_from_slice(&(len as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 58]);
        data.extend_from_slice(&ip[40..40 + len]);
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn arp_request_gets_the_same_reply_the_kernel_sends() {
        let action = classify(&ARP_REQ, OWN, &owned(&["192.0.2.2"])).unwrap();
        assert_eq!(
            action,
            Action::ArpReply {
                target: v4("192.0.2.2"),
                to_mac: CLIENT,
                to_ip: v4("192.0.2.1"),
            }
        );
        assert_eq!(action.reply(OWN), KERNEL_ARP_REPLY.to_vec());
    }

    #[test]
    fn arp_request_padded_to_minimum_frame_is_still_answered() {
        let mut padded = ARP_REQ.to_vec();
        padded.resize(60, 0);
        let action = classify(&padded, OWN, &owned(&["192.0.2.2"])).unwrap();
        assert_eq!(action.reply(OWN), KERNEL_ARP_REPLY.to_vec());
    }

    #[test]
    fn neighbor_solicit_gets_the_same_advert_the_kernel_sends() {
        assert!(icmpv6_sum_ok(&NS), "fixture checksum");
        let action = classify(&NS, OWN, &owned(&["2001:db8::2"])).unwrap();
        assert_eq!(
            action,
            Action::NeighborAdvert {
                target: v6("2001:db8::2"),
                to_mac: CLIENT,
                to_ip: v6("fe80::ff:fe00:a01"),
            }
        );
        let na = action.reply(OWN);
        assert_eq!(na, KERNEL_NA.to_vec());
        assert!(icmpv6_sum_ok(&na));
    }

    #[test]
    fn our_reply_classified_back_is_not_a_question() {
        let all = owned(&["192.0.2.2", "2001:db8::2"]);
        let arp = classify(&ARP_REQ, OWN, &all).unwrap().reply(OWN);
        // Seen by the client: a reply, not a request.
        assert_eq!(classify(&arp, CLIENT, &all), Err(DropReason::ArpNotRequest));
        // Seen by ourselves on the way out.
        assert_eq!(classify(&arp, OWN, &all), Err(DropReason::OwnFrame));
        let na = classify(&NS, OWN, &all).unwrap().reply(OWN);
        assert_eq!(
            classify(&na, CLIENT, &all),
            Err(DropReason::NotNeighborSolicit)
        );
    }

    #[test]
    fn gratuitous_arp_has_both_forms_with_sender_equal_target() {
        let vip = v4("192.0.2.100");
        let [req, rep] = gratuitous_arp(OWN, vip);
        let expect_req: Vec<u8> = [
            &[0xff; 6][..],
            &OWN.0,
            &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1],
            &OWN.0,
            &[192, 0, 2, 100],
            &[0; 6],
            &[192, 0, 2, 100],
        ]
        .concat();
        let expect_rep: Vec<u8> = [
            &[0xff; 6][..],
            &OWN.0,
            &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2],
            &OWN.0,
            &[192, 0, 2, 100],
            &[0xff; 6],
            &[192, 0, 2, 100],
        ]
        .concat();
        assert_eq!(req, expect_req);
        assert_eq!(rep, expect_rep);
        // Another node hearing them does not answer them.
        let all = owned(&["192.0.2.100"]);
        assert_eq!(classify(&req, CLIENT, &all), Err(DropReason::ArpGratuitous));
        assert_eq!(classify(&rep, CLIENT, &all), Err(DropReason::ArpNotRequest));
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_override() {
        let vip = v6("2001:db8::100");
        let na = unsolicited_na(OWN, vip);
        let mut expect: Vec<u8> = [
            &[0x33, 0x33, 0, 0, 0, 1][..],
            &OWN.0,
            &[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255],
            &vip.octets(),
            &v6("ff02::1").octets(),
            &[136, 0, 0, 0, 0x20, 0, 0, 0],
            &vip.octets(),
            &[2, 1],
            &OWN.0,
        ]
        .concat();
        // Checksum computed independently (the sum over the message with it must be 0xffff).
        expect[ETH_HDR + IPV6_HDR + 2] = na[ETH_HDR + IPV6_HDR + 2];
        expect[ETH_HDR + IPV6_HDR + 3] = na[ETH_HDR + IPV6_HDR + 3];
        assert_eq!(na, expect);
        assert!(icmpv6_sum_ok(&na));
        let mut corrupt = na.clone();
        corrupt[ETH_HDR + IPV6_HDR + 2] ^= 1;
        assert!(!icmpv6_sum_ok(&corrupt));
    }

    #[test]
    fn solicited_node_addresses() {
        let ip = v6("2001:db8::12:3456");
        assert_eq!(solicited_node_ip(&ip), v6("ff02::1:ff12:3456"));
        assert_eq!(
            Mac::solicited_node(&ip),
            Mac([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        assert_eq!(
            Mac::solicited_node(&v6("2001:db8::2")).0,
            NS[0..6],
            "ndisc6 sent to this group"
        );
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: Mac = "02:00:00:00:0B:01".parse().unwrap();
        assert_eq!(m, OWN);
        assert_eq!(m.to_string(), "02:00:00:00:0b:01");
        assert!("02:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:0b:zz".parse::<Mac>().is_err());
    }

    /// Rewrites the NS fixture and fixes its checksum, so one field at a time can be wrong.
    fn ns_with(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = NS.to_vec();
        edit(&mut f);
        let start = ETH_HDR + IPV6_HDR;
        f[start + 2] = 0;
        f[start + 3] = 0;
        let src: [u8; 16] = f[ETH_HDR + 8..ETH_HDR + 24].try_into().unwrap();
        let dst: [u8; 16] = f[ETH_HDR + 24..ETH_HDR + 40].try_into().unwrap();
        let sum = icmpv6::checksum(
            &Icmpv6Packet::new(&f[start..]).unwrap(),
            &Ipv6Addr::from(src),
            &Ipv6Addr::from(dst),
        );
        f[start + 2..start + 4].copy_from_slice(&sum.to_be_bytes());
        assert!(icmpv6_sum_ok(&f));
        f
    }

    #[test]
    fn every_drop_reason() {
        let all = owned(&["192.0.2.2", "2001:db8::2"]);
        let arp_with = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = ARP_REQ.to_vec();
            edit(&mut f);
            f
        };
        let cases: Vec<(DropReason, Vec<u8>)> = vec![
            (DropReason::Truncated, ARP_REQ[..10].to_vec()),
            (DropReason::Truncated, ARP_REQ[..30].to_vec()),
            (DropReason::Truncated, NS[..70].to_vec()),
            (
                DropReason::OwnFrame,
                arp_with(&|f| f[6..12].copy_from_slice(&OWN.0)),
            ),
            (
                DropReason::NotForUs,
                arp_with(&|f| f[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9])),
            ),
            (
                DropReason::UnsupportedEtherType,
                arp_with(&|f| f[12..14].copy_from_slice(&[0x08, 0x00])),
            ),
            (DropReason::ArpNotEthernetIpv4, arp_with(&|f| f[15] = 6)),
            (DropReason::ArpNotEthernetIpv4, arp_with(&|f| f[17] = 0xdd)),
            (DropReason::ArpNotRequest, arp_with(&|f| f[21] = 2)),
            (
                DropReason::ArpGratuitous,
                arp_with(&|f| f[28..32].copy_from_slice(&[192, 0, 2, 2])),
            ),
            (DropReason::NotOwned, arp_with(&|f| f[41] = 3)),
            (DropReason::NotIcmpv6, ns_with(|f| f[ETH_HDR + 6] = 17)),
            (
                DropReason::NotNeighborSolicit,
                ns_with(|f| f[ETH_HDR + IPV6_HDR] = 136),
            ),
            (DropReason::NsHopLimit, ns_with(|f| f[ETH_HDR + 7] = 64)),
            (DropReason::NsBadChecksum, {
                let mut f = NS.to_vec();
                f[ETH_HDR + IPV6_HDR + 2] ^= 0x10;
                f
            }),
            (
                DropReason::NsMalformed,
                ns_with(|f| f[ETH_HDR + IPV6_HDR + 1] = 1),
            ),
            (
                DropReason::NsMalformed,
                ns_with(|f| f[ETH_HDR + IPV6_HDR + 8] = 0xff),
            ),
            (
                DropReason::NsMalformed,
                ns_with(|f| f[ETH_HDR + IPV6_HDR + 25] = 0),
            ),
            (
                DropReason::NsUnspecifiedSource,
                ns_with(|f| {
                    f[ETH_HDR + 8..ETH_HDR + 24].fill(0);
                    f.truncate(ETH_HDR + IPV6_HDR + NS_MIN);
                    f[ETH_HDR + 4..ETH_HDR + 6].copy_from_slice(&(NS_MIN as u16).to_be_bytes());
                }),
            ),
            (
                DropReason::NotOwned,
                ns_with(|f| f[ETH_HDR + IPV6_HDR + 23] = 3),
            ),
        ];
        let mut seen = BTreeSet::new();
        for (want, frame) in &cases {
            assert_eq!(classify(frame, OWN, &all), Err(*want), "case {want}");
            seen.insert(*want);
        }
        assert_eq!(
            seen,
            DropReason::ALL.into_iter().collect(),
            "every reason has a case"
        );
        let names: BTreeSet<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::ALL.len(), "labels are unique");
    }

    #[test]
    fn unicast_ns_without_source_option_is_answered_to_the_frame_sender() {
        let f = ns_with(|f| {
            f[0..6].copy_from_slice(&OWN.0);
            f.truncate(ETH_HDR + IPV6_HDR + NS_MIN);
            f[ETH_HDR + 4..ETH_HDR + 6].copy_from_slice(&(NS_MIN as u16).to_be_bytes());
        });
        let action = classify(&f, OWN, &owned(&["2001:db8::2"])).unwrap();
        assert_eq!(
            action,
            Action::NeighborAdvert {
                target: v6("2001:db8::2"),
                to_mac: CLIENT,
                to_ip: v6("fe80::ff:fe00:a01"),
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn classify_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let all = owned(&["192.0.2.2", "2001:db8::2"]);
            let _ = classify(&bytes, OWN, &all);
        }

        #[test]
        fn classify_never_panics_on_mutated_fixtures(
            which in 0usize..2,
            at in 0usize..86,
            value in proptest::prelude::any::<u8>(),
            cut in 0usize..87,
        ) {
            let all = owned(&["192.0.2.2", "2001:db8::2"]);
            let mut f = if which == 0 { ARP_REQ.to_vec() } else { NS.to_vec() };
            if at < f.len() {
                f[at] = value;
            }
            f.truncate(cut);
            if let Ok(action) = classify(&f, OWN, &all) {
                // Whatever is answered is about an owned address.
                proptest::prop_assert!(all.contains(&action.target()));
            }
        }
    }
}
