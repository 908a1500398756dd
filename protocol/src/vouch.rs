//! The target's side of proxy pairing: deciding on a vouch.
//!
//! A voucher V (a device this one paired with directly and trusts) asks this device T to
//! trust a vouchee E by sending a [`ProxyPairingRequest`]: a [`SignedVouch`] naming E, E's
//! key and T, plus the T–E key sealed under the V–T pairing key. [`Receiver::receive`] runs
//! the design's checks in this order, each failing with its own [`VouchRejection`]:
//!
//! 1. the certificate names the *connection's* peer as voucher, else
//!    [`VouchRejection::NotFromVoucher`] (the body is decoded unverified to read the voucher;
//!    the decoder is bounded, see [`crate::codec`]);
//! 2. the voucher is known ([`VouchRejection::VoucherNotPaired`]), paired directly
//!    ([`VouchRejection::VoucherNotDirect`]: a proxied voucher would make trust multi-hop)
//!    and Trusted ([`VouchRejection::VoucherNotTrusted`]);
//! 3. the signature verifies under the voucher's *stored* key
//!    ([`VouchRejection::BadSignature`]);
//! 4. `issued_at` is at most [`ProtocolConfig::vouch_signature_max_age`] old
//!    ([`VouchRejection::Stale`]) and at most [`ProtocolConfig::clock_skew_allowance`] ahead
//!    ([`VouchRejection::FromFuture`]); both limits are inclusive, see [`check_freshness`];
//! 5. the nonce is not in the replay cache ([`VouchRejection::Replay`]);
//! 6. the certificate's target is this device ([`VouchRejection::WrongTarget`]);
//! 7. the vouchee is neither this device ([`VouchRejection::VoucheeIsSelf`]) nor the voucher
//!    ([`VouchRejection::VoucheeIsVoucher`]), and its key matches its id
//!    ([`VouchRejection::VoucheeKeyMismatch`]);
//! 8. if this voucher's (session, vouchee) was answered before, the same decision is given
//!    again (signed afresh for this vouch): a voucher that redelivers because it never saw
//!    the answer must not get `AlreadyPaired` for a vouchee this device accepted from it.
//!    Otherwise a vouchee that is already paired is refused
//!    ([`VouchRejection::AlreadyPaired`]);
//! 9. a vouchee the user blocked or removed is refused ([`VouchRejection::VoucheeBlocked`]):
//!    a vouch never brings back a device the user sent away (a device still on record with
//!    trust level Blocked is reported as blocked, not as already paired);
//! 10. the sealed key opens under the voucher–target pairing key with the exact context
//!     (session, voucher, target, vouchee) ([`VouchRejection::BadSealedKey`]).
//!
//! Then the vouch is accepted at once when [`ProtocolConfig::auto_accept_vouched`] is set,
//! or put to the user as a [`PendingPrompt`] with a deadline, announced to the voucher with a
//! [`ProxyPairingPending`] so it can tell "waiting for a person" from "no answer". Too many
//! open prompts give [`VouchRejection::RateLimited`].
//!
//! ## What comes out
//! Every call returns a [`Verdict`]: the [`Outcome`], the [`Reply`] to send back to the
//! sender, and a [`Commit`] that the node must persist *atomically* before sending the reply
//! (new device record with its proof and proxied key, the nonce for the replay cache, the
//! decision for idempotency, a prompt to open or close). A crash can then never leave a
//! device accepted without its nonce recorded, or the other way round.
//!
//! Every decision, rejections included, is answered with a [`SignedResponse`]: the voucher
//! can audit who refused what and why, and is never left waiting. For checks 1–2 the sender
//! is not a trusted voucher: it still gets a signed refusal (signing is cheap and the answer
//! reveals nothing it did not send), but nothing at all is stored. For checks 3–5 nothing is
//! stored either: a forged or stale vouch must not fill the replay cache, and a replayed one
//! is already in it. From check 6 on the vouch is authentic and fresh, and its nonce is
//! stored whatever the outcome.
//!
//! The node's state is read through [`ReceiverView`]; the checks only read it, so a
//! rejected vouch changes nothing.
//!
//! ## Cost
//! A vouch that passes costs one `verify_strict`, two point decompressions (the vouchee's
//! key and the id derived from it), a SHA-256, an AEAD open and a few map lookups; an
//! automatic acceptance adds the Ed25519 signature of the response. Device ids in the
//! certificate are compared as bytes rather than parsed (parsing one validates the key it
//! embeds), see `CertificateWire`. `benches/receiver.rs` measures this against a bare
//! `verify_strict`.

