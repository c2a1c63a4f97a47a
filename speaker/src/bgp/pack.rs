//! UPDATE packing (pure): route sets -> as few encoded UPDATE messages as fit in 4096 bytes.
//!
//! Prefixes that share attributes go into one UPDATE until it is full; withdrawals are chunked
//! the same way; IPv6 travels in MP_REACH_NLRI / MP_UNREACH_NLRI. `diff` turns an old and a new
//! route set into what to send. Must not: do I/O or decide which routes a peer gets (adv.rs).
//!
//! The library (netgauze) encodes each group's attributes once, as an UPDATE without prefixes
//! (a [`Template`]); prefixes are then written into copies of it straight as bytes, so packing
//! 100k prefixes allocates per UPDATE, not per prefix. [`Updates`] hands the messages out in
//! chunks of whole UPDATEs, so the first can be on the wire before the last is encoded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities, LocalPreference,
    MpReach, MpUnreach, NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;

use super::codec::{HEADER_LEN, MAX_MESSAGE};

/// Attributes of one advertised prefix (ORIGIN is always IGP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attrs {
    /// AS_PATH as one AS_SEQUENCE; empty for iBGP.
    pub as_path: Vec<u32>,
    /// IPv4 next hop (NEXT_HOP attribute), used for IPv4 prefixes.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop (inside MP_REACH_NLRI), used for IPv6 prefixes.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// LOCAL_PREF: only for iBGP peers.
    pub local_pref: Option<u32>,
    /// COMMUNITIES as 32-bit values, sorted.
    pub communities: BTreeSet<u32>,
    /// LARGE_COMMUNITY (RFC 8092) as (global administrator, local data 1, local data 2), sorted.
    pub large_communities: BTreeSet<(u32, u32, u32)>,
}

/// What one peer should hold: prefix -> attributes (shared by the prefixes of one
/// advertisement, so a large set holds few copies).
pub type RouteSet = BTreeMap<IpNet, Arc<Attrs>>;

/// Packing failures: a route the wire cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("prefix {prefix} has no {family} next hop for this peer")]
    NoNextHop { prefix: IpNet, family: &'static str },
    #[error("prefix {prefix} cannot be carried as unicast NLRI")]
    BadPrefix { prefix: IpNet },
    #[error("BGP library could not encode an UPDATE: {0}")]
    Encode(String),
    #[error("attributes alone take {0} bytes, more than one UPDATE holds")]
    AttributesTooLarge(usize),
}

/// Routes to announce (new or changed) and prefixes to withdraw, from `old` to `new`.
pub fn diff(old: &RouteSet, new: &RouteSet) -> (RouteSet, BTreeSet<IpNet>) {
    let announce = new
        .iter()
        .filter(|(p, a)| old.get(p) != Some(a))
        .map(|(p, a)| (*p, a.clone()))
        .collect();
    let withdraw = old
        .keys()
        .filter(|p| !new.contains_key(p))
        .copied()
        .collect();
    (announce, withdraw)
}

/// Encoded UPDATE messages (each a whole message, never over 4096 bytes): withdrawals first,
/// then announcements grouped by identical attributes. The same bytes as [`Updates`] streams.
pub fn updates(announce: &RouteSet, withdraw: &BTreeSet<IpNet>) -> Result<Vec<Vec<u8>>, PackError> {
    let mut enc = Updates::new(announce, withdraw)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while enc.fill(&mut buf, 1) > 0 {
        out.push(std::mem::take(&mut buf));
    }
    Ok(out)
}

/// An UPDATE without prefixes, and where prefixes go into a copy of it.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    /// Offset the prefixes are inserted at.
    insert_at: usize,
    /// Offsets of the 2-byte length fields that grow with the prefixes (the header's first).
    lengths: Vec<usize>,
}

impl Template {
    /// IPv4 withdrawals: header, Withdrawn Routes Length, (routes), Total Path Attribute Length.
    fn withdraw_v4() -> Result<Template, PackError> {
        let bytes = encode(withdraw_msg(&[], false)?)?;
        if bytes.len() != HEADER_LEN + 4 {
            return Err(PackError::Encode(format!(
                "empty IPv4 withdrawal is {} bytes",
                bytes.len()
            )));
        }
        Ok(Template {
            bytes,
            insert_at: HEADER_LEN + 2,
            lengths: vec![16, HEADER_LEN],
        })
    }

