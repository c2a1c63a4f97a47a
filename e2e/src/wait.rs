//! Waiting for a condition in the end-to-end tests: one polling loop for every harness.
//!
//! A harness passes what it checks, how often, and what to show when the time runs out (its
//! logs, a router's view): the failure then reads `WHAT: not within LIMIT` and that text.
//!
//! Must not: retry an action (the check only looks), or sleep past the limit by more than one
//! poll interval.

use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns true (returns the time that took) or `limit`
/// has passed (an error naming `what`, followed by `diagnostics()` when that is not empty).
pub fn wait_for(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    diagnostics: impl FnOnce() -> String,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(every);
    }
    let more = diagnostics();
    if more.is_empty() {
        anyhow::bail!("{what}: not within {limit:?}")
    }
    anyhow::bail!("{what}: not within {limit:?}\n{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_check_holds() {
        let mut calls = 0;
        let took = wait_for(
            Duration::from_secs(5),
            Duration::from_millis(1),
            "third call",
            || {
                calls += 1;
                calls == 3
            },
            || unreachable!("no diagnostics on success"),
        );
        assert!(took.is_ok_and(|t| t < Duration::from_secs(5)));
        assert_eq!(calls, 3);
    }

    #[test]
    fn times_out_with_what_and_the_diagnostics() {
        let err = wait_for(
            Duration::from_millis(20),
            Duration::from_millis(5),
            "never",
            || false,
            || "--- log ---\nboom".into(),
        )
        .expect_err("times out");
        let text = err.to_string();
        assert!(
            text.starts_with("never: not within 20ms\n--- log ---"),
            "{text}"
        );
        let err = wait_for(
            Duration::from_millis(1),
            Duration::from_millis(1),
            "quiet",
            || false,
            String::new,
        )
        .expect_err("times out");
        assert_eq!(err.to_string(), "quiet: not within 1ms");
    }
}