use crate::codec::{self, DecodeError, Limits};
use crate::config::ProtocolConfig;
use crate::identity::{DeviceId, DeviceKeypair, DevicePublicKey};
use crate::ids::{SessionId, VouchNonce};
use crate::keys::open_proxied_key;
use crate::messages::{
    AcceptedHow, Decision, DisplayName, Message, ProxyPairingPending, ProxyPairingRequest,
    ProxyPairingResponse, SignedResponse, SignedVouch, VouchCertificate, VouchRejection,
    VouchResponse,
};
use crate::model::{KnownDevice, PairingType, TrustLevel, VouchProof};
use crate::secret::SymmetricKey;
use crate::signing::Signed;
use crate::time::{duration_millis, Timestamp};
use serde::Deserialize;
use serde_bytes::ByteBuf;

/// Version of the [`VouchCertificate`] format this implementation signs and accepts.
pub const CERTIFICATE_VERSION: u64 = 1;
/// Version of the [`VouchResponse`] format this implementation signs and accepts.
pub const RESPONSE_VERSION: u64 = 1;

/// What the receiver needs to know about the node's state. Implemented by the node over its
/// store, and by tests and benchmarks over hash maps. Every method is a lookup; the checks
/// call each at most once or twice.
pub trait ReceiverView {
    /// A paired device (direct or proxied, any trust level), or `None` if unknown.
    fn device(&self, id: &DeviceId) -> Option<KnownDevice>;
    /// The pairing key shared with a directly paired device.
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey>;
    /// True if the user blocked or removed this device (a tombstone is kept for it).
    fn is_tombstoned(&self, id: &DeviceId) -> bool;
    /// True if this nonce is in the (persistent) replay cache.
    fn nonce_seen(&self, nonce: &VouchNonce) -> bool;
    /// The decision already given to this voucher for this (session, vouchee), if any
    /// (stored from [`Commit::decision`]). The voucher is part of the key: a session id is
    /// chosen by its voucher, and another voucher reusing it must not be handed (and get
    /// signed) an answer that was given to someone else.
    fn prior_decision(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Decision>;
    /// For a device held as proxied: the voucher it was accepted from and the decision this
    /// device signed then (read from the stored proof). Check 8 uses it so that a voucher
    /// that vouches again for a device it vouched for before (after pairing with it again:
    /// the device had lost its side) gets the same acceptance rather than `AlreadyPaired`,
    /// which would leave trust one-sided. The default knows of none.
    fn vouched_acceptance(&self, vouchee: &DeviceId) -> Option<(DeviceId, Decision)> {
        let _ = vouchee;
        None
    }
    /// The deadline of the prompt open under this [`PromptKey`], if any.
    fn open_prompt(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Timestamp>;
    /// How many user prompts (pairing and proxy) are open now.
    fn pending_prompts(&self) -> usize;
}

/// Why a request could not even be answered. The node answers these at the transport level
/// ([`crate::messages::ErrorCode::Malformed`]); nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The signed body is not a vouch certificate.
    #[error("vouch certificate does not decode: {0}")]
    Malformed(#[from] DecodeError),
    /// The certificate format version is not [`CERTIFICATE_VERSION`].
    #[error("unsupported vouch certificate version {0}")]
    UnsupportedCertificateVersion(u64),
}

/// What was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The vouchee is accepted; [`Commit::device`] holds its record.
    Accepted(AcceptedHow),
    /// The user is being asked; [`Commit::open_prompt`] holds the prompt.
    Prompted,
    /// The vouch is refused.
    Rejected(VouchRejection),
    /// This (session, vouchee) was answered before; the same decision is sent again.
    Repeated(Decision),
}

/// The message to send back to the sender, after the [`Commit`] is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// "Valid; my user has been asked."
    Pending(ProxyPairingPending),
    /// The signed decision.
    Response(ProxyPairingResponse),
}

impl Reply {
    /// The reply as a message to put in a frame.
    pub fn into_message(self) -> Message {
        match self {
            Reply::Pending(p) => Message::ProxyPairingPending(p),
            Reply::Response(r) => Message::ProxyPairingResponse(r),
        }
    }

    /// The signed response, if this reply is one.
    pub fn response(&self) -> Option<&SignedResponse> {
        match self {
            Reply::Pending(_) => None,
            Reply::Response(r) => Some(&r.response),
        }
    }
}

