//! Retention and expiry under a virtual clock, at their exact boundaries.

mod common;

use common::*;
use std::time::Duration;
use vouchnet_protocol::model::{QueueKind, SessionState, VouchStatus};
use vouchnet_protocol::{ProtocolConfig, TxId};
use vouchnet_storage::*;

const HOUR: u64 = 3_600_000;
const WEEK: u64 = 7 * 24 * HOUR;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn policy() -> RetentionPolicy {
    RetentionPolicy::default()
}

#[test]
fn the_default_policy_follows_the_protocol_configuration() {
    let p = RetentionPolicy::from_config(&ProtocolConfig::default());
    assert_eq!(p.session_retention, Duration::from_millis(HOUR));
    assert_eq!(p.decision_retention, Duration::from_millis(WEEK + HOUR));
    assert_eq!(p, policy());
}

#[test]
fn a_finished_session_is_removed_exactly_one_hour_after_it_completes() {
    let (_d, store) = open();
    let t = 10 * HOUR;
    let mut done = session(sid(1), 5, &[1], at(0));
    done.state = SessionState::Completed;
    done.finished_at = Some(at(t));
    store.put_session(&done).expect("put");
    store
        .put_session(&session(sid(2), 6, &[1], at(0)))
        .expect("unfinished");

    assert_eq!(
        store
            .prune(at(t + HOUR - 1), &policy())
            .expect("prune")
            .sessions_removed,
        0
    );
    assert_eq!(store.session(&sid(1)).expect("read"), Some(done));
    assert_eq!(
        store
            .prune(at(t + HOUR), &policy())
            .expect("prune")
            .sessions_removed,
        1
    );
    assert_eq!(store.session(&sid(1)).expect("read"), None);
    assert!(
        store.session(&sid(2)).expect("read").is_some(),
        "an unfinished session is kept"
    );
    assert_eq!(
        store
            .prune(at(u64::MAX), &policy())
            .expect("prune")
            .sessions_removed,
        0
    );
}

#[test]
fn a_cancelled_session_is_removed_with_its_queue_entries() {
    let (_d, store) = open();
    store
        .put_session(&session(sid(1), 5, &[1], at(0)))
        .expect("put");
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    let mut s = store.session(&sid(1)).expect("read").expect("s");
    s.state = SessionState::Cancelled;
    s.finished_at = Some(at(5));
    store.put_session(&s).expect("cancel");
    let report = store.prune(at(5 + HOUR), &policy()).expect("prune");
    assert_eq!((report.sessions_removed, report.queue_expired), (1, 0));
    assert_eq!(store.depth().expect("depth"), 0);
    assert_eq!(store.queue_entries().expect("all"), vec![]);
}

#[test]
fn a_session_reopened_after_finishing_is_not_pruned() {
    let (_d, store) = open();
    let mut s = session(sid(1), 5, &[1], at(0));
    s.finished_at = Some(at(1));
    store.put_session(&s).expect("finish");
    s.finished_at = None;
    store.put_session(&s).expect("reopen");
    assert_eq!(
        store
            .prune(at(10 * HOUR), &policy())
            .expect("prune")
            .sessions_removed,
        0
    );
    assert!(store.session(&sid(1)).expect("read").is_some());
}

