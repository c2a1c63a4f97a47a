//! Test prerequisites: root and the programs a test drives, checked in one place.
//!
//! Every end-to-end test starts with [`require`], naming what it needs. When everything is there
//! the test runs. When something is missing, [`decide`] (pure) settles what happens:
//! - outside CI the test is skipped and says so, on the terminal even while cargo captures test
//!   output (this module is the only place that prints a skip);
//! - under CI (`CI=true` or `CI=1`; `.ci/run` sets it) the test fails and names what is missing,
//!   so a CI machine without root or without a tool cannot pass by skipping.
//!
//! Must not: install anything, or decide a test's result beyond "not run" / "failed to start".

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One thing a test cannot run without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0 (network namespaces, raw sockets, routers).
    Root,
    /// A program on `PATH`, or an absolute path to an executable.
    Program(&'static str),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Root => f.write_str("root"),
            Need::Program(p) => write!(f, "program `{p}`"),
        }
    }
}

/// What to do with a test, given what is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing missing.
    Run,
    /// Outside CI: not run; the line to print.
    Skip(String),
    /// Under CI: the test fails with this message.
    Fail(String),
}

/// True when the value of `$CI` asks for CI mode (`true` in any case, or `1`).
pub fn ci_mode(value: Option<&str>) -> bool {
    value
        .map(str::trim)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The needs not met, in the order given: `root` says whether the process is root,
/// `found` whether a program is there.
pub fn missing(needs: &[Need], root: bool, found: impl Fn(&str) -> bool) -> Vec<Need> {
    needs
        .iter()
        .copied()
        .filter(|n| match n {
            Need::Root => !root,
            Need::Program(p) => !found(p),
        })
        .collect()
}

/// The verdict for `test` with `missing` prerequisites, in CI mode or not.
pub fn decide(test: &str, missing: &[Need], ci: bool) -> Verdict {
    if missing.is_empty() {
        return Verdict::Run;
    }
    let list = missing
        .iter()
        .map(Need::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ci {
        Verdict::Fail(format!(
            "{test}: missing prerequisite(s): {list}. CI mode (CI=true) fails instead of \
             skipping: run the tests as root after `make deps` (e2e/scripts/install-deps.sh)"
        ))
    } else {
        Verdict::Skip(format!(
            "SKIP {test}: not run, needs {list} (with CI=true this is a failure)"
        ))
    }
}

/// The effective uid from the text of `/proc/self/status` (`Uid:` real, effective, ...).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        == Some(0)
}

/// True when `program` is an executable file: a path as given when it contains `/`, else
/// searched on `PATH`.
pub fn have_program(program: &str) -> bool {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// True when every named program is there ([`have_program`]).
pub fn have_programs(programs: &[&str]) -> bool {
    programs.iter().all(|p| have_program(p))
}

/// Checks `needs` for the running test. `Ok(true)`: run it. `Ok(false)`: skipped (outside CI;
/// the reason is printed), return from the test. `Err`: CI mode and something is missing.
///
/// ```no_run
/// use ferrolb_e2e::prereq::{require, Need::{Program, Root}};
/// # fn t() -> anyhow::Result<()> {
/// if !require(&[Root, Program("bird"), Program("birdc")])? {
///     return Ok(());
/// }
/// # Ok(())
/// # }
/// ```
pub fn require(needs: &[Need]) -> anyhow::Result<bool> {
    let thread = std::thread::current();
    // libtest runs each test on a thread named after it.
    let test = thread.name().unwrap_or("this test");
    let ci = ci_mode(std::env::var("CI").ok().as_deref());
    match decide(test, &missing(needs, is_root(), have_program), ci) {
        Verdict::Run => Ok(true),
        Verdict::Skip(line) => {
            // Straight to the terminal: cargo test captures eprintln! of passing tests.
            let _ = writeln!(std::io::stderr(), "{line}");
            Ok(false)
        }
        Verdict::Fail(message) => Err(anyhow::anyhow!(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::Need::{Program, Root};
    use super::*;

    #[test]
    fn ci_mode_is_true_or_1() {
        for on in ["true", "TRUE", "True", "1", " true\n"] {
            assert!(ci_mode(Some(on)), "{on:?}");
        }
        for off in ["", "0", "false", "yes", "2"] {
            assert!(!ci_mode(Some(off)), "{off:?}");
        }
        assert!(!ci_mode(None));
    }

    #[test]
    fn missing_keeps_the_order_and_only_what_is_absent() {
        let needs = [Root, Program("bird"), Program("birdc"), Program("socat")];
        let found = |p: &str| p == "birdc";
        assert_eq!(
            missing(&needs, false, found),
            vec![Root, Program("bird"), Program("socat")]
        );
        assert_eq!(
            missing(&needs, true, found),
            vec![Program("bird"), Program("socat")]
        );
        assert_eq!(missing(&needs, true, |_| true), vec![]);
        assert_eq!(missing(&[], false, |_| false), vec![]);
    }

    #[test]
    fn nothing_missing_runs_in_either_mode() {
        assert_eq!(decide("t", &[], false), Verdict::Run);
        assert_eq!(decide("t", &[], true), Verdict::Run);
    }

    #[test]
    fn outside_ci_a_missing_need_skips_and_names_it() {
        let Verdict::Skip(line) = decide("layer2::flood", &[Root, Program("arping")], false) else {
            panic!("not a skip");
        };
        assert!(line.starts_with("SKIP layer2::flood: "), "{line}");
        assert!(line.contains("root, program `arping`"), "{line}");
    }

    #[test]
    fn under_ci_a_missing_need_fails_and_names_it() {
        let Verdict::Fail(message) = decide("bgp_x", &[Program("bird")], true) else {
            panic!("not a failure");
        };
        assert!(
            message.starts_with("bgp_x: missing prerequisite"),
            "{message}"
        );
        assert!(message.contains("program `bird`"), "{message}");
        assert!(!message.contains("SKIP"), "{message}");
        let Verdict::Fail(message) = decide("t", &[Root], true) else {
            panic!("not a failure");
        };
        assert!(message.contains(": root."), "{message}");
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t65534\t65534\t65534\n"), Some(65534));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn programs_are_found_on_path_or_by_absolute_path() {
        assert!(have_program("sh"));
        assert!(have_program("/bin/sh"));
        assert!(!have_program("ferrolb-no-such-program"));
        assert!(!have_program("/nonexistent/sh"));
        // A directory is not a program.
        assert!(!have_program("/"));
    }
}
