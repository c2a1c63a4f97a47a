//! BGP end to end: `ferrolb standalone` in a node namespace peers with BIRD, GoBGP or FRR in a
//! router namespace over a veth link (192.0.2.0/24, 2001:db8::/64). Verified with the router's
//! own CLI (`birdc`, `gobgp`, `vtysh`): eBGP and iBGP attributes, source-address, IPv6 via
//! MP-BGP, MD5 right/wrong, withdrawal when the Service goes, re-announcement after the router
//! restarts, hold timer after the router's link goes down.
//! Root only; every namespace is removed on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::routers::{Bird, Frr, Gobgp};

const CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
  hold-time: 3s
  password: right-secret
- peer-address: 192.0.2.3
  peer-asn: 64512
  my-asn: 64512
  source-address: 192.0.2.5
- peer-address: 192.0.2.4
  peer-asn: 64513
  my-asn: 64512
  password: wrong-secret
  source-address: 192.0.2.6
- peer-address: 2001:db8::1
  peer-asn: 64513
  my-asn: 64512
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  - 2001:db8:100::10/128
  bgp-advertisements:
  - localpref: 150
    communities: [tag]
";

const SVC4: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports:
  - port: 8080
    protocol: TCP
";

const SVC6: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web6
  namespace: default
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  ports:
  - port: 8080
    protocol: TCP
";

const BIRD_CONF: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp ebgp4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512; passive on;
  password "right-secret";
  ipv4 { import all; export none; };
}
protocol bgp ibgp4 {
  local 192.0.2.3 as 64512; neighbor 192.0.2.5 as 64512; passive on;
  direct;
  ipv4 { import all; export none; };
}
protocol bgp wrong4 {
  local 192.0.2.4 as 64513; neighbor 192.0.2.6 as 64512; passive on;
  password "other-secret";
  ipv4 { import all; export none; };
}
protocol bgp ebgp6 {
  local 2001:db8::1 as 64513; neighbor 2001:db8::2 as 64512; passive on;
  ipv6 { import all; export none; };
}
"#;

struct Lab {
    speaker: Option<Child>,
    bird: Bird,
    dir: PathBuf,
    router: Netns,
    node: Netns,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.speaker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Failures print the speaker's log themselves (wait_for).
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new() -> Result<Lab> {
        Lab::start(CONFIG, &format!("{SVC4}---\n{SVC6}"), &[])
    }

    /// The lab with this configuration and these Services; `wrapper` (e.g. `setpriv ...`) runs
    /// ferrolb inside the node namespace when not empty.
    fn start(config: &str, services: &str, wrapper: &[&str]) -> Result<Lab> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        for a in [
            "192.0.2.1/24",
            "192.0.2.3/24",
            "192.0.2.4/24",
            "2001:db8::1/64",
        ] {
            router.add_addr("r0", a)?;
        }
        // One node address per session: Linux keys TCP MD5 by peer address, so BIRD's keys
        // for one address would apply to every session from it.
        for a in ["192.0.2.2/24", "192.0.2.5/24", "192.0.2.6/24"] {
            node.add_addr("n0", a)?;
        }
        node.add_addr("n0", "2001:db8::2/64")?;
        // One directory per lab (the router namespace's unique name): labs may run in parallel.
        let dir = std::env::temp_dir().join(format!("{}-bgp", router.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), config)?;
        fs::write(dir.join("services.yaml"), services)?;
        std::thread::sleep(Duration::from_millis(300));
        let bird = Bird::start(&router, &dir, BIRD_CONF)?;
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let log = fs::File::create(dir.join("node.log"))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = node.command(program);
                c.args(args).arg(&bin);
                c
            }
            None => node.command(&bin.to_string_lossy()),
        };
        let speaker = command
            .arg("standalone")
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--services")
            .arg(dir.join("services.yaml"))
            .arg("--node")
            .arg("node-0")
            .arg("--state")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Lab {
            speaker: Some(speaker),
            bird,
            dir,
            router,
            node,
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn wait_for(&self, limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{what}: not within {limit:?}\n--- ferrolb ---\n{}\n--- bird protocols ---\n{}",
            self.log(),
            self.bird.birdc(&["show", "protocols"]).unwrap_or_default()
        )
    }

    fn route_has(&self, proto: &str, needle: &str) -> bool {
        self.bird
            .routes(proto)
            .map(|o| o.contains(needle))
            .unwrap_or(false)
    }
}

