//! Tree names and key layouts. `docs/storage.md` describes the same layouts; the two must
//! agree byte for byte, and tests that open the database directly rely on these names.
//!
//! Every key that orders by time starts with a big-endian `u64` of milliseconds, so a
//! sled range `..=now` visits exactly the records that are due, in time order.

use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::ids::{SessionId, VouchNonce};
use vouchnet_protocol::model::QueueKind;
use vouchnet_protocol::Timestamp;

/// Schema version, store-wide settings and the audit chain head.
pub const TREE_META: &str = "meta";
/// DeviceId bytes → [`crate::DeviceRecord`].
pub const TREE_DEVICES: &str = "devices";
/// DeviceId bytes → [`crate::Tombstone`].
pub const TREE_TOMBSTONES: &str = "tombstones";
/// DeviceId bytes → [`crate::Reliability`].
pub const TREE_RELIABILITY: &str = "reliability";
/// Peer DeviceId bytes → [`crate::PairingRecord`].
pub const TREE_PAIRINGS: &str = "pairings";
/// SessionId → `VouchingSession`.
pub const TREE_SESSIONS: &str = "sessions";
/// `next_attempt_at ‖ queue ref` → `QueueEntry`.
pub const TREE_QUEUE: &str = "vouching_queue";
/// queue ref → `next_attempt_at` (8 bytes), to find an entry's queue key in O(log n).
pub const TREE_QUEUE_INDEX: &str = "vouching_queue_index";
/// `kind ‖ time ‖ id` → empty: the retention index of every record that expires.
pub const TREE_EXPIRY: &str = "expiry";
/// VouchNonce → `expires_at` (8 bytes).
pub const TREE_REPLAY: &str = "replay_cache";
/// `session ‖ vouchee` → [`crate::DecisionRecord`].
pub const TREE_DECISIONS: &str = "decisions";
/// `seq` (8 bytes) → the exact bytes of one [`crate::AuditEntry`].
pub const TREE_AUDIT: &str = "audit";
/// `session ‖ vouchee ‖ voucher` → [`crate::PromptRecord`]: vouches waiting for this
/// device's user. Added after schema 1 was fixed; an older database gets it empty.
pub const TREE_PROMPTS: &str = "prompts";
/// `seq` (8 bytes) → [`crate::InboxRecord`]: the messages this device received, oldest
/// first, at most the capacity the node asks for. Added after schema 1 was fixed; an older
/// database gets it empty.
pub const TREE_INBOX: &str = "inbox";

/// Every tree, in the fixed order of the store's transactions.
pub(crate) const ALL_TREES: [&str; 14] = [
    TREE_META,
    TREE_DEVICES,
    TREE_TOMBSTONES,
    TREE_RELIABILITY,
    TREE_PAIRINGS,
    TREE_SESSIONS,
    TREE_QUEUE,
    TREE_QUEUE_INDEX,
    TREE_EXPIRY,
    TREE_REPLAY,
    TREE_DECISIONS,
    TREE_AUDIT,
    TREE_PROMPTS,
    TREE_INBOX,
];

/// Meta key of the schema version (`u32` big-endian).
pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// Meta key of the inbox's bounds: the seq of its oldest message, then the seq the next one
/// gets (two `u64` big-endian). Absent while nothing was ever received.
pub const META_INBOX_BOUNDS: &[u8] = b"inbox_bounds";
/// Meta key of the audit chain head (CBOR `{seq, hash}`).
pub const META_AUDIT_HEAD: &[u8] = b"audit_head";

/// Expiry index kinds: the first byte of every [`TREE_EXPIRY`] key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ExpiryKind {
    /// Time = the session's `finished_at`; id = SessionId.
    Session = 1,
    /// Time = the entry's `expires_at`; id = queue ref.
    Queue = 2,
    /// Time = the nonce's `expires_at`; id = nonce.
    Replay = 3,
    /// Time = `decided_at`; id = `session ‖ vouchee`.
    Decision = 4,
    /// Time = the pairing's `expires_at`; id = peer DeviceId bytes.
    Pairing = 5,
}

