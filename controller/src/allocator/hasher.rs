//! The hash state of the allocator's maps keyed by user-controlled data (Service names, requested
//! and restored addresses): foldhash's fast multiply-fold hash, with a secret per-map seed and a
//! secret per-process shared seed both drawn from the standard library's `RandomState` (itself
//! keyed from the operating system's random source). So a user who picks Service names or
//! addresses cannot precompute colliding keys (hash flooding) without knowing the seeds, which
//! never leave the process (every output of the allocator is sorted, so hash order never shows),
//! while hashing a short key costs a few nanoseconds instead of SipHash's tens.
//!
//! foldhash's own `RandomState` is not used: built without `std` (as it is here, by hashbrown)
//! it seeds itself from addresses only (ASLR).
//!
//! Must not: be used where hashes or hash-order iteration can reach a user.

use std::collections::hash_map::RandomState as StdRandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::fast::{FoldHasher, SeedableRandomState};
use foldhash::SharedSeed;

/// A 64-bit secret from the OS-seeded standard `RandomState` (each instance gets fresh keys).
fn os_random_u64() -> u64 {
    StdRandomState::new().hash_one(0x0066_6572_726f_6c62_u64)
}

fn shared_seed() -> &'static SharedSeed {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    SHARED.get_or_init(|| SharedSeed::from_u64(os_random_u64()))
}

/// A randomly keyed [`BuildHasher`]: a new secret per map (per `default()`), kept by clones.
#[derive(Clone, Debug)]
pub(crate) struct Keyed(SeedableRandomState);

impl Default for Keyed {
    fn default() -> Keyed {
        Keyed(SeedableRandomState::with_seed(
            os_random_u64(),
            shared_seed(),
        ))
    }
}

impl BuildHasher for Keyed {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::ServiceKey;

    #[test]
    fn each_map_gets_its_own_secret_seed() {
        let k = ServiceKey::new("default", "svc");
        let (a, b) = (Keyed::default(), Keyed::default());
        // Deterministic for one state and its clones (the maps rely on it) ...
        assert_eq!(a.hash_one(&k), a.hash_one(&k));
        assert_eq!(a.hash_one(&k), a.clone().hash_one(&k));
        // ... but unrelated across states: a fixed key does not hash alike in two maps (a chance
        // of 2^-64 of a false failure), so a collision set built against one map is useless
        // against another, and none can be built offline.
        assert_ne!(a.hash_one(&k), b.hash_one(&k));
        // And not foldhash's fixed (public) seed.
        let fixed = SeedableRandomState::fixed();
        assert_ne!(a.hash_one(&k), fixed.hash_one(&k));
    }
}
