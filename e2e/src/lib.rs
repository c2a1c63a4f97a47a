//! ferrolb-e2e: the harness for end-to-end tests, the demo and benchmarks.
//!
//! Owns network-namespace topologies (created and always removed by the test that made them),
//! locating the `ferrolb` binary, and (later) real routers and a real kube-apiserver.
//!
//! Network safety: every namespace is named `flb-<pid>-<tag>`, hosts are numbered from
//! documentation ranges, and no namespace gets a route out of its own topology.

pub mod bench;
pub mod churn;
pub mod k8s;
pub mod netns;
pub mod routers;

use std::path::PathBuf;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// The `ferrolb` binary under test: `$FERROLB_BIN` if set, else `target/debug/ferrolb`
/// (built first by `make test`; see the Makefile).
pub fn ferrolb_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FERROLB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("ferrolb");
    anyhow::ensure!(
        bin.exists(),
        "{} does not exist: run `cargo build --bin ferrolb` first (make test does)",
        bin.display()
    );
    Ok(bin)
}

/// True when the process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// True when every named program is on PATH.
pub fn have_programs(names: &[&str]) -> bool {
    names.iter().all(|n| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {n}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}
