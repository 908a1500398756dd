//! The audit trail: an append-only, hash-chained log of every trust decision.
//!
//! Modelled on Keybase's sigchain, but local to the device. Each [`AuditEntry`] records
//! what happened, when, and the signatures that justify it, and holds the hash of the entry
//! before it. The chain head `(seq, hash)` sits in the meta tree and is updated in the same
//! transaction as each append, so a crash can never leave a half-appended entry.
//!
//! ## Hash format
//! `hash(entry) = SHA-256(len(tag) as u8 ‖ tag ‖ len(bytes) as u64 BE ‖ bytes)` where `tag`
//! is [`AUDIT_HASH_TAG`] and `bytes` are the *exact stored bytes* of the entry (its CBOR
//! encoding, which includes `prev_hash`). The first entry has seq 0 and a `prev_hash` of
//! 32 zero bytes. Verification hashes what is stored, never a re-encoding.
//!
//! ## What `verify` proves
//! [`verify_entries`] walks the whole chain and reports the *first* bad entry: a gap, an
//! entry out of place, an entry that no longer hashes to what its successor (or the head)
//! recorded, an entry that does not decode, or evidence whose signature does not verify
//! under the key of the device that must have signed it. A hash chain alone cannot stop an
//! attacker who rewrites every later entry and the head as well; the embedded signatures
//! still cannot be forged, so no vouch can be invented that way.

use crate::codec;
use crate::records::RevokeReason;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vouchnet_protocol::identity::{DeviceId, DevicePublicKey};
use vouchnet_protocol::ids::{SessionId, TxId};
use vouchnet_protocol::messages::{
    AcceptedHow, Decision, DisplayName, SignedResponse, SignedVouch, VouchCertificate,
    VouchRejection, VouchResponse,
};
use vouchnet_protocol::model::{TrustLevel, VouchProof};
use vouchnet_protocol::signing::SignatureError;
use vouchnet_protocol::Timestamp;

/// Domain tag of the audit entry hash.
pub const AUDIT_HASH_TAG: &str = "vouchnet/audit-entry/v1";

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 0, without gaps.
    pub seq: u64,
    /// The hash of entry `seq - 1` (zeros for entry 0).
    #[serde(with = "serde_bytes")]
    pub prev_hash: Hash,
    /// When it happened (the injected clock).
    pub at: Timestamp,
    /// What happened, with its evidence.
    pub event: AuditEvent,
}

