//! The records the protocol reasons about and the storage crate persists.
//!
//! These are plain data with serde derives. Their behaviour lives in the machines that own
//! them ([`crate::session`], [`crate::queue`], [`crate::vouch`]); the storage crate only
//! persists them, so both agree on one definition.

use crate::identity::{DeviceId, DevicePublicKey};
use crate::ids::{SessionId, VouchNonce};
use crate::messages::{DisplayName, SignedResponse, SignedVouch, VouchRejection};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a device came to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairingType {
    /// Paired directly, codes compared by the user.
    Direct,
    /// Accepted on a vouch from a directly paired device.
    Proxied,
}

/// The user's decision about a device. Connection reliability is tracked apart from this
/// and never changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrustLevel {
    /// Full trust: its vouches are considered.
    Trusted,
    /// Kept, but its vouches are refused.
    Unreliable,
    /// Refused entirely; a vouch never brings it back.
    Blocked,
}

/// What a receiving device knows about another device, as the vouch checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownDevice {
    /// Its key.
    pub public_key: DevicePublicKey,
    /// How it was paired.
    pub pairing_type: PairingType,
    /// The user's trust decision.
    pub trust_level: TrustLevel,
}

/// The proof kept with a proxied device: the vouch and the signed acceptance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchProof {
    /// The voucher's signed certificate, as received.
    pub vouch: SignedVouch,
    /// The acceptance, signed by the target.
    pub response: SignedResponse,
}

impl VouchProof {
    /// The decision this device's stored acceptance records, if it is an acceptance (read
    /// from bytes this device signed and stored itself, so not checked again here).
    pub fn acceptance(&self) -> Option<crate::messages::Decision> {
        self.response
            .decode_unverified()
            .ok()
            .map(|r| r.decision)
            .filter(|d| matches!(d, crate::messages::Decision::Accepted { .. }))
    }
}

/// Lifecycle of a vouching session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionState {
    /// Created after a direct pairing; waiting for the user to choose targets.
    Pending,
    /// Targets chosen; vouches outstanding.
    InProgress,
    /// Every vouch is terminal.
    Completed,
    /// The user (or a voucher removal) cancelled it.
    Cancelled,
}

/// Status of the vouch to one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VouchStatus {
    /// Chosen, not yet sent or queued.
    Selected,
    /// Sent; waiting for a response until `deadline` (extended when the target says its
    /// user is being asked).
    Waiting {
        /// The nonce of the vouch sent.
        nonce: VouchNonce,
        /// SHA-256 of the signed certificate bytes sent.
        #[serde(with = "serde_bytes")]
        digest: [u8; 32],
        /// When the answer is due.
        deadline: Timestamp,
        /// The target said its user is being asked.
        user_prompted: bool,
    },
    /// The target is offline; the vouch waits in the persistent queue.
    Queued,
    /// The target accepted; the signed response is the proof.
    Accepted {
        /// The signed acceptance.
        response: SignedResponse,
    },
    /// The target refused, or the voucher gave up.
    Rejected {
        /// Why.
        reason: VouchRejection,
        /// The target's signed refusal, when it sent one.
        response: Option<SignedResponse>,
    },
    /// The queued vouch reached `expires_at` or its maximum retries undelivered.
    Expired,
}

impl VouchStatus {
    /// Accepted, Rejected and Expired are final.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            VouchStatus::Accepted { .. } | VouchStatus::Rejected { .. } | VouchStatus::Expired
        )
    }
}

/// One vouching session of a voucher: one vouchee, the chosen targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchingSession {
    /// Session id.
    pub id: SessionId,
    /// The device vouched for.
    pub vouchee: DeviceId,
    /// Its key.
    pub vouchee_key: DevicePublicKey,
    /// Its name.
    pub vouchee_name: DisplayName,
    /// Lifecycle state.
    pub state: SessionState,
    /// Per-target status.
    pub targets: BTreeMap<DeviceId, VouchStatus>,
    /// Targets whose acceptance the vouchee has been told of.
    pub vouchee_notified: Vec<DeviceId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it became Completed or Cancelled.
    pub finished_at: Option<Timestamp>,
}

/// What a queue entry is waiting to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueKind {
    /// A vouch to an offline target (signed afresh at delivery).
    Vouch,
    /// Acceptances the offline vouchee has not heard of yet.
    NotifyVouchee,
}

/// One entry of the persistent offline queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Who it must reach.
    pub recipient: DeviceId,
    /// What it delivers.
    pub kind: QueueKind,
    /// When it was queued.
    pub enqueued_at: Timestamp,
    /// When it is deleted undelivered (enqueued_at + 7 days by default).
    pub expires_at: Timestamp,
    /// Earliest time the worker should try it.
    pub next_attempt_at: Timestamp,
    /// Real delivery failures so far (polls while the recipient was offline do not count).
    pub attempts: u32,
}
