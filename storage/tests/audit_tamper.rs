//! Audit tamper detection: editing, truncating or reordering entries makes `verify_audit`
//! fail and name the first bad entry. Tampering goes through sled directly, as an attacker
//! with the files would.

mod common;

use common::*;
use vouchnet_protocol::codec::{decode, encode};
use vouchnet_protocol::model::TrustLevel;
use vouchnet_storage::audit::entry_hash;
use vouchnet_storage::*;

/// A trail of six entries of different kinds, with real signatures in entries 1 and 4.
fn trail() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.pair_direct(&direct(1, at(1))).expect("0: paired");
    store
        .accept_vouch(&accept(1, 0, 5, sid(1), nonce(1), at(2)))
        .expect("1: accepted");
    store
        .set_trust(&id(5), TrustLevel::Unreliable, at(3))
        .expect("2: trust");
    store.unpair(&id(5), at(4)).expect("3: unpaired");
    store
        .reject_vouch(&reject(
            1,
            0,
            6,
            sid(2),
            nonce(2),
            vouchnet_protocol::messages::VouchRejection::UserRejected,
            at(5),
        ))
        .expect("4: rejected");
    store
        .record_event(at(6), AuditEvent::KeyProofFailed { device: id(1) })
        .expect("5: key proof");
    assert_eq!(store.verify_audit().expect("intact").entries, 6);
    dir
}

/// Opens the raw database, lets `f` tamper with the audit and meta trees, then reopens
/// the store and verifies.
fn tamper(f: impl FnOnce(&sled::Tree, &sled::Tree)) -> Result<AuditReport, AuditError> {
    let dir = trail();
    {
        let db = raw_open(&dir.path().join(DB_DIR_NAME));
        let audit = db.open_tree(TREE_AUDIT).expect("audit tree");
        let meta = db.open_tree(TREE_META).expect("meta tree");
        f(&audit, &meta);
        db.flush().expect("flush");
    }
    Store::open(dir.path()).expect("reopen").verify_audit()
}

fn read(audit: &sled::Tree, seq: u64) -> AuditEntry {
    decode(
        &audit.get(seq.to_be_bytes()).expect("get").expect("present"),
        &STORED_LIMITS,
    )
    .expect("decode")
}

fn write(audit: &sled::Tree, pos: u64, e: &AuditEntry) -> [u8; 32] {
    let bytes = encode(e);
    audit
        .insert(pos.to_be_bytes(), bytes.as_slice())
        .expect("insert");
    entry_hash(&bytes)
}

/// Rewrites every entry from `from` on so the hash chain and head are consistent again.
fn relink(audit: &sled::Tree, meta: &sled::Tree, from: u64) {
    let mut prev = if from == 0 {
        [0; 32]
    } else {
        entry_hash(
            &audit
                .get((from - 1).to_be_bytes())
                .expect("get")
                .expect("p"),
        )
    };
    let last = audit.iter().count() as u64 - 1;
    for seq in from..=last {
        let mut e = read(audit, seq);
        e.prev_hash = prev;
        prev = write(audit, seq, &e);
    }
    meta.insert(
        META_AUDIT_HEAD,
        encode(&AuditHead {
            seq: last,
            hash: prev,
        }),
    )
    .expect("head");
}

#[test]
fn an_intact_trail_verifies_to_its_head() {
    let report = tamper(|_, _| {}).expect("intact");
    assert_eq!(report.entries, 6);
    assert_eq!(report.head.expect("head").seq, 5);
}

#[test]
fn editing_an_entry_names_that_entry() {
    let r = tamper(|audit, _| {
        let mut e = read(audit, 2);
        e.at = at(999);
        write(audit, 2, &e);
    });
    assert_eq!(r, Err(AuditError::BrokenChain { seq: 2 }));
}

#[test]
fn editing_the_first_entry_names_it() {
    let r = tamper(|audit, _| {
        let mut e = read(audit, 0);
        e.event = AuditEvent::Unpaired { device: id(1) };
        write(audit, 0, &e);
    });
    assert_eq!(r, Err(AuditError::BrokenChain { seq: 0 }));
}

#[test]
fn editing_the_last_entry_is_caught_by_the_head() {
    let r = tamper(|audit, _| {
        let mut e = read(audit, 5);
        e.event = AuditEvent::KeyProofFailed { device: id(2) };
        write(audit, 5, &e);
    });
    assert_eq!(r, Err(AuditError::BrokenChain { seq: 5 }));
}

#[test]
fn editing_an_entrys_link_names_that_entry() {
    let r = tamper(|audit, _| {
        let mut e = read(audit, 3);
        e.prev_hash[0] ^= 1;
        write(audit, 3, &e);
    });
    assert_eq!(r, Err(AuditError::BrokenChain { seq: 3 }));
}

#[test]
fn cutting_bytes_off_an_entry_names_it_undecodable() {
    let r = tamper(|audit, _| {
        let bytes = audit
            .get(4u64.to_be_bytes())
            .expect("get")
            .expect("present");
        audit
            .insert(4u64.to_be_bytes(), &bytes[..bytes.len() - 5])
            .expect("insert");
    });
    assert!(
        matches!(r, Err(AuditError::Undecodable { seq: 4, .. })),
        "{r:?}"
    );
}