/// A replay-cache entry: forget the nonce after `expires_at`, when any vouch carrying it
/// would be stale anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeenNonce {
    /// The nonce.
    pub nonce: VouchNonce,
    /// `issued_at + vouch_signature_max_age + clock_skew_allowance`.
    pub expires_at: Timestamp,
}

/// A decision to remember for idempotency (check 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The vouching session.
    pub session_id: SessionId,
    /// The voucher that asked.
    pub voucher: DeviceId,
    /// The vouchee.
    pub vouchee: DeviceId,
    /// What was decided.
    pub decision: Decision,
    /// Forget it after this: `decided_at + queue.expiry`, the longest a voucher keeps
    /// redelivering a vouch.
    pub expires_at: Timestamp,
}

/// The key under which a prompt is stored: one prompt per (session, voucher, vouchee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptKey {
    /// The vouching session.
    pub session_id: SessionId,
    /// The voucher.
    pub voucher: DeviceId,
    /// The vouchee.
    pub vouchee: DeviceId,
}

/// A newly accepted proxied device: everything the node stores for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedDevice {
    /// The vouchee's id.
    pub device_id: DeviceId,
    /// Its key (checked against the id).
    pub public_key: DevicePublicKey,
    /// Its name as the voucher gave it.
    pub name: DisplayName,
    /// The voucher (stored as `vouched_by`).
    pub vouched_by: DeviceId,
    /// The vouch and this device's signed acceptance.
    pub proof: VouchProof,
    /// The target–vouchee key, to be replaced by a rekey at first contact.
    pub proxied_key: SymmetricKey,
    /// When it was accepted.
    pub accepted_at: Timestamp,
}

/// A vouch waiting for the user's answer. The node persists it (it holds a secret key:
/// store it like pairing keys) and shows it to the user; at `deadline` it calls
/// [`Receiver::expire_prompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPrompt {
    /// The verified certificate.
    pub cert: VouchCertificate,
    /// The signed vouch as received, kept as proof.
    pub vouch: SignedVouch,
    /// SHA-256 of the signed certificate bytes.
    pub digest: [u8; 32],
    /// The opened target–vouchee key.
    pub proxied_key: SymmetricKey,
    /// When the prompt expires: `received + proxy_prompt_timeout`.
    pub deadline: Timestamp,
}

impl PendingPrompt {
    /// The key the prompt is stored under.
    pub fn key(&self) -> PromptKey {
        PromptKey {
            session_id: self.cert.session_id,
            voucher: self.cert.voucher,
            vouchee: self.cert.vouchee,
        }
    }
}

/// Everything the node must persist in one transaction before sending the reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Add to the replay cache.
    pub seen_nonce: Option<SeenNonce>,
    /// Remember for idempotency.
    pub decision: Option<DecisionRecord>,
    /// Insert this proxied device, *only if no record for it exists*: two concurrent vouches
    /// for the same device must leave exactly one record.
    pub device: Option<ProxiedDevice>,
    /// Open (or replace) this prompt under [`PendingPrompt::key`].
    pub open_prompt: Option<PendingPrompt>,
    /// Delete the prompt stored under this key.
    pub close_prompt: Option<PromptKey>,
}

impl Commit {
    /// True when nothing is to be stored.
    pub fn is_empty(&self) -> bool {
        self.seen_nonce.is_none()
            && self.decision.is_none()
            && self.device.is_none()
            && self.open_prompt.is_none()
            && self.close_prompt.is_none()
    }
}

/// The result of one receiver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was decided.
    pub outcome: Outcome,
    /// What to send back to the voucher.
    pub reply: Reply,
    /// What to store first, atomically.
    pub commit: Commit,
}

/// Signs a [`VouchResponse`] answering `cert` (whose signed bytes hash to
/// `signed_vouch_digest`) with `decision`, as the holder of `keypair`.
pub fn sign_response(
    keypair: &DeviceKeypair,
    cert: &VouchCertificate,
    signed_vouch_digest: [u8; 32],
    decision: Decision,
    now: Timestamp,
) -> SignedResponse {
    sign_response_as(
        keypair,
        keypair.device_id(),
        cert,
        signed_vouch_digest,
        decision,
        now,
    )
}