#[test]
fn a_queued_vouch_is_removed_at_expires_at_and_its_target_expires() {
    let (_d, store) = open();
    store
        .record_vouched(&session(sid(1), 5, &[1], at(0)), at(0))
        .expect("session");
    let e = queue_entry(sid(1), id(1), QueueKind::Vouch, at(1000));
    assert_eq!(e.expires_at, at(1000 + WEEK));
    store.enqueue(&e).expect("enqueue");

    assert_eq!(
        store
            .prune(at(1000 + WEEK - 1), &policy())
            .expect("prune")
            .queue_expired,
        0
    );
    assert!(store.queue_entry(vref(sid(1), 1)).expect("read").is_some());
    let report = store.prune(at(1000 + WEEK), &policy()).expect("prune");
    assert_eq!(report.queue_expired, 1);
    assert_eq!(report.targets_expired, vec![vref(sid(1), 1)]);
    assert_eq!(
        report.sessions_completed,
        vec![sid(1)],
        "its only target was the last open one"
    );
    assert_eq!(store.queue_entry(vref(sid(1), 1)).expect("read"), None);
    let s = store.session(&sid(1)).expect("read").expect("s");
    assert_eq!(s.targets[&id(1)], VouchStatus::Expired);
    assert_eq!(
        (s.state, s.finished_at),
        (SessionState::Completed, Some(at(1000 + WEEK)))
    );
    let last = store.audit_entries(1, 10).expect("audit");
    assert_eq!(
        last[0].event,
        AuditEvent::VouchExpired {
            session: sid(1),
            target: id(1)
        }
    );
    assert_eq!(last[0].at, at(1000 + WEEK));
    assert_eq!(store.depth().expect("depth"), 0);
}

#[test]
fn a_session_completed_by_expiry_is_removed_one_retention_later() {
    let (_d, store) = open();
    store
        .put_session(&session(sid(1), 5, &[1], at(0)))
        .expect("session");
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    assert_eq!(
        store
            .prune(at(WEEK), &policy())
            .expect("prune")
            .sessions_completed,
        vec![sid(1)]
    );
    assert_eq!(
        store
            .prune(at(WEEK + HOUR - 1), &policy())
            .expect("prune")
            .sessions_removed,
        0
    );
    assert_eq!(
        store
            .prune(at(WEEK + HOUR), &policy())
            .expect("prune")
            .sessions_removed,
        1
    );
}

#[test]
fn a_rescheduled_entry_keeps_its_expiry() {
    let (_d, store) = open();
    store
        .put_session(&session(sid(1), 5, &[1], at(0)))
        .expect("session");
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    store
        .reschedule(vref(sid(1), 1), at(WEEK - 10))
        .expect("reschedule");
    assert_eq!(
        store
            .prune(at(WEEK - 1), &policy())
            .expect("prune")
            .queue_expired,
        0
    );
    assert_eq!(
        store
            .prune(at(WEEK), &policy())
            .expect("prune")
            .queue_expired,
        1
    );
}

#[test]
fn an_expired_notification_leaves_the_session_as_it_is() {
    let (_d, store) = open();
    store
        .put_session(&session(sid(1), 5, &[1], at(0)))
        .expect("session");
    store
        .enqueue(&queue_entry(sid(1), id(5), QueueKind::NotifyVouchee, at(0)))
        .expect("enqueue");
    let before = store.session(&sid(1)).expect("read");
    let report = store.prune(at(WEEK), &policy()).expect("prune");
    assert_eq!((report.queue_expired, report.targets_expired.len()), (1, 0));
    assert_eq!(store.session(&sid(1)).expect("read"), before);
}

#[test]
fn a_nonce_is_remembered_through_its_expiry_and_pruned_after_it() {
    let (_d, store) = open();
    store.remember_nonce(&nonce(1), at(5000)).expect("remember");
    assert_eq!(
        store
            .prune(at(5000), &policy())
            .expect("prune")
            .nonces_pruned,
        0
    );
    assert!(store.nonce_seen(&nonce(1)).expect("read"));
    assert_eq!(
        store
            .prune(at(5001), &policy())
            .expect("prune")
            .nonces_pruned,
        1
    );
    assert!(!store.nonce_seen(&nonce(1)).expect("read"));
}

#[test]
fn remembering_a_nonce_again_keeps_the_later_expiry() {
    let (_d, store) = open();
    store.remember_nonce(&nonce(1), at(5000)).expect("remember");
    store.remember_nonce(&nonce(1), at(3000)).expect("earlier");
    assert_eq!(
        store
            .prune(at(4000), &policy())
            .expect("prune")
            .nonces_pruned,
        0
    );
    store.remember_nonce(&nonce(1), at(9000)).expect("later");
    assert_eq!(
        store
            .prune(at(5001), &policy())
            .expect("prune")
            .nonces_pruned,
        0
    );
    assert!(store.nonce_seen(&nonce(1)).expect("read"));
    assert_eq!(
        store
            .prune(at(9001), &policy())
            .expect("prune")
            .nonces_pruned,
        1
    );
}

