//! One glibc malloc arena for the whole process, set by each long-running subcommand before its
//! runtime starts any thread.
//!
//! With glibc's default of one arena per thread (up to 8 per core), memory freed on one runtime
//! worker stays in that worker's arena while long-lived data sits in another, so peak RSS grows
//! with fragmentation rather than with live data. Measured (glibc release builds, 2026-11-30):
//! - controller restarting over 10k assigned Services: peak RSS 42.1-42.8 MiB with the default
//!   arenas, 39.6 MiB with two, 35.3 MiB with one (heap peak 16.5 MB), CPU of the restart's plan
//!   0.40-0.47 s vs 0.52 s;
//! - standalone announcing 10k Services over BGP (`e2e/bench/memory.sh`, median of 3, twice):
//!   VmHWM 24.1-24.4 MiB with the default arenas, 23.4-23.6 MiB with one; idle 9.3 vs 8.8-9.1 MiB.
//!
//! ferrolb's processes are I/O-bound on two workers and allocate little per packet or event, so
//! the arena lock costs nothing measurable. Without glibc (the image's musl build has no arenas)
//! this does nothing.

/// Asks glibc for a single arena; warns when it refuses. Call before any thread is spawned.
pub fn use_one_arena() {
    if !single_arena() {
        tracing::warn!("glibc refused M_ARENA_MAX=1; memory may fragment more across threads");
    }
}

/// Returns whether the setting was accepted (always true without glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn single_arena() -> bool {
    // SAFETY: mallopt takes two plain integers and changes only the allocator's own settings
    // under its own lock; called before the runtime starts any thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn single_arena() -> bool {
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_single_arena_setting_is_accepted() {
        assert!(super::single_arena());
        // Allocating from several threads afterwards still works.
        let joins: Vec<_> = (0..4)
            .map(|i| std::thread::spawn(move || vec![i as u8; 1 << 16].len()))
            .collect();
        for j in joins {
            assert_eq!(j.join().unwrap(), 1 << 16);
        }
    }
}
