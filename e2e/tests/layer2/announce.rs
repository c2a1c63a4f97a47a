//! Announcing: ARP and NDP answered by ferrolb alone (the kernel is silent) with real TCP
//! behind them, takeover announcements moving a client's neighbour entries, ARP answered during
//! a flood of other traffic.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::procfs;

use crate::lab::{Lab, VIP4, VIP6};

/// ARP and NDP for the service addresses are answered by ferrolb (the kernel is silent), from the
/// speaker's MAC only, and real TCP reaches a server bound to the address on that node.
#[test]
fn arp_ndp_and_tcp_reach_the_announcing_node() -> Result<()> {
    if !require(&[Root, Program("arping"), Program("ndisc6"), Program("socat")])? {
        return Ok(());
    }
    let mut lab = Lab::new(3)?;
    // Without ferrolb nobody answers: the kernel is silent for an address on lo.
    assert_eq!(lab.arping(2)?, Vec::<String>::new(), "kernel answered ARP");
    assert_eq!(lab.ndisc6()?, None, "kernel answered NS");

    lab.start_speaker(1)?;
    let want = lab.nodes[1].mac.clone();
    lab.wait_for(Duration::from_secs(20), "first ARP reply", || {
        lab.arping(1).map(|m| !m.is_empty()).unwrap_or(false)
    })?;

    let macs = lab.arping(3)?;
    assert_eq!(macs.len(), 3, "3 probes, 3 replies: {macs:?}");
    assert!(
        macs.iter().all(|m| *m == want),
        "replies {macs:?}, want {want}"
    );

    assert_eq!(lab.ndisc6()?.as_deref(), Some(want.as_str()));

    lab.serve(1)?;
    lab.wait_for(Duration::from_secs(5), "TCP over IPv4", || {
        lab.tcp(&format!("TCP4:{VIP4}:8080")).ok().as_deref() == Some("node-1")
    })?;
    lab.wait_for(Duration::from_secs(5), "TCP over IPv6", || {
        lab.tcp(&format!("TCP6:[{VIP6}]:8080")).ok().as_deref() == Some("node-1")
    })?;
    assert_eq!(lab.client_neigh(VIP4).as_deref(), Some(want.as_str()));
    assert_eq!(lab.client_neigh(VIP6).as_deref(), Some(want.as_str()));
    Ok(())
}

/// When another node takes the address over, its gratuitous ARP / unsolicited NA rewrite the
/// client's existing neighbour entries without the client asking, and TCP follows. (Which node
/// takes over is decided by membership; here the old speaker is SIGKILLed and a new one started.)
#[test]
fn takeover_announcements_move_the_client_without_it_asking() -> Result<()> {
    if !require(&[Root, Program("socat")])? {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    lab.serve(0)?;
    lab.serve(1)?;
    lab.start_speaker(0)?;
    let (old, new) = (lab.nodes[0].mac.clone(), lab.nodes[1].mac.clone());
    lab.wait_for(Duration::from_secs(20), "TCP to node-0", || {
        lab.tcp(&format!("TCP4:{VIP4}:8080")).ok().as_deref() == Some("node-0")
            && lab.tcp(&format!("TCP6:[{VIP6}]:8080")).ok().as_deref() == Some("node-0")
    })?;
    assert_eq!(lab.client_neigh(VIP4).as_deref(), Some(old.as_str()));
    assert_eq!(lab.client_neigh(VIP6).as_deref(), Some(old.as_str()));
    // Let the entries' 1 s lock time pass, as it would in a running cluster.
    std::thread::sleep(Duration::from_millis(1200));

    lab.kill_speaker(0)?;
    let start = Instant::now();
    lab.start_speaker(1)?;
    // The client's entries are REACHABLE (for 15-45 s): it does not ask again by itself, so only
    // the new speaker's announcements can move them this quickly.
    lab.wait_for(
        Duration::from_secs(3),
        "client neighbour entries moved",
        || {
            lab.client_neigh(VIP4).as_deref() == Some(new.as_str())
                && lab.client_neigh(VIP6).as_deref() == Some(new.as_str())
        },
    )?;
    eprintln!(
        "neighbour entries moved {} ms after the new speaker was started (includes its startup)",
        start.elapsed().as_millis()
    );
    assert_eq!(lab.tcp(&format!("TCP4:{VIP4}:8080"))?, "node-1");
    assert_eq!(lab.tcp(&format!("TCP6:[{VIP6}]:8080"))?, "node-1");
    Ok(())
}

/// A flood of other traffic on the segment does not reach the speaker (the kernel filter drops
/// it before user space), and ARP keeps being answered meanwhile.
#[test]
fn arp_is_answered_during_a_flood_of_other_traffic() -> Result<()> {
    if !require(&[Root, Program("arping"), Program("ping")])? {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    lab.start_speaker(0)?;
    let want = lab.nodes[0].mac.clone();
    lab.wait_for(Duration::from_secs(20), "first ARP reply", || {
        lab.arping(1).map(|m| !m.is_empty()).unwrap_or(false)
    })?;
    let pid = lab.nodes[0]
        .speaker
        .as_ref()
        .map(Child::id)
        .context("no speaker")?;
    let cpu_before = procfs::cpu_secs(pid)?;
    // ICMP to the node's own address and IPv6 multicast pings: frames the speaker must not see.
    let mut floods = vec![
        lab.client
            .spawn("ping", &["-f", "-q", "-c", "30000", "192.0.2.11"])?,
        lab.client.spawn(
            "ping",
            &["-6", "-f", "-q", "-c", "30000", "-I", "eth0", "ff02::1"],
        )?,
    ];
    let macs = lab.arping(3)?;
    for f in &mut floods {
        f.wait()?;
    }
    let cpu = procfs::cpu_secs(pid)? - cpu_before;
    eprintln!("speaker CPU during a 60k-frame flood plus 3 ARP probes: {cpu:.2} s");
    assert_eq!(macs.len(), 3, "replies during the flood: {macs:?}");
    assert!(macs.iter().all(|m| *m == want));
    Ok(())
}
