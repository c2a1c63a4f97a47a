//! GoBGP and FRR against `ferrolb standalone`, each with an eBGP and an iBGP session: AS path
//! a sequence, LOCAL_PREF only on iBGP, next hop, community, IPv6, withdrawal, both paths back
//! after the router is SIGKILLed and restarted.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::routers::{Frr, Gobgp};

use crate::lab::{Simple, SVC6};

const GOBGP_CONF: &str = r#"
[global.config]
  as = 64513
  router-id = "192.0.2.1"
  local-address-list = ["192.0.2.1", "2001:db8::1"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.2"
    peer-as = 64512
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.5"
    peer-as = 64513
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8::2"
    peer-as = 64512
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

#[test]
fn gobgp_sees_sequence_path_communities_ipv6_and_withdrawal() -> Result<()> {
    if !require(&[Root, Program("gobgpd"), Program("gobgp")])? {
        return Ok(());
    }
    let lab = Simple::new("gobgp")?;
    // gobgpd must listen on the router before the speaker gives up its first attempts.
    let mut router = Gobgp::start(&lab.router, &lab.dir, GOBGP_CONF)?;
    let limit = Duration::from_secs(30);
    // Columns: status, network, next hop, AS path, age, attributes. A set would read {64512};
    // an empty (iBGP) path leaves the age right after the next hop.
    let path_via = |rib: &str, next_hop: &str| -> Option<String> {
        rib.lines()
            .find(|l| {
                l.contains("198.51.100.10/32") && l.split_whitespace().nth(2) == Some(next_hop)
            })
            .map(str::to_string)
    };
    let both = |r: &Gobgp| {
        r.rib("ipv4")
            .map(|o| path_via(&o, "192.0.2.2").is_some() && path_via(&o, "192.0.2.5").is_some())
            .unwrap_or(false)
    };
    lab.wait_for(limit, "eBGP and iBGP IPv4 paths at GoBGP", || both(&router))?;
    let rib = router.rib("ipv4")?;
    let line = path_via(&rib, "192.0.2.2").unwrap_or_default();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols.get(3),
        Some(&"64512"),
        "AS path a sequence of 64512: {line}"
    );
    assert!(line.contains("64512:100"), "community: {line}");
    assert!(!line.contains("LocalPref"), "no LOCAL_PREF to eBGP: {line}");
    assert!(router.established("192.0.2.2"));
    // iBGP (peer-asn == my-asn): empty AS path, LOCAL_PREF from the advertisement, next hop
    // the session's source address, community.
    let ibgp = path_via(&rib, "192.0.2.5").unwrap_or_default();
    let cols: Vec<&str> = ibgp.split_whitespace().collect();
    assert!(
        cols.get(3).is_some_and(|c| c.contains(':')),
        "empty AS path (age follows the next hop): {ibgp}"
    );
    assert!(ibgp.contains("{LocalPref: 150}"), "local-pref: {ibgp}");
    assert!(ibgp.contains("64512:100"), "community: {ibgp}");
    assert!(router.established("192.0.2.5"));

    lab.wait_for(limit, "IPv6 route at GoBGP", || {
        router
            .rib("ipv6")
            .map(|o| o.contains("2001:db8:100::10/128") && o.contains("2001:db8::2"))
            .unwrap_or(false)
    })?;

    // gobgpd killed and started again: both sessions come back with their routes.
    let restarted = Instant::now();
    router.restart()?;
    lab.wait_for(limit, "paths back at GoBGP after restart", || both(&router))?;
    eprintln!(
        "measured: gobgpd restarted -> eBGP and iBGP paths back in {:?}",
        restarted.elapsed()
    );

    fs::write(lab.dir.join("services.yaml"), SVC6)?;
    lab.wait_for(limit, "withdrawal at GoBGP", || {
        router
            .rib("ipv4")
            .map(|o| !o.contains("198.51.100.10"))
            .unwrap_or(false)
    })?;
    lab.wait_for(limit, "IPv6 route at GoBGP after restart", || {
        router
            .rib("ipv6")
            .map(|o| o.contains("2001:db8:100::10/128"))
            .unwrap_or(false)
    })?;
    Ok(())
}