/// What happened. Variants that rest on a peer's word carry the signed objects that justify
/// them; [`verify_entries`] checks each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A direct pairing completed: the codes matched and both key confirmations verified.
    PairedDirect {
        /// The peer.
        device: DeviceId,
        /// Its key.
        key: DevicePublicKey,
        /// Its name.
        name: DisplayName,
        /// The pairing transaction.
        tx_id: TxId,
        /// The user confirmed the code (always true for a completed pairing, recorded so
        /// the log says it).
        confirmed_by_user: bool,
        /// Our key-confirmation MAC.
        #[serde(with = "serde_bytes")]
        our_mac: [u8; 32],
        /// The peer's key-confirmation MAC, which verified.
        #[serde(with = "serde_bytes")]
        their_mac: [u8; 32],
    },
    /// Voucher side: vouches for `vouchee` went out (or were queued) to `targets`.
    Vouched {
        /// The vouching session.
        session: SessionId,
        /// Who is vouched for.
        vouchee: DeviceId,
        /// Its key.
        vouchee_key: DevicePublicKey,
        /// The chosen targets.
        targets: Vec<DeviceId>,
    },
    /// Voucher side: a target answered; its signed response is the evidence.
    TargetAnswered {
        /// The vouching session.
        session: SessionId,
        /// The target.
        target: DeviceId,
        /// Its signed decision.
        response: SignedResponse,
    },
    /// Voucher side: a queued vouch expired or ran out of retries undelivered.
    VouchExpired {
        /// The vouching session.
        session: SessionId,
        /// The target never reached.
        target: DeviceId,
    },
    /// Target side: we accepted a vouch and added the vouchee as a proxied device.
    VouchAccepted {
        /// The vouching session.
        session: SessionId,
        /// Who vouched.
        voucher: DeviceId,
        /// Who was added.
        vouchee: DeviceId,
        /// Its key.
        vouchee_key: DevicePublicKey,
        /// Automatically or by the user.
        how: AcceptedHow,
        /// The certificate (signed by the voucher) and our acceptance (signed by us).
        proof: VouchProof,
    },
    /// Target side: we refused a vouch.
    VouchRejected {
        /// The vouching session.
        session: SessionId,
        /// Who vouched.
        voucher: DeviceId,
        /// Who was vouched for.
        vouchee: DeviceId,
        /// Why.
        reason: VouchRejection,
        /// The certificate, when it was well formed.
        vouch: Option<SignedVouch>,
        /// Our signed refusal, when one was sent.
        response: Option<SignedResponse>,
    },
    /// Vouchee side: a target accepted us; the device is added as proxied.
    ProxiedDeviceAdded {
        /// The vouching session.
        session: SessionId,
        /// The device that vouched for us.
        voucher: DeviceId,
        /// The target that accepted us.
        device: DeviceId,
        /// Its key.
        key: DevicePublicKey,
        /// Its name.
        name: DisplayName,
        /// Its signed acceptance.
        acceptance: SignedResponse,
    },
    /// The user confirmed something that needed a person.
    UserConfirmed {
        /// What was confirmed.
        action: ConfirmedAction,
    },
    /// A device was revoked and tombstoned.
    Revoked {
        /// The device.
        device: DeviceId,
        /// Why.
        reason: RevokeReason,
    },
    /// The user unpaired a device (tombstoned; history is kept).
    Unpaired {
        /// The device.
        device: DeviceId,
    },
    /// The user changed a device's trust level.
    TrustChanged {
        /// The device.
        device: DeviceId,
        /// Before.
        from: TrustLevel,
        /// After.
        to: TrustLevel,
    },
    /// A device failed to prove it holds the pairing key.
    KeyProofFailed {
        /// The device.
        device: DeviceId,
    },
    /// The session key shared with a device was replaced by a rekey.
    Rekeyed {
        /// The device.
        device: DeviceId,
    },
    /// The user cleared a tombstone, so vouches for the device are considered again.
    TombstoneCleared {
        /// The device.
        device: DeviceId,
    },
    /// A device that had vouched for others was unpaired. `policy` (the node's
    /// `on_voucher_removed` setting) says what became of the devices it vouched for; the
    /// vouching sessions about it that were still open, with their queued vouches, were
    /// dropped.
    VoucherRemoved {
        /// The removed voucher.
        voucher: DeviceId,
        /// What the node does with the devices it vouched for.
        policy: VoucherRemovalPolicy,
        /// The devices it vouched for (kept, flagged for review, or revoked).
        vouched: Vec<DeviceId>,
        /// Vouching sessions cancelled, or whose queued vouches were dropped, because of it.
        dropped: Vec<SessionId>,
    },
    /// The user decided on a device flagged for review after its voucher was removed.
    ReviewResolved {
        /// The device.
        device: DeviceId,
        /// The removed voucher that had vouched for it.
        voucher: DeviceId,
        /// Kept (true) or removed (false, revoked in the same transaction).
        kept: bool,
    },
    /// The user blocked a device this one holds no record of (never paired, or removed):
    /// no vouch adds it and its pairing requests are refused. A paired device's block is a
    /// `TrustChanged`.
    Blocked {
        /// The device.
        device: DeviceId,
    },
    /// The user lifted a block recorded as `Blocked`.
    Unblocked {
        /// The device.
        device: DeviceId,
    },
}

/// What a node does with the devices a voucher vouched for when the user unpairs that
/// voucher (the `on_voucher_removed` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VoucherRemovalPolicy {
    /// They stay trusted.
    Keep,
    /// They are flagged, and the user keeps or removes each.
    Review,
    /// They are revoked with the voucher.
    Revoke,
}

/// What a user confirmation was about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConfirmedAction {
    /// The pairing code matched.
    PairingCode {
        /// The peer.
        device: DeviceId,
        /// The transaction.
        tx_id: TxId,
    },
    /// A vouch prompt was accepted.
    VouchPrompt {
        /// The session.
        session: SessionId,
        /// Who vouched.
        voucher: DeviceId,
        /// Who was vouched for.
        vouchee: DeviceId,
    },
    /// Targets were chosen for a vouching session.
    VouchTargets {
        /// The session.
        session: SessionId,
    },
}

/// The current head of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The last entry's seq.
    pub seq: u64,
    /// The last entry's hash.
    #[serde(with = "serde_bytes")]
    pub hash: Hash,
}

/// A successful verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// How many entries were verified.
    pub entries: u64,
    /// The head they lead to (None for an empty trail).
    pub head: Option<AuditHead>,
}

