//! The records the store keeps beside the protocol's own ([`vouchnet_protocol::model`]).
//!
//! Secrets (session keys, the opaque state of a pairing in flight) are typed so that they
//! cannot leak by accident: `Debug` prints `<redacted>`, and the bytes are zeroized when the
//! value is dropped. Their encoded form only ever exists inside a [`zeroize::Zeroizing`]
//! buffer on its way to or from the database (see [`crate::codec`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vouchnet_protocol::identity::{DeviceId, DevicePublicKey};
use vouchnet_protocol::ids::{SessionId, TxId, VouchNonce};
use vouchnet_protocol::messages::{AcceptedHow, Decision, DisplayName, SignedResponse};
use vouchnet_protocol::model::{KnownDevice, PairingType, TrustLevel, VouchProof};
use vouchnet_protocol::{SymmetricKey, Timestamp};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A paired device, as this device knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Its id (libp2p PeerId).
    pub device_id: DeviceId,
    /// Its key; always the key embedded in `device_id`.
    pub public_key: DevicePublicKey,
    /// Its display name, as given at pairing.
    pub name: DisplayName,
    /// Direct or proxied.
    pub pairing_type: PairingType,
    /// The user's decision. Reliability lives in its own tree and never changes this.
    pub trust_level: TrustLevel,
    /// When it was paired.
    pub paired_at: Timestamp,
    /// When a connection from it was last authenticated.
    pub last_seen: Option<Timestamp>,
    /// For proxied devices: the directly paired device that vouched for it.
    pub vouched_by: Option<DeviceId>,
    /// For proxied devices: why we trust it.
    pub proof: Option<DeviceProof>,
    /// The key shared with it (pairing key, or proxied key). Redacted in `Debug`,
    /// zeroized on drop.
    #[serde(with = "secret_key_serde")]
    pub session_key: SymmetricKey,
    /// After a rekey switched `session_key`, until a key proof shows which key the device
    /// holds: the key from before. On disk, so that a restart in that window cannot leave
    /// the two devices holding different keys with neither able to go back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<PreviousKey>,
}

/// The key shared with a device before the last rekey, while the rekey is unconfirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousKey {
    /// The key. Redacted in `Debug`, zeroized on drop.
    #[serde(with = "secret_key_serde")]
    pub key: SymmetricKey,
    /// This device started the rekey: it switched before the other side confirmed, so it
    /// seals with this key until a key proof with the new one succeeds.
    pub initiated: bool,
}

impl DeviceRecord {
    /// The view the protocol's vouch checks need.
    pub fn known(&self) -> KnownDevice {
        KnownDevice {
            public_key: self.public_key,
            pairing_type: self.pairing_type,
            trust_level: self.trust_level,
        }
    }
}

/// The evidence that a proxied device was vouched for, as each side holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceProof {
    /// Target side: the voucher's certificate and our own signed acceptance.
    Vouch(VouchProof),
    /// Vouchee side: the target's signed acceptance, relayed by the voucher.
    Acceptance(SignedResponse),
}

/// Why a device is tombstoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TombstoneReason {
    /// The user unpaired it.
    Removed,
    /// The user blocked it (the device record stays, with trust Blocked).
    Blocked,
    /// It was revoked.
    Revoked,
}

/// A device the user removed, blocked or revoked. A vouch never brings it back; only a
/// direct pairing (or the user clearing the tombstone) does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The device.
    pub device_id: DeviceId,
    /// Why.
    pub reason: TombstoneReason,
    /// When it was written.
    pub at: Timestamp,
    /// For a device blocked while it had no record (never paired, or already removed or
    /// revoked): the tombstone it had before the block, which lifting the block restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_over: Option<TombstoneReason>,
}

impl Tombstone {
    /// The user blocked the device (rather than removed or revoked it).
    pub fn is_block(&self) -> bool {
        self.reason == TombstoneReason::Blocked
    }
}

/// Why a device was revoked (audited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RevokeReason {
    /// The user asked for it.
    UserRequest,
    /// The user reports the device's key as compromised.
    KeyCompromised,
    /// The device failed to prove it holds the pairing key.
    KeyProofFailed,
    /// The device that vouched for it was removed.
    VoucherRemoved,
}