    /// IPv4 announcements: NLRI at the end of the message.
    fn announce_v4(attrs: &Attrs) -> Result<Template, PackError> {
        let bytes = encode(announce_msg(&[], attrs, false)?)?;
        Ok(Template {
            insert_at: bytes.len(),
            bytes,
            lengths: vec![16],
        })
    }

    /// IPv6 (announce or withdraw): the prefixes end the last path attribute (MP_REACH_NLRI or
    /// MP_UNREACH_NLRI, extended length), which ends the message.
    fn multiprotocol(bytes: Vec<u8>) -> Result<Template, PackError> {
        let bad = |what: &str| PackError::Encode(format!("multiprotocol template: {what}"));
        let be16 = |at: usize| usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        if bytes.len() < HEADER_LEN + 4 || be16(HEADER_LEN) != 0 {
            return Err(bad("withdrawn routes present"));
        }
        let attrs_at = HEADER_LEN + 4;
        if attrs_at + be16(HEADER_LEN + 2) != bytes.len() {
            return Err(bad("bytes after the path attributes"));
        }
        // Walk to the last attribute.
        let mut at = attrs_at;
        let mut last = None;
        while at + 3 <= bytes.len() {
            let extended = bytes[at] & 0x10 != 0;
            let (len, head) = if extended {
                if at + 4 > bytes.len() {
                    return Err(bad("truncated attribute"));
                }
                (be16(at + 2), 4)
            } else {
                (usize::from(bytes[at + 2]), 3)
            };
            last = Some((at, extended, bytes[at + 1]));
            at += head + len;
        }
        match last {
            Some((start, true, 14 | 15)) if at == bytes.len() => Ok(Template {
                insert_at: bytes.len(),
                lengths: vec![16, HEADER_LEN + 2, start + 2],
                bytes,
            }),
            _ => Err(bad(
                "last attribute is not an extended-length MP_(UN)REACH_NLRI",
            )),
        }
    }

    /// Appends one UPDATE holding `prefixes` (which must fit) to `out`.
    fn write(&self, prefixes: &[IpNet], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes[..self.insert_at]);
        let mut added = 0;
        for p in prefixes {
            added += put_prefix(p, out);
        }
        out.extend_from_slice(&self.bytes[self.insert_at..]);
        for &at in &self.lengths {
            let field = &mut out[start + at..start + at + 2];
            let old = usize::from(u16::from_be_bytes([field[0], field[1]]));
            // Chunks are cut so the whole message stays <= 4096 bytes, so every field fits.
            field.copy_from_slice(&((old + added) as u16).to_be_bytes());
        }
    }
}

/// Writes one prefix as NLRI (length octet, significant address octets); returns its size.
fn put_prefix(p: &IpNet, out: &mut Vec<u8>) -> usize {
    let len = p.prefix_len();
    let n = usize::from(len).div_ceil(8);
    out.push(len);
    match p {
        IpNet::V4(n4) => out.extend_from_slice(&n4.network().octets()[..n]),
        IpNet::V6(n6) => out.extend_from_slice(&n6.network().octets()[..n]),
    }
    1 + n
}

/// One template and the prefixes that go into copies of it.
#[derive(Debug)]
struct Job {
    template: Template,
    prefixes: Vec<IpNet>,
}

/// The UPDATEs for one change, encoded on demand in chunks of whole messages (withdrawals
/// first, then announcements grouped by attributes, IPv4 before IPv6).
#[derive(Debug)]
pub struct Updates {
    jobs: Vec<Job>,
    /// The job being written and the first of its prefixes not yet written.
    job: usize,
    next: usize,
}

