//! Wall-clock time for the protocol machines, which never read a clock themselves.
//!
//! The machines take [`Timestamp`]s (milliseconds since the Unix epoch) and return
//! deadlines as `Timestamp`s; the event loop sleeps on tokio [`Instant`]s. This module is
//! the one place that converts between the two.
//!
//! The event loop reads time only through a [`Clock`], so a test can move a node's idea of
//! "now" forward (seven days, to watch a queued vouch expire) without waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use vouchnet_protocol::Timestamp;

/// The wall clock a node reads: the system clock plus an offset that only tests move.
/// Cheap to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Self {
        Clock::default()
    }

    /// The current time as this clock sees it.
    pub fn now(&self) -> Timestamp {
        let offset = Duration::from_millis(self.offset_ms.load(Ordering::SeqCst));
        now().saturating_add(offset)
    }

    /// Moves this clock (and every clone of it) forward by `by`. Time never goes back.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

/// The current wall-clock time.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The monotonic instant at which wall-clock time `at` is reached (now, if it has passed).
pub fn instant_of(at: Timestamp, now_wall: Timestamp, now_mono: Instant) -> Instant {
    now_mono + at.since(now_wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_runs_ahead_and_its_clones_follow() {
        let clock = Clock::system();
        let twin = clock.clone();
        let before = now();
        clock.advance(Duration::from_secs(7 * 24 * 3600));
        let ahead = twin.now();
        assert!(ahead >= before.saturating_add(Duration::from_secs(7 * 24 * 3600)));
        assert!(ahead <= now().saturating_add(Duration::from_secs(7 * 24 * 3600 + 1)));
    }

    #[test]
    fn a_deadline_in_the_past_is_due_now() {
        let mono = Instant::now();
        let wall = Timestamp::from_secs(1000);
        assert_eq!(instant_of(Timestamp::from_secs(999), wall, mono), mono);
        assert_eq!(
            instant_of(Timestamp::from_secs(1002), wall, mono),
            mono + Duration::from_secs(2)
        );
    }
}
