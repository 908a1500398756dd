//! One test per storage rule: devices and trust, vouch acceptance, the queue, group commit,
//! secrets and file modes.

mod common;

use common::*;
use vouchnet_protocol::messages::{AcceptedHow, Decision, VouchRejection};
use vouchnet_protocol::model::{PairingType, QueueKind, TrustLevel, VouchStatus};
use vouchnet_protocol::queue::DropReason;
use vouchnet_protocol::{QueuePolicy, SessionId, Timestamp, VouchNonce};
use vouchnet_storage::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn events(store: &Store) -> Vec<AuditEvent> {
    store
        .audit_entries(0, usize::MAX)
        .expect("audit")
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[test]
fn direct_pairing_stores_device_and_audit_entry_together() {
    let (_d, store) = open();
    let rec = store.pair_direct(&direct(1, at(1000))).expect("pair");
    assert_eq!(rec.pairing_type, PairingType::Direct);
    assert_eq!(rec.trust_level, TrustLevel::Trusted);
    assert_eq!(rec.paired_at, at(1000));
    assert_eq!(store.device(&id(1)).expect("read"), Some(rec));
    let entries = store.audit_entries(0, 10).expect("audit");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].seq, 0);
    assert_eq!(entries[0].prev_hash, [0; 32]);
    assert_eq!(entries[0].at, at(1000));
    assert!(matches!(
        &entries[0].event,
        AuditEvent::PairedDirect { device, confirmed_by_user: true, our_mac, their_mac, .. }
            if *device == id(1) && *our_mac == [1; 32] && *their_mac == [2; 32]
    ));
    assert_eq!(store.verify_audit().expect("verify").entries, 1);
}

#[test]
fn direct_pairing_refuses_a_key_of_another_device_and_writes_nothing() {
    let (_d, store) = open();
    let mut p = direct(1, at(1000));
    p.public_key = kp(2).public();
    assert!(matches!(
        store.pair_direct(&p),
        Err(StoreError::KeyMismatch(_))
    ));
    assert_eq!(store.device(&id(1)).expect("read"), None);
    assert_eq!(store.audit_len().expect("len"), 0);
}

#[test]
fn direct_pairing_ends_the_pairing_in_flight_and_clears_a_tombstone() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    store.unpair(&id(1), at(2)).expect("unpair");
    store
        .put_pairing(&PairingRecord {
            peer: id(1),
            tx_id: vouchnet_protocol::TxId([1; 16]),
            started_at: at(3),
            expires_at: at(600_003),
            state: SecretBytes::new(vec![7; 40]),
        })
        .expect("put pairing");
    store.pair_direct(&direct(1, at(4))).expect("pair again");
    assert_eq!(store.pairing(&id(1)).expect("read"), None);
    assert_eq!(store.tombstone(&id(1)).expect("read"), None);
}

#[test]
fn trust_change_is_audited_and_blocking_tombstones_the_device() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    assert_eq!(
        store
            .set_trust(&id(1), TrustLevel::Blocked, at(2))
            .expect("block"),
        TrustLevel::Trusted
    );
    let t = store.tombstone(&id(1)).expect("read").expect("tombstoned");
    assert_eq!(t.reason, TombstoneReason::Blocked);
    assert_eq!(t.at, at(2));
    assert_eq!(
        store
            .device(&id(1))
            .expect("read")
            .expect("kept")
            .trust_level,
        TrustLevel::Blocked
    );
    assert_eq!(
        events(&store)[1],
        AuditEvent::TrustChanged {
            device: id(1),
            from: TrustLevel::Trusted,
            to: TrustLevel::Blocked
        }
    );
    // Unblocking lifts the block's tombstone.
    assert_eq!(
        store
            .set_trust(&id(1), TrustLevel::Unreliable, at(3))
            .expect("unblock"),
        TrustLevel::Blocked
    );
    assert_eq!(store.tombstone(&id(1)).expect("read"), None);
    // Setting the same level again writes nothing.
    assert_eq!(
        store
            .set_trust(&id(1), TrustLevel::Unreliable, at(4))
            .expect("same"),
        TrustLevel::Unreliable
    );
    assert_eq!(store.audit_len().expect("len"), 3);
}

#[test]
fn a_blocked_device_is_unblocked_through_trust_not_by_clearing_its_tombstone() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    store
        .set_trust(&id(1), TrustLevel::Blocked, at(2))
        .expect("block");
    assert!(matches!(
        store.clear_tombstone(&id(1), at(3)),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(store.tombstone(&id(1)).expect("read").is_some());
}

#[test]
fn set_trust_of_an_unknown_device_is_not_found() {
    let (_d, store) = open();
    assert!(matches!(
        store.set_trust(&id(9), TrustLevel::Blocked, at(1)),
        Err(StoreError::NotFound(RecordKind::Device))
    ));
    assert_eq!(store.tombstone(&id(9)).expect("read"), None);
}

#[test]
fn connection_failures_never_change_trust() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    for i in 0..20 {
        store
            .record_connection(&id(1), at(10 + i), false)
            .expect("failure");
    }
    let r = store.reliability(&id(1)).expect("read").expect("tracked");
    assert_eq!(r.failures, 20);
    assert_eq!(r.consecutive_failures, 20);
    assert_eq!(r.last_failure, Some(at(29)));
    assert_eq!(
        store
            .device(&id(1))
            .expect("read")
            .expect("kept")
            .trust_level,
        TrustLevel::Trusted
    );
    let r = store
        .record_connection(&id(1), at(30), true)
        .expect("success");
    assert_eq!(
        (r.successes, r.consecutive_failures, r.last_success),
        (1, 0, Some(at(30)))
    );
    assert_eq!(
        store.audit_len().expect("len"),
        1,
        "reliability is not a trust decision"
    );
}