impl Updates {
    /// Checks that every group can be carried and encodes each group's attributes once.
    pub fn new(announce: &RouteSet, withdraw: &BTreeSet<IpNet>) -> Result<Updates, PackError> {
        let mut jobs = Vec::new();
        let (w4, w6): (Vec<IpNet>, Vec<IpNet>) = withdraw.iter().partition(|p| p.addr().is_ipv4());
        if !w4.is_empty() {
            jobs.push(Job {
                template: Template::withdraw_v4()?,
                prefixes: w4,
            });
        }
        if !w6.is_empty() {
            jobs.push(Job {
                template: Template::multiprotocol(encode(withdraw_msg(&[], true)?)?)?,
                prefixes: w6,
            });
        }
        // Few distinct attribute sets (one per advertisement): a short list, shared Arcs first.
        let mut groups: Vec<(bool, &Arc<Attrs>, Vec<IpNet>)> = Vec::new();
        for (p, a) in announce {
            let v6 = p.addr().is_ipv6();
            let found = groups
                .iter()
                .position(|(g6, ga, _)| *g6 == v6 && Arc::ptr_eq(ga, a))
                .or_else(|| groups.iter().position(|(g6, ga, _)| *g6 == v6 && *ga == a));
            match found {
                Some(i) => groups[i].2.push(*p),
                None => groups.push((v6, a, vec![*p])),
            }
        }
        groups.sort_by(|x, y| (x.0, &**x.1).cmp(&(y.0, &**y.1)));
        for (v6, attrs, prefixes) in groups {
            let missing = if v6 {
                attrs.next_hop_v6.is_none().then_some("IPv6")
            } else {
                attrs.next_hop_v4.is_none().then_some("IPv4")
            };
            if let Some(family) = missing {
                return Err(PackError::NoNextHop {
                    prefix: prefixes[0],
                    family,
                });
            }
            let template = if v6 {
                Template::multiprotocol(encode(announce_msg(&[], attrs, true)?)?)?
            } else {
                Template::announce_v4(attrs)?
            };
            jobs.push(Job { template, prefixes });
        }
        for j in &jobs {
            // Every message must hold at least one prefix.
            let widest = j.prefixes.iter().map(prefix_cost).max().unwrap_or(0);
            if j.template.bytes.len() + widest > MAX_MESSAGE {
                return Err(PackError::AttributesTooLarge(j.template.bytes.len()));
            }
        }
        Ok(Updates {
            jobs,
            job: 0,
            next: 0,
        })
    }

    /// Appends whole UPDATEs to `out` until it holds at least `min_bytes` or none are left;
    /// returns how many it appended (0: all were handed out).
    pub fn fill(&mut self, out: &mut Vec<u8>, min_bytes: usize) -> usize {
        let mut n = 0;
        while out.len() < min_bytes.max(1) || n == 0 {
            let Some(job) = self.jobs.get(self.job) else {
                break;
            };
            let rest = &job.prefixes[self.next..];
            if rest.is_empty() {
                self.job += 1;
                self.next = 0;
                continue;
            }
            let take = fitting(&job.template, rest);
            job.template.write(&rest[..take], out);
            self.next += take;
            n += 1;
        }
        n
    }
}

/// How many of `prefixes` (at least one) fit into one message made from `t`.
fn fitting(t: &Template, prefixes: &[IpNet]) -> usize {
    let mut size = t.bytes.len();
    let mut n = 0;
    while n < prefixes.len() && size + prefix_cost(&prefixes[n]) <= MAX_MESSAGE {
        size += prefix_cost(&prefixes[n]);
        n += 1;
    }
    n.max(1)
}

/// End-of-RIB marker for IPv4 (empty UPDATE) or IPv6 (empty MP_UNREACH_NLRI), RFC 4724.
pub fn end_of_rib(v6: bool) -> Result<Vec<u8>, PackError> {
    if v6 {
        encode(BgpUpdateMessage::new(
            vec![],
            vec![mp_unreach(vec![])?],
            vec![],
        ))
    } else {
        encode(BgpUpdateMessage::new(vec![], vec![], vec![]))
    }
}