/// [`sign_response`] with the responder id already known (deriving it from the key costs a
/// point decompression, which the hot path avoids).
fn sign_response_as(
    keypair: &DeviceKeypair,
    responder: DeviceId,
    cert: &VouchCertificate,
    vouch_digest: [u8; 32],
    decision: Decision,
    now: Timestamp,
) -> SignedResponse {
    Signed::sign(
        keypair,
        &VouchResponse {
            v: RESPONSE_VERSION,
            session_id: cert.session_id,
            vouch_nonce: cert.nonce,
            vouch_digest,
            responder,
            voucher: cert.voucher,
            vouchee: cert.vouchee,
            decision,
            decided_at: now,
        },
    )
}

/// Check 4. `age = now - issued_at` is accepted up to and including `max_age` (a vouch
/// exactly 300 000 ms old is fresh, 300 001 ms is stale); `ahead = issued_at - now` is
/// accepted up to and including the skew allowance.
pub fn check_freshness(
    issued_at: Timestamp,
    now: Timestamp,
    config: &ProtocolConfig,
) -> Result<(), VouchRejection> {
    let max_ms = duration_millis(config.vouch_signature_max_age);
    let allowance_ms = duration_millis(config.clock_skew_allowance);
    let (issued, now) = (issued_at.as_millis(), now.as_millis());
    if issued <= now {
        let age_ms = now - issued;
        if age_ms > max_ms {
            return Err(VouchRejection::Stale { age_ms, max_ms });
        }
    } else {
        let ahead_ms = issued - now;
        if ahead_ms > allowance_ms {
            return Err(VouchRejection::FromFuture {
                ahead_ms,
                allowance_ms,
            });
        }
    }
    Ok(())
}

/// The receiving device: its key, its id and the protocol parameters. Cheap to keep for the
/// node's lifetime; the id is derived once.
#[derive(Debug)]
pub struct Receiver<'a> {
    keypair: &'a DeviceKeypair,
    me: DeviceId,
    me_bytes: Vec<u8>,
    config: &'a ProtocolConfig,
}

impl<'a> Receiver<'a> {
    /// A receiver for the device holding `keypair`.
    pub fn new(keypair: &'a DeviceKeypair, config: &'a ProtocolConfig) -> Self {
        let me = keypair.device_id();
        Receiver {
            keypair,
            me,
            me_bytes: me.to_bytes(),
            config,
        }
    }

    /// This device's id.
    pub fn me(&self) -> &DeviceId {
        &self.me
    }

