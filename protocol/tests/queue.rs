//! Offline-queue policy (`queue.rs`): backoff, retries, expiry, and offline polls that are
//! not attempts — each at its exact boundary.

use std::time::Duration;
use vouchnet_protocol::identity::DeviceKeypair;
use vouchnet_protocol::ids::SessionId;
use vouchnet_protocol::model::{QueueEntry, QueueKind};
use vouchnet_protocol::queue::*;
use vouchnet_protocol::{QueuePolicy, Timestamp};

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);
const DAY_MS: u64 = 24 * 3600 * 1000;

fn at(ms: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_millis(ms))
}

fn entry(policy: &QueuePolicy) -> QueueEntry {
    let recipient = DeviceKeypair::from_seed(&[4; 32]).device_id();
    new_entry(SessionId([1; 16]), recipient, QueueKind::Vouch, NOW, policy)
}

#[test]
fn a_new_entry_is_due_now_and_expires_in_seven_days() {
    let p = QueuePolicy::default();
    let e = entry(&p);
    assert_eq!(e.session_id, SessionId([1; 16]));
    assert_eq!(e.kind, QueueKind::Vouch);
    assert_eq!(e.enqueued_at, NOW);
    assert_eq!(e.next_attempt_at, NOW);
    assert_eq!(e.expires_at, at(7 * DAY_MS));
    assert_eq!(e.attempts, 0);
    assert!(is_due(&e, NOW));
}

#[test]
fn expiry_is_exact_at_expires_at() {
    let p = QueuePolicy::default();
    let e = entry(&p);
    assert!(!is_expired(&e, at(7 * DAY_MS - 1)));
    assert!(is_due(&e, at(7 * DAY_MS - 1)));
    assert!(is_expired(&e, at(7 * DAY_MS)));
    assert!(!is_due(&e, at(7 * DAY_MS)));
    assert_eq!(
        on_recipient_offline(&e, at(7 * DAY_MS - 1)),
        QueueOutcome::Keep
    );
    assert_eq!(
        on_recipient_offline(&e, at(7 * DAY_MS)),
        QueueOutcome::Drop(DropReason::Expired)
    );
    assert_eq!(
        on_delivery_failed(&e, at(7 * DAY_MS), &p),
        QueueOutcome::Drop(DropReason::Expired)
    );
}

#[test]
fn an_entry_is_due_exactly_at_next_attempt_at() {
    let p = QueuePolicy::default();
    let QueueOutcome::Retry(e) = on_delivery_failed(&entry(&p), NOW, &p) else {
        panic!("expected Retry")
    };
    assert_eq!(e.next_attempt_at, at(10_000));
    assert!(!is_due(&e, at(9_999)));
    assert!(is_due(&e, at(10_000)));
}

#[test]
fn backoff_doubles_from_the_base_up_to_the_maximum() {
    let p = QueuePolicy {
        max_retries: 100,
        ..QueuePolicy::default()
    };
    let mut e = entry(&p);
    let mut now = NOW;
    let mut delays = Vec::new();
    for expected_attempts in 1..=12u32 {
        let QueueOutcome::Retry(next) = on_delivery_failed(&e, now, &p) else {
            panic!("expected Retry")
        };
        assert_eq!(next.attempts, expected_attempts);
        delays.push(next.next_attempt_at.as_millis() - now.as_millis());
        now = next.next_attempt_at;
        e = next;
    }
    assert_eq!(
        delays,
        vec![
            10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000, 2_560_000,
            3_600_000, 3_600_000, 3_600_000
        ]
    );
    // Everything except the counters and the next attempt is kept.
    assert_eq!(e.enqueued_at, NOW);
    assert_eq!(e.expires_at, at(7 * DAY_MS));
}

#[test]
fn the_backoff_delay_saturates_for_huge_counts() {
    let p = QueuePolicy::default();
    assert_eq!(backoff_delay(0, &p), Duration::from_secs(10));
    assert_eq!(backoff_delay(63, &p), Duration::from_secs(3600));
    assert_eq!(backoff_delay(64, &p), Duration::from_secs(3600));
    assert_eq!(backoff_delay(u32::MAX, &p), Duration::from_secs(3600));
}

#[test]
fn the_max_retries_th_failure_drops_the_entry() {
    let p = QueuePolicy::default();
    assert_eq!(p.max_retries, 10);
    let mut e = entry(&p);
    for n in 1..10u32 {
        match on_delivery_failed(&e, e.next_attempt_at, &p) {
            QueueOutcome::Retry(next) => {
                assert_eq!(next.attempts, n);
                e = next;
            }
            other => panic!("failure {n}: {other:?}"),
        }
    }
    assert_eq!(e.attempts, 9);
    assert_eq!(
        on_delivery_failed(&e, e.next_attempt_at, &p),
        QueueOutcome::Drop(DropReason::MaxRetries)
    );
}

#[test]
fn polls_while_the_recipient_is_offline_are_not_attempts() {
    let p = QueuePolicy::default();
    let e = entry(&p);
    // A week of polls every 10 s, minus the last one: always Keep, never counted.
    let polls = (7 * DAY_MS) / 10_000;
    for i in 0..polls {
        assert_eq!(on_recipient_offline(&e, at(i * 10_000)), QueueOutcome::Keep);
    }
    assert_eq!(e.attempts, 0);
    // When it finally connects and the delivery fails, it is the first attempt.
    let QueueOutcome::Retry(next) = on_delivery_failed(&e, at(3 * DAY_MS), &p) else {
        panic!("expected Retry")
    };
    assert_eq!(next.attempts, 1);
    assert_eq!(next.next_attempt_at, at(3 * DAY_MS + 10_000));
}

#[test]
fn a_delivered_entry_is_removed() {
    let p = QueuePolicy::default();
    assert_eq!(on_delivered(&entry(&p)), QueueOutcome::Remove);
}

#[test]
fn next_due_is_the_earliest_next_attempt() {
    let p = QueuePolicy::default();
    let a = entry(&p);
    let QueueOutcome::Retry(b) = on_delivery_failed(&a, NOW, &p) else {
        panic!("expected Retry")
    };
    assert_eq!(next_due([&b, &a]), Some(NOW));
    assert_eq!(next_due([&b]), Some(at(10_000)));
    assert_eq!(next_due(std::iter::empty()), None);
}
