//! A client behind BIRD reaches a server on the VIP over real TCP, and BIRD holds (and
//! installs) the paths from two nodes.

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ferrolb_e2e::netns::{veth, Netns};
use ferrolb_e2e::prereq::{
    require,
    Need::{Program, Root},
};
use ferrolb_e2e::routers::Bird;

use crate::lab::SVC4;

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
    if !require(&[Root, Program("bird"), Program("birdc"), Program("socat")])? {
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
