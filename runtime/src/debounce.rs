//! Coalescing bursts of watch events into one piece of work (a planning pass, a rebuild): the
//! first event after the work ran sets the deadline, later events do not move it, so a burst
//! costs one pass and a steady stream of events cannot postpone it past the delay.
//!
//! [`Debounce`] is a pure deadline keeper (the caller passes the time); [`Debounce::due`] is
//! the sleep a shell's `select!` waits on.
//!
//! Must not: read the clock in its bookkeeping, or know what the work is.

use std::time::Duration;

use tokio::time::Instant;

/// When the next piece of work is due; `None` while nothing is pending.
#[derive(Debug)]
pub struct Debounce {
    delay: Duration,
    deadline: Option<Instant>,
}

impl Debounce {
    /// Work runs at most `delay` after the first event since it last ran.
    pub fn new(delay: Duration) -> Self {
        Debounce {
            delay,
            deadline: None,
        }
    }

    /// Something changed at `now`: the work is due by `now + delay` unless already due earlier.
    pub fn arm(&mut self, now: Instant) {
        self.deadline.get_or_insert(now + self.delay);
    }

    /// When the work is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The work runs now: nothing pending until the next event.
    pub fn fire(&mut self) {
        self.deadline = None;
    }

    /// Resolves when the work is due; never while nothing is pending (a `select!` branch that
    /// stays quiet). Call [`fire`](Self::fire) when it resolves.
    pub async fn due(&self) {
        match self.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_coalesces_a_burst_and_never_postpones_past_its_delay() {
        let mut d = Debounce::new(Duration::from_millis(20));
        assert_eq!(d.deadline(), None, "nothing pending at start");
        let t0 = Instant::now();
        d.arm(t0);
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(20)));
        // A steady stream of events: the rebuild stays due 20 ms after the first one.
        for ms in [1, 5, 19, 40] {
            d.arm(t0 + Duration::from_millis(ms));
        }
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(20)));
        d.fire();
        assert_eq!(d.deadline(), None, "rebuilt: nothing pending");
        let t1 = t0 + Duration::from_millis(50);
        d.arm(t1);
        assert_eq!(d.deadline(), Some(t1 + Duration::from_millis(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn due_waits_for_the_deadline_and_never_resolves_while_nothing_is_pending() {
        let mut d = Debounce::new(Duration::from_millis(25));
        let idle = tokio::time::timeout(Duration::from_secs(3600), d.due()).await;
        assert!(idle.is_err(), "nothing pending: not due within an hour");
        let t0 = Instant::now();
        d.arm(t0);
        d.due().await;
        assert_eq!(Instant::now(), t0 + Duration::from_millis(25));
    }
}