/// Which piece of evidence failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvidenceKind {
    /// A vouch certificate.
    VouchCertificate,
    /// A signed vouch response.
    VouchResponse,
    /// A device key claimed for a device id.
    DeviceKey,
}

/// Why one piece of evidence is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The signature does not verify under the key of the device that must have signed.
    #[error("{kind:?}: {error}")]
    Signature {
        /// Which evidence.
        kind: EvidenceKind,
        /// Why.
        error: SignatureError,
    },
    /// The signer's device id does not embed a usable key.
    #[error("{kind:?}: signer id carries no valid key")]
    SignerKey {
        /// Which evidence.
        kind: EvidenceKind,
    },
    /// The signed content does not match the event it justifies.
    #[error("{kind:?}: field {field} does not match the event")]
    Mismatch {
        /// Which evidence.
        kind: EvidenceKind,
        /// The field that differs.
        field: &'static str,
    },
}

/// Why the audit trail failed verification. Each variant names the first bad entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Entry `seq` should exist (the chain or the head reaches past it) but does not.
    #[error("audit entry {seq} is missing")]
    Missing {
        /// The missing entry.
        seq: u64,
    },
    /// The entry stored at position `seq` claims to be entry `found` (reordered).
    #[error("audit entry at position {seq} claims seq {found}")]
    OutOfOrder {
        /// The position.
        seq: u64,
        /// What the entry says.
        found: u64,
    },
    /// Entry `seq` no longer hashes to what the next entry (or the head) recorded: it was
    /// edited after it was appended.
    #[error("audit entry {seq} was altered: the hash chain breaks there")]
    BrokenChain {
        /// The altered entry.
        seq: u64,
    },
    /// Entry `seq` does not decode.
    #[error("audit entry {seq} does not decode: {detail}")]
    Undecodable {
        /// The entry.
        seq: u64,
        /// The decoder's report.
        detail: String,
    },
    /// Evidence in entry `seq` does not verify.
    #[error("audit entry {seq} carries bad evidence: {problem}")]
    BadSignature {
        /// The entry.
        seq: u64,
        /// What failed.
        problem: EvidenceError,
    },
    /// The stored head and the entries disagree on where the chain ends.
    #[error("audit head says the chain ends at {head:?}, the entries end at {last:?}")]
    HeadMismatch {
        /// The seq the head names.
        head: Option<u64>,
        /// The last entry stored.
        last: Option<u64>,
    },
    /// The stored head itself does not decode.
    #[error("audit head does not decode: {detail}")]
    HeadUndecodable {
        /// The decoder's report.
        detail: String,
    },
    /// The database could not be read.
    #[error("audit trail could not be read: {detail}")]
    Read {
        /// The storage error.
        detail: String,
    },
}

/// The hash of an entry's stored bytes (see the module docs).
pub fn entry_hash(bytes: &[u8]) -> Hash {
    let tag = AUDIT_HASH_TAG.as_bytes();
    let mut h = Sha256::new();
    h.update([tag.len() as u8]);
    h.update(tag);
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
    h.finalize().into()
}

/// Builds the stored bytes of the entry that follows `head`.
pub(crate) fn next_entry(
    head: Option<AuditHead>,
    at: Timestamp,
    event: AuditEvent,
) -> (AuditEntry, Vec<u8>) {
    let (seq, prev_hash) = match head {
        Some(h) => (h.seq + 1, h.hash),
        None => (0, [0u8; 32]),
    };
    let entry = AuditEntry {
        seq,
        prev_hash,
        at,
        event,
    };
    let bytes = codec::encode(&entry);
    (entry, bytes)
}

