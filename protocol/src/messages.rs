//! Every message vouchnet sends, and the frame that carries it.
//!
//! A frame is a CBOR map `{"v": version, "msg": message}`. The version is read first, so a
//! frame from a newer protocol gets [`DecodeError::UnsupportedVersion`] (and the node answers
//! with [`ErrorCode::UnsupportedVersion`]) rather than a schema error. Messages are
//! one-way: the libp2p request carries a frame, and the libp2p response carries an [`Ack`]
//! or an [`ErrorReply`]. No protocol step waits on a request being open, so a person can
//! take minutes to confirm a code.
//!
//! The exact CDDL for everything here is in `docs/protocol.md`.

use crate::codec::{self, DecodeError, Limits};
use crate::identity::{DeviceId, DevicePublicKey};
use crate::ids::{RekeyId, SessionId, TxId, VouchNonce};
use crate::signing::{Signed, SignedPayload, TAG_VOUCH_CERTIFICATE, TAG_VOUCH_RESPONSE};
use crate::time::Timestamp;
use serde::{de::IgnoredAny, Deserialize, Deserializer, Serialize};

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The only confirmation method: 6-digit numeric comparison with a commitment. It is named
/// in the commitment and the transcript MAC, so two sides can never be talked into using
/// different methods ("method confusion").
pub const PAIRING_METHOD: &str = "sas-numeric6-commit/v1";

/// Longest display name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most acceptances one `ProxyPairingComplete` may carry.
pub const MAX_COMPLETE_ENTRIES: usize = 64;
/// Most address hints one accepted target may carry.
pub const MAX_ADDR_HINTS: usize = 8;
/// Longest address hint, in bytes (a binary multiaddr).
pub const MAX_ADDR_HINT_LEN: usize = 128;
/// Longest sealed text message, in ciphertext bytes.
pub const MAX_SEALED_LEN: usize = 16 * 1024;

/// A device's display name: at most [`MAX_NAME_LEN`] bytes of UTF-8, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates a name.
    pub fn new(name: impl Into<String>) -> Result<Self, DecodeError> {
        let name = name.into();
        if name.len() > MAX_NAME_LEN {
            return Err(DecodeError::Schema(format!(
                "display name longer than {MAX_NAME_LEN} bytes"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(DecodeError::Schema(
                "display name contains control characters".into(),
            ));
        }
        Ok(DisplayName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DisplayName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Protocol version; [`PROTOCOL_VERSION`].
    pub v: u64,
    /// The message.
    pub msg: Message,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
    #[allow(dead_code)]
    msg: IgnoredAny,
}

impl Frame {
    /// A frame of the current version.
    pub fn new(msg: Message) -> Self {
        Frame {
            v: PROTOCOL_VERSION,
            msg,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a frame within `limits`, checking the version before the message.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
        codec::check_bounds(bytes, limits)?;
        let probe: VersionProbe = codec::decode_checked(bytes)?;
        if probe.v != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(probe.v));
        }
        codec::decode_checked(bytes)
    }
}

/// Every message, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Direct pairing, step 1 (initiator → responder).
    PairingRequest(PairingRequest),
    /// Direct pairing, step 2 (responder → initiator).
    PairingKey(PairingKey),
    /// Direct pairing, step 3 (initiator → responder).
    PairingReveal(PairingReveal),
    /// Direct pairing, step 4 (each side, after its user confirmed the code).
    PairingConfirm(PairingConfirm),
    /// Either side ends a pairing.
    PairingCancel(PairingCancel),
    /// A paired device challenges the other to prove it holds the pairing key.
    KeyProofChallenge(KeyProofChallenge),
    /// The answer to a [`KeyProofChallenge`].
    KeyProofResponse(KeyProofResponse),
    /// Voucher → target: please trust this vouchee.
    ProxyPairingRequest(ProxyPairingRequest),
    /// Target → voucher: the request is valid and waits for the target's user.
    ProxyPairingPending(ProxyPairingPending),
    /// Target → voucher: the signed decision.
    ProxyPairingResponse(ProxyPairingResponse),
    /// Voucher → vouchee: these targets accepted you.
    ProxyPairingComplete(ProxyPairingComplete),
    /// Rekey, step 1.
    RekeyInit(RekeyInit),
    /// Rekey, step 2.
    RekeyAccept(RekeyAccept),
    /// Rekey, step 3.
    RekeyConfirm(RekeyConfirm),
    /// A short text sealed with the pair's session key.
    SealedText(SealedText),
    /// A round trip and nothing else: answered with `Ack`, it changes no state, so it
    /// measures a connection's latency (`vouchnet ping`, and the vouch benchmark's echo).
    Ping(Ping),
    /// Response: the frame was received and handed to the protocol.
    Ack(Ack),
    /// Response: the frame was refused before the protocol saw it.
    Error(ErrorReply),
}

/// Direct pairing, step 1: the initiator commits to its ephemeral key and nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRequest {
    /// The transaction.
    pub tx_id: TxId,
    /// Must equal [`PAIRING_METHOD`].
    pub method: String,
    /// `SHA-256(commitment input)`, see `docs/protocol.md`.
    #[serde(with = "serde_bytes")]
    pub commitment: [u8; 32],
    /// The initiator's display name.
    pub name: DisplayName,
}

/// Direct pairing, step 2: the responder's ephemeral key and nonce, sent in the clear
/// (the initiator is already committed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingKey {
    /// The transaction.
    pub tx_id: TxId,
    /// Responder's ephemeral X25519 public key.
    #[serde(with = "serde_bytes")]
    pub ephemeral: [u8; 32],
    /// Responder's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
    /// The responder's display name.
    pub name: DisplayName,
}