    /// Decides on a vouch that arrived from `sender` (the id the connection authenticated).
    /// See the module docs for the checks and what the [`Verdict`] holds.
    pub fn receive(
        &self,
        view: &impl ReceiverView,
        sender: &DeviceId,
        request: &ProxyPairingRequest,
        now: Timestamp,
    ) -> Result<Verdict, ReceiveError> {
        let signed = &request.vouch;
        // The certificate is read in two stages (see [`CertificateWire`]): device ids stay
        // raw bytes until the checks have shown which ones matter, so a valid vouch costs
        // two point decompressions beyond the signature check instead of eight.
        let wire: CertificateWire =
            codec::decode(signed.body(), &Limits::default()).map_err(|_| malformed(signed))?;
        if wire.v != CERTIFICATE_VERSION {
            return Err(ReceiveError::UnsupportedCertificateVersion(wire.v));
        }
        let digest = signed.body_digest();
        // Refusals before every field is validated decode the certificate fully, to sign a
        // response about it; one that does not decode is answered as malformed.
        let refuse = |reason: VouchRejection, keep: Keep| -> Result<Verdict, ReceiveError> {
            let cert = signed.decode_unverified()?;
            let commit = match keep {
                Keep::Nothing => Commit::default(),
                Keep::Nonce => self.seen(&cert),
                Keep::NonceAndDecision => {
                    self.remember(self.seen(&cert), &cert, rejected(reason.clone()), now)
                }
            };
            Ok(self.rejected(&cert, digest, reason, commit, now))
        };

        // 1–2: is the sender a voucher we listen to? If not, answer and store nothing.
        if wire.voucher.as_slice() != sender.to_bytes().as_slice() {
            return refuse(VouchRejection::NotFromVoucher, Keep::Nothing);
        }
        let voucher = match check_voucher(view.device(sender)) {
            Ok(v) => v,
            Err(reason) => return refuse(reason, Keep::Nothing),
        };
        // 3: signature over the exact received bytes, with the key we stored at pairing.
        if signed.verify_signature(&voucher.public_key).is_err() {
            return refuse(VouchRejection::BadSignature, Keep::Nothing);
        }
        // 4–5: fresh and not seen before.
        if let Err(reason) = check_freshness(wire.issued_at, now, self.config) {
            return refuse(reason, Keep::Nothing);
        }
        if view.nonce_seen(&wire.nonce) {
            return refuse(VouchRejection::Replay, Keep::Nothing);
        }
        // From here on the vouch is authentic and fresh: its nonce is stored whatever the
        // outcome, so the same bytes can never be decided twice.

        // 6: addressed to us.
        if wire.target.as_slice() != self.me_bytes.as_slice() {
            return refuse(VouchRejection::WrongTarget, Keep::Nonce);
        }
        // 7: a vouchee that makes sense. Device ids compare equal exactly when their bytes
        // do (a PeerId is its multihash bytes), so raw comparison is the typed comparison.
        if wire.vouchee.as_slice() == self.me_bytes.as_slice() {
            return refuse(VouchRejection::VoucheeIsSelf, Keep::NonceAndDecision);
        }
        if wire.vouchee.as_slice() == wire.voucher.as_slice() {
            return refuse(VouchRejection::VoucheeIsVoucher, Keep::NonceAndDecision);
        }
        let vouchee = wire.vouchee_key.device_id();
        if vouchee.to_bytes().as_slice() != wire.vouchee.as_slice() {
            return refuse(VouchRejection::VoucheeKeyMismatch, Keep::NonceAndDecision);
        }
        // Every field is now validated: the voucher is the sender, the target is this
        // device, the vouchee is the id of a validated key.
        let cert = VouchCertificate {
            v: wire.v,
            session_id: wire.session_id,
            voucher: *sender,
            vouchee,
            vouchee_key: wire.vouchee_key,
            vouchee_name: wire.vouchee_name,
            target: self.me,
            issued_at: wire.issued_at,
            nonce: wire.nonce,
        };
        debug_assert_eq!(signed.decode_unverified().as_ref(), Ok(&cert));
        let seen = self.seen(&cert);
        let reject = |reason: VouchRejection, commit: Commit| {
            Ok(self.rejected(&cert, digest, reason, commit, now))
        };

        // 8: idempotency first, then "already paired".
        if let Some(prior) = view.prior_decision(&cert.session_id, &cert.voucher, &cert.vouchee) {
            let response = self.sign(&cert, digest, prior.clone(), now);
            return Ok(Verdict {
                outcome: Outcome::Repeated(prior),
                reply: respond(response),
                commit: seen,
            });
        }
        // 8: the same voucher vouched for this vouchee before, and this device accepted it
        // then: the same acceptance again (see `ReceiverView::vouched_acceptance`).
        if let Some(prior) = accepted_before(view, &cert.vouchee, &cert.voucher) {
            let response = self.sign(&cert, digest, prior.clone(), now);
            return Ok(Verdict {
                outcome: Outcome::Repeated(prior),
                reply: respond(response),
                commit: seen,
            });
        }
        // 8–9: already paired, or sent away by the user.
        if let Err(reason) = check_vouchee_state(view, &cert.vouchee) {
            return reject(
                reason.clone(),
                self.remember(seen, &cert, rejected(reason), now),
            );
        }
        // 10: the proxied key opens under our key with the voucher, in this exact context.
        let proxied_key = match view.pairing_key(sender).and_then(|k| {
            open_proxied_key(
                &k,
                &request.sealed_key,
                &cert.session_id,
                sender,
                &self.me,
                &cert.vouchee,
            )
            .ok()
        }) {
            Some(k) => k,
            None => {
                let reason = VouchRejection::BadSealedKey;
                return reject(
                    reason.clone(),
                    self.remember(seen, &cert, rejected(reason), now),
                );
            }
        };

        if self.config.auto_accept_vouched {
            return Ok(self.accept(
                cert,
                signed.clone(),
                digest,
                proxied_key,
                AcceptedHow::Automatic,
                seen,
                now,
            ));
        }

        // Ask the user. A redelivery for an open prompt replaces it (same deadline, new
        // vouch) and does not count against the limit.
        let existing = view.open_prompt(&cert.session_id, &cert.voucher, &cert.vouchee);
        if existing.is_none() && view.pending_prompts() >= self.config.max_pending_prompts {
            return reject(VouchRejection::RateLimited, seen);
        }
        let deadline =
            existing.unwrap_or_else(|| now.saturating_add(self.config.proxy_prompt_timeout));
        let pending = ProxyPairingPending {
            session_id: cert.session_id,
            vouch_nonce: cert.nonce,
            deadline,
        };
        let prompt = PendingPrompt {
            cert,
            vouch: signed.clone(),
            digest,
            proxied_key,
            deadline,
        };
        Ok(Verdict {
            outcome: Outcome::Prompted,
            reply: Reply::Pending(pending),
            commit: Commit {
                open_prompt: Some(prompt),
                ..seen
            },
        })
    }