/// Bytes one prefix adds to an UPDATE: length octet plus the significant address octets.
fn prefix_cost(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

fn encode(update: BgpUpdateMessage) -> Result<Vec<u8>, PackError> {
    let mut buf = BytesMut::new();
    BgpCodec::new(true)
        .encode(BgpMessage::Update(update), &mut buf)
        .map_err(|e| PackError::Encode(e.to_string()))?;
    Ok(buf.to_vec())
}

fn attr(
    optional: bool,
    transitive: bool,
    extended: bool,
    v: PathAttributeValue,
) -> Result<PathAttribute, PackError> {
    PathAttribute::from(optional, transitive, false, extended, v)
        .map_err(|(_, e)| PackError::Encode(format!("{e:?}")))
}

fn v4(p: &IpNet) -> Result<Ipv4UnicastAddress, PackError> {
    match p {
        IpNet::V4(n) => Ipv4Unicast::from_net(
            Ipv4Net::new(n.network(), n.prefix_len())
                .map_err(|_| PackError::BadPrefix { prefix: *p })?,
        )
        .map(Ipv4UnicastAddress::new_no_path_id)
        .map_err(|_| PackError::BadPrefix { prefix: *p }),
        IpNet::V6(_) => Err(PackError::BadPrefix { prefix: *p }),
    }
}

fn v6(p: &IpNet) -> Result<Ipv6UnicastAddress, PackError> {
    match p {
        IpNet::V6(n) => Ipv6Unicast::from_net(
            Ipv6Net::new(n.network(), n.prefix_len())
                .map_err(|_| PackError::BadPrefix { prefix: *p })?,
        )
        .map(|u| Ipv6UnicastAddress::new(None, u))
        .map_err(|_| PackError::BadPrefix { prefix: *p }),
        IpNet::V4(_) => Err(PackError::BadPrefix { prefix: *p }),
    }
}

fn mp_unreach(prefixes: Vec<Ipv6UnicastAddress>) -> Result<PathAttribute, PackError> {
    attr(
        true,
        false,
        true,
        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
            nlri: prefixes.into(),
        }),
    )
}

fn withdraw_msg(chunk: &[IpNet], is_v6: bool) -> Result<BgpUpdateMessage, PackError> {
    if is_v6 {
        let nlri = chunk.iter().map(v6).collect::<Result<Vec<_>, _>>()?;
        Ok(BgpUpdateMessage::new(
            vec![],
            vec![mp_unreach(nlri)?],
            vec![],
        ))
    } else {
        let w = chunk.iter().map(v4).collect::<Result<Vec<_>, _>>()?;
        Ok(BgpUpdateMessage::new(w, vec![], vec![]))
    }
}

