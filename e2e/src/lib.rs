//! ferrolb-e2e: the harness for end-to-end tests, the demo and benchmarks.
//!
//! Owns network-namespace topologies (created and always removed by the test that made them),
//! locating the `ferrolb` binary, real routers, a real kube-apiserver and the Kubernetes labs,
//! the prerequisites check every test starts with ([`prereq`]), and the small helpers the tests
//! share (polling, probes and their parsers, `/proc` readers, scratch directories).
//!
//! Network safety: every namespace is named `flb-<pid>-<tag>`, hosts are numbered from
//! documentation ranges, and no namespace gets a route out of its own topology.

pub mod bench;
pub mod churn;
pub mod k8s;
pub mod netns;
pub mod prereq;
pub mod probe;
pub mod procfs;
pub mod routers;
pub mod scratch;
pub mod wait;

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

/// True when `FERROLB_SOAK=1` (`make soak`): the long version of the reliability tests.
pub fn soak() -> bool {
    std::env::var_os("FERROLB_SOAK").is_some_and(|v| v == "1")
}