/// `kind ‖ at ‖ id`.
pub(crate) fn expiry_key(kind: ExpiryKind, at: Timestamp, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(kind as u8);
    k.extend_from_slice(&at.as_millis().to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// The exclusive upper bound of the expiry keys of `kind` with time `<= at`.
pub(crate) fn expiry_upper_inclusive(kind: ExpiryKind, at: Timestamp) -> Vec<u8> {
    match at.as_millis().checked_add(1) {
        Some(next) => {
            let mut k = vec![kind as u8];
            k.extend_from_slice(&next.to_be_bytes());
            k
        }
        None => vec![kind as u8 + 1],
    }
}

/// The first expiry key of `kind`.
pub(crate) fn expiry_lower(kind: ExpiryKind) -> Vec<u8> {
    vec![kind as u8]
}

/// The id part of an expiry key.
pub(crate) fn expiry_id(key: &[u8]) -> &[u8] {
    key.get(9..).unwrap_or(&[])
}

/// Identifies one queue entry: a session, a recipient and what is delivered to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueRef {
    /// The session.
    pub session_id: SessionId,
    /// Who it must reach.
    pub recipient: DeviceId,
    /// What it delivers.
    pub kind: QueueKind,
}

impl QueueRef {
    /// The reference of an entry.
    pub fn of(entry: &vouchnet_protocol::model::QueueEntry) -> Self {
        QueueRef {
            session_id: entry.session_id,
            recipient: entry.recipient,
            kind: entry.kind,
        }
    }

    /// `session_id (16) ‖ recipient bytes ‖ kind (1)`.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let recipient = self.recipient.to_bytes();
        let mut k = Vec::with_capacity(17 + recipient.len());
        k.extend_from_slice(&self.session_id.0);
        k.extend_from_slice(&recipient);
        k.push(kind_byte(self.kind));
        k
    }
}

impl QueueRef {
    /// Parses [`QueueRef::to_bytes`] (as stored in index and expiry keys).
    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self, crate::StoreError> {
        let bad = || crate::StoreError::undecodable("queue reference", "malformed");
        if b.len() < 18 {
            return Err(bad());
        }
        let session_id = SessionId(b[..16].try_into().map_err(|_| bad())?);
        let kind = match b[b.len() - 1] {
            1 => QueueKind::Vouch,
            2 => QueueKind::NotifyVouchee,
            _ => return Err(bad()),
        };
        let recipient = DeviceId::from_bytes(&b[16..b.len() - 1]).map_err(|_| bad())?;
        Ok(QueueRef {
            session_id,
            recipient,
            kind,
        })
    }
}

fn kind_byte(kind: QueueKind) -> u8 {
    match kind {
        QueueKind::Vouch => 1,
        QueueKind::NotifyVouchee => 2,
    }
}

/// `next_attempt_at (u64 BE) ‖ session_id ‖ recipient ‖ kind`: ordered by due time.
pub(crate) fn queue_key(next_attempt_at: Timestamp, r: QueueRef) -> Vec<u8> {
    let refb = r.to_bytes();
    let mut k = Vec::with_capacity(8 + refb.len());
    k.extend_from_slice(&next_attempt_at.as_millis().to_be_bytes());
    k.extend_from_slice(&refb);
    k
}

/// The exclusive upper bound of the queue keys due at `now` (`next_attempt_at <= now`).
pub(crate) fn queue_due_upper(now: Timestamp) -> Option<[u8; 8]> {
    now.as_millis().checked_add(1).map(u64::to_be_bytes)
}

/// `session_id ‖ vouchee bytes`: the key of a decision.
pub(crate) fn decision_key(session: SessionId, vouchee: DeviceId) -> Vec<u8> {
    let v = vouchee.to_bytes();
    let mut k = Vec::with_capacity(16 + v.len());
    k.extend_from_slice(&session.0);
    k.extend_from_slice(&v);
    k
}

/// `session_id ‖ vouchee bytes ‖ voucher bytes`: the key of a prompt. The voucher is part
/// of it because a session id is the voucher's to choose: two vouchers may use the same.
pub(crate) fn prompt_key(session: SessionId, vouchee: DeviceId, voucher: DeviceId) -> Vec<u8> {
    let mut k = decision_key(session, vouchee);
    k.extend_from_slice(&voucher.to_bytes());
    k
}

/// The key of a nonce in the replay cache.
pub(crate) fn nonce_key(nonce: VouchNonce) -> [u8; 16] {
    nonce.0
}

/// A big-endian `u64` value.
pub(crate) fn be_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}