/// Direct pairing, step 3: the initiator opens its commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingReveal {
    /// The transaction.
    pub tx_id: TxId,
    /// Initiator's ephemeral X25519 public key.
    #[serde(with = "serde_bytes")]
    pub ephemeral: [u8; 32],
    /// Initiator's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
}

/// Direct pairing, step 4: key confirmation, sent only after the sender's user confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingConfirm {
    /// The transaction.
    pub tx_id: TxId,
    /// HMAC-SHA-256 over the transcript under the confirmation key.
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

/// Ends a pairing transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingCancel {
    /// The transaction.
    pub tx_id: TxId,
    /// Why.
    pub reason: CancelReason,
}

/// Why a pairing ended without a pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelReason {
    /// The user said the codes differ, or declined.
    UserRejected,
    /// The revealed key and nonce do not match the commitment.
    CommitmentMismatch,
    /// The peer's key-confirmation MAC did not verify (a man in the middle, or a bug).
    KeyConfirmationFailed,
    /// The transaction or the confirmation window ran out.
    Timeout,
    /// A pairing with this peer is already in flight.
    AlreadyInProgress,
    /// Too many pairing requests or pending prompts.
    RateLimited,
    /// A message arrived that this state does not expect.
    UnexpectedMessage,
    /// The confirmation method is not [`PAIRING_METHOD`].
    UnsupportedMethod,
    /// The X25519 result was all zeros (a low-order ephemeral key).
    InvalidKeyExchange,
    /// The peer is already paired, blocked, or the connection went away.
    Aborted,
}

/// Presence key proof: "prove you hold our pairing key".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProofChallenge {
    /// Fresh random challenge.
    #[serde(with = "serde_bytes")]
    pub challenge: [u8; 32],
}

/// Presence key proof answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProofResponse {
    /// The challenge being answered.
    #[serde(with = "serde_bytes")]
    pub challenge: [u8; 32],
    /// HMAC-SHA-256 under the pair's key, see `docs/protocol.md`.
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