/// Verifies a chain given as `(key, stored bytes)` pairs in key order, against the stored
/// head. Stops at the first bad entry.
pub fn verify_entries<I>(head: Option<AuditHead>, entries: I) -> Result<AuditReport, AuditError>
where
    I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), AuditError>>,
{
    let mut iter = entries.into_iter().peekable();
    let mut expected: u64 = 0;
    let mut prev: Option<(u64, Hash)> = None;
    while let Some(item) = iter.next() {
        let (key, bytes) = item?;
        let pos = crate::layout::be_u64(&key).ok_or(AuditError::Missing { seq: expected })?;
        if pos != expected {
            return Err(AuditError::Missing { seq: expected });
        }
        if let Some(h) = head {
            if pos > h.seq {
                return Err(AuditError::HeadMismatch {
                    head: Some(h.seq),
                    last: Some(pos),
                });
            }
        } else {
            return Err(AuditError::HeadMismatch {
                head: None,
                last: Some(pos),
            });
        }
        let entry: AuditEntry =
            codec::decode("audit entry", &bytes).map_err(|e| AuditError::Undecodable {
                seq: pos,
                detail: e.to_string(),
            })?;
        if entry.seq != pos {
            return Err(AuditError::OutOfOrder {
                seq: pos,
                found: entry.seq,
            });
        }
        let hash = entry_hash(&bytes);
        let expected_prev = prev.map(|(_, h)| h).unwrap_or([0u8; 32]);
        if entry.prev_hash != expected_prev {
            // The link from the previous entry to this one is broken. Either the previous
            // entry was edited (then this one still matches its own successor) or this
            // one's `prev_hash` was (then it no longer matches its successor either).
            let this_intact = match iter.peek() {
                Some(Ok((_, next_bytes))) => codec::decode::<AuditEntry>("audit entry", next_bytes)
                    .map(|next| next.prev_hash == hash)
                    .unwrap_or(false),
                Some(Err(_)) => false,
                None => head.map(|h| h.hash == hash).unwrap_or(false),
            };
            let bad = match prev {
                Some((p, _)) if this_intact => p,
                _ => pos,
            };
            return Err(AuditError::BrokenChain { seq: bad });
        }
        verify_evidence(&entry.event)
            .map_err(|problem| AuditError::BadSignature { seq: pos, problem })?;
        prev = Some((pos, hash));
        expected = pos + 1;
    }
    match (head, prev) {
        (None, None) => Ok(AuditReport {
            entries: 0,
            head: None,
        }),
        (Some(h), Some((last, hash))) if h.seq == last => {
            if h.hash != hash {
                return Err(AuditError::BrokenChain { seq: last });
            }
            Ok(AuditReport {
                entries: last + 1,
                head: Some(h),
            })
        }
        (Some(h), last) => {
            // The head reaches past the last entry: the tail was cut off.
            let first_missing = last.map(|(l, _)| l + 1).unwrap_or(0);
            if first_missing <= h.seq {
                Err(AuditError::Missing { seq: first_missing })
            } else {
                Err(AuditError::HeadMismatch {
                    head: Some(h.seq),
                    last: last.map(|(l, _)| l),
                })
            }
        }
        (None, Some((last, _))) => Err(AuditError::HeadMismatch {
            head: None,
            last: Some(last),
        }),
    }
}

fn signer_key(kind: EvidenceKind, id: &DeviceId) -> Result<DevicePublicKey, EvidenceError> {
    id.public_key()
        .map_err(|_| EvidenceError::SignerKey { kind })
}

fn check(kind: EvidenceKind, field: &'static str, ok: bool) -> Result<(), EvidenceError> {
    if ok {
        Ok(())
    } else {
        Err(EvidenceError::Mismatch { kind, field })
    }
}

/// Verifies a vouch certificate under the voucher's key.
fn verify_vouch(
    vouch: &SignedVouch,
    voucher: &DeviceId,
) -> Result<VouchCertificate, EvidenceError> {
    let kind = EvidenceKind::VouchCertificate;
    let key = signer_key(kind, voucher)?;
    let cert = vouch
        .verify(&key)
        .map_err(|error| EvidenceError::Signature { kind, error })?;
    check(kind, "voucher", cert.voucher == *voucher)?;
    Ok(cert)
}

/// Verifies a signed response under the key of the responder it names.
fn verify_response(response: &SignedResponse) -> Result<VouchResponse, EvidenceError> {
    let kind = EvidenceKind::VouchResponse;
    let claimed = response
        .decode_unverified()
        .map_err(|e| EvidenceError::Signature {
            kind,
            error: SignatureError::Body(e),
        })?;
    let key = signer_key(kind, &claimed.responder)?;
    response
        .verify(&key)
        .map_err(|error| EvidenceError::Signature { kind, error })
}

fn check_key(id: &DeviceId, key: &DevicePublicKey) -> Result<(), EvidenceError> {
    check(EvidenceKind::DeviceKey, "key", key.device_id() == *id)
}

