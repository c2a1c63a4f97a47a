//! Garbage configurations fed to a running `ferrolb standalone`: it never exits, no address
//! changes, every unparsable one is refused with its reason, the valid config afterwards works.

use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_e2e::netns::Netns;
use ferrolb_e2e::prereq::{require, Need::Root};
use ferrolb_e2e::scratch::Dir;

use crate::lab::{desired_prefixes, services, size, wait_until, Standalone};

const L2_CONFIG: &str = "\
address-pools:
- name: l2
  protocol: layer2
  avoid-buggy-ips: false
  addresses:
  - 192.0.2.0/24
- name: spare
  protocol: layer2
  auto-assign: false
  addresses:
  - 198.51.100.0/28
";

/// Garbage made from `L2_CONFIG`: one of a few structural mutations, chosen by `k`.
fn garbage_config(k: usize, seed: &mut u64) -> String {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut lines: Vec<String> = L2_CONFIG.lines().map(str::to_string).collect();
    let tokens = [
        "",
        "-",
        ":",
        "{",
        "[",
        "'",
        "\"",
        "*a",
        "&a",
        "!!binary",
        "0/0",
        "::",
        "192.0.2.0/33",
        "999999999999999999999",
        "-1",
        "\t",
        "bgp",
        "null",
        "~",
        "ü",
    ];
    let i = (next() % lines.len() as u64) as usize;
    let tok = tokens[(next() % tokens.len() as u64) as usize];
    match k % 6 {
        0 => lines[i] = format!("{}{tok}", lines[i]),
        1 => {
            lines.remove(i);
        }
        2 => lines[i] = format!("  {}", lines[i]),
        3 => lines.truncate(i),
        4 => {
            if let Some(p) = lines[i].find(": ") {
                lines[i] = format!("{}: {tok}", &lines[i][..p]);
            } else {
                lines[i] = tok.to_string();
            }
        }
        _ => {
            let bytes: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    // Unique, so every write is a change.
    format!("{}\n# garbage {k}\n", lines.join("\n"))
}

/// A running `ferrolb standalone` (namespace with only `lo`) is fed garbage configurations, 20
/// (CI) / 300 (soak), one every 0.6 s (it polls every 0.5 s): it never exits, no Service's
/// address changes, unparsable ones are refused with a reason; the valid config afterwards works.
#[test]
fn standalone_survives_garbage_configs_and_keeps_every_address() -> Result<()> {
    if !require(&[Root])? {
        return Ok(());
    }
    ferrolb_e2e::netns::remove_stale();
    let ns = Netns::create("gb")?;
    let dir = Dir::new("faults-garbage")?;
    dir.write("config.yaml", L2_CONFIG)?;
    dir.write("services.yaml", &services(0..5))?;
    let mut sa = Standalone::start(&ns, dir.path(), "node-0", "node.log", &[])?;
    let state = || desired_prefixes(&dir, &(0..6).collect());
    wait_until(Duration::from_secs(20), "5 assignments", || {
        state().len() == 5
    })
    .with_context(|| dir.read("node.log"))?;
    let before = state();
    let n = size(20, 300);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for k in 0..n {
        dir.write("config.yaml", &garbage_config(k, &mut seed))?;
        std::thread::sleep(Duration::from_millis(600));
        anyhow::ensure!(
            sa.alive(),
            "exited on garbage {k}:\n{}",
            dir.read("node.log")
        );
        anyhow::ensure!(
            state() == before,
            "addresses changed on garbage {k}: {:?}",
            state()
        );
    }
    let log = dir.read("node.log");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("config refused: "))
        .collect();
    let loaded = log.lines().filter(|l| *l == "config loaded").count();
    anyhow::ensure!(!refused.is_empty(), "nothing refused:\n{log}");
    anyhow::ensure!(
        refused
            .iter()
            .all(|l| l.trim_start_matches("config refused: ").len() > 10),
        "a refusal without a reason:\n{log}"
    );
    // Back to the valid config, and a new Service: it gets an address, the old ones are kept.
    dir.write("config.yaml", L2_CONFIG)?;
    dir.write("services.yaml", &services(0..6))?;
    wait_until(
        Duration::from_secs(20),
        "the sixth Service's address",
        || state().len() == 6,
    )
    .with_context(|| dir.read("node.log"))?;
    anyhow::ensure!(before.is_subset(&state()));
    eprintln!(
        "measured: {n} garbage configs to a running standalone: {} refusal lines, {} loads (of \
         mutations that still parse and break nothing), no exit, no address changed; valid \
         config back -> new Service assigned",
        refused.len(),
        loaded.saturating_sub(1)
    );
    Ok(())
}