/// What a voucher signs for one target (the vouch certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchCertificate {
    /// Version of the certificate format, inside the signed bytes.
    pub v: u64,
    /// The vouching session.
    pub session_id: SessionId,
    /// Who vouches (signs).
    pub voucher: DeviceId,
    /// Who is vouched for.
    pub vouchee: DeviceId,
    /// The vouchee's public key; must match `vouchee`.
    pub vouchee_key: DevicePublicKey,
    /// The vouchee's display name.
    pub vouchee_name: DisplayName,
    /// The only device this vouch is for.
    pub target: DeviceId,
    /// When the voucher signed it (re-signed at each delivery).
    pub issued_at: Timestamp,
    /// Random; the receiver's replay cache keys on it.
    pub nonce: VouchNonce,
}

impl SignedPayload for VouchCertificate {
    const TAG: &'static str = TAG_VOUCH_CERTIFICATE;
}

/// A signed vouch certificate.
pub type SignedVouch = Signed<VouchCertificate>;

/// Voucher → target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPairingRequest {
    /// The signed vouch.
    pub vouch: SignedVouch,
    /// The target–vouchee key, sealed under the voucher–target pairing key.
    pub sealed_key: SealedKey,
}

/// XChaCha20-Poly1305 ciphertext of a 32-byte key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// 24-byte random nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 24],
    /// 32 bytes of key plus 16 of tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: [u8; 48],
}

/// Target → voucher: "valid, my user has been asked, answer by `deadline`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPairingPending {
    /// The vouching session.
    pub session_id: SessionId,
    /// The vouch being considered.
    pub vouch_nonce: VouchNonce,
    /// When the prompt expires (target's clock).
    pub deadline: Timestamp,
}

/// What the target decided, signed by the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchResponse {
    /// Version of the response format, inside the signed bytes.
    pub v: u64,
    /// The vouching session.
    pub session_id: SessionId,
    /// The nonce of the vouch answered.
    pub vouch_nonce: VouchNonce,
    /// SHA-256 of the signed certificate bytes answered.
    #[serde(with = "serde_bytes")]
    pub vouch_digest: [u8; 32],
    /// The target (signer).
    pub responder: DeviceId,
    /// The voucher.
    pub voucher: DeviceId,
    /// The vouchee.
    pub vouchee: DeviceId,
    /// The decision.
    pub decision: Decision,
    /// When it was decided (target's clock).
    pub decided_at: Timestamp,
}

impl SignedPayload for VouchResponse {
    const TAG: &'static str = TAG_VOUCH_RESPONSE;
}

/// A signed vouch response.
pub type SignedResponse = Signed<VouchResponse>;

/// A target's decision on a vouch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Accepted.
    Accepted {
        /// Automatically (`auto_accept_vouched`) or by the user.
        how: AcceptedHow,
    },
    /// Rejected.
    Rejected {
        /// Why.
        reason: VouchRejection,
    },
}

/// How an acceptance came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcceptedHow {
    /// By policy.
    Automatic,
    /// The target's user said yes.
    UserConfirmed,
}