#[test]
fn last_seen_only_moves_forward() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(5))).expect("pair");
    store.touch_last_seen(&id(1), at(50)).expect("touch");
    store.touch_last_seen(&id(1), at(40)).expect("older touch");
    assert_eq!(
        store.device(&id(1)).expect("read").expect("kept").last_seen,
        Some(at(50))
    );
}

#[test]
fn a_device_never_paired_can_be_blocked_and_unblocked() {
    let (_d, store) = open();
    assert!(store.block_unpaired(&id(1), at(1)).expect("block"));
    let block = Tombstone {
        device_id: id(1),
        reason: TombstoneReason::Blocked,
        at: at(1),
        blocked_over: None,
    };
    assert_eq!(store.tombstone(&id(1)).expect("read"), Some(block.clone()));
    assert!(store.is_blocked_unpaired(&id(1)).expect("read"));
    // Blocking again writes nothing.
    assert!(!store.block_unpaired(&id(1), at(2)).expect("block"));
    // A direct pairing cannot slip past the block.
    let refused = store.pair_direct(&direct(1, at(3)));
    assert!(
        matches!(refused, Err(StoreError::InvalidTransition { .. })),
        "{refused:?}"
    );
    assert_eq!(store.device(&id(1)).expect("read"), None);
    assert_eq!(
        store.unblock_unpaired(&id(1), at(4)).expect("unblock"),
        block
    );
    assert_eq!(store.tombstone(&id(1)).expect("read"), None);
    assert!(!store.is_blocked_unpaired(&id(1)).expect("read"));
    assert!(matches!(
        store.unblock_unpaired(&id(1), at(5)),
        Err(StoreError::NotFound(RecordKind::Tombstone))
    ));
    assert_eq!(
        events(&store),
        vec![
            AuditEvent::Blocked { device: id(1) },
            AuditEvent::Unblocked { device: id(1) },
        ]
    );
    assert_eq!(store.verify_audit().expect("verifies").entries, 2);
    store
        .pair_direct(&direct(1, at(6)))
        .expect("pairs once unblocked");
}

#[test]
fn blocking_a_removed_device_keeps_its_tombstone_for_when_the_block_is_lifted() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    assert!(matches!(
        store.block_unpaired(&id(1), at(2)),
        Err(StoreError::InvalidTransition { .. })
    ));
    store.unpair(&id(1), at(3)).expect("unpair");
    assert!(store.block_unpaired(&id(1), at(4)).expect("block"));
    assert_eq!(
        store
            .tombstone(&id(1))
            .expect("read")
            .map(|t| (t.reason, t.blocked_over)),
        Some((TombstoneReason::Blocked, Some(TombstoneReason::Removed)))
    );
    store.unblock_unpaired(&id(1), at(5)).expect("unblock");
    // Still removed: no vouch brings it back, only a direct pairing.
    assert_eq!(
        store.tombstone(&id(1)).expect("read"),
        Some(Tombstone {
            device_id: id(1),
            reason: TombstoneReason::Removed,
            at: at(5),
            blocked_over: None,
        })
    );
}

#[test]
fn unpairing_tombstones_the_device_and_keeps_its_history() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    store.record_connection(&id(1), at(2), true).expect("conn");
    let before = store.audit_entries(0, 10).expect("audit");
    store.unpair(&id(1), at(3)).expect("unpair");
    assert_eq!(store.device(&id(1)).expect("read"), None);
    assert_eq!(store.reliability(&id(1)).expect("read"), None);
    assert_eq!(
        store.tombstone(&id(1)).expect("read"),
        Some(Tombstone {
            device_id: id(1),
            reason: TombstoneReason::Removed,
            at: at(3),
            blocked_over: None,
        })
    );
    let after = store.audit_entries(0, 10).expect("audit");
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "history is never rewritten"
    );
    assert_eq!(
        after.last().expect("entry").event,
        AuditEvent::Unpaired { device: id(1) }
    );
    assert!(matches!(
        store.unpair(&id(1), at(4)),
        Err(StoreError::NotFound(RecordKind::Device))
    ));
    store.verify_audit().expect("chain intact");
}

#[test]
fn revoking_tombstones_with_the_audited_reason() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    store
        .revoke(&id(1), RevokeReason::KeyCompromised, at(2))
        .expect("revoke");
    assert_eq!(
        store.tombstone(&id(1)).expect("read").expect("tomb").reason,
        TombstoneReason::Revoked
    );
    assert_eq!(
        events(&store)[1],
        AuditEvent::Revoked {
            device: id(1),
            reason: RevokeReason::KeyCompromised
        }
    );
    store
        .clear_tombstone(&id(1), at(3))
        .expect("user clears it");
    assert_eq!(store.tombstone(&id(1)).expect("read"), None);
    assert_eq!(
        events(&store)[2],
        AuditEvent::TombstoneCleared { device: id(1) }
    );
}

#[test]
fn rekey_replaces_the_session_key_and_audits_without_it() {
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair");
    store
        .set_session_key(&id(1), &key(0x77), at(2))
        .expect("rekey");
    assert_eq!(
        store
            .device(&id(1))
            .expect("read")
            .expect("kept")
            .session_key,
        key(0x77)
    );
    assert_eq!(events(&store)[1], AuditEvent::Rekeyed { device: id(1) });
}

