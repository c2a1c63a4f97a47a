//! The `--state` file: the addresses each Service holds, so a restart keeps every IP.
//!
//! Format (JSON, sorted): `{"version": 1, "assignments": {"ns/name": {"ips": [...], "pool": "..."}}}`.
//! Written atomically (temporary file in the same directory, then rename).
//!
//! Must not: decide anything about allocation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ferrolb_config::ServiceKey;
use ferrolb_controller::allocator::Assigned;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::io::Write;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("--state {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("--state {path}: {reason}")]
    Format { path: String, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<BTreeMap<ServiceKey, Vec<IpAddr>>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(path)(e)),
    };
    parse(&text).map_err(|reason| StateError::Format {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses the state file's text; the error says which entry is wrong.
pub fn parse(text: &str) -> Result<BTreeMap<ServiceKey, Vec<IpAddr>>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let Some(map) = v.get("assignments").and_then(Value::as_object) else {
        return Err("no \"assignments\" object".to_string());
    };
    for (k, entry) in map {
        let Some((ns, name)) = k.split_once('/') else {
            return Err(format!("assignment key {k:?} is not namespace/name"));
        };
        let ips = entry
            .get("ips")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("assignment {k:?} has no \"ips\" list"))?
            .iter()
            .map(|ip| {
                ip.as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| format!("assignment {k:?}: bad address {ip}"))
            })
            .collect::<Result<Vec<IpAddr>, String>>()?;
        out.insert(ServiceKey::new(ns, name), ips);
    }
    Ok(out)
}

/// The entries of the state file, serialised as they are read from the iterator.
struct Entries<'a, I>(std::cell::Cell<Option<I>>, std::marker::PhantomData<&'a ()>);

impl<'a, I: Iterator<Item = (&'a ServiceKey, &'a Assigned)>> Serialize for Entries<'a, I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The file lists keys as sorted strings ("a-b/x" before "a/x"): sort only the names.
        let mut entries: Vec<(String, &Assigned)> = self
            .0
            .take()
            .into_iter()
            .flatten()
            .map(|(k, a)| (k.to_string(), a))
            .collect();
        entries.sort_by(|x, y| x.0.cmp(&y.0));
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, a) in &entries {
            m.serialize_entry(k, &Entry(a))?;
        }
        m.end()
    }
}

/// One assignment: `{"ips": [...], "pool": "..."}`.
struct Entry<'a>(&'a Assigned);

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("ips", &self.0.ips.to_vec())?;
        m.serialize_entry("pool", self.0.pool.as_str())?;
        m.end()
    }
}

/// Writes the state file's text for `assignments` to `w`, without building a JSON tree (10k
/// Services would need ~5 MB for one).
fn write<'a, W: Write>(
    w: W,
    assignments: impl Iterator<Item = (&'a ServiceKey, &'a Assigned)>,
) -> std::io::Result<()> {
    let mut ser =
        serde_json::Serializer::with_formatter(w, serde_json::ser::PrettyFormatter::new());
    let mut top = ser.serialize_map(Some(2))?;
    top.serialize_entry(
        "assignments",
        &Entries(
            std::cell::Cell::new(Some(assignments)),
            std::marker::PhantomData,
        ),
    )?;
    top.serialize_entry("version", &1)?;
    SerializeMap::end(top)?;
    let mut w = ser.into_inner();
    w.write_all(b"\n")?;
    w.flush()?;
    Ok(())
}

/// The state file's text for `assignments`.
#[cfg(test)]
pub fn render<'a>(assignments: impl Iterator<Item = (&'a ServiceKey, &'a Assigned)>) -> String {
    let mut out = Vec::new();
    match write(&mut out, assignments) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Writes `assignments` to `path` atomically.
pub fn save<'a>(
    path: &Path,
    assignments: impl Iterator<Item = (&'a ServiceKey, &'a Assigned)>,
) -> Result<(), StateError> {
    let Some(file_name) = path.file_name() else {
        return Err(StateError::Format {
            path: path.display().to_string(),
            reason: "has no file name".to_string(),
        });
    };
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
    write(std::io::BufWriter::new(file), assignments).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
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
                ips: ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()].into(),
                pool: "p".into(),
            },
        )]);
        let back = parse(&render(a.iter())).unwrap();
        assert_eq!(
            a[&ServiceKey::new("ns", "web")].ips,
            back[&ServiceKey::new("ns", "web")]
        );
        assert!(parse("{\"assignments\": {\"nokey\": {\"ips\": []}}}").is_err());
        assert!(parse("{}").is_err());
    }

    #[test]
    fn streamed_text_is_the_sorted_pretty_json_of_before() {
        let asg = |ip: &str, pool: &str| Assigned {
            ips: [ip.parse().unwrap()].into(),
            pool: pool.into(),
        };
        // Key order differs from the order of the "ns/name" strings; a name to escape.
        let a = BTreeMap::from([
            (ServiceKey::new("a", "x"), asg("192.0.2.1", "p")),
            (ServiceKey::new("a-b", "y"), asg("2001:db8::2", "p\"q")),
            (
                ServiceKey::new("z", "none"),
                Assigned {
                    ips: ferrolb_controller::allocator::Ips::new(),
                    pool: "p".into(),
                },
            ),
        ]);
        let map: serde_json::Map<String, Value> = a
            .iter()
            .map(|(k, a)| {
                let ips: Vec<String> = a.ips.iter().map(|ip| ip.to_string()).collect();
                (
                    k.to_string(),
                    serde_json::json!({"ips": ips, "pool": a.pool.as_str()}),
                )
            })
            .collect();
        let want =
            serde_json::to_string_pretty(&serde_json::json!({"version": 1, "assignments": map}))
                .unwrap()
                + "\n";
        assert_eq!(render(a.iter()), want);
        assert_eq!(
            render(std::iter::empty()),
            "{\n  \"assignments\": {},\n  \"version\": 1\n}\n"
        );
        let dir = std::env::temp_dir().join(format!("ferrolb-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        save(&path, a.iter()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
