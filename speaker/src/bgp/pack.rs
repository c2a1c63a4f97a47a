//! UPDATE packing (pure): route sets -> as few encoded UPDATE messages as fit in 4096 bytes.
//!
//! Prefixes that share attributes go into one UPDATE until it is full; withdrawals are chunked
//! the same way; IPv6 travels in MP_REACH_NLRI / MP_UNREACH_NLRI. `diff` turns an old and a new
//! route set into what to send. Must not: do I/O or decide which routes a peer gets (adv.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::community::Community;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, Communities, LocalPreference, MpReach, MpUnreach,
    NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;

use super::codec::MAX_MESSAGE;

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
}

/// What one peer should hold: prefix -> attributes.
pub type RouteSet = BTreeMap<IpNet, Attrs>;

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
/// then announcements grouped by identical attributes.
pub fn updates(announce: &RouteSet, withdraw: &BTreeSet<IpNet>) -> Result<Vec<Vec<u8>>, PackError> {
    let mut out = Vec::new();
    let (w4, w6): (Vec<IpNet>, Vec<IpNet>) = withdraw.iter().partition(|p| p.addr().is_ipv4());
    pack_chunks(&w4, |chunk| withdraw_msg(chunk, false), &mut out)?;
    pack_chunks(&w6, |chunk| withdraw_msg(chunk, true), &mut out)?;
    let mut groups: BTreeMap<(bool, &Attrs), Vec<IpNet>> = BTreeMap::new();
    for (p, a) in announce {
        groups.entry((p.addr().is_ipv6(), a)).or_default().push(*p);
    }
    for ((v6, attrs), prefixes) in groups {
        let missing = if v6 {
            attrs.next_hop_v6.is_none().then_some("IPv6")
        } else {
            attrs.next_hop_v4.is_none().then_some("IPv4")
        };
        if let (Some(family), Some(prefix)) = (missing, prefixes.first()) {
            return Err(PackError::NoNextHop {
                prefix: *prefix,
                family,
            });
        }
        pack_chunks(&prefixes, |chunk| announce_msg(chunk, attrs, v6), &mut out)?;
    }
    Ok(out)
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

/// Splits `prefixes` into chunks whose message (measured empty, plus prefix costs) fits.
fn pack_chunks<F>(prefixes: &[IpNet], build: F, out: &mut Vec<Vec<u8>>) -> Result<(), PackError>
where
    F: Fn(&[IpNet]) -> Result<BgpUpdateMessage, PackError>,
{
    if prefixes.is_empty() {
        return Ok(());
    }
    let base = encode(build(&[])?)?.len();
    if base >= MAX_MESSAGE {
        return Err(PackError::AttributesTooLarge(base));
    }
    let mut start = 0;
    while start < prefixes.len() {
        let mut size = base;
        let mut end = start;
        while end < prefixes.len() && size + prefix_cost(&prefixes[end]) <= MAX_MESSAGE {
            size += prefix_cost(&prefixes[end]);
            end += 1;
        }
        let bytes = encode(build(&prefixes[start..end])?)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(PackError::Encode(format!(
                "packed UPDATE is {} bytes",
                bytes.len()
            )));
        }
        out.push(bytes);
        start = end;
    }
    Ok(())
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

    fn ebgp() -> Attrs {
        Attrs {
            as_path: vec![64512],
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
            next_hop_v6: Some("2001:db8::2".parse().unwrap()),
            local_pref: None,
            communities: [0xfc00_0001u32].into_iter().collect(),
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
            ..ebgp()
        };
        let p: IpNet = "2001:db8:100::10/128".parse().unwrap();
        let msgs = updates(&[(p, a)].into_iter().collect(), &BTreeSet::new()).unwrap();
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
        let mut other = ebgp();
        other.communities.insert(0xfc00_0002);
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
        let mut changed = ebgp();
        changed.local_pref = Some(10);
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
        let mut a = ebgp();
        a.next_hop_v6 = None;
        let p: IpNet = "2001:db8:100::1/128".parse().unwrap();
        let err = updates(&[(p, a)].into_iter().collect(), &BTreeSet::new()).unwrap_err();
        assert_eq!(
            err,
            PackError::NoNextHop {
                prefix: p,
                family: "IPv6"
            }
        );
    }
}