/// The key a rekey replaced is kept on disk (it survives a reopen) until a key proof
/// settles which key the device holds: the new one (forgotten) or the old one (current again).
#[test]
fn a_rekey_keeps_the_previous_key_on_disk_until_a_key_proof_settles_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = direct(1, at(1));
    let original = first.session_key.clone();
    {
        let store = Store::open(dir.path()).expect("open");
        store.pair_direct(&first).expect("pair");
        store
            .switch_session_key(&id(1), &key(0x77), true, at(2))
            .expect("rekey");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let rec = store.device(&id(1)).expect("read").expect("kept");
    assert_eq!(rec.session_key, key(0x77));
    assert_eq!(
        rec.previous_key,
        Some(PreviousKey {
            key: original.clone(),
            initiated: true
        })
    );
    assert_eq!(events(&store)[1], AuditEvent::Rekeyed { device: id(1) });

    // The device proved the new key.
    assert!(store.forget_previous_key(&id(1)).expect("confirm"));
    assert!(!store.forget_previous_key(&id(1)).expect("nothing left"));
    let rec = store.device(&id(1)).expect("read").expect("kept");
    assert_eq!((rec.session_key, rec.previous_key), (key(0x77), None));

    // A second rekey that the device never took up: the previous key becomes current again.
    store
        .switch_session_key(&id(1), &key(0x88), false, at(3))
        .expect("rekey");
    store
        .set_session_key(&id(1), &key(0x77), at(4))
        .expect("revert");
    let rec = store.device(&id(1)).expect("read").expect("kept");
    assert_eq!((rec.session_key, rec.previous_key), (key(0x77), None));
    assert!(matches!(
        store.switch_session_key(&id(9), &key(0x99), true, at(5)),
        Err(StoreError::NotFound(RecordKind::Device))
    ));
}

/// A snapshot the engine began and never finished (a crash while it was written) does not
/// stop the database from opening: the unfinished file is removed, finished snapshots are
/// kept, and every write is still there. Without this, sled 0.34 reports corruption and the
/// node can never start again.
#[test]
fn an_unfinished_engine_snapshot_left_by_a_crash_does_not_stop_the_store_opening() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let store = Store::open(dir.path()).expect("open");
        store.pair_direct(&direct(1, at(1))).expect("pair");
    }
    let db = dir.path().join(DB_DIR_NAME);
    let finished: Vec<_> = std::fs::read_dir(&db)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().starts_with("snap."))
        .collect();
    // Cut short: no length, no checksum, and a newer position than any finished snapshot.
    let unfinished = db.join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, [0xab; 100]).expect("write");

    let store = Store::open(dir.path()).expect("opens after the crash");
    assert!(store.device(&id(1)).expect("read").is_some());
    assert!(!unfinished.exists());
    for name in finished {
        assert!(db.join(&name).exists(), "{name:?} kept");
    }
}

// ------------------------------------------------------------------------ receiving vouches

/// Device 0 is "me" (the target), device 1 a directly paired voucher, device 5 the vouchee.
fn target_store() -> (tempfile::TempDir, Store) {
    let (d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair voucher");
    (d, store)
}

#[test]
fn accepting_a_vouch_writes_device_nonce_decision_and_audit_together() {
    let (_d, store) = target_store();
    let a = accept(1, 0, 5, sid(1), nonce(1), at(100));
    let AcceptOutcome::Accepted(rec) = store.accept_vouch(&a).expect("accept") else {
        panic!("expected acceptance");
    };
    assert_eq!(rec.pairing_type, PairingType::Proxied);
    assert_eq!(rec.trust_level, TrustLevel::Trusted);
    assert_eq!(rec.vouched_by, Some(id(1)));
    assert_eq!(rec.proof, Some(DeviceProof::Vouch(a.proof.clone())));
    assert_eq!(store.device(&id(5)).expect("read"), Some(*rec));
    assert!(store.nonce_seen(&nonce(1)).expect("read"));
    let d = store
        .decision(&sid(1), &id(5))
        .expect("read")
        .expect("decided");
    assert_eq!(
        d.decision,
        Decision::Accepted {
            how: AcceptedHow::Automatic
        }
    );
    assert_eq!(d.response, Some(a.proof.response.clone()));
    assert!(
        matches!(events(&store)[1], AuditEvent::VouchAccepted { session, .. } if session == sid(1))
    );
    assert_eq!(store.verify_audit().expect("verify").entries, 2);
}

#[test]
fn a_second_accept_for_the_same_session_returns_the_first_result_and_writes_nothing() {
    let (_d, store) = target_store();
    let a = accept(1, 0, 5, sid(1), nonce(1), at(100));
    store.accept_vouch(&a).expect("first");
    let len = store.audit_len().expect("len");
    let first = store
        .decision(&sid(1), &id(5))
        .expect("read")
        .expect("decided");
    // A re-delivery of the same session, re-signed with a fresh nonce.
    let again = accept(1, 0, 5, sid(1), nonce(2), at(200));
    assert_eq!(
        store.accept_vouch(&again).expect("second"),
        AcceptOutcome::AlreadyDecided(Box::new(first))
    );
    assert_eq!(store.audit_len().expect("len"), len);
    assert!(
        !store.nonce_seen(&nonce(2)).expect("read"),
        "nothing written"
    );
}

#[test]
fn two_vouchers_vouching_the_same_vouchee_concurrently_leave_exactly_one_device() {
    let (_d, store) = target_store();
    store
        .pair_direct(&direct(2, at(2)))
        .expect("pair second voucher");
    let a1 = accept(1, 0, 5, sid(1), nonce(1), at(100));
    let a2 = accept(2, 0, 5, sid(2), nonce(2), at(100));
    let (s1, s2) = (store.clone(), store.clone());
    let t1 = std::thread::spawn(move || s1.accept_vouch(&a1).expect("accept 1"));
    let t2 = std::thread::spawn(move || s2.accept_vouch(&a2).expect("accept 2"));
    let outcomes = [t1.join().expect("thread 1"), t2.join().expect("thread 2")];
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, AcceptOutcome::Accepted(_)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == AcceptOutcome::Refused(VouchRejection::AlreadyPaired))
        .count();
    assert_eq!((accepted, refused), (1, 1));
    assert_eq!(
        store
            .devices()
            .expect("list")
            .iter()
            .filter(|d| d.device_id == id(5))
            .count(),
        1
    );
    let accepts = events(&store)
        .iter()
        .filter(|e| matches!(e, AuditEvent::VouchAccepted { .. }))
        .count();
    assert_eq!(accepts, 1);
}

