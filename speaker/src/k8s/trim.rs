//! Handing the heap's free pages back to the system after a rebuild.
//!
//! glibc `malloc_trim(0)` (since glibc 2.8) releases every whole free page in every arena, not
//! only at the top of the heap. Churn frees the objects of deleted Services all over the heap;
//! without this glibc keeps those pages and RSS stays at its peak (measured: the churn soak's
//! speakers kept ~2 MiB more). A no-op with other C libraries (musl returns memory by itself).
//!
//! Must not: be called on a hot path (it walks the whole heap); the shell calls it once a
//! while after rebuilds (`super::TRIM_AFTER`).

/// Hands the heap's free pages back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own state under
    // its own locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hands the heap's free pages back to the system (nothing to do without glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
