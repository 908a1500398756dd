//! Virtual time.
//!
//! The simulator's clock is a plain `u64` of milliseconds since the start of the run
//! ([`VTime`]). Nothing reads the wall clock: an event happens exactly when the scheduler
//! says, so the same seed gives the same run. Each device sees the protocol time
//! `EPOCH_BASE + virtual + skew` (see [`crate::device::SimDevice::now`]), which is what the
//! protocol machines are given as `now`.

use core::fmt;
use core::time::Duration;
use serde::{Deserialize, Deserializer};

/// Milliseconds since the start of the run.
pub type VTime = u64;

/// Milliseconds per second, minute, hour and day.
pub const SECOND: u64 = 1_000;
/// One minute in ms.
pub const MINUTE: u64 = 60 * SECOND;
/// One hour in ms.
pub const HOUR: u64 = 60 * MINUTE;
/// One day in ms.
pub const DAY: u64 = 24 * HOUR;

/// Protocol time at virtual time zero: 2023-11-14T22:13:20Z. Any fixed value works; a
/// realistic one keeps `issued_at` and deadlines looking like the node's.
pub const EPOCH_BASE_MS: u64 = 1_700_000_000_000;

/// A duration written the way scenarios write them: `"250ms"`, `"10s"`, `"5m"`, `"2h30m"`,
/// `"6d"`, or a bare number of seconds. A leading `-` is allowed where a signed value makes
/// sense (clock skew), see [`SignedSpan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub u64);

impl Span {
    /// Milliseconds.
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// As a `Duration`.
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// A signed [`Span`], for clock skew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SignedSpan(pub i64);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use e.g. \"250ms\", \"10s\", \"5m\", \"2h30m\", \"6d\"")]
pub struct SpanError(pub String);

/// Parses an unsigned duration string.
pub fn parse_span(s: &str) -> Result<Span, SpanError> {
    let err = || SpanError(s.to_owned());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return secs.checked_mul(SECOND).map(Span).ok_or_else(err);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => SECOND,
            "m" => MINUTE,
            "h" => HOUR,
            "d" => DAY,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Span(total))
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(secs) => Ok(Span(secs.saturating_mul(SECOND))),
            Raw::Text(s) => parse_span(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for SignedSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let ms = match Raw::deserialize(d)? {
            Raw::Int(secs) => secs.saturating_mul(SECOND as i64),
            Raw::Text(s) => {
                let (neg, body) = match s.trim().strip_prefix('-') {
                    Some(b) => (true, b),
                    None => (false, s.trim().strip_prefix('+').unwrap_or(s.trim())),
                };
                let span = parse_span(body).map_err(serde::de::Error::custom)?;
                let v = i64::try_from(span.0).map_err(serde::de::Error::custom)?;
                if neg {
                    -v
                } else {
                    v
                }
            }
        };
        Ok(SignedSpan(ms))
    }
}

/// Formats a virtual time as `DdHH:MM:SS.mmm`, fixed width, for the event log.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub VTime);

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{}d{:02}:{:02}:{:02}.{:03}",
            t / DAY,
            (t % DAY) / HOUR,
            (t % HOUR) / MINUTE,
            (t % MINUTE) / SECOND,
            t % SECOND
        )
    }
}

/// Formats a duration in ms for humans: `850 ms`, `12.3 s`, `4.5 min`, `3.2 h`, `6.1 d`.
pub fn human(ms: u64) -> String {
    let f = ms as f64;
    if ms < SECOND {
        format!("{ms} ms")
    } else if ms < MINUTE {
        format!("{:.1} s", f / SECOND as f64)
    } else if ms < HOUR {
        format!("{:.1} min", f / MINUTE as f64)
    } else if ms < DAY {
        format!("{:.1} h", f / HOUR as f64)
    } else {
        format!("{:.2} d", f / DAY as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_in_every_unit_and_combination() {
        assert_eq!(parse_span("250ms"), Ok(Span(250)));
        assert_eq!(parse_span("10s"), Ok(Span(10_000)));
        assert_eq!(parse_span("5m"), Ok(Span(300_000)));
        assert_eq!(parse_span("2h30m"), Ok(Span(9_000_000)));
        assert_eq!(parse_span("6d"), Ok(Span(6 * DAY)));
        assert_eq!(parse_span("42"), Ok(Span(42_000)));
        assert_eq!(parse_span("1x"), Err(SpanError("1x".into())));
        assert_eq!(parse_span("h"), Err(SpanError("h".into())));
        assert_eq!(parse_span(""), Err(SpanError("".into())));
    }

    #[test]
    fn clock_is_fixed_width() {
        assert_eq!(Clock(0).to_string(), "0d00:00:00.000");
        assert_eq!(
            Clock(6 * DAY + 3 * HOUR + 2 * MINUTE + 1_005).to_string(),
            "6d03:02:01.005"
        );
    }
}