#[test]
fn accept_refuses_at_commit_what_changed_since_the_check() {
    let (_d, store) = target_store();
    store.pair_direct(&direct(3, at(1))).expect("pair 3");
    store.pair_direct(&direct(6, at(1))).expect("pair 6");
    store
        .set_trust(&id(3), TrustLevel::Unreliable, at(2))
        .expect("demote");
    let len = store.audit_len().expect("len");
    let cases = [
        (
            accept(4, 0, 5, sid(1), nonce(1), at(10)),
            VouchRejection::VoucherNotPaired,
        ),
        (
            accept(3, 0, 5, sid(2), nonce(2), at(10)),
            VouchRejection::VoucherNotTrusted,
        ),
        (
            accept(1, 0, 6, sid(3), nonce(3), at(10)),
            VouchRejection::AlreadyPaired,
        ),
        (
            accept(1, 0, 1, sid(4), nonce(4), at(10)),
            VouchRejection::VoucheeIsVoucher,
        ),
    ];
    for (a, reason) in cases {
        assert_eq!(
            store.accept_vouch(&a).expect("outcome"),
            AcceptOutcome::Refused(reason)
        );
    }
    store.remember_nonce(&nonce(9), at(1000)).expect("seen");
    assert_eq!(
        store
            .accept_vouch(&accept(1, 0, 5, sid(5), nonce(9), at(10)))
            .expect("outcome"),
        AcceptOutcome::Refused(VouchRejection::Replay)
    );
    let mut wrong_key = accept(1, 0, 5, sid(6), nonce(6), at(10));
    wrong_key.vouchee_key = kp(7).public();
    assert_eq!(
        store.accept_vouch(&wrong_key).expect("outcome"),
        AcceptOutcome::Refused(VouchRejection::VoucheeKeyMismatch)
    );
    assert_eq!(
        store.audit_len().expect("len"),
        len,
        "refusals write nothing"
    );
    assert_eq!(store.device(&id(5)).expect("read"), None);
}

#[test]
fn a_proxied_voucher_cannot_vouch_multi_hop() {
    let (_d, store) = target_store();
    store
        .accept_vouch(&accept(1, 0, 5, sid(1), nonce(1), at(10)))
        .expect("5 proxied");
    assert_eq!(
        store
            .accept_vouch(&accept(5, 0, 6, sid(2), nonce(2), at(20)))
            .expect("outcome"),
        AcceptOutcome::Refused(VouchRejection::VoucherNotDirect)
    );
}

#[test]
fn a_tombstoned_vouchee_is_never_brought_back_by_a_vouch() {
    let (_d, store) = target_store();
    store
        .accept_vouch(&accept(1, 0, 5, sid(1), nonce(1), at(10)))
        .expect("accept");
    store.unpair(&id(5), at(20)).expect("user removes it");
    assert_eq!(
        store
            .accept_vouch(&accept(1, 0, 5, sid(2), nonce(2), at(30)))
            .expect("outcome"),
        AcceptOutcome::Refused(VouchRejection::VoucheeBlocked)
    );
    assert_eq!(store.device(&id(5)).expect("read"), None);
}

#[test]
fn a_forged_proof_is_refused_before_it_reaches_the_audit_trail() {
    let (_d, store) = target_store();
    let mut a = accept(1, 0, 5, sid(1), nonce(1), at(10));
    // The certificate claims voucher 1 but is signed by device 3.
    a.proof.vouch = vouch(3, sid(1), 5, 0, nonce(1), at(10));
    let body = a.proof.vouch.body().to_vec();
    let mut cert: vouchnet_protocol::messages::VouchCertificate =
        vouchnet_protocol::codec::decode(&body, &Default::default()).expect("cert");
    cert.voucher = id(1);
    a.proof.vouch = vouchnet_protocol::signing::Signed::sign(&kp(3), &cert);
    assert!(matches!(
        store.accept_vouch(&a),
        Err(StoreError::BadEvidence(EvidenceError::Signature {
            kind: EvidenceKind::VouchCertificate,
            ..
        }))
    ));
    assert_eq!(store.device(&id(5)).expect("read"), None);
    assert!(!store.nonce_seen(&nonce(1)).expect("read"));
}

#[test]
fn rejecting_records_nonce_decision_and_audit_and_is_idempotent() {
    let (_d, store) = target_store();
    let r = reject(
        1,
        0,
        5,
        sid(1),
        nonce(1),
        VouchRejection::UserRejected,
        at(10),
    );
    assert_eq!(
        store.reject_vouch(&r).expect("reject"),
        RejectOutcome::Recorded
    );
    assert!(store.nonce_seen(&nonce(1)).expect("read"));
    let d = store
        .decision(&sid(1), &id(5))
        .expect("read")
        .expect("decided");
    assert_eq!(
        d.decision,
        Decision::Rejected {
            reason: VouchRejection::UserRejected
        }
    );
    assert!(matches!(
        &events(&store)[1],
        AuditEvent::VouchRejected {
            reason: VouchRejection::UserRejected,
            ..
        }
    ));
    // The same session delivered again gets the same answer, even as an acceptance attempt.
    assert_eq!(
        store.reject_vouch(&r).expect("again"),
        RejectOutcome::AlreadyDecided(Box::new(d.clone()))
    );
    assert_eq!(
        store
            .accept_vouch(&accept(1, 0, 5, sid(1), nonce(3), at(20)))
            .expect("accept"),
        AcceptOutcome::AlreadyDecided(Box::new(d))
    );
    store.verify_audit().expect("verify");
}