    /// The user answered a prompt. At or after the deadline the answer comes too late and the
    /// vouch is refused with [`VouchRejection::PromptExpired`]. A "yes" re-checks what may
    /// have changed while the prompt was open (the voucher revoked or demoted, the vouchee
    /// paired by another vouch, blocked or removed) and refuses with that check's reason.
    pub fn answer_prompt(
        &self,
        view: &impl ReceiverView,
        prompt: &PendingPrompt,
        accepted: bool,
        now: Timestamp,
    ) -> Verdict {
        let close = Commit {
            close_prompt: Some(prompt.key()),
            ..Commit::default()
        };
        if now >= prompt.deadline {
            return self.expire_prompt(prompt, now);
        }
        if !accepted {
            return self.final_rejection(prompt, VouchRejection::UserRejected, close, now);
        }
        let recheck = check_voucher(view.device(&prompt.cert.voucher))
            .and_then(|_| check_vouchee_state(view, &prompt.cert.vouchee));
        if let Err(reason) = recheck {
            return self.final_rejection(prompt, reason, close, now);
        }
        self.accept(
            prompt.cert.clone(),
            prompt.vouch.clone(),
            prompt.digest,
            prompt.proxied_key.clone(),
            AcceptedHow::UserConfirmed,
            close,
            now,
        )
    }

    /// The prompt's deadline passed unanswered: refuse with
    /// [`VouchRejection::PromptExpired`] and close the prompt.
    pub fn expire_prompt(&self, prompt: &PendingPrompt, now: Timestamp) -> Verdict {
        let close = Commit {
            close_prompt: Some(prompt.key()),
            ..Commit::default()
        };
        self.final_rejection(prompt, VouchRejection::PromptExpired, close, now)
    }