#[test]
fn deleting_an_entry_names_it_missing() {
    let r = tamper(|audit, _| {
        audit.remove(2u64.to_be_bytes()).expect("remove");
    });
    assert_eq!(r, Err(AuditError::Missing { seq: 2 }));
}

#[test]
fn truncating_the_tail_names_the_first_missing_entry() {
    let r = tamper(|audit, _| {
        audit.remove(4u64.to_be_bytes()).expect("remove");
        audit.remove(5u64.to_be_bytes()).expect("remove");
    });
    assert_eq!(r, Err(AuditError::Missing { seq: 4 }));
}

#[test]
fn truncating_the_front_names_entry_zero_missing() {
    let r = tamper(|audit, _| {
        audit.remove(0u64.to_be_bytes()).expect("remove");
    });
    assert_eq!(r, Err(AuditError::Missing { seq: 0 }));
}

#[test]
fn swapping_two_entries_names_the_first_position() {
    let r = tamper(|audit, _| {
        let a = audit.get(1u64.to_be_bytes()).expect("get").expect("1");
        let b = audit.get(2u64.to_be_bytes()).expect("get").expect("2");
        audit.insert(1u64.to_be_bytes(), b).expect("insert");
        audit.insert(2u64.to_be_bytes(), a).expect("insert");
    });
    assert_eq!(r, Err(AuditError::OutOfOrder { seq: 1, found: 2 }));
}

#[test]
fn reordering_with_renumbered_entries_breaks_the_chain_there() {
    let r = tamper(|audit, _| {
        let mut a = read(audit, 1);
        let mut b = read(audit, 2);
        a.seq = 2;
        b.seq = 1;
        write(audit, 1, &b);
        write(audit, 2, &a);
    });
    assert_eq!(r, Err(AuditError::BrokenChain { seq: 1 }));
}

#[test]
fn a_forged_signature_is_caught_even_when_the_chain_is_rebuilt() {
    let r = tamper(|audit, meta| {
        let mut e = read(audit, 1);
        let AuditEvent::VouchAccepted { proof, .. } = &mut e.event else {
            panic!("entry 1 is the acceptance");
        };
        // Re-sign the certificate with a key that is not the voucher's.
        let cert: vouchnet_protocol::messages::VouchCertificate =
            decode(proof.vouch.body(), &Default::default()).expect("cert");
        proof.vouch = vouchnet_protocol::signing::Signed::sign(&kp(9), &cert);
        write(audit, 1, &e);
        relink(audit, meta, 2);
    });
    assert!(
        matches!(
            r,
            Err(AuditError::BadSignature {
                seq: 1,
                problem: EvidenceError::Signature {
                    kind: EvidenceKind::VouchCertificate,
                    ..
                }
            })
        ),
        "{r:?}"
    );
}

#[test]
fn a_response_rebound_to_another_vouchee_is_caught() {
    let r = tamper(|audit, meta| {
        let mut e = read(audit, 4);
        let AuditEvent::VouchRejected { vouchee, vouch, .. } = &mut e.event else {
            panic!("entry 4 is the rejection");
        };
        *vouchee = id(7);
        *vouch = None;
        write(audit, 4, &e);
        relink(audit, meta, 5);
    });
    assert!(
        matches!(
            r,
            Err(AuditError::BadSignature {
                seq: 4,
                problem: EvidenceError::Mismatch {
                    kind: EvidenceKind::VouchResponse,
                    field: "vouchee"
                }
            })
        ),
        "{r:?}"
    );
}

#[test]
fn an_entry_appended_past_the_head_is_refused() {
    let r = tamper(|audit, _| {
        let mut e = read(audit, 5);
        e.seq = 6;
        e.prev_hash = entry_hash(&audit.get(5u64.to_be_bytes()).expect("get").expect("5"));
        write(audit, 6, &e);
    });
    assert_eq!(
        r,
        Err(AuditError::HeadMismatch {
            head: Some(5),
            last: Some(6)
        })
    );
}

#[test]
fn a_deleted_head_is_refused() {
    let r = tamper(|_, meta| {
        meta.remove(META_AUDIT_HEAD).expect("remove");
    });
    assert_eq!(
        r,
        Err(AuditError::HeadMismatch {
            head: None,
            last: Some(0)
        })
    );
}

#[test]
fn appends_after_tampering_do_not_hide_it() {
    let dir = trail();
    {
        let db = raw_open(&dir.path().join(DB_DIR_NAME));
        let audit = db.open_tree(TREE_AUDIT).expect("audit tree");
        let mut e = read(&audit, 2);
        e.at = at(12345);
        write(&audit, 2, &e);
        db.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen");
    store
        .record_event(at(7), AuditEvent::KeyProofFailed { device: id(1) })
        .expect("append");
    assert_eq!(
        store.verify_audit(),
        Err(AuditError::BrokenChain { seq: 2 })
    );
}