const FRR_CONF: &str = "\
frr defaults traditional
hostname router
router bgp 64513
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 neighbor 192.0.2.2 remote-as 64512
 neighbor 192.0.2.2 passive
 neighbor 2001:db8::2 remote-as 64512
 neighbor 2001:db8::2 passive
 neighbor 192.0.2.5 remote-as 64513
 neighbor 192.0.2.5 passive
 address-family ipv6 unicast
  neighbor 2001:db8::2 activate
 exit-address-family
";

#[test]
fn frr_sees_sequence_path_communities_ipv6_and_withdrawal() -> Result<()> {
    if !require(&[Root, Program("vtysh"), Program("/usr/lib/frr/bgpd")])? {
        return Ok(());
    }
    let lab = Simple::new("frr")?;
    let mut router = Frr::start(&lab.router, &lab.dir, FRR_CONF)?;
    let limit = Duration::from_secs(30);
    let show4 = "show bgp ipv4 unicast 198.51.100.10/32";
    let both = |r: &Frr| {
        r.vtysh(show4)
            .map(|o| {
                o.contains("192.0.2.2 from 192.0.2.2") && o.contains("192.0.2.5 from 192.0.2.5")
            })
            .unwrap_or(false)
    };
    lab.wait_for(limit, "eBGP and iBGP IPv4 paths at FRR", || both(&router))?;
    let out = router.vtysh(show4)?;
    // One block per path: AS path line, "NEXT_HOP from PEER (ID)", attributes, community.
    let block = |from: &str| -> String {
        let lines: Vec<&str> = out.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.trim_start().starts_with(from))
            .unwrap_or(0);
        lines[i.saturating_sub(1)..(i + 4).min(lines.len())].join("\n")
    };
    let ebgp = block("192.0.2.2 from 192.0.2.2");
    // The AS path line is "  64512" (a set would read {64512}).
    assert!(ebgp.lines().any(|l| l.trim() == "64512"), "{out}");
    assert!(ebgp.contains("Community: 64512:100"), "{out}");
    assert!(ebgp.contains("Origin IGP"), "{out}");
    assert!(ebgp.contains("external"), "{out}");
    assert!(
        !ebgp.contains("localpref 150"),
        "no LOCAL_PREF to eBGP: {out}"
    );
    // iBGP: FRR prints an empty AS path as "Local".
    let ibgp = block("192.0.2.5 from 192.0.2.5");
    assert!(ibgp.lines().any(|l| l.trim() == "Local"), "{out}");
    assert!(ibgp.contains("localpref 150"), "{out}");
    assert!(ibgp.contains("internal"), "{out}");
    assert!(ibgp.contains("Community: 64512:100"), "{out}");

    let show6 = "show bgp ipv6 unicast 2001:db8:100::10/128";
    lab.wait_for(limit, "IPv6 route at FRR", || {
        router
            .vtysh(show6)
            .map(|o| o.contains("2001:db8::2"))
            .unwrap_or(false)
    })?;

    // bgpd killed and started again: both sessions come back with their routes.
    let restarted = Instant::now();
    router.restart()?;
    lab.wait_for(limit, "paths back at FRR after restart", || both(&router))?;
    eprintln!(
        "measured: FRR bgpd restarted -> eBGP and iBGP paths back in {:?}",
        restarted.elapsed()
    );

    fs::write(lab.dir.join("services.yaml"), SVC6)?;
    lab.wait_for(limit, "withdrawal at FRR", || {
        router
            .vtysh("show bgp ipv4 unicast")
            .map(|o| !o.contains("198.51.100.10"))
            .unwrap_or(false)
    })?;
    lab.wait_for(limit, "IPv6 route at FRR after restart", || {
        router
            .vtysh(show6)
            .map(|o| o.contains("2001:db8::2"))
            .unwrap_or(false)
    })?;
    Ok(())
}
