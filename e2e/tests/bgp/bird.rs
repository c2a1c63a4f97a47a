//! BIRD against `ferrolb standalone`: four sessions' attributes, MD5 right and wrong,
//! withdrawal, re-announcement after BIRD restarts, the hold timer; and the speaker with only
//! CAP_NET_RAW (manifests/base/speaker.yaml) answering ARP and keying BGP with MD5.

use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};

use crate::lab::{Lab, CONFIG, SVC4, SVC6};

#[test]
fn bird_sessions_attributes_md5_withdraw_restart_and_hold_timer() -> Result<()> {
    if !require(&[Root, Program("bird"), Program("birdc")])? {
        return Ok(());
    }
    let mut lab = Lab::new()?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(20);
    for p in ["ebgp4", "ibgp4", "ebgp6"] {
        lab.wait_for(limit, &format!("{p} Established"), || {
            lab.bird.established(p)
        })?;
    }
    lab.wait_for(limit, "eBGP route", || {
        lab.route_has("ebgp4", "198.51.100.10/32")
    })?;
    eprintln!(
        "measured: speaker start -> route at BIRD in {:?}",
        t0.elapsed()
    );

    // eBGP: AS path is the sequence [64512] (a set would print as {64512}), next hop is the
    // node's address, communities present, our local-pref not sent.
    let e = lab.bird.routes("ebgp4")?;
    assert!(e.contains("BGP.as_path: 64512\n"), "{e}");
    assert!(!e.contains('{'), "AS path must not be a set: {e}");
    assert!(e.contains("BGP.next_hop: 192.0.2.2"), "{e}");
    assert!(e.contains("BGP.community: (64512,100)"), "{e}");
    assert!(!e.contains("BGP.local_pref: 150"), "{e}");
    assert!(
        !e.contains("2001:db8:100"),
        "no IPv6 prefix on the IPv4 session: {e}"
    );

    // iBGP: empty AS path, local-pref 150.
    lab.wait_for(limit, "iBGP route", || {
        lab.route_has("ibgp4", "198.51.100.10/32")
    })?;
    let i = lab.bird.routes("ibgp4")?;
    assert!(i.contains("BGP.local_pref: 150"), "{i}");
    assert!(
        i.contains("BGP.next_hop: 192.0.2.5"),
        "source-address is the next hop: {i}"
    );
    assert!(!i.contains("BGP.as_path: 64512"), "{i}");

    // IPv6 VIP via MP-BGP, next hop the node's IPv6 address.
    lab.wait_for(limit, "IPv6 route", || {
        lab.route_has("ebgp6", "2001:db8:100::10/128")
    })?;
    let v6 = lab.bird.routes("ebgp6")?;
    assert!(v6.contains("BGP.next_hop: 2001:db8::2"), "{v6}");
    assert!(v6.contains("BGP.as_path: 64512\n"), "{v6}");

    // MD5: the wrong password never comes up (the right one did, above).
    assert!(!lab.bird.established("wrong4"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!lab.bird.established("wrong4"));

    // The IPv4 Service goes: withdrawn at both IPv4 peers, IPv6 stays.
    fs::write(lab.dir.join("services.yaml"), SVC6)?;
    let t1 = Instant::now();
    lab.wait_for(limit, "withdrawal", || {
        !lab.route_has("ebgp4", "198.51.100.10") && !lab.route_has("ibgp4", "198.51.100.10")
    })?;
    eprintln!(
        "measured: services file edit -> withdrawn at BIRD in {:?}",
        t1.elapsed()
    );
    assert!(lab.route_has("ebgp6", "2001:db8:100::10/128"));
    fs::write(lab.dir.join("services.yaml"), format!("{SVC4}---\n{SVC6}"))?;
    lab.wait_for(limit, "re-announced", || {
        lab.route_has("ebgp4", "198.51.100.10/32")
    })?;

    // BIRD restarts: the speaker reconnects and announces again.
    lab.bird.restart()?;
    let t2 = Instant::now();
    lab.wait_for(
        Duration::from_secs(40),
        "re-announced after BIRD restart",
        || {
            lab.route_has("ebgp4", "198.51.100.10/32")
                && lab.route_has("ebgp6", "2001:db8:100::10/128")
        },
    )?;
    eprintln!(
        "measured: BIRD restart -> routes back in {:?}",
        t2.elapsed()
    );

    // The router goes silent: the 3 s hold timer fires, the session comes back afterwards.
    let before = lab.log().matches("hold timer expired").count();
    lab.router.ip(&["link", "set", "r0", "down"])?;
    let started = Instant::now();
    lab.wait_for(Duration::from_secs(10), "hold timer expiry", || {
        lab.log().matches("hold timer expired").count() > before
    })?;
    let took = started.elapsed();
    eprintln!("measured: link down -> hold timer expiry (hold 3 s) in {took:?}");
    assert!(took < Duration::from_secs(8), "hold timer took {took:?}");
    lab.router.ip(&["link", "set", "r0", "up"])?;
    lab.wait_for(
        Duration::from_secs(60),
        "session back after link up",
        || lab.bird.established("ebgp4") && lab.route_has("ebgp4", "198.51.100.10/32"),
    )?;
    // The MD5 passwords never reach the log.
    let log = lab.log();
    assert!(
        !log.contains("right-secret") && !log.contains("wrong-secret"),
        "BGP password logged:\n{log}"
    );
    let _ = &lab.node;
    Ok(())
}

/// The speaker's privileges in manifests/base/speaker.yaml: uid 0 with only CAP_NET_RAW (a
/// container runtime leaves exactly the bounding set as the effective set of a root process).
/// ferrolb run that way answers ARP for a layer2 address and brings up an MD5-keyed BGP session
/// with its `source-address`, so it needs no NET_ADMIN.
#[test]
fn speaker_with_only_cap_net_raw_answers_arp_and_keys_bgp_with_md5() -> Result<()> {
    if !require(&[
        Root,
        Program("bird"),
        Program("birdc"),
        Program("setpriv"),
        Program("arping"),
    ])? {
        return Ok(());
    }
    let config =
        format!("{CONFIG}- name: l2\n  protocol: layer2\n  addresses:\n  - 203.0.113.10/32\n");
    let arp_svc = "\
apiVersion: v1
kind: Service
metadata:
  name: arp
  namespace: default
  annotations:
    metallb.universe.tf/address-pool: l2
spec:
  type: LoadBalancer
  ports:
  - port: 80
    protocol: TCP
";
    let wrapper = [
        "setpriv",
        "--bounding-set=-all,+net_raw",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ];
    let lab = Lab::start(&config, &format!("{SVC4}---\n{arp_svc}"), &wrapper)?;
    let limit = Duration::from_secs(20);

    // The process really runs with CAP_NET_RAW (bit 13) and nothing else.
    let pid = lab.speaker.as_ref().map(Child::id).context("no speaker")?;
    let mut cap_eff = String::new();
    lab.wait_for(limit, "ferrolb running under setpriv", || {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap_or("")
            .trim()
            .to_string();
        status.lines().any(|l| l == "Name:\tferrolb")
    })?;
    assert_eq!(
        cap_eff, "0000000000002000",
        "effective capabilities: only CAP_NET_RAW"
    );

    // TCP MD5 (TCP_MD5SIG) needs no capability: the keyed eBGP session comes up.
    lab.wait_for(limit, "MD5 session ebgp4 Established", || {
        lab.bird.established("ebgp4")
    })?;
    lab.wait_for(limit, "route over the MD5 session", || {
        lab.route_has("ebgp4", "198.51.100.10/32")
    })?;

    // ARP on the node's interface (AF_PACKET, CAP_NET_RAW): the router gets the node's MAC.
    let mac = lab.node.mac("n0")?.to_lowercase();
    let mut reply = String::new();
    lab.wait_for(limit, "ARP reply for 203.0.113.10", || {
        reply = lab
            .router
            .command("arping")
            .args(["-c", "1", "-w", "2", "-I", "r0", "203.0.113.10"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_lowercase())
            .unwrap_or_default();
        reply.contains(&mac)
    })?;
    assert!(
        !lab.log().contains("needs CAP_NET_RAW"),
        "a packet socket failed:\n{}",
        lab.log()
    );
    eprintln!("measured: with CapEff {cap_eff}: MD5 session up, ARP answered ({mac})");
    Ok(())
}
