//! Client-side probes the end-to-end tests run inside a namespace (`arping`, `ndisc6`) and the
//! parsers of their output.
//!
//! Must not: probe from the host's own namespace (every probe runs in a [`Netns`] the test
//! made), or judge the answers (the tests do).

use crate::netns::Netns;

/// MACs (lower-case) of `arping` reply lines like
/// `Unicast reply from 192.0.2.100 [66:E0:69:81:0C:72]  0.637ms`, in order.
pub fn arping_macs(out: &str) -> Vec<String> {
    arping_replies(out)
        .into_iter()
        .map(|(mac, _)| mac)
        .collect()
}

/// `(MAC, round trip in ms)` of every `arping` reply line (the time is NaN when the line has
/// none).
pub fn arping_replies(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let mac = l[l.find('[')? + 1..l.find(']')?].to_lowercase();
            let ms = l
                .split_whitespace()
                .find_map(|w| w.strip_suffix("ms"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            Some((mac, ms))
        })
        .collect()
}

/// The MAC (lower-case) of `ndisc6` output `Target link-layer address: 66:E0:..`.
pub fn ndisc6_target(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Target link-layer address:"))
        .map(|m| m.trim().to_lowercase())
}

/// `arping -c COUNT -w COUNT+1 -I DEV TARGET` in `ns` (extra flags such as `-b` first): the
/// replies, as [`arping_replies`].
pub fn arping(
    ns: &Netns,
    flags: &[&str],
    dev: &str,
    target: &str,
    count: u32,
) -> anyhow::Result<Vec<(String, f64)>> {
    let out = ns
        .command("arping")
        .args(flags)
        .args(["-c", &count.to_string(), "-w", &(count + 1).to_string()])
        .args(["-I", dev, target])
        .output()?;
    Ok(arping_replies(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_read_real_tool_output() {
        let arping = "ARPING 192.0.2.100 from 192.0.2.1 eth0\n\
            Unicast reply from 192.0.2.100 [66:E0:69:81:0C:72]  0.637ms\n\
            Unicast reply from 192.0.2.100 [66:E0:69:81:0C:73]  0.632ms\n\
            Sent 2 probes (1 broadcast(s))\nReceived 2 response(s)\n";
        assert_eq!(
            arping_macs(arping),
            vec![
                "66:e0:69:81:0c:72".to_string(),
                "66:e0:69:81:0c:73".to_string()
            ]
        );
        let replies = arping_replies(arping);
        assert_eq!(replies[0].1, 0.637);
        assert_eq!(replies[1].1, 0.632);
        assert!(
            arping_replies("Unicast reply from 192.0.2.1 [66:E0:69:81:0C:72]\n")[0]
                .1
                .is_nan()
        );
        assert!(arping_macs("Sent 1 probes\nReceived 0 response(s)\n").is_empty());
        let ndisc = "Soliciting 2001:db8::100 (2001:db8::100) on eth0...\n\
            Target link-layer address: 66:E0:69:81:0C:72\n from 2001:db8::100\n";
        assert_eq!(ndisc6_target(ndisc).as_deref(), Some("66:e0:69:81:0c:72"));
        assert_eq!(ndisc6_target("Timed out.\nNo response.\n"), None);
    }
}