fn skip() -> bool {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["bird", "birdc"]) {
        eprintln!("SKIP: needs root and bird2");
        return true;
    }
    false
}

#[test]
fn bird_sessions_attributes_md5_withdraw_restart_and_hold_timer() -> Result<()> {
    if skip() {
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

const SIMPLE_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
- peer-address: 2001:db8::1
  peer-asn: 64513
  my-asn: 64512
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64513
  source-address: 192.0.2.5
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  - 2001:db8:100::10/128
  bgp-advertisements:
  - localpref: 150
    communities: [tag]
";

/// Router and node namespaces on one veth link, a temp dir, ferrolb started on the node.
struct Simple {
    speaker: Child,
    dir: PathBuf,
    _node: Netns,
    router: Netns,
}

impl Drop for Simple {
    fn drop(&mut self) {
        let _ = self.speaker.kill();
        let _ = self.speaker.wait();
    }
}

impl Simple {
    fn new(tag: &str) -> Result<Simple> {
        Simple::start(tag, SIMPLE_CONFIG, &[])
    }

    /// The lab with this config; `args` go to `ferrolb standalone` after the usual ones.
    fn start(tag: &str, config: &str, args: &[&str]) -> Result<Simple> {
        ferrolb_e2e::netns::remove_stale();
        let router = Netns::create("rt")?;
        let node = Netns::create("nd")?;
        veth(&router, "r0", &node, "n0")?;
        router.add_addr("r0", "192.0.2.1/24")?;
        router.add_addr("r0", "2001:db8::1/64")?;
        node.add_addr("n0", "192.0.2.2/24")?;
        // The iBGP session's source (the router's AS, peer-asn == my-asn).
        node.add_addr("n0", "192.0.2.5/24")?;
        node.add_addr("n0", "2001:db8::2/64")?;
        let dir = std::env::temp_dir().join(format!("flb-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("config.yaml"), config)?;
        fs::write(dir.join("services.yaml"), format!("{SVC4}---\n{SVC6}"))?;
        std::thread::sleep(Duration::from_millis(300));
        let bin = ferrolb_e2e::ferrolb_bin()?;
        let log = fs::File::create(dir.join("node.log"))?;
        let speaker = node
            .command(&bin.to_string_lossy())
            .args(["standalone", "--node", "node-0", "--config"])
            .arg(dir.join("config.yaml"))
            .arg("--services")
            .arg(dir.join("services.yaml"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("could not start ferrolb standalone")?;
        Ok(Simple {
            speaker,
            dir,
            _node: node,
            router,
        })
    }

    fn wait_for(&self, limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{what}: not within {limit:?}\n--- ferrolb ---\n{}",
            fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
        )
    }
}

#[test]
fn gobgp_sees_sequence_path_communities_ipv6_and_withdrawal() -> Result<()> {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["gobgpd", "gobgp"]) {
        eprintln!("SKIP: needs root and gobgpd");
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
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["vtysh", "/usr/lib/frr/bgpd"]) {
        eprintln!("SKIP: needs root and frr");
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

/// ferrolb's own dialling cannot work (nothing listens on port 1790 at the router), so the
/// session exists only if BIRD's connection to `--bgp-listen` is accepted.
const LISTEN_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-port: 1790
  peer-asn: 64513
  my-asn: 64512
  password: listen-secret
- peer-address: 192.0.2.3
  peer-port: 1790
  peer-asn: 64513
  my-asn: 64512
  source-address: 192.0.2.5
  password: listen-secret
bgp-communities:
  tag: 64512:100
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
  bgp-advertisements:
  - communities: [tag]
";

/// BIRD active (not passive): it connects to the node's port 179, with the MD5 key.
const LISTEN_BIRD: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol bgp active4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 port 179 as 64512;
  password "listen-secret";
  connect delay time 1; connect retry time 2;
  ipv4 { import all; export none; };
}
protocol bgp wrong4 {
  local 192.0.2.3 as 64513; neighbor 192.0.2.5 port 179 as 64512;
  password "not-the-secret";
  connect delay time 1; connect retry time 2;
  ipv4 { import all; export none; };
}
"#;

/// Passive peers: `--bgp-listen` accepts BIRD's MD5-keyed connection from the configured
/// peer address and the routes reach BIRD over it; a configured peer with the wrong MD5 key
/// never connects; a connection from an address that is no peer (another namespace) is closed
/// without a byte and logged.
#[test]
fn bird_connecting_to_the_listener_gets_routes_and_strangers_are_closed() -> Result<()> {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["bird", "birdc", "socat"]) {
        eprintln!("SKIP: needs root, bird2 and socat");
        return Ok(());
    }
    let lab = Simple::start("listen", LISTEN_CONFIG, &["--bgp-listen", "0.0.0.0:179"])?;
    lab.router.add_addr("r0", "192.0.2.3/24")?;
    lab.router.add_addr("r0", "192.0.2.9/24")?;
    let started = Instant::now();
    let bird = Bird::start(&lab.router, &lab.dir, LISTEN_BIRD)?;
    let limit = Duration::from_secs(30);
    lab.wait_for(limit, "route at BIRD over the accepted connection", || {
        bird.routes("active4")
            .map(|o| o.contains("198.51.100.10/32"))
            .unwrap_or(false)
    })?;
    eprintln!(
        "measured: BIRD (active, connect delay 1 s) start -> route over the accepted session in {:?}",
        started.elapsed()
    );
    let out = bird.routes("active4")?;
    assert!(out.contains("BGP.as_path: 64512"), "{out}");
    assert!(out.contains("BGP.next_hop: 192.0.2.2"), "{out}");
    assert!(out.contains("(64512,100)"), "{out}");
    let proto = bird.birdc(&["show", "protocols", "all", "active4"])?;
    assert!(proto.contains("Established"), "{proto}");

    // A stranger in the router namespace (192.0.2.9, not a peer): closed, no OPEN, no byte.
    let t = Instant::now();
    let out = lab
        .router
        .command("socat")
        .args([
            "-T",
            "5",
            "-u",
            "TCP:192.0.2.2:179,bind=192.0.2.9",
            "STDOUT",
        ])
        .stdin(Stdio::null())
        .output()?;
    let closed_in = t.elapsed();
    assert!(
        out.stdout.is_empty(),
        "bytes to an unconfigured address: {:?}",
        out.stdout
    );
    assert!(
        closed_in < Duration::from_secs(4),
        "not closed at once: {closed_in:?}"
    );
    lab.wait_for(
        Duration::from_secs(5),
        "refusal logged with the address",
        || {
            fs::read_to_string(lab.dir.join("node.log"))
                .map(|l| l.contains("not a configured peer") && l.contains("192.0.2.9"))
                .unwrap_or(false)
        },
    )?;
    eprintln!("measured: unconfigured 192.0.2.9 closed after {closed_in:?} with 0 bytes");
    let log = fs::read_to_string(lab.dir.join("node.log"))?;
    assert!(
        !log.lines()
            .any(|l| l.contains("accepted") && l.contains("192.0.2.3")),
        "wrong-key peer accepted:\n{log}"
    );
    // The real session is untouched; the peer with the wrong MD5 key never got through: the
    // node's kernel counts its SYNs failing the listening socket's key for 192.0.2.3.
    let md5_failures = || {
        lab._node
            .exec_stdout("nstat", &["-asz", "TcpExtTCPMD5Failure"])
            .ok()
            .and_then(|o| {
                o.lines()
                    .find_map(|l| l.strip_prefix("TcpExtTCPMD5Failure"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    lab.wait_for(
        Duration::from_secs(10),
        "wrong-key SYNs dropped by the node",
        || md5_failures() > 0,
    )?;
    assert!(bird.established("active4"));
    assert!(!bird.established("wrong4"));
    eprintln!(
        "measured: wrong-key peer: {} SYNs failed MD5 at the node, not established",
        md5_failures()
    );
    assert!(bird
        .routes("wrong4")?
        .lines()
        .all(|l| !l.contains("198.51.100.10")));
    Ok(())
}

/// Both sides active: ferrolb dials BIRD's port 179 and listens on its own; BIRD (router id
/// higher than the node's, so its connection wins a collision) dials too.
const BOTH_ACTIVE_BIRD: &str = r#"
router id 192.0.2.200;
protocol device {}
protocol bgp both4 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512;
  connect delay time 1; connect retry time 1;
  ipv4 { import all; export none; };
}
"#;

/// Both ends dial and listen: whatever the race between the two connections (a collision is
/// resolved by RFC 4271 §6.8 on both sides), one session comes up and stays up. Which
/// race happens is up to timing (the decisions are printed); the forced collision in both
/// directions is the loopback test in `speaker/src/bgp/announcer.rs`.
#[test]
fn both_sides_active_settle_on_one_stable_session() -> Result<()> {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["bird", "birdc"]) {
        eprintln!("SKIP: needs root and bird2");
        return Ok(());
    }
    let config = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
";
    let lab = Simple::start("both", config, &["--bgp-listen", "192.0.2.2:179"])?;
    let bird = Bird::start(&lab.router, &lab.dir, BOTH_ACTIVE_BIRD)?;
    let limit = Duration::from_secs(30);
    lab.wait_for(limit, "route at BIRD", || {
        bird.routes("both4")
            .map(|o| o.contains("198.51.100.10/32"))
            .unwrap_or(false)
    })?;
    let since = |b: &Bird| {
        b.birdc(&["show", "protocols", "both4"])
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("both4"))
            .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
    };
    // Events in ferrolb's log: (sessions established, sessions down).
    let events = || -> (usize, usize) {
        let log = fs::read_to_string(lab.dir.join("node.log")).unwrap_or_default();
        let ups = log
            .lines()
            .filter(|l| l.contains("session established"))
            .count();
        let downs = log.lines().filter(|l| l.contains("session down")).count();
        (ups, downs)
    };
    // Wait for BIRD to hold the session (a race between two OPEN exchanges can cost one
    // reconnect: RFC 4271 §6.8 cannot see that the peer already went Established on the
    // connection we close), then it must stay: BIRD retries every second, so repeated
    // wrong collision decisions would show as a flap in this window.
    lab.wait_for(limit, "BIRD Established", || bird.established("both4"))?;
    let (first, before) = (since(&bird), events());
    std::thread::sleep(Duration::from_millis(2500));
    // BIRD prints the time of the last state change converted from its monotonic clock on each
    // call, so the same session's time can move by a millisecond (seen in CI: .193 then .194);
    // a restart within the window would move it by far more.
    let (a, b) = (since(&bird), first);
    let (ta, tb) = (
        a.as_deref().and_then(ms_of_day),
        b.as_deref().and_then(ms_of_day),
    );
    assert!(
        matches!((ta, tb), (Some(x), Some(y)) if x.abs_diff(y) <= 5),
        "BIRD's session restarted: {a:?} after {b:?}"
    );
    assert!(bird.established("both4"));
    let log = fs::read_to_string(lab.dir.join("node.log"))?;
    assert_eq!(events(), before, "ferrolb's session flapped:\n{log}");
    assert!(
        before.0 >= 1 && before.0 <= 2 && before.1 <= 1,
        "{before:?}\n{log}"
    );
    let decisions: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("decision=").nth(1))
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    eprintln!(
        "measured: both active: stable session, (established, down) before it {before:?}, collision decisions at ferrolb: {decisions:?}"
    );
    Ok(())
}

/// The milliseconds since midnight of the last `HH:MM:SS.mmm` word of `line` (BIRD's protocol
/// "since" column), if it has one.
fn ms_of_day(line: &str) -> Option<u64> {
    let word = line.split_whitespace().last()?;
    let (hms, frac) = word.split_once('.').unwrap_or((word, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

#[test]
fn bird_since_times_parse() {
    assert_eq!(ms_of_day("both4 BGP --- up 13:30:28.194"), Some(48_628_194));
    assert_eq!(ms_of_day("both4 BGP --- up 00:00:01.5"), Some(1_500));
    assert_eq!(ms_of_day("both4 BGP --- up 00:00:02"), Some(2_000));
    assert_eq!(ms_of_day("both4 BGP --- up"), None);
}

const ECMP_CONFIG: &str = "\
peers:
- peer-address: 192.0.2.1
  peer-asn: 64513
  my-asn: 64512
address-pools:
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.10/32
";

const ECMP_BIRD: &str = r#"
router id 192.0.2.1;
protocol device {}
protocol kernel { merge paths on; ipv4 { export all; import none; }; }
protocol bgp node0 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.2 as 64512; passive on;
  ipv4 { import all; export none; };
}
protocol bgp node1 {
  local 192.0.2.1 as 64513; neighbor 192.0.2.3 as 64512; passive on;
  ipv4 { import all; export none; };
}
"#;

/// Client -> router -> two nodes: real TCP reaches a server bound to the VIP on a node, and the
/// router holds (and installs) both paths.
#[test]
fn client_reaches_vip_through_bird_and_router_holds_both_paths() -> Result<()> {
    if !ferrolb_e2e::is_root() || !ferrolb_e2e::have_programs(&["bird", "birdc", "socat"]) {
        eprintln!("SKIP: needs root, bird2 and socat");
        return Ok(());
    }
    ferrolb_e2e::netns::remove_stale();
    let mut switch = ferrolb_e2e::netns::Switch::create()?;
    let router = Netns::create("rt")?;
    let client = Netns::create("cl")?;
    veth(&client, "c0", &router, "rc")?;
    client.add_addr("c0", "203.0.113.2/24")?;
    client.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
    router.add_addr("rc", "203.0.113.1/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    switch.attach(&router, "r0")?;
    router.add_addr("r0", "192.0.2.1/24")?;
    let dir = std::env::temp_dir().join(format!("flb-{}-ecmp", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("config.yaml"), ECMP_CONFIG)?;
    fs::write(dir.join("services.yaml"), SVC4)?;
    let bin = ferrolb_e2e::ferrolb_bin()?;
    let mut nodes = Vec::new();
    let mut children = Vec::new();
    for i in 0..2 {
        let node = Netns::create("nd")?;
        switch.attach(&node, "n0")?;
        node.add_addr("n0", &format!("192.0.2.{}/24", 2 + i))?;
        node.add_addr("lo", "198.51.100.10/32")?;
        node.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.1"])?;
        let server = node
            .command("socat")
            .args([
                "TCP-LISTEN:8080,bind=198.51.100.10,fork,reuseaddr",
                &format!("SYSTEM:echo node-{i}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let log = fs::File::create(dir.join(format!("node-{i}.log")))?;
        let speaker = node
            .command(&bin.to_string_lossy())
            .args(["standalone", "--node", &format!("node-{i}"), "--config"])
            .arg(dir.join("config.yaml"))
            .arg("--services")
            .arg(dir.join("services.yaml"))
            .arg("--state")
            .arg(dir.join(format!("state-{i}")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        children.push(ChildGuard(server));
        children.push(ChildGuard(speaker));
        nodes.push(node);
    }
    std::thread::sleep(Duration::from_millis(300));
    let bird = Bird::start(&router, &dir, ECMP_BIRD)?;
    let start = Instant::now();
    let both = |o: &str| o.contains("192.0.2.2") && o.contains("192.0.2.3");
    loop {
        let out = bird
            .birdc(&["show", "route", "198.51.100.10/32", "all"])
            .unwrap_or_default();
        if both(&out) {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "router does not hold both paths: {out}\n{}",
                fs::read_to_string(dir.join("node-0.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both next hops installed in the router's kernel (ECMP).
    let start = Instant::now();
    loop {
        let k = router.exec_stdout("ip", &["route", "show", "198.51.100.10"])?;
        if both(&k) {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("kernel route is not ECMP over both nodes: {k}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Real TCP from the client namespace, through the router, to a server on the VIP.
    let reply = client.exec_stdout("socat", &["-T", "5", "-", "TCP:198.51.100.10:8080"])?;
    assert!(
        reply.trim() == "node-0" || reply.trim() == "node-1",
        "reply {reply:?}"
    );
    drop(children);
    drop(nodes);
    Ok(())
}

/// Kills a child process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The speaker's privileges in manifests/speaker.yaml: uid 0 with only CAP_NET_RAW (a
/// container runtime leaves exactly the bounding set as the effective set of a root process).
/// ferrolb run that way answers ARP for a layer2 address and brings up an MD5-keyed BGP session
/// with its `source-address`, so it needs no NET_ADMIN.
#[test]
fn speaker_with_only_cap_net_raw_answers_arp_and_keys_bgp_with_md5() -> Result<()> {
    if skip() || !ferrolb_e2e::have_programs(&["setpriv", "arping"]) {
        eprintln!("SKIP: needs setpriv and arping");
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