#[test]
fn a_transient_rejection_is_not_remembered_as_the_decision() {
    let (_d, store) = target_store();
    let mut r = reject(
        1,
        0,
        5,
        sid(1),
        nonce(1),
        VouchRejection::RateLimited,
        at(10),
    );
    r.record_decision = false;
    assert_eq!(
        store.reject_vouch(&r).expect("reject"),
        RejectOutcome::Recorded
    );
    assert_eq!(store.decision(&sid(1), &id(5)).expect("read"), None);
    assert!(matches!(
        store
            .accept_vouch(&accept(1, 0, 5, sid(1), nonce(2), at(20)))
            .expect("later"),
        AcceptOutcome::Accepted(_)
    ));
}

fn prompt(voucher: u8, session: SessionId, n: VouchNonce, deadline: Timestamp) -> PromptRecord {
    let v = vouch(voucher, session, 5, 0, n, at(100));
    PromptRecord {
        session_id: session,
        voucher: id(voucher),
        vouchee: kp(5).device_id(),
        id: session.to_hex(),
        vouch: v,
        proxied_key: key(9),
        deadline,
        nonces: vec![PromptNonce {
            nonce: n,
            expires_at: at(400_000),
        }],
    }
}

#[test]
fn a_prompt_is_kept_until_removed_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let first = prompt(1, sid(1), nonce(1), at(86_400_000));
    // The same vouchee and session from another voucher is another prompt.
    let other = prompt(2, sid(1), nonce(2), at(86_400_000));
    store.put_prompt(&first).expect("put");
    store.put_prompt(&other).expect("put");
    // A redelivery replaces the prompt: the newer vouch, both nonces.
    let mut again = prompt(1, sid(1), nonce(3), at(86_400_000));
    again.nonces.insert(0, first.nonces[0]);
    store.put_prompt(&again).expect("replace");
    drop(store);

    let store = Store::open(dir.path()).expect("reopen");
    let mut stored = store.prompts().expect("read");
    stored.sort_by_key(|p| p.voucher.to_bytes());
    let mut expected = vec![again.clone(), other.clone()];
    expected.sort_by_key(|p| p.voucher.to_bytes());
    assert_eq!(stored, expected);
    // The record holds a key: its Debug form does not show it.
    assert!(!format!("{:?}", stored[0]).contains(&format!("{:?}", [9u8; 32])));

    let vouchee = kp(5).device_id();
    assert!(store
        .remove_prompt(&sid(1), &vouchee, &id(1))
        .expect("remove"));
    assert!(!store
        .remove_prompt(&sid(1), &vouchee, &id(1))
        .expect("again"));
    assert_eq!(store.prompts().expect("read"), vec![other]);
}

fn message(from: u8, text: &str, received: u64) -> InboxRecord {
    InboxRecord {
        from: id(from),
        text: text.to_owned(),
        received_at: at(received),
    }
}

fn cap(n: u64) -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(n).expect("non-zero capacity")
}

#[test]
fn the_inbox_keeps_messages_in_order_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.inbox().expect("empty"), vec![]);
    let sent = [
        message(1, "one", 10),
        message(2, "two", 11),
        message(1, "three", 12),
    ];
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(store.push_inbox(m, cap(3)).expect("push"), i as u64);
    }
    drop(store);

    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.inbox().expect("read"), sent.to_vec());
    // Numbering goes on after the restart.
    assert_eq!(
        store
            .push_inbox(&message(2, "four", 13), cap(4))
            .expect("push"),
        3
    );
}

#[test]
fn the_inbox_drops_its_oldest_message_only_beyond_its_capacity() {
    let (_d, store) = open();
    for i in 0..3 {
        store
            .push_inbox(&message(1, &format!("m{i}"), i), cap(3))
            .expect("push");
    }
    // Exactly at capacity: nothing dropped.
    let texts = |s: &Store| -> Vec<String> {
        s.inbox()
            .expect("read")
            .into_iter()
            .map(|m| m.text)
            .collect()
    };
    assert_eq!(texts(&store), ["m0", "m1", "m2"]);
    // One beyond: the oldest goes, in the same transaction.
    store
        .push_inbox(&message(1, "m3", 3), cap(3))
        .expect("push");
    assert_eq!(texts(&store), ["m1", "m2", "m3"]);
    // A smaller capacity drops as many as needed at once.
    store
        .push_inbox(&message(1, "m4", 4), cap(1))
        .expect("push");
    assert_eq!(texts(&store), ["m4"]);
}

#[test]
fn clearing_the_inbox_deletes_every_message_and_numbering_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.clear_inbox().expect("clear empty"), 0);
    for i in 0..5 {
        store
            .push_inbox(&message(1, "old", i), cap(3))
            .expect("push");
    }
    // Only the 3 kept are deleted.
    assert_eq!(store.clear_inbox().expect("clear"), 3);
    assert_eq!(store.inbox().expect("read"), vec![]);
    assert_eq!(store.clear_inbox().expect("clear again"), 0);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.inbox().expect("read"), vec![]);
    assert_eq!(
        store
            .push_inbox(&message(2, "new", 9), cap(3))
            .expect("push"),
        5
    );
    assert_eq!(store.inbox().expect("read"), vec![message(2, "new", 9)]);
}

#[test]
fn damaged_inbox_bounds_are_a_typed_error_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .push_inbox(&message(1, "kept", 1), cap(8))
        .expect("push");
    drop(store);
    {
        let db = raw_open(&dir.path().join(DB_DIR_NAME));
        db.open_tree(TREE_META)
            .expect("meta")
            .insert(META_INBOX_BOUNDS, &[0u8; 5][..])
            .expect("damage");
        db.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen");
    match store.push_inbox(&message(1, "refused", 2), cap(8)) {
        Err(StoreError::Corrupt { detail }) => {
            assert_eq!(detail, "inbox bounds does not decode: not two ordered u64")
        }
        other => panic!("expected a corrupt inbox bounds error, got {other:?}"),
    }
    assert_eq!(store.inbox().expect("read"), vec![message(1, "kept", 1)]);
}