/// A direct-pairing transaction in flight, keyed by the peer, so that a restart within the
/// pairing timeout can resume or cancel it cleanly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRecord {
    /// The peer the connection authenticated.
    pub peer: DeviceId,
    /// The transaction.
    pub tx_id: TxId,
    /// When it started.
    pub started_at: Timestamp,
    /// When it is abandoned (started_at + pairing timeout); pruned then.
    pub expires_at: Timestamp,
    /// The pairing machine's own state, opaque to the store. It may hold ephemeral secrets,
    /// so it is redacted and zeroized like a key.
    pub state: SecretBytes,
}

/// A vouch waiting for this device's user (target side). It is stored before the voucher is
/// told that a person is being asked, so a restart does not lose what the user was asked:
/// the prompt comes back with its id and deadline. It holds the opened target–vouchee key,
/// so it is encoded and dropped like a key. Keyed by `session ‖ vouchee ‖ voucher`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// The vouching session.
    pub session_id: SessionId,
    /// The device that vouches.
    pub voucher: DeviceId,
    /// The device vouched for.
    pub vouchee: DeviceId,
    /// The id the user answers with (`proxy accept|reject <ID>`).
    pub id: String,
    /// The signed vouch, as received and verified (the latest one, after a redelivery).
    pub vouch: vouchnet_protocol::messages::SignedVouch,
    /// The opened target–vouchee key.
    #[serde(with = "secret_key_serde")]
    pub proxied_key: SymmetricKey,
    /// When the prompt expires.
    pub deadline: Timestamp,
    /// The nonces of the vouches this prompt stands for, remembered with the decision.
    pub nonces: Vec<PromptNonce>,
}

/// A message this device received from a paired device, opened. It is stored before the
/// sender's request is acknowledged, so a message the sender was told arrived is never lost
/// to a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// The sender: the device the connection authenticated.
    pub from: DeviceId,
    /// The text, as opened.
    pub text: String,
    /// When it arrived (this device's clock).
    pub received_at: Timestamp,
}

/// A nonce a prompt holds, and until when the replay cache must remember it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptNonce {
    /// The nonce.
    pub nonce: VouchNonce,
    /// When it may be forgotten.
    pub expires_at: Timestamp,
}

/// A target's recorded answer to one vouch, keyed by (session, vouchee), so that a
/// re-delivered vouch of the same session gets the same signed answer and is never applied
/// twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The vouching session.
    pub session_id: SessionId,
    /// Who vouched.
    pub voucher: DeviceId,
    /// Who was vouched for.
    pub vouchee: DeviceId,
    /// The nonce of the vouch that was decided.
    pub nonce: VouchNonce,
    /// The decision.
    pub decision: Decision,
    /// The signed response sent back, when one was signed.
    pub response: Option<SignedResponse>,
    /// When it was decided; retention counts from here.
    pub decided_at: Timestamp,
}

impl DecisionRecord {
    /// True for an acceptance.
    pub fn is_accepted(&self) -> bool {
        matches!(self.decision, Decision::Accepted { .. })
    }

    /// How it was accepted, for an acceptance.
    pub fn accepted_how(&self) -> Option<AcceptedHow> {
        match self.decision {
            Decision::Accepted { how } => Some(how),
            Decision::Rejected { .. } => None,
        }
    }
}

/// Connection reliability of a device, kept apart from its trust level: failures are
/// counted here and never demote a device by themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reliability {
    /// Successful connections.
    pub successes: u64,
    /// Failed connection attempts.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Last success.
    pub last_success: Option<Timestamp>,
    /// Last failure.
    pub last_failure: Option<Timestamp>,
}

/// Opaque secret bytes: redacted `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of the bytes (no copy is left behind by this call).
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// The bytes. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Ok(SecretBytes(b.into_vec()))
    }
}

/// Serde for [`SymmetricKey`], which deliberately has none of its own: the key goes to
/// the database as a 32-byte string and nowhere else.
mod secret_key_serde {
    use super::*;

    pub fn serialize<S: Serializer>(key: &SymmetricKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(key.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SymmetricKey, D::Error> {
        let mut bytes = serde_bytes::ByteBuf::deserialize(d)?.into_vec();
        let result = match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(mut arr) => {
                let key = SymmetricKey::from_bytes(arr);
                arr.zeroize();
                Ok(key)
            }
            Err(_) => Err(serde::de::Error::custom(format!(
                "session key must be 32 bytes, got {}",
                bytes.len()
            ))),
        };
        bytes.zeroize();
        result
    }
}