#[test]
fn an_accepted_vouch_nonce_expires_with_its_window_but_the_decision_stays() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(0))).expect("voucher");
    let a = accept(1, 0, 5, sid(1), nonce(1), at(1000));
    store.accept_vouch(&a).expect("accept");
    let e = a.nonce_expires_at.as_millis();
    assert_eq!(
        store
            .prune(at(e + 1), &policy())
            .expect("prune")
            .nonces_pruned,
        1
    );
    // A replay after the window gets the recorded decision back, not a second device.
    assert!(matches!(
        store.accept_vouch(&a).expect("again"),
        AcceptOutcome::AlreadyDecided(_)
    ));
}

#[test]
fn a_decision_is_kept_for_the_decision_retention_exactly() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(0))).expect("voucher");
    store
        .accept_vouch(&accept(1, 0, 5, sid(1), nonce(1), at(1000)))
        .expect("accept");
    let keep = 1000 + WEEK + HOUR;
    assert_eq!(
        store
            .prune(at(keep - 1), &policy())
            .expect("prune")
            .decisions_pruned,
        0
    );
    assert!(store.decision(&sid(1), &id(5)).expect("read").is_some());
    assert_eq!(
        store
            .prune(at(keep), &policy())
            .expect("prune")
            .decisions_pruned,
        1
    );
    assert_eq!(store.decision(&sid(1), &id(5)).expect("read"), None);
    assert!(
        store.device(&id(5)).expect("read").is_some(),
        "the device itself stays"
    );
}

#[test]
fn a_pairing_in_flight_is_removed_at_its_expiry() {
    let (_d, store) = open();
    let rec = PairingRecord {
        peer: id(1),
        tx_id: TxId([3; 16]),
        started_at: at(0),
        expires_at: at(600_000),
        state: SecretBytes::new(vec![1, 2, 3]),
    };
    store.put_pairing(&rec).expect("put");
    assert_eq!(
        store
            .prune(at(599_999), &policy())
            .expect("prune")
            .pairings_expired,
        0
    );
    assert_eq!(store.pairing(&id(1)).expect("read"), Some(rec.clone()));
    // Replacing it moves its expiry.
    let moved = PairingRecord {
        expires_at: at(700_000),
        ..rec.clone()
    };
    store.put_pairing(&moved).expect("replace");
    assert_eq!(
        store
            .prune(at(600_000), &policy())
            .expect("prune")
            .pairings_expired,
        0
    );
    assert_eq!(
        store
            .prune(at(700_000), &policy())
            .expect("prune")
            .pairings_expired,
        1
    );
    assert_eq!(store.pairings().expect("list"), vec![]);
}

#[test]
fn pruning_many_records_spans_several_transactions() {
    let (_d, store) = open();
    store
        .write(|tx| {
            for i in 0..1500u64 {
                tx.remember_nonce(&nonce(i), at(10 + i % 7))?;
            }
            Ok(())
        })
        .expect("remember");
    let report = store.prune(at(100), &policy()).expect("prune");
    assert_eq!(report.nonces_pruned, 1500);
    assert!(!store.nonce_seen(&nonce(1499)).expect("read"));
}

#[test]
fn retention_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.remember_nonce(&nonce(1), at(50)).expect("remember");
        let mut s = session(sid(1), 5, &[1], at(0));
        s.finished_at = Some(at(0));
        store.put_session(&s).expect("put");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let report = store.prune(at(HOUR), &policy()).expect("prune");
    assert_eq!((report.sessions_removed, report.nonces_pruned), (1, 1));
}