#[test]
fn the_vouchee_adds_a_target_that_accepted_it() {
    // Device 5 is "me" (the vouchee), 1 my voucher, 0 a target that accepted me.
    let (_d, store) = open();
    store.pair_direct(&direct(1, at(1))).expect("pair voucher");
    let v = vouch(1, sid(1), 5, 0, nonce(1), at(10));
    let acceptance = response(
        0,
        &v,
        Decision::Accepted {
            how: AcceptedHow::UserConfirmed,
        },
        at(11),
    );
    let p = ProxiedDevice {
        session_id: sid(1),
        voucher: id(1),
        device_id: id(0),
        public_key: kp(0).public(),
        name: name("device-0"),
        acceptance: acceptance.clone(),
        session_key: key(3),
        at: at(12),
    };
    let ProxiedOutcome::Added(rec) = store.add_proxied_device(&p).expect("add") else {
        panic!("expected add");
    };
    assert_eq!(rec.proof, Some(DeviceProof::Acceptance(acceptance)));
    assert_eq!(rec.vouched_by, Some(id(1)));
    assert!(matches!(
        store.add_proxied_device(&p).expect("again"),
        ProxiedOutcome::AlreadyPaired(_)
    ));
    assert_eq!(store.audit_len().expect("len"), 2);
    store.verify_audit().expect("verify");
}

// ------------------------------------------------------------------------ queue

/// A voucher's store: me = 0, targets 1 and 2, vouchee 5, session 1 recorded.
fn voucher_store() -> (tempfile::TempDir, Store) {
    let (d, store) = open();
    store
        .record_vouched(&session(sid(1), 5, &[1, 2], at(0)), at(0))
        .expect("session");
    (d, store)
}

#[test]
fn enqueue_sets_the_target_queued_with_the_entry_and_is_idempotent() {
    let (_d, store) = voucher_store();
    let e = queue_entry(sid(1), id(1), QueueKind::Vouch, at(100));
    assert_eq!(store.enqueue(&e).expect("enqueue"), Enqueued::New);
    assert_eq!(
        store.session(&sid(1)).expect("read").expect("s").targets[&id(1)],
        VouchStatus::Queued
    );
    assert_eq!(
        store.queue_entry(vref(sid(1), 1)).expect("read"),
        Some(e.clone())
    );
    assert_eq!(store.depth().expect("depth"), 1);
    let mut later = e.clone();
    later.next_attempt_at = at(999);
    assert_eq!(
        store.enqueue(&later).expect("again"),
        Enqueued::AlreadyQueued
    );
    assert_eq!(
        store.queue_entry(vref(sid(1), 1)).expect("read"),
        Some(e),
        "kept as it was"
    );
    assert_eq!(store.depth().expect("depth"), 1);
}

