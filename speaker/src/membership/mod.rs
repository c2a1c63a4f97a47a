//! Membership: which speakers are alive right now.
//!
//! The [`Membership`] trait hides the gossip library; [`memberlist`] implements it with the
//! `memberlist` crate (SWIM gossip, encrypted with a shared secret). [`profile`] holds the timer
//! profiles (pure), [`live`] the pure live-set bookkeeping and [`secret`] the secret loading.
//!
//! Must not: decide announcements (that is `world`/`layer2`), or log the shared secret.

pub mod live;
pub mod memberlist;
pub mod profile;
pub mod secret;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::future::Future;

use tokio::sync::watch;

pub use self::memberlist::{MemberlistConfig, MemberlistMembership};
pub use profile::{parse_duration, Overrides, Profile, TimerError, Timers};
pub use secret::{load_secret, SecretError, SECRET_ENV};

/// Default memberlist port (the same as MetalLB's `--ml-bindport`).
pub const DEFAULT_PORT: u16 = 7946;

/// Errors of the membership layer.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The gossip layer could not start (bind failed, bad options).
    #[error("membership: cannot start memberlist on {bind}: {reason}")]
    Start { bind: String, reason: String },
    /// No join address answered.
    #[error("membership: cannot join any of {addrs}: {reason}")]
    Join { addrs: String, reason: String },
    /// Leaving the cluster failed.
    #[error("membership: leave failed: {reason}")]
    Leave { reason: String },
    /// The shared secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A failure-detection timer is out of range.
    #[error("membership: {0}")]
    Timers(#[from] TimerError),
}

/// A source of the set of live speaker node names (always including this node).
pub trait Membership: Send + Sync {
    /// The live node names; changes whenever a member joins, leaves or is declared dead.
    fn live(&self) -> watch::Receiver<BTreeSet<String>>;

    /// Leaves the cluster gracefully (others drop this node at once), then stops gossiping.
    fn leave(&self) -> impl Future<Output = Result<(), MembershipError>> + Send;
}
