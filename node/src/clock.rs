//! Wall-clock time for the protocol machines, which never read a clock themselves.
//!
//! The machines take [`Timestamp`]s (milliseconds since the Unix epoch) and return
//! deadlines as `Timestamp`s; the event loop sleeps on tokio [`Instant`]s. This module is
//! the one place that converts between the two.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use vouchnet_protocol::Timestamp;

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