#[test]
fn enqueue_needs_a_session_target_that_is_not_final() {
    let (_d, store) = voucher_store();
    assert!(matches!(
        store.enqueue(&queue_entry(sid(9), id(1), QueueKind::Vouch, at(1))),
        Err(StoreError::NotFound(RecordKind::Session))
    ));
    assert!(matches!(
        store.enqueue(&queue_entry(sid(1), id(3), QueueKind::Vouch, at(1))),
        Err(StoreError::NotFound(RecordKind::SessionTarget))
    ));
    assert!(matches!(
        store.enqueue(&queue_entry(sid(1), id(1), QueueKind::NotifyVouchee, at(1))),
        Err(StoreError::InvalidInput { .. })
    ));
    let mut s = store.session(&sid(1)).expect("read").expect("s");
    s.targets.insert(id(2), VouchStatus::Expired);
    store.put_session(&s).expect("put");
    assert!(matches!(
        store.enqueue(&queue_entry(sid(1), id(2), QueueKind::Vouch, at(1))),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert_eq!(store.depth().expect("depth"), 0);
}

#[test]
fn due_reads_only_entries_whose_time_has_come_in_time_order() {
    let (_d, store) = voucher_store();
    let mut e1 = queue_entry(sid(1), id(1), QueueKind::Vouch, at(0));
    e1.next_attempt_at = at(500);
    let mut e2 = queue_entry(sid(1), id(2), QueueKind::Vouch, at(0));
    e2.next_attempt_at = at(300);
    store
        .enqueue_batch(&[e1.clone(), e2.clone()])
        .expect("enqueue");
    assert_eq!(store.due(at(299), 10).expect("due"), vec![]);
    assert_eq!(store.due(at(300), 10).expect("due"), vec![e2.clone()]);
    assert_eq!(store.due(at(499), 10).expect("due"), vec![e2.clone()]);
    assert_eq!(
        store.due(at(500), 10).expect("due"),
        vec![e2.clone(), e1.clone()]
    );
    assert_eq!(store.due(at(500), 1).expect("due"), vec![e2]);
    assert_eq!(store.next_due().expect("next"), Some(at(300)));
}

#[test]
fn delivering_moves_the_entry_to_waiting_in_one_step_and_only_once() {
    let (_d, store) = voucher_store();
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    let w = waiting(nonce(1), at(30_000));
    let e = store.mark_delivering(vref(sid(1), 1), &w).expect("deliver");
    assert_eq!(e.recipient, id(1));
    assert_eq!(store.queue_entry(vref(sid(1), 1)).expect("read"), None);
    assert_eq!(
        store.session(&sid(1)).expect("read").expect("s").targets[&id(1)],
        w
    );
    assert_eq!(store.depth().expect("depth"), 0);
    assert!(matches!(
        store.mark_delivering(vref(sid(1), 1), &w),
        Err(StoreError::NotFound(RecordKind::QueueEntry))
    ));
    assert!(matches!(
        store.mark_delivering(vref(sid(1), 2), &VouchStatus::Queued),
        Err(StoreError::InvalidInput { .. })
    ));
}

#[test]
fn delivering_a_target_that_is_no_longer_queued_changes_nothing() {
    let (_d, store) = voucher_store();
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    let mut s = store.session(&sid(1)).expect("read").expect("s");
    s.targets.insert(id(1), VouchStatus::Selected);
    store.put_session(&s).expect("user re-selects");
    assert!(matches!(
        store.mark_delivering(vref(sid(1), 1), &waiting(nonce(1), at(9))),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(store.queue_entry(vref(sid(1), 1)).expect("read").is_some());
}

#[test]
fn notifying_the_vouchee_records_who_it_was_told_of() {
    let (_d, store) = voucher_store();
    let r = QueueRef {
        session_id: sid(1),
        recipient: id(5),
        kind: QueueKind::NotifyVouchee,
    };
    store
        .enqueue(&queue_entry(sid(1), id(5), QueueKind::NotifyVouchee, at(0)))
        .expect("enqueue");
    store.mark_notified(r, &[id(1), id(1)]).expect("notified");
    assert_eq!(
        store
            .session(&sid(1))
            .expect("read")
            .expect("s")
            .vouchee_notified,
        vec![id(1)]
    );
    assert_eq!(store.queue_entry(r).expect("read"), None);
}

#[test]
fn an_offline_poll_reschedules_without_counting_an_attempt() {
    let (_d, store) = voucher_store();
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    let e = store
        .reschedule(vref(sid(1), 1), at(10_000))
        .expect("reschedule");
    assert_eq!((e.attempts, e.next_attempt_at), (0, at(10_000)));
    assert_eq!(store.due(at(9_999), 10).expect("due"), vec![]);
    assert_eq!(store.due(at(10_000), 10).expect("due"), vec![e]);
    assert_eq!(store.depth().expect("depth"), 1);
}

#[test]
fn failed_deliveries_back_off_and_give_up_at_the_maximum_retries() {
    let (_d, store) = voucher_store();
    store
        .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))
        .expect("enqueue");
    let policy = QueuePolicy {
        max_retries: 3,
        ..QueuePolicy::default()
    };
    let r = vref(sid(1), 1);
    assert_eq!(
        store.delivery_failed(r, at(1000), &policy).expect("1"),
        Retry::At(at(11_000))
    );
    assert_eq!(store.queue_entry(r).expect("read").expect("e").attempts, 1);
    assert_eq!(
        store.delivery_failed(r, at(11_000), &policy).expect("2"),
        Retry::At(at(31_000))
    );
    assert_eq!(
        store.delivery_failed(r, at(31_000), &policy).expect("3"),
        Retry::Dropped(DropReason::MaxRetries)
    );
    assert_eq!(store.queue_entry(r).expect("read"), None);
    let s = store.session(&sid(1)).expect("read").expect("s");
    assert_eq!(s.targets[&id(1)], VouchStatus::Expired);
    assert_eq!(
        s.state,
        vouchnet_protocol::model::SessionState::InProgress,
        "target 2 is still open"
    );
    assert_eq!(
        events(&store).last().expect("entry"),
        &AuditEvent::VouchExpired {
            session: sid(1),
            target: id(1)
        }
    );
    assert_eq!(store.depth().expect("depth"), 0);
}

#[test]
fn a_failure_after_expires_at_drops_the_entry_as_expired() {
    let (_d, store) = voucher_store();
    let e = queue_entry(sid(1), id(1), QueueKind::Vouch, at(0));
    store.enqueue(&e).expect("enqueue");
    assert_eq!(
        store
            .delivery_failed(vref(sid(1), 1), e.expires_at, &QueuePolicy::default())
            .expect("fail"),
        Retry::Dropped(DropReason::Expired)
    );
    assert_eq!(store.queue_entry(vref(sid(1), 1)).expect("read"), None);
}

#[test]
fn a_session_is_vouched_once() {
    let (_d, store) = voucher_store();
    assert!(matches!(
        store.record_vouched(&session(sid(1), 5, &[1], at(9)), at(9)),
        Err(StoreError::AlreadyExists(RecordKind::Session))
    ));
    assert_eq!(store.audit_len().expect("len"), 1);
}

#[test]
fn removing_a_session_removes_its_queue_entries() {
    let (_d, store) = voucher_store();
    store
        .enqueue_batch(&[
            queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)),
            queue_entry(sid(1), id(2), QueueKind::Vouch, at(0)),
            queue_entry(sid(1), id(5), QueueKind::NotifyVouchee, at(0)),
        ])
        .expect("enqueue");
    assert_eq!(store.queued_for_session(&sid(1)).expect("list").len(), 3);
    store.remove_session(&sid(1)).expect("remove");
    assert_eq!(store.session(&sid(1)).expect("read"), None);
    assert_eq!(store.queue_entries().expect("all"), vec![]);
    assert_eq!(store.depth().expect("depth"), 0);
}

