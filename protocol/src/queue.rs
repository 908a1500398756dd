//! Policy of the persistent offline queue, as pure functions.
//!
//! The design: whatever a voucher cannot deliver now (a vouch to an offline target, an
//! acceptance the offline vouchee has not heard of) waits on disk in a [`QueueEntry`]. A
//! worker looks at the queue every [`QueuePolicy::poll_interval`] and, for each entry, asks
//! these functions what to do. The functions never touch the entry in place; they return the
//! next version of it (or say to delete it), and the worker persists that.
//!
//! Two different things can stop a delivery, and the policy keeps them apart:
//! - **the recipient is offline**: nothing was attempted, so nothing is counted. The entry
//!   stays as it is and is looked at again on the next poll ([`on_recipient_offline`]).
//!   A phone that sleeps for a day must not exhaust its retries while asleep.
//! - **a delivery failed** (the recipient was connected but the send errored or was not
//!   acknowledged): this is an attempt. The entry backs off exponentially, and after
//!   [`QueuePolicy::max_retries`] failures it is dropped ([`on_delivery_failed`]).
//!
//! Independently, every entry has a hard expiry ([`QueuePolicy::expiry`], 7 days by default)
//! after which it is dropped undelivered ([`is_expired`]).
//!
//! Boundaries are exact and inclusive on the "later" side: an entry is due *at*
//! `next_attempt_at`, and expired *at* `expires_at`.

use crate::config::QueuePolicy;
use crate::identity::DeviceId;
use crate::ids::SessionId;
use crate::model::{QueueEntry, QueueKind};
use crate::time::{duration_millis, Timestamp};
use core::time::Duration;

/// What the worker must do with an entry after asking the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    /// Keep the entry unchanged; look at it again at the next poll. Returned when the
    /// recipient was offline: no attempt was made, so nothing is counted.
    Keep,
    /// Replace the stored entry with this one (one more attempt counted, and a later
    /// `next_attempt_at`). Returned after a failed delivery that still has retries left.
    Retry(QueueEntry),
    /// Delete the entry: it was delivered and acknowledged.
    Remove,
    /// Delete the entry undelivered, for this reason. For a [`QueueKind::Vouch`] entry the
    /// voucher's session records the target as Expired
    /// ([`crate::model::VouchingSession::on_queue_expired`]).
    Drop(DropReason),
}

/// Why an entry was deleted undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `expires_at` was reached.
    Expired,
    /// [`QueuePolicy::max_retries`] deliveries failed.
    MaxRetries,
}

/// A new entry for `recipient`, due immediately (at the next poll) and expiring
/// [`QueuePolicy::expiry`] after `now`.
pub fn new_entry(
    session_id: SessionId,
    recipient: DeviceId,
    kind: QueueKind,
    now: Timestamp,
    policy: &QueuePolicy,
) -> QueueEntry {
    QueueEntry {
        session_id,
        recipient,
        kind,
        enqueued_at: now,
        expires_at: now.saturating_add(policy.expiry),
        next_attempt_at: now,
        attempts: 0,
    }
}

/// True from `expires_at` on: at exactly `expires_at` the entry is expired.
pub fn is_expired(entry: &QueueEntry, now: Timestamp) -> bool {
    now >= entry.expires_at
}

/// True when the worker should try to deliver the entry now: from `next_attempt_at` on,
/// and not expired.
pub fn is_due(entry: &QueueEntry, now: Timestamp) -> bool {
    now >= entry.next_attempt_at && !is_expired(entry, now)
}

/// The recipient was not connected when the worker looked. Nothing was attempted, so the
/// attempt counter and `next_attempt_at` are unchanged ([`QueueOutcome::Keep`]) and the
/// entry is looked at again on the next poll, unless it has expired
/// ([`QueueOutcome::Drop`] with [`DropReason::Expired`]).
pub fn on_recipient_offline(entry: &QueueEntry, now: Timestamp) -> QueueOutcome {
    if is_expired(entry, now) {
        QueueOutcome::Drop(DropReason::Expired)
    } else {
        QueueOutcome::Keep
    }
}

/// The delay after the failure that makes `attempts_before + 1` failures:
/// `min(backoff_base * 2^attempts_before, backoff_max)`, so 10 s, 20 s, 40 s, … up to 1 h
/// with the defaults. Saturates rather than overflowing for large counts.
pub fn backoff_delay(attempts_before: u32, policy: &QueuePolicy) -> Duration {
    let base = duration_millis(policy.backoff_base);
    let max = duration_millis(policy.backoff_max);
    let delay = match 1u64.checked_shl(attempts_before) {
        Some(factor) => base.saturating_mul(factor),
        None => u64::MAX,
    };
    Duration::from_millis(delay.min(max))
}

/// A delivery was attempted and failed. This counts as an attempt:
/// - if the entry has expired: [`QueueOutcome::Drop`] with [`DropReason::Expired`];
/// - if this failure is the `max_retries`-th: [`QueueOutcome::Drop`] with
///   [`DropReason::MaxRetries`];
/// - otherwise [`QueueOutcome::Retry`] with `attempts + 1` and
///   `next_attempt_at = now + backoff_delay(attempts)`.
pub fn on_delivery_failed(
    entry: &QueueEntry,
    now: Timestamp,
    policy: &QueuePolicy,
) -> QueueOutcome {
    if is_expired(entry, now) {
        return QueueOutcome::Drop(DropReason::Expired);
    }
    let attempts = entry.attempts.saturating_add(1);
    if attempts >= policy.max_retries {
        return QueueOutcome::Drop(DropReason::MaxRetries);
    }
    let mut next = entry.clone();
    next.attempts = attempts;
    next.next_attempt_at = now.saturating_add(backoff_delay(entry.attempts, policy));
    QueueOutcome::Retry(next)
}

/// The recipient acknowledged the delivery: [`QueueOutcome::Remove`].
pub fn on_delivered(_entry: &QueueEntry) -> QueueOutcome {
    QueueOutcome::Remove
}

/// The earliest time at which any of `entries` becomes due, to schedule the worker's next
/// wake-up when it does not simply poll. `None` for an empty queue.
pub fn next_due<'a>(entries: impl IntoIterator<Item = &'a QueueEntry>) -> Option<Timestamp> {
    entries.into_iter().map(|e| e.next_attempt_at).min()
}
