//! The `--state` file: the addresses each Service holds, so a restart keeps every IP.
//!
//! Format (JSON, sorted): `{"version": 1, "assignments": {"ns/name": {"ips": [...], "pool": "..."}}}`.
//! Written atomically (temporary file in the same directory, then rename).
//!
//! Must not: decide anything about allocation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use ferrolb_config::ServiceKey;
use ferrolb_controller::allocator::Assigned;
use serde_json::{json, Value};

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> anyhow::Result<BTreeMap<ServiceKey, Vec<IpAddr>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("--state {}", path.display())),
    };
    parse(&text).with_context(|| format!("--state {}", path.display()))
}

/// Parses the state file's text.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<ServiceKey, Vec<IpAddr>>> {
    let v: Value = serde_json::from_str(text)?;
    let mut out = BTreeMap::new();
    let Some(map) = v.get("assignments").and_then(Value::as_object) else {
        anyhow::bail!("no \"assignments\" object");
    };
    for (k, entry) in map {
        let Some((ns, name)) = k.split_once('/') else {
            anyhow::bail!("assignment key {k:?} is not namespace/name");
        };
        let ips = entry
            .get("ips")
            .and_then(Value::as_array)
            .with_context(|| format!("assignment {k:?} has no \"ips\" list"))?
            .iter()
            .map(|ip| {
                ip.as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .with_context(|| format!("assignment {k:?}: bad address {ip}"))
            })
            .collect::<anyhow::Result<Vec<IpAddr>>>()?;
        out.insert(ServiceKey::new(ns, name), ips);
    }
    Ok(out)
}

/// The state file's text for `assignments`.
pub fn render(assignments: &BTreeMap<ServiceKey, Assigned>) -> String {
    let map: serde_json::Map<String, Value> = assignments
        .iter()
        .map(|(k, a)| {
            let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
            (k.to_string(), json!({"ips": ips, "pool": a.pool}))
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({"version": 1, "assignments": map}))
        .unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `assignments` to `path` atomically.
pub fn save(path: &Path, assignments: &BTreeMap<ServiceKey, Assigned>) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("--state {} has no file name", path.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, render(assignments))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = BTreeMap::from([(
            ServiceKey::new("ns", "web"),
            Assigned {
                ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                pool: "p".into(),
            },
        )]);
        let back = parse(&render(&a)).unwrap();
        assert_eq!(
            back[&ServiceKey::new("ns", "web")],
            a[&ServiceKey::new("ns", "web")].ips
        );
        assert!(parse("{\"assignments\": {\"nokey\": {\"ips\": []}}}").is_err());
        assert!(parse("{}").is_err());
    }
}