#[test]
fn a_target_answer_is_stored_with_its_signed_response() {
    let (_d, store) = voucher_store();
    let v = vouch(0, sid(1), 5, 1, nonce(1), at(10));
    let resp = response(
        1,
        &v,
        Decision::Accepted {
            how: AcceptedHow::Automatic,
        },
        at(11),
    );
    let mut s = store.session(&sid(1)).expect("read").expect("s");
    s.targets.insert(
        id(1),
        VouchStatus::Accepted {
            response: resp.clone(),
        },
    );
    store
        .record_answer(&s, &id(1), &resp, at(12))
        .expect("answer");
    assert_eq!(store.session(&sid(1)).expect("read"), Some(s.clone()));
    assert!(
        matches!(events(&store)[1], AuditEvent::TargetAnswered { target, .. } if target == id(1))
    );
    // An answer claimed for another target does not verify as that target's.
    assert!(matches!(
        store.record_answer(&s, &id(2), &resp, at(13)),
        Err(StoreError::BadEvidence(EvidenceError::Mismatch {
            field: "responder",
            ..
        }))
    ));
    store.verify_audit().expect("verify");
}

// ------------------------------------------------------------------------ group commit

#[test]
fn group_commit_applies_every_operation_with_one_flush() {
    let (_d, store) = voucher_store();
    let before = store.metrics().flushes;
    let entries = [
        queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)),
        queue_entry(sid(1), id(2), QueueKind::Vouch, at(0)),
    ];
    store
        .write(|tx| {
            for e in &entries {
                tx.enqueue(e)?;
            }
            tx.record_event(at(1), AuditEvent::KeyProofFailed { device: id(1) })?;
            Ok(())
        })
        .expect("batch");
    assert_eq!(store.metrics().flushes - before, 1);
    assert_eq!(store.depth().expect("depth"), 2);
}

#[test]
fn group_commit_is_all_or_nothing() {
    let (_d, store) = voucher_store();
    let len = store.audit_len().expect("len");
    let result = store.write(|tx| {
        tx.enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(0)))?;
        tx.record_event(at(1), AuditEvent::KeyProofFailed { device: id(1) })?;
        tx.enqueue(&queue_entry(sid(9), id(1), QueueKind::Vouch, at(0)))?;
        Ok(())
    });
    assert!(matches!(
        result,
        Err(StoreError::NotFound(RecordKind::Session))
    ));
    assert_eq!(store.depth().expect("depth"), 0);
    assert_eq!(store.queue_entries().expect("all"), vec![]);
    assert_eq!(
        store.session(&sid(1)).expect("read").expect("s").targets[&id(1)],
        VouchStatus::Selected
    );
    assert_eq!(store.audit_len().expect("len"), len);
}

// ------------------------------------------------------------------------ secrets & files

#[test]
fn key_material_never_appears_in_debug_output() {
    let (_d, store) = open();
    let mut p = direct(1, at(1));
    p.session_key = vouchnet_protocol::SymmetricKey::from_bytes([0xab; 32]);
    let rec = store.pair_direct(&p).expect("pair");
    for shown in [
        format!("{rec:?}"),
        format!("{p:?}"),
        format!("{:?}", store.device(&id(1)).expect("r")),
    ] {
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("171"), "decimal key bytes leaked: {shown}");
        assert!(
            !shown.to_lowercase().contains("abab"),
            "hex key bytes leaked: {shown}"
        );
    }
    let state = SecretBytes::new(vec![0xcd; 8]);
    assert_eq!(format!("{state:?}"), "SecretBytes(<redacted 8 bytes>)");
}

#[test]
fn the_audit_trail_never_holds_key_material() {
    let (_d, store) = open();
    let mut p = direct(1, at(1));
    p.session_key = vouchnet_protocol::SymmetricKey::from_bytes([0xab; 32]);
    store.pair_direct(&p).expect("pair");
    store
        .set_session_key(
            &id(1),
            &vouchnet_protocol::SymmetricKey::from_bytes([0xcd; 32]),
            at(2),
        )
        .expect("rekey");
    let path = store.path().to_path_buf();
    drop(store);
    let db = raw_open(&path);
    let audit = db.open_tree(TREE_AUDIT).expect("tree");
    for kv in audit.iter() {
        let (_, v) = kv.expect("entry");
        assert!(!v.windows(32).any(|w| w == [0xab; 32] || w == [0xcd; 32]));
    }
}

#[cfg(unix)]
#[test]
fn every_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let store = Store::open(&data).expect("open");
    store.pair_direct(&direct(1, at(1))).expect("pair");
    // A large session makes the engine write a blob file.
    let targets: Vec<u8> = (10..200).collect();
    let mut big = session(sid(1), 5, &targets, at(0));
    big.vouchee_notified = (0..2000).map(|_| id(7)).collect();
    store.put_session(&big).expect("big session");
    store
        .prune(at(1), &RetentionPolicy::default())
        .expect("prune");
    let db = store.path().to_path_buf();
    drop(store);
    assert_eq!(
        std::fs::metadata(&data).expect("meta").permissions().mode() & 0o777,
        DIR_MODE
    );
    let mut files = 0;
    let mut stack = vec![db];
    while let Some(d) = stack.pop() {
        assert_eq!(
            std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777,
            DIR_MODE,
            "{d:?}"
        );
        for entry in std::fs::read_dir(&d).expect("list") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("meta");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    FILE_MODE,
                    "{:?}",
                    entry.path()
                );
            }
        }
    }
    assert!(files >= 2, "conf and db at least");
}

#[test]
fn a_second_open_of_the_same_database_is_refused_as_locked() {
    let (d, _store) = open();
    assert!(matches!(
        Store::open(d.path()),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.pair_direct(&direct(1, at(1))).expect("pair");
        store
            .record_vouched(&session(sid(1), 5, &[1], at(0)), at(2))
            .expect("session");
        store
            .enqueue(&queue_entry(sid(1), id(1), QueueKind::Vouch, at(3)))
            .expect("enqueue");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store
            .device(&id(1))
            .expect("read")
            .expect("dev")
            .session_key,
        key(1)
    );
    assert_eq!(store.depth().expect("depth"), 1);
    assert_eq!(store.due(at(3), 10).expect("due").len(), 1);
    assert_eq!(store.verify_audit().expect("verify").entries, 2);
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
}
