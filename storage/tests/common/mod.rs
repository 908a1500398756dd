//! Builders shared by the storage integration tests: deterministic keys, real signed
//! vouches and responses (the audit trail verifies them), sessions and queue entries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair};
use vouchnet_protocol::ids::{SessionId, TxId, VouchNonce};
use vouchnet_protocol::messages::{
    AcceptedHow, Decision, DisplayName, SignedResponse, SignedVouch, VouchCertificate,
    VouchRejection, VouchResponse,
};
use vouchnet_protocol::model::{
    QueueEntry, QueueKind, SessionState, VouchProof, VouchStatus, VouchingSession,
};
use vouchnet_protocol::signing::Signed;
use vouchnet_protocol::{SymmetricKey, Timestamp};
use vouchnet_storage::{AcceptVouch, DirectPairing, QueueRef, RejectVouch};

/// The `i`-th deterministic device key.
pub fn kp(i: u8) -> DeviceKeypair {
    kp32(u32::from(i))
}

/// The `i`-th deterministic device key, for tests that need many devices.
pub fn kp32(i: u32) -> DeviceKeypair {
    let mut seed = [0x5a; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    DeviceKeypair::from_seed(&seed)
}

/// The `i`-th device id.
pub fn id(i: u8) -> DeviceId {
    kp(i).device_id()
}

pub fn name(s: &str) -> DisplayName {
    DisplayName::new(s).expect("valid name")
}

pub fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub fn key(b: u8) -> SymmetricKey {
    SymmetricKey::from_bytes([b; 32])
}

pub fn sid(i: u64) -> SessionId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.to_be_bytes());
    SessionId(b)
}

pub fn nonce(i: u64) -> VouchNonce {
    let mut b = [0xeeu8; 16];
    b[..8].copy_from_slice(&i.to_be_bytes());
    VouchNonce(b)
}

/// A direct pairing with the `i`-th device.
pub fn direct(i: u8, when: Timestamp) -> DirectPairing {
    let k = kp(i);
    DirectPairing {
        device_id: k.device_id(),
        public_key: k.public(),
        name: name(&format!("device-{i}")),
        tx_id: TxId([i; 16]),
        session_key: key(i),
        our_mac: [1; 32],
        their_mac: [2; 32],
        at: when,
    }
}

/// A voucher's session for `vouchee` with every target Selected.
pub fn session(id_: SessionId, vouchee: u8, targets: &[u8], created: Timestamp) -> VouchingSession {
    let v = kp(vouchee);
    VouchingSession {
        id: id_,
        vouchee: v.device_id(),
        vouchee_key: v.public(),
        vouchee_name: name(&format!("device-{vouchee}")),
        state: SessionState::InProgress,
        targets: targets
            .iter()
            .map(|t| (id(*t), VouchStatus::Selected))
            .collect::<BTreeMap<_, _>>(),
        vouchee_notified: Vec::new(),
        created_at: created,
        finished_at: None,
    }
}

pub fn queue_entry(
    session: SessionId,
    recipient: DeviceId,
    kind: QueueKind,
    enqueued: Timestamp,
) -> QueueEntry {
    QueueEntry {
        session_id: session,
        recipient,
        kind,
        enqueued_at: enqueued,
        expires_at: enqueued.saturating_add(Duration::from_secs(7 * 24 * 3600)),
        next_attempt_at: enqueued,
        attempts: 0,
    }
}

pub fn vref(session: SessionId, target: u8) -> QueueRef {
    QueueRef {
        session_id: session,
        recipient: id(target),
        kind: QueueKind::Vouch,
    }
}

/// The voucher's signed certificate for one target.
pub fn vouch(
    voucher: u8,
    session: SessionId,
    vouchee: u8,
    target: u8,
    n: VouchNonce,
    issued: Timestamp,
) -> SignedVouch {
    let v = kp(vouchee);
    let cert = VouchCertificate {
        v: 1,
        session_id: session,
        voucher: id(voucher),
        vouchee: v.device_id(),
        vouchee_key: v.public(),
        vouchee_name: name(&format!("device-{vouchee}")),
        target: id(target),
        issued_at: issued,
        nonce: n,
    };
    Signed::sign(&kp(voucher), &cert)
}

/// The target's signed answer to `vouch`.
pub fn response(
    target: u8,
    vouch: &SignedVouch,
    decision: Decision,
    when: Timestamp,
) -> SignedResponse {
    let cert = vouch.decode_unverified().expect("own certificate decodes");
    let r = VouchResponse {
        v: 1,
        session_id: cert.session_id,
        vouch_nonce: cert.nonce,
        vouch_digest: vouch.body_digest(),
        responder: id(target),
        voucher: cert.voucher,
        vouchee: cert.vouchee,
        decision,
        decided_at: when,
    };
    Signed::sign(&kp(target), &r)
}

/// The target `target` accepting the vouch of `voucher` for `vouchee`.
pub fn accept(
    voucher: u8,
    target: u8,
    vouchee: u8,
    session: SessionId,
    n: VouchNonce,
    when: Timestamp,
) -> AcceptVouch {
    let v = vouch(voucher, session, vouchee, target, n, when);
    let how = AcceptedHow::Automatic;
    let r = response(target, &v, Decision::Accepted { how }, when);
    let vk = kp(vouchee);
    AcceptVouch {
        session_id: session,
        voucher: id(voucher),
        vouchee: vk.device_id(),
        vouchee_key: vk.public(),
        vouchee_name: name(&format!("device-{vouchee}")),
        nonce: n,
        nonce_expires_at: when.saturating_add(Duration::from_secs(360)),
        proof: VouchProof {
            vouch: v,
            response: r,
        },
        how,
        session_key: key(vouchee ^ target),
        at: when,
    }
}

/// The target `target` rejecting the vouch of `voucher` for `vouchee`.
pub fn reject(
    voucher: u8,
    target: u8,
    vouchee: u8,
    session: SessionId,
    n: VouchNonce,
    reason: VouchRejection,
    when: Timestamp,
) -> RejectVouch {
    let v = vouch(voucher, session, vouchee, target, n, when);
    let r = response(
        target,
        &v,
        Decision::Rejected {
            reason: reason.clone(),
        },
        when,
    );
    RejectVouch {
        session_id: session,
        voucher: id(voucher),
        vouchee: id(vouchee),
        nonce: n,
        nonce_expires_at: when.saturating_add(Duration::from_secs(360)),
        reason,
        vouch: Some(v),
        response: Some(r),
        record_decision: true,
        at: when,
    }
}

/// A Waiting status for a delivered vouch.
pub fn waiting(n: VouchNonce, deadline: Timestamp) -> VouchStatus {
    VouchStatus::Waiting {
        nonce: n,
        digest: [9; 32],
        deadline,
        user_prompted: false,
    }
}

/// Opens a closed store's database with sled directly, as an attacker or a damaged disk
/// would. sled releases a dropped handle's file lock lazily, so a lock error is retried for
/// a bounded time.
pub fn raw_open(path: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if started.elapsed() < Duration::from_secs(5) && e.to_string().contains("lock") =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("raw open of {path:?}: {e}"),
        }
    }
}