/// Why a target refused a vouch. One variant per check of the design, in the order the
/// checks run; see [`crate::vouch`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VouchRejection {
    /// The certificate names a voucher other than the authenticated sender.
    NotFromVoucher,
    /// The voucher is not a paired device.
    VoucherNotPaired,
    /// The voucher is itself proxied: accepting would be multi-hop.
    VoucherNotDirect,
    /// The voucher's trust level is not Trusted.
    VoucherNotTrusted,
    /// The signature does not verify under the voucher's key.
    BadSignature,
    /// `issued_at` is older than `vouch_signature_max_age`.
    Stale {
        /// Age in ms.
        age_ms: u64,
        /// Limit in ms.
        max_ms: u64,
    },
    /// `issued_at` is further in the future than the skew allowance.
    FromFuture {
        /// How far ahead, ms.
        ahead_ms: u64,
        /// Allowance, ms.
        allowance_ms: u64,
    },
    /// The nonce was seen before within the window.
    Replay,
    /// The vouch is for another device.
    WrongTarget,
    /// The vouchee is this device.
    VoucheeIsSelf,
    /// The vouchee is the voucher.
    VoucheeIsVoucher,
    /// The vouchee key does not match the vouchee id, or is weak.
    VoucheeKeyMismatch,
    /// The vouchee is already paired with this device.
    AlreadyPaired,
    /// The user blocked or removed the vouchee; only a direct pairing can bring it back.
    VoucheeBlocked,
    /// The sealed key did not open under the voucher–target key.
    BadSealedKey,
    /// The user declined.
    UserRejected,
    /// The user did not answer before the deadline.
    PromptExpired,
    /// Too many prompts are pending.
    RateLimited,
    /// Voucher side: no answer within `vouch_response_timeout`.
    Timeout,
    /// Voucher side: the target does not speak the proxy-pairing protocol.
    Unsupported,
}

/// Target → voucher: the signed decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPairingResponse {
    /// The signed decision.
    pub response: SignedResponse,
}

/// One target that accepted the vouchee, as told to the vouchee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedTarget {
    /// The target.
    pub device_id: DeviceId,
    /// The target's key; must match `device_id`.
    pub public_key: DevicePublicKey,
    /// The target's name.
    pub name: DisplayName,
    /// The target's signed acceptance, as proof.
    pub response: SignedResponse,
    /// Where the voucher last reached the target, so the vouchee can dial it without
    /// discovery (off the LAN, or with mDNS off). Hints, not trust: the connection's Noise
    /// handshake checks who answers. At most [`MAX_ADDR_HINTS`], each at most
    /// [`MAX_ADDR_HINT_LEN`] bytes; left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<AddrHint>,
}

/// One address hint: a multiaddr in its binary form. The protocol only bounds its size; the
/// node parses it, and drops what it cannot use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AddrHint(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Voucher → vouchee: acceptances so far (sent as each arrives, and when all are done).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPairingComplete {
    /// The vouching session.
    pub session_id: SessionId,
    /// Targets that accepted (at most [`MAX_COMPLETE_ENTRIES`]).
    pub accepted: Vec<AcceptedTarget>,
    /// True when every target of the session reached a terminal status.
    pub session_completed: bool,
}

/// Rekey, step 1: fresh X25519 key and nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyInit {
    /// The exchange.
    pub rekey_id: RekeyId,
    /// Ephemeral X25519 public key.
    #[serde(with = "serde_bytes")]
    pub ephemeral: [u8; 32],
    /// Nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
}

/// Rekey, step 2: the responder's key and nonce, and its MAC under the *current* key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyAccept {
    /// The exchange.
    pub rekey_id: RekeyId,
    /// Ephemeral X25519 public key.
    #[serde(with = "serde_bytes")]
    pub ephemeral: [u8; 32],
    /// Nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
    /// MAC over the rekey transcript under the current key.
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

/// Rekey, step 3: the initiator's MAC under the current key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyConfirm {
    /// The exchange.
    pub rekey_id: RekeyId,
    /// MAC over the rekey transcript under the current key.
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

/// A short text sealed with the pair's session key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedText {
    /// 24-byte random nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 24],
    /// XChaCha20-Poly1305 ciphertext (at most [`MAX_SEALED_LEN`] bytes).
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Asks for an [`Ack`] and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {}

/// Acknowledges a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

/// Refuses a frame before the protocol saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame's version is not spoken here.
    UnsupportedVersion {
        /// The versions this node speaks.
        supported: Vec<u64>,
    },
    /// The frame did not decode.
    Malformed,
    /// The sender sends too much.
    RateLimited,
    /// The sender is not paired (for messages that need a pairing).
    NotPaired,
    /// The receiver could not act on the frame now (it could not store its answer, so it
    /// sent none); nothing changed, and the same frame may be sent again later.
    Unavailable,
}