    fn final_rejection(
        &self,
        prompt: &PendingPrompt,
        reason: VouchRejection,
        commit: Commit,
        now: Timestamp,
    ) -> Verdict {
        let commit = self.remember(commit, &prompt.cert, rejected(reason.clone()), now);
        self.rejected(&prompt.cert, prompt.digest, reason, commit, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        cert: VouchCertificate,
        vouch: SignedVouch,
        digest: [u8; 32],
        proxied_key: SymmetricKey,
        how: AcceptedHow,
        commit: Commit,
        now: Timestamp,
    ) -> Verdict {
        let decision = Decision::Accepted { how };
        let response = self.sign(&cert, digest, decision.clone(), now);
        let commit = self.remember(commit, &cert, decision, now);
        let device = ProxiedDevice {
            device_id: cert.vouchee,
            public_key: cert.vouchee_key,
            name: cert.vouchee_name,
            vouched_by: cert.voucher,
            proof: VouchProof {
                vouch,
                response: response.clone(),
            },
            proxied_key,
            accepted_at: now,
        };
        Verdict {
            outcome: Outcome::Accepted(how),
            reply: respond(response),
            commit: Commit {
                device: Some(device),
                ..commit
            },
        }
    }

    fn rejected(
        &self,
        cert: &VouchCertificate,
        digest: [u8; 32],
        reason: VouchRejection,
        commit: Commit,
        now: Timestamp,
    ) -> Verdict {
        let response = self.sign(cert, digest, rejected(reason.clone()), now);
        Verdict {
            outcome: Outcome::Rejected(reason),
            reply: respond(response),
            commit,
        }
    }

    fn sign(
        &self,
        cert: &VouchCertificate,
        digest: [u8; 32],
        decision: Decision,
        now: Timestamp,
    ) -> SignedResponse {
        sign_response_as(self.keypair, self.me, cert, digest, decision, now)
    }

    /// A commit holding only the certificate's nonce for the replay cache.
    fn seen(&self, cert: &VouchCertificate) -> Commit {
        Commit {
            seen_nonce: Some(self.seen_nonce(cert)),
            ..Commit::default()
        }
    }

    fn seen_nonce(&self, cert: &VouchCertificate) -> SeenNonce {
        SeenNonce {
            nonce: cert.nonce,
            expires_at: cert
                .issued_at
                .saturating_add(self.config.vouch_signature_max_age)
                .saturating_add(self.config.clock_skew_allowance),
        }
    }

    fn remember(
        &self,
        commit: Commit,
        cert: &VouchCertificate,
        decision: Decision,
        now: Timestamp,
    ) -> Commit {
        Commit {
            decision: Some(DecisionRecord {
                session_id: cert.session_id,
                voucher: cert.voucher,
                vouchee: cert.vouchee,
                decision,
                expires_at: now.saturating_add(self.config.queue.expiry),
            }),
            ..commit
        }
    }
}

fn rejected(reason: VouchRejection) -> Decision {
    Decision::Rejected { reason }
}

fn respond(response: SignedResponse) -> Reply {
    Reply::Response(ProxyPairingResponse { response })
}

/// Check 2: the voucher is known, paired directly and Trusted.
fn check_voucher(device: Option<KnownDevice>) -> Result<KnownDevice, VouchRejection> {
    let device = device.ok_or(VouchRejection::VoucherNotPaired)?;
    if device.pairing_type != PairingType::Direct {
        return Err(VouchRejection::VoucherNotDirect);
    }
    if device.trust_level != TrustLevel::Trusted {
        return Err(VouchRejection::VoucherNotTrusted);
    }
    Ok(device)
}

/// Checks 8 (second half) and 9. A device the user blocked may still have a record (trust
/// level Blocked); it is reported as blocked, not as already paired, because that is the
/// reason the user would want to see.
fn check_vouchee_state(view: &impl ReceiverView, vouchee: &DeviceId) -> Result<(), VouchRejection> {
    let known = view.device(vouchee);
    let blocked = matches!(&known, Some(d) if d.trust_level == TrustLevel::Blocked);
    if known.is_some() && !blocked {
        return Err(VouchRejection::AlreadyPaired);
    }
    if blocked || view.is_tombstoned(vouchee) {
        return Err(VouchRejection::VoucheeBlocked);
    }
    Ok(())
}

/// The acceptance this device gave `vouchee` on a vouch from `voucher`, if it still holds
/// `vouchee` as a proxied, not blocked device vouched for by that same voucher.
fn accepted_before(
    view: &impl ReceiverView,
    vouchee: &DeviceId,
    voucher: &DeviceId,
) -> Option<Decision> {
    let known = view.device(vouchee)?;
    if known.pairing_type != PairingType::Proxied || known.trust_level == TrustLevel::Blocked {
        return None;
    }
    match view.vouched_acceptance(vouchee)? {
        (by, decision @ Decision::Accepted { .. }) if by == *voucher => Some(decision),
        _ => None,
    }
}

/// What a refusal before the certificate is fully validated stores.
#[derive(Clone, Copy)]
enum Keep {
    /// Checks 1–5: nothing.
    Nothing,
    /// Check 6: the nonce.
    Nonce,
    /// Check 7: the nonce and the decision.
    NonceAndDecision,
}

/// The vouch certificate as it is first read: the same fields and encoding as
/// [`VouchCertificate`], but with the three device ids as raw bytes. Parsing a device id
/// validates the Ed25519 key inside it (two point decompressions each); the receiver only
/// needs to *compare* the voucher and target with ids it already holds, and derives the
/// vouchee id from the vouchee key. Anything accepted this way is rebuilt as a fully typed
/// certificate from validated parts (and checked equal to the typed decode in debug builds).
#[derive(Deserialize)]
struct CertificateWire {
    v: u64,
    session_id: SessionId,
    voucher: ByteBuf,
    vouchee: ByteBuf,
    vouchee_key: DevicePublicKey,
    vouchee_name: DisplayName,
    target: ByteBuf,
    issued_at: Timestamp,
    nonce: VouchNonce,
}

/// The error of the fully typed decode, for a certificate the first stage could not read.
/// The typed decode is the stricter of the two, so it fails too.
fn malformed(signed: &SignedVouch) -> ReceiveError {
    match signed.decode_unverified() {
        Err(e) => ReceiveError::Malformed(e),
        Ok(_) => ReceiveError::Malformed(DecodeError::Schema("vouch certificate fields".into())),
    }
}