/// Checks every signature an event embeds, and that the signed content is the event's.
pub fn verify_evidence(event: &AuditEvent) -> Result<(), EvidenceError> {
    use EvidenceKind::{VouchCertificate as Cert, VouchResponse as Resp};
    match event {
        AuditEvent::PairedDirect { device, key, .. } => check_key(device, key),
        AuditEvent::Vouched {
            vouchee,
            vouchee_key,
            ..
        } => check_key(vouchee, vouchee_key),
        AuditEvent::TargetAnswered {
            session,
            target,
            response,
        } => {
            let r = verify_response(response)?;
            check(Resp, "responder", r.responder == *target)?;
            check(Resp, "session_id", r.session_id == *session)
        }
        AuditEvent::VouchAccepted {
            session,
            voucher,
            vouchee,
            vouchee_key,
            how,
            proof,
        } => {
            check_key(vouchee, vouchee_key)?;
            let cert = verify_vouch(&proof.vouch, voucher)?;
            check(Cert, "session_id", cert.session_id == *session)?;
            check(Cert, "vouchee", cert.vouchee == *vouchee)?;
            check(Cert, "vouchee_key", cert.vouchee_key == *vouchee_key)?;
            let r = verify_response(&proof.response)?;
            check(Resp, "responder", r.responder == cert.target)?;
            check(Resp, "session_id", r.session_id == *session)?;
            check(Resp, "voucher", r.voucher == *voucher)?;
            check(Resp, "vouchee", r.vouchee == *vouchee)?;
            check(Resp, "vouch_nonce", r.vouch_nonce == cert.nonce)?;
            check(
                Resp,
                "vouch_digest",
                r.vouch_digest == proof.vouch.body_digest(),
            )?;
            check(
                Resp,
                "decision",
                r.decision == Decision::Accepted { how: *how },
            )
        }
        AuditEvent::VouchRejected {
            session,
            voucher,
            vouchee,
            reason,
            vouch,
            response,
        } => {
            if let Some(vouch) = vouch {
                let cert = verify_vouch(vouch, voucher)?;
                check(Cert, "session_id", cert.session_id == *session)?;
                check(Cert, "vouchee", cert.vouchee == *vouchee)?;
            }
            if let Some(response) = response {
                let r = verify_response(response)?;
                check(Resp, "session_id", r.session_id == *session)?;
                check(Resp, "voucher", r.voucher == *voucher)?;
                check(Resp, "vouchee", r.vouchee == *vouchee)?;
                check(
                    Resp,
                    "decision",
                    r.decision
                        == Decision::Rejected {
                            reason: reason.clone(),
                        },
                )?;
            }
            Ok(())
        }
        AuditEvent::ProxiedDeviceAdded {
            session,
            voucher,
            device,
            key,
            acceptance,
            ..
        } => {
            check_key(device, key)?;
            let r = verify_response(acceptance)?;
            check(Resp, "responder", r.responder == *device)?;
            check(Resp, "session_id", r.session_id == *session)?;
            check(Resp, "voucher", r.voucher == *voucher)?;
            check(
                Resp,
                "decision",
                matches!(r.decision, Decision::Accepted { .. }),
            )
        }
        AuditEvent::VouchExpired { .. }
        | AuditEvent::UserConfirmed { .. }
        | AuditEvent::Revoked { .. }
        | AuditEvent::Unpaired { .. }
        | AuditEvent::TrustChanged { .. }
        | AuditEvent::KeyProofFailed { .. }
        | AuditEvent::Rekeyed { .. }
        | AuditEvent::TombstoneCleared { .. }
        | AuditEvent::Blocked { .. }
        | AuditEvent::Unblocked { .. }
        | AuditEvent::VoucherRemoved { .. }
        | AuditEvent::ReviewResolved { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_hash_is_domain_separated_and_length_prefixed() {
        let bytes = b"\xa0";
        let mut manual = vec![AUDIT_HASH_TAG.len() as u8];
        manual.extend_from_slice(AUDIT_HASH_TAG.as_bytes());
        manual.extend_from_slice(&1u64.to_be_bytes());
        manual.extend_from_slice(bytes);
        let expected: Hash = Sha256::digest(&manual).into();
        assert_eq!(entry_hash(bytes), expected);
        assert_ne!(entry_hash(bytes), <Hash>::from(Sha256::digest(bytes)));
    }

    #[test]
    fn empty_chain_with_no_head_verifies() {
        let report = verify_entries(None, Vec::new()).expect("empty trail is valid");
        assert_eq!(
            report,
            AuditReport {
                entries: 0,
                head: None
            }
        );
    }

    #[test]
    fn head_without_entries_names_entry_zero_missing() {
        let head = AuditHead {
            seq: 3,
            hash: [7; 32],
        };
        assert_eq!(
            verify_entries(Some(head), Vec::new()),
            Err(AuditError::Missing { seq: 0 })
        );
    }
}