fn announce_msg(chunk: &[IpNet], a: &Attrs, is_v6: bool) -> Result<BgpUpdateMessage, PackError> {
    let mut attrs = vec![attr(
        false,
        true,
        false,
        PathAttributeValue::Origin(Origin::IGP),
    )?];
    let segments = if a.as_path.is_empty() {
        vec![]
    } else {
        vec![As4PathSegment::new(
            AsPathSegmentType::AsSequence,
            a.as_path.clone(),
        )]
    };
    attrs.push(attr(
        false,
        true,
        false,
        PathAttributeValue::AsPath(AsPath::As4PathSegments(segments.into())),
    )?);
    let no_hop = |family| PackError::NoNextHop {
        prefix: chunk
            .first()
            .copied()
            .unwrap_or(IpNet::V4(Ipv4Net::default())),
        family,
    };
    if !is_v6 {
        let nh = a.next_hop_v4.ok_or_else(|| no_hop("IPv4"))?;
        attrs.push(attr(
            false,
            true,
            false,
            PathAttributeValue::NextHop(NextHop::new(nh)),
        )?);
    }
    if let Some(lp) = a.local_pref {
        attrs.push(attr(
            false,
            true,
            false,
            PathAttributeValue::LocalPreference(LocalPreference::new(lp)),
        )?);
    }
    if !a.communities.is_empty() {
        let cs: Vec<Community> = a.communities.iter().map(|c| Community::new(*c)).collect();
        attrs.push(attr(
            true,
            true,
            true,
            PathAttributeValue::Communities(Communities::new(cs)),
        )?);
    }
    if !a.large_communities.is_empty() {
        let cs: Vec<LargeCommunity> = a
            .large_communities
            .iter()
            .map(|(g, d1, d2)| LargeCommunity::new(*g, *d1, *d2))
            .collect();
        attrs.push(attr(
            true,
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(cs)),
        )?);
    }
    if is_v6 {
        let nh = a.next_hop_v6.ok_or_else(|| no_hop("IPv6"))?;
        let nlri = chunk.iter().map(v6).collect::<Result<Vec<_>, _>>()?;
        attrs.push(attr(
            true,
            false,
            true,
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global: nh,
                next_hop_local: None,
                nlri: nlri.into(),
            }),
        )?);
        Ok(BgpUpdateMessage::new(vec![], attrs, vec![]))
    } else {
        let nlri = chunk.iter().map(v4).collect::<Result<Vec<_>, _>>()?;
        Ok(BgpUpdateMessage::new(vec![], attrs, nlri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::Codec;
    use crate::bgp::msg::Message;
    use netgauze_bgp_pkt::BgpMessage as Lib;
    use tokio_util::codec::Decoder;

    fn ebgp() -> Arc<Attrs> {
        Arc::new(ebgp_attrs())
    }

    fn ebgp_attrs() -> Attrs {
        Attrs {
            as_path: vec![64512],
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
            next_hop_v6: Some("2001:db8::2".parse().unwrap()),
            local_pref: None,
            communities: [0xfc00_0001u32].into_iter().collect(),
            large_communities: BTreeSet::new(),
        }
    }

    /// Decodes one UPDATE with the library: (announced, withdrawn, attributes).
    fn decode(bytes: &[u8]) -> (Vec<IpNet>, Vec<IpNet>, Vec<PathAttributeValue>) {
        let mut buf = BytesMut::from(bytes);
        assert!(matches!(
            Codec::default().decode(&mut buf.clone()).unwrap(),
            Some(Message::Update(_))
        ));
        let (msg, _) = BgpCodec::new(true).decode(&mut buf).unwrap().unwrap();
        let Lib::Update(u) = msg else {
            panic!("not an UPDATE")
        };
        let mut ann: Vec<IpNet> = u
            .nlri()
            .iter()
            .map(|a| IpNet::V4(a.network().address()))
            .collect();
        let mut wd: Vec<IpNet> = u
            .withdraw_routes()
            .iter()
            .map(|a| IpNet::V4(a.network().address()))
            .collect();
        let mut attrs = Vec::new();
        for pa in u.path_attributes() {
            match pa.value() {
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                    ann.extend(nlri.iter().map(|a| IpNet::V6(a.network().address())))
                }
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                    wd.extend(nlri.iter().map(|a| IpNet::V6(a.network().address())))
                }
                _ => {}
            }
            attrs.push(pa.value().clone());
        }
        (ann, wd, attrs)
    }

    fn many_v4(n: u32) -> Vec<IpNet> {
        (0..n)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
            .collect()
    }

    fn many_v6(n: u32) -> Vec<IpNet> {
        (0..n)
            .map(|i| {
                let a =
                    Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + u128::from(i));
                IpNet::V6(Ipv6Net::new(a, 128).unwrap())
            })
            .collect()
    }

    #[test]
    fn ten_thousand_prefixes_pack_under_4096_and_roundtrip() {
        for prefixes in [many_v4(10_000), many_v6(10_000)] {
            let set: RouteSet = prefixes.iter().map(|p| (*p, ebgp())).collect();
            let msgs = updates(&set, &BTreeSet::new()).unwrap();
            let mut seen = BTreeSet::new();
            for m in &msgs {
                assert!(m.len() <= MAX_MESSAGE, "{} bytes", m.len());
                let (ann, wd, _) = decode(m);
                assert!(wd.is_empty());
                seen.extend(ann);
            }
            assert_eq!(seen, prefixes.iter().copied().collect::<BTreeSet<_>>());
            // Packed, not one per prefix: a /32 costs 5 bytes, a /128 17.
            let per = if prefixes[0].addr().is_ipv4() { 5 } else { 17 };
            let min = (10_000usize * per).div_ceil(MAX_MESSAGE - 100);
            eprintln!(
                "10000 prefixes (/{}) -> {} UPDATEs",
                prefixes[0].prefix_len(),
                msgs.len()
            );
            assert!(
                msgs.len() <= min + 1,
                "{} messages, {min} expected",
                msgs.len()
            );

            let withdraw: BTreeSet<IpNet> = prefixes.iter().copied().collect();
            let msgs = updates(&RouteSet::new(), &withdraw).unwrap();
            let mut gone = BTreeSet::new();
            for m in &msgs {
                assert!(m.len() <= MAX_MESSAGE);
                let (ann, wd, _) = decode(m);
                assert!(ann.is_empty());
                gone.extend(wd);
            }
            assert_eq!(gone, withdraw);
            assert!(msgs.len() <= min + 1);
        }
    }

    #[test]
    fn ebgp_attributes_are_a_sequence_with_next_hop_and_communities() {
        let p: IpNet = "198.51.100.10/32".parse().unwrap();
        let set: RouteSet = [(p, ebgp())].into_iter().collect();
        let msgs = updates(&set, &BTreeSet::new()).unwrap();
        assert_eq!(msgs.len(), 1);
        let (ann, _, attrs) = decode(&msgs[0]);
        assert_eq!(ann, vec![p]);
        assert!(attrs.contains(&PathAttributeValue::Origin(Origin::IGP)));
        assert!(attrs.iter().any(|a| matches!(a,
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s))
                if s.len() == 1 && s[0].segment_type() == AsPathSegmentType::AsSequence
                    && s[0].as_numbers() == [64512])));
        assert!(
            attrs.contains(&PathAttributeValue::NextHop(NextHop::new(Ipv4Addr::new(
                192, 0, 2, 2
            ))))
        );
        assert!(!attrs
            .iter()
            .any(|a| matches!(a, PathAttributeValue::LocalPreference(_))));
        assert!(attrs.iter().any(|a| matches!(a,
            PathAttributeValue::Communities(c) if c.communities() == [Community::new(0xfc00_0001)])));
    }

    #[test]
    fn ibgp_has_empty_path_and_local_pref_and_v6_uses_mp_reach() {
        let a = Attrs {
            as_path: vec![],
            local_pref: Some(150),
            communities: BTreeSet::new(),
            large_communities: BTreeSet::new(),
            ..ebgp_attrs()
        };
        let p: IpNet = "2001:db8:100::10/128".parse().unwrap();
        let msgs = updates(&[(p, Arc::new(a))].into_iter().collect(), &BTreeSet::new()).unwrap();
        let (ann, _, attrs) = decode(&msgs[0]);
        assert_eq!(ann, vec![p]);
        assert!(attrs.iter().any(|a| matches!(a,
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) if s.is_empty())));
        assert!(
            attrs.contains(&PathAttributeValue::LocalPreference(LocalPreference::new(
                150
            )))
        );
        assert!(!attrs
            .iter()
            .any(|a| matches!(a, PathAttributeValue::NextHop(_))));
        assert!(attrs.iter().any(|a| matches!(a,
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { next_hop_global, .. })
                if *next_hop_global == "2001:db8::2".parse::<Ipv6Addr>().unwrap())));
    }

    #[test]
    fn different_attributes_go_into_different_updates() {
        let mut other = ebgp_attrs();
        other.communities.insert(0xfc00_0002);
        let other = Arc::new(other);
        let set: RouteSet = [
            ("198.51.100.1/32".parse().unwrap(), ebgp()),
            ("198.51.100.2/32".parse().unwrap(), other),
            ("198.51.100.3/32".parse().unwrap(), ebgp()),
        ]
        .into_iter()
        .collect();
        let msgs = updates(&set, &BTreeSet::new()).unwrap();
        assert_eq!(msgs.len(), 2);
        let sizes: BTreeSet<usize> = msgs.iter().map(|m| decode(m).0.len()).collect();
        assert_eq!(sizes, [1, 2].into_iter().collect());
    }

    #[test]
    fn diff_sends_only_changes() {
        let a: IpNet = "198.51.100.1/32".parse().unwrap();
        let b: IpNet = "198.51.100.2/32".parse().unwrap();
        let c: IpNet = "198.51.100.3/32".parse().unwrap();
        let mut changed = ebgp_attrs();
        changed.local_pref = Some(10);
        let changed = Arc::new(changed);
        let old: RouteSet = [(a, ebgp()), (b, ebgp())].into_iter().collect();
        let new: RouteSet = [(a, ebgp()), (b, changed.clone()), (c, ebgp())]
            .into_iter()
            .collect();
        let (ann, wd) = diff(&old, &new);
        assert_eq!(ann, [(b, changed), (c, ebgp())].into_iter().collect());
        assert!(wd.is_empty());
        let (ann, wd) = diff(&new, &old);
        assert_eq!(ann.keys().copied().collect::<Vec<_>>(), vec![b]);
        assert_eq!(wd, [c].into_iter().collect());
        assert_eq!(diff(&old, &old), (RouteSet::new(), BTreeSet::new()));
    }

    #[test]
    fn end_of_rib_markers_decode_as_such() {
        for (v6, want) in [(false, "Ipv4Unicast"), (true, "Ipv6Unicast")] {
            let bytes = end_of_rib(v6).unwrap();
            let (msg, _) = BgpCodec::new(true)
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap()
                .unwrap();
            let Lib::Update(u) = msg else { panic!() };
            assert_eq!(format!("{:?}", u.end_of_rib().unwrap()), want);
        }
    }

    #[test]
    fn missing_next_hop_is_named() {
        let mut a = ebgp_attrs();
        a.next_hop_v6 = None;
        let p: IpNet = "2001:db8:100::1/128".parse().unwrap();
        let err = updates(&[(p, Arc::new(a))].into_iter().collect(), &BTreeSet::new()).unwrap_err();
        assert_eq!(
            err,
            PackError::NoNextHop {
                prefix: p,
                family: "IPv6"
            }
        );
    }

    /// The encoding before templates: every UPDATE built as library structures and encoded by
    /// the library, chunked by the same size rule, groups in (family, attributes) order.
    fn library_updates(announce: &RouteSet, withdraw: &BTreeSet<IpNet>) -> Vec<Vec<u8>> {
        fn chunks<F>(prefixes: &[IpNet], build: F, out: &mut Vec<Vec<u8>>)
        where
            F: Fn(&[IpNet]) -> Result<BgpUpdateMessage, PackError>,
        {
            if prefixes.is_empty() {
                return;
            }
            let base = encode(build(&[]).unwrap()).unwrap().len();
            let mut start = 0;
            while start < prefixes.len() {
                let (mut size, mut end) = (base, start);
                while end < prefixes.len() && size + prefix_cost(&prefixes[end]) <= MAX_MESSAGE {
                    size += prefix_cost(&prefixes[end]);
                    end += 1;
                }
                out.push(encode(build(&prefixes[start..end]).unwrap()).unwrap());
                start = end;
            }
        }
        let mut out = Vec::new();
        let (w4, w6): (Vec<IpNet>, Vec<IpNet>) = withdraw.iter().partition(|p| p.addr().is_ipv4());
        chunks(&w4, |c| withdraw_msg(c, false), &mut out);
        chunks(&w6, |c| withdraw_msg(c, true), &mut out);
        let mut groups: BTreeMap<(bool, &Attrs), Vec<IpNet>> = BTreeMap::new();
        for (p, a) in announce {
            groups.entry((p.addr().is_ipv6(), a)).or_default().push(*p);
        }
        for ((v6, attrs), prefixes) in groups {
            chunks(&prefixes, |c| announce_msg(c, attrs, v6), &mut out);
        }
        out
    }

    /// A mixed change: IPv4 and IPv6, hosts and shorter prefixes, three attribute sets (eBGP
    /// with a community, iBGP with LOCAL_PREF and an empty path, one with several communities),
    /// withdrawals of both families.
    fn mixed(n: u32) -> (RouteSet, BTreeSet<IpNet>) {
        let ibgp = Arc::new(Attrs {
            as_path: vec![],
            local_pref: Some(150),
            communities: BTreeSet::new(),
            large_communities: BTreeSet::new(),
            ..ebgp_attrs()
        });
        let tagged = Arc::new(Attrs {
            communities: (1..=9).map(|c| 0xfde8_0000 | c).collect(),
            large_communities: BTreeSet::new(),
            as_path: vec![4_200_000_001],
            ..ebgp_attrs()
        });
        let (e, sets) = (ebgp(), [ebgp(), ibgp, tagged]);
        let mut announce = RouteSet::new();
        for (i, p) in many_v4(n).into_iter().chain(many_v6(n)).enumerate() {
            announce.insert(p, sets[i % 3].clone());
        }
        for p in [
            "198.51.100.0/24",
            "203.0.113.128/25",
            "2001:db8:100::/64",
            "2001:db8::/33",
        ] {
            announce.insert(p.parse().unwrap(), e.clone());
        }
        // A copy that is equal but not the same Arc joins the eBGP group.
        announce.insert("192.0.2.77/32".parse().unwrap(), ebgp());
        let withdraw: BTreeSet<IpNet> = ["192.0.2.0/28", "2001:db8:200::/48"]
            .into_iter()
            .map(|p| p.parse().unwrap())
            .chain(
                (0..n)
                    .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + i), 32).unwrap())),
            )
            .chain(many_v6(n).into_iter().map(|p| {
                let IpNet::V6(v) = p else { unreachable!() };
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(u128::from(v.addr()) + (1 << 64)), 128).unwrap(),
                )
            }))
            .collect();
        (announce, withdraw)
    }

    #[test]
    fn template_encoding_is_byte_for_byte_the_library_encoding() {
        for n in [0, 1, 5, 300, 3000] {
            let (announce, withdraw) = mixed(n);
            let ours = updates(&announce, &withdraw).unwrap();
            let theirs = library_updates(&announce, &withdraw);
            assert_eq!(ours.len(), theirs.len(), "n={n}");
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(a, b, "n={n}, UPDATE {i}");
            }
            // Withdrawals only, announcements only.
            assert_eq!(
                updates(&RouteSet::new(), &withdraw).unwrap(),
                library_updates(&RouteSet::new(), &withdraw)
            );
            assert_eq!(
                updates(&announce, &BTreeSet::new()).unwrap(),
                library_updates(&announce, &BTreeSet::new())
            );
        }
    }

    /// Splits a byte stream into BGP messages by their length fields.
    fn split(mut bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= HEADER_LEN && bytes[..16] == [0xff; 16]);
            let len = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
            assert!((HEADER_LEN..=MAX_MESSAGE).contains(&len), "{len}");
            let (m, rest) = bytes.split_at(len);
            out.push(m);
            bytes = rest;
        }
        out
    }

    #[test]
    fn streamed_chunks_are_whole_messages_equal_to_the_whole_encoding() {
        let (announce, withdraw) = mixed(4000);
        let whole: Vec<u8> = updates(&announce, &withdraw).unwrap().concat();
        let count = split(&whole).len();
        for min in [0, 1, 4096, 10_000, 64 * 1024, usize::MAX] {
            let mut enc = Updates::new(&announce, &withdraw).unwrap();
            let (mut all, mut messages, mut chunks) = (Vec::new(), 0, 0);
            loop {
                let mut chunk = Vec::new();
                let n = enc.fill(&mut chunk, min);
                if n == 0 {
                    assert!(chunk.is_empty());
                    break;
                }
                // Whole messages only, and no more than one message past `min`.
                assert_eq!(split(&chunk).len(), n, "min={min}");
                assert!(
                    chunk.len() < min.max(1).saturating_add(MAX_MESSAGE),
                    "min={min}"
                );
                all.extend_from_slice(&chunk);
                messages += n;
                chunks += 1;
            }
            assert_eq!(all, whole, "min={min}");
            assert_eq!(messages, count);
            assert!(chunks >= 1);
            // Done stays done.
            assert_eq!(enc.fill(&mut Vec::new(), min), 0);
        }
    }

    #[test]
    fn withdrawals_pack_full_updates_and_ipv4_stays_under_5_1_bytes_per_vip() {
        // 100k withdrawals per family: every UPDATE but the last is full (no room for one more
        // prefix), none is over 4096, all prefixes are there once.
        for prefixes in [many_v4(100_000), many_v6(100_000)] {
            let withdraw: BTreeSet<IpNet> = prefixes.iter().copied().collect();
            let msgs = updates(&RouteSet::new(), &withdraw).unwrap();
            let cost = prefix_cost(&prefixes[0]);
            for m in &msgs[..msgs.len() - 1] {
                assert!(
                    m.len() <= MAX_MESSAGE && m.len() + cost > MAX_MESSAGE,
                    "{}",
                    m.len()
                );
            }
            let mut gone = Vec::new();
            for m in &msgs {
                gone.extend(decode(m).1);
            }
            gone.sort();
            assert_eq!(gone, prefixes);
        }
        // Announcing IPv4 /32s: 752 (the documentation ranges) and 100k.
        for n in [752, 100_000] {
            let set: RouteSet = many_v4(n).into_iter().map(|p| (p, ebgp())).collect();
            let msgs = updates(&set, &BTreeSet::new()).unwrap();
            let bytes: usize = msgs.iter().map(Vec::len).sum();
            let per = bytes as f64 / f64::from(n);
            assert!(per <= 5.1, "{n}: {per} bytes per VIP");
            assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        }
    }

    #[test]
    fn attributes_too_large_for_one_prefix_are_refused() {
        let huge = Arc::new(Attrs {
            communities: (0..1100).collect(),
            large_communities: BTreeSet::new(),
            ..ebgp_attrs()
        });
        let set: RouteSet = many_v6(3).into_iter().map(|p| (p, huge.clone())).collect();
        assert!(matches!(
            updates(&set, &BTreeSet::new()),
            Err(PackError::AttributesTooLarge(_))
        ));
    }
}
