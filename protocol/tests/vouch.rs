//! The receiver's decision on a vouch (`vouch.rs`): one test per check of the design, each
//! asserting the exact `VouchRejection`, the signed reply, and what is (not) stored; the
//! signature edge cases; and the wire-format properties (round trips, no panics).

use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeSet, HashMap, HashSet};
use vouchnet_protocol::codec;
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair, DevicePublicKey, KeyError};
use vouchnet_protocol::ids::{RekeyId, SessionId, TxId, VouchNonce};
use vouchnet_protocol::keys::{derive_proxied_key, seal_proxied_key};
use vouchnet_protocol::messages::*;
use vouchnet_protocol::model::{KnownDevice, PairingType, TrustLevel};
use vouchnet_protocol::signing::{
    sign_bytes, verify_bytes, SignatureError, Signed, TAG_VOUCH_CERTIFICATE, TAG_VOUCH_RESPONSE,
};
use vouchnet_protocol::vouch::*;
use vouchnet_protocol::{DecodeError, Limits, ProtocolConfig, SymmetricKey, Timestamp};

// ---------------------------------------------------------------------------------------
// An in-memory node state, as the node would keep it.

#[derive(Default)]
struct MemView {
    devices: HashMap<DeviceId, KnownDevice>,
    keys: HashMap<DeviceId, SymmetricKey>,
    tombstones: HashSet<DeviceId>,
    nonces: HashMap<VouchNonce, Timestamp>,
    decisions: HashMap<(SessionId, DeviceId, DeviceId), Decision>,
    prompts: HashMap<PromptKey, PendingPrompt>,
    other_prompts: usize,
    /// Proxied vouchee → the voucher it was accepted from, and the decision signed then.
    vouched: HashMap<DeviceId, (DeviceId, Decision)>,
}

impl ReceiverView for MemView {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.devices.get(id).cloned()
    }
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.keys.get(id).cloned()
    }
    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.tombstones.contains(id)
    }
    fn nonce_seen(&self, nonce: &VouchNonce) -> bool {
        self.nonces.contains_key(nonce)
    }
    fn prior_decision(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Decision> {
        self.decisions.get(&(*session, *voucher, *vouchee)).cloned()
    }
    fn open_prompt(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Timestamp> {
        self.prompts
            .get(&PromptKey {
                session_id: *session,
                voucher: *voucher,
                vouchee: *vouchee,
            })
            .map(|p| p.deadline)
    }
    fn pending_prompts(&self) -> usize {
        self.other_prompts + self.prompts.len()
    }
    fn vouched_acceptance(&self, vouchee: &DeviceId) -> Option<(DeviceId, Decision)> {
        self.vouched.get(vouchee).cloned()
    }
}

impl MemView {
    /// What the node does with a commit, in one transaction.
    fn apply(&mut self, commit: &Commit) {
        if let Some(n) = commit.seen_nonce {
            self.nonces.insert(n.nonce, n.expires_at);
        }
        if let Some(d) = &commit.decision {
            self.decisions
                .insert((d.session_id, d.voucher, d.vouchee), d.decision.clone());
        }
        if let Some(dev) = &commit.device {
            self.devices.entry(dev.device_id).or_insert(KnownDevice {
                public_key: dev.public_key,
                pairing_type: PairingType::Proxied,
                trust_level: TrustLevel::Trusted,
            });
        }
        if let Some(k) = &commit.close_prompt {
            self.prompts.remove(k);
        }
        if let Some(p) = &commit.open_prompt {
            self.prompts.insert(p.key(), p.clone());
        }
    }

    /// The persisted replay cache, as bytes.
    fn persist_nonces(&self) -> Vec<u8> {
        let mut v: Vec<(VouchNonce, Timestamp)> =
            self.nonces.iter().map(|(n, t)| (*n, *t)).collect();
        v.sort();
        codec::encode(&v)
    }
}

fn direct(kp: &DeviceKeypair, trust: TrustLevel) -> KnownDevice {
    KnownDevice {
        public_key: kp.public(),
        pairing_type: PairingType::Direct,
        trust_level: trust,
    }
}

// ---------------------------------------------------------------------------------------
// A small world: T (this device, the target), V (the voucher), E (the vouchee), X (another
// directly paired device).

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

struct World {
    cfg: ProtocolConfig,
    rng: ChaCha20Rng,
    t: DeviceKeypair,
    v: DeviceKeypair,
    e: DeviceKeypair,
    x: DeviceKeypair,
    k_vt: SymmetricKey,
    k_ve: SymmetricKey,
    session: SessionId,
    view: MemView,
}

impl World {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let t = DeviceKeypair::generate(&mut rng);
        let v = DeviceKeypair::generate(&mut rng);
        let e = DeviceKeypair::generate(&mut rng);
        let x = DeviceKeypair::generate(&mut rng);
        let k_vt = SymmetricKey::from_bytes([0x11; 32]);
        let k_ve = SymmetricKey::from_bytes([0x22; 32]);
        let session = SessionId::random(&mut rng);
        let mut view = MemView::default();
        view.devices
            .insert(v.device_id(), direct(&v, TrustLevel::Trusted));
        view.devices
            .insert(x.device_id(), direct(&x, TrustLevel::Trusted));
        view.keys.insert(v.device_id(), k_vt.clone());
        view.keys
            .insert(x.device_id(), SymmetricKey::from_bytes([0x33; 32]));
        World {
            cfg: ProtocolConfig::default(),
            rng,
            t,
            v,
            e,
            x,
            k_vt,
            k_ve,
            session,
            view,
        }
    }

    fn tid(&self) -> DeviceId {
        self.t.device_id()
    }
    fn vid(&self) -> DeviceId {
        self.v.device_id()
    }
    fn eid(&self) -> DeviceId {
        self.e.device_id()
    }

    /// The certificate an honest V would sign for T about E, issued at `issued_at`.
    fn cert(&mut self, issued_at: Timestamp) -> VouchCertificate {
        VouchCertificate {
            v: CERTIFICATE_VERSION,
            session_id: self.session,
            voucher: self.vid(),
            vouchee: self.eid(),
            vouchee_key: self.e.public(),
            vouchee_name: DisplayName::new("phone").unwrap(),
            target: self.tid(),
            issued_at,
            nonce: VouchNonce::random(&mut self.rng),
        }
    }

    /// Signs `cert` with `signer` and seals the proxied key under V–T's key for the context
    /// the certificate names.
    fn request_signed_by(
        &mut self,
        cert: &VouchCertificate,
        signer: &DeviceKeypair,
    ) -> ProxyPairingRequest {
        let vouch = Signed::sign(signer, cert);
        let proxied = self.proxied_key(cert);
        let sealed_key = seal_proxied_key(
            &self.k_vt,
            &proxied,
            &cert.session_id,
            &cert.voucher,
            &cert.target,
            &cert.vouchee,
            &mut self.rng,
        );
        ProxyPairingRequest { vouch, sealed_key }
    }

    fn request(&mut self, cert: &VouchCertificate) -> ProxyPairingRequest {
        let v = DeviceKeypair::from_seed(&self.v.seed());
        self.request_signed_by(cert, &v)
    }

    fn proxied_key(&self, cert: &VouchCertificate) -> SymmetricKey {
        derive_proxied_key(
            &self.k_ve,
            &cert.session_id,
            &cert.voucher,
            &cert.target,
            &cert.vouchee,
        )
    }

    fn fresh_request(&mut self) -> (VouchCertificate, ProxyPairingRequest) {
        let cert = self.cert(NOW);
        let req = self.request(&cert);
        (cert, req)
    }

    fn receive_from(
        &self,
        sender: &DeviceId,
        req: &ProxyPairingRequest,
        now: Timestamp,
    ) -> Result<Verdict, ReceiveError> {
        Receiver::new(&self.t, &self.cfg).receive(&self.view, sender, req, now)
    }

    fn receive(&self, req: &ProxyPairingRequest, now: Timestamp) -> Verdict {
        self.receive_from(&self.vid(), req, now)
            .expect("request decodes")
    }

    /// Checks that `reply` is T's signed answer to `req` with `decision`, and returns it.
    fn assert_signed_answer(
        &self,
        reply: &Reply,
        req: &ProxyPairingRequest,
        decision: Decision,
        now: Timestamp,
    ) {
        let cert = req.vouch.decode_unverified().unwrap();
        let signed = reply.response().expect("a signed response");
        let r = signed.verify(&self.t.public()).expect("signed by T");
        assert_eq!(
            r,
            VouchResponse {
                v: RESPONSE_VERSION,
                session_id: cert.session_id,
                vouch_nonce: cert.nonce,
                vouch_digest: req.vouch.body_digest(),
                responder: self.tid(),
                voucher: cert.voucher,
                vouchee: cert.vouchee,
                decision,
                decided_at: now,
            }
        );
    }

    /// Asserts a rejection with `reason`, a signed refusal, and exactly the given commit.
    fn assert_rejected(
        &self,
        req: &ProxyPairingRequest,
        now: Timestamp,
        reason: VouchRejection,
    ) -> Verdict {
        let verdict = self.receive(req, now);
        assert_eq!(verdict.outcome, Outcome::Rejected(reason.clone()));
        self.assert_signed_answer(&verdict.reply, req, Decision::Rejected { reason }, now);
        verdict
    }

    fn seen(&self, cert: &VouchCertificate) -> SeenNonce {
        SeenNonce {
            nonce: cert.nonce,
            expires_at: cert
                .issued_at
                .saturating_add(std::time::Duration::from_secs(360)),
        }
    }

    fn remembered(
        &self,
        cert: &VouchCertificate,
        decision: Decision,
        now: Timestamp,
    ) -> DecisionRecord {
        DecisionRecord {
            session_id: cert.session_id,
            voucher: cert.voucher,
            vouchee: cert.vouchee,
            decision,
            expires_at: now.saturating_add(self.cfg.queue.expiry),
        }
    }
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------
// The accepted path.

#[test]
fn a_valid_vouch_is_accepted_automatically_with_everything_to_store() {
    let mut w = World::new();
    let (cert, req) = w.fresh_request();
    let verdict = w.receive(&req, NOW);

    assert_eq!(verdict.outcome, Outcome::Accepted(AcceptedHow::Automatic));
    let accepted = Decision::Accepted {
        how: AcceptedHow::Automatic,
    };
    w.assert_signed_answer(&verdict.reply, &req, accepted.clone(), NOW);

    let response = verdict.reply.response().unwrap().clone();
    let device = verdict.commit.device.clone().expect("device record");
    assert_eq!(device.device_id, w.eid());
    assert_eq!(device.public_key, w.e.public());
    assert_eq!(device.name.as_str(), "phone");
    assert_eq!(device.vouched_by, w.vid());
    assert_eq!(device.proof.vouch, req.vouch);
    assert_eq!(device.proof.response, response);
    assert_eq!(device.proxied_key, w.proxied_key(&cert));
    assert_eq!(device.accepted_at, NOW);
    assert_eq!(verdict.commit.seen_nonce, Some(w.seen(&cert)));
    assert_eq!(
        verdict.commit.decision,
        Some(w.remembered(&cert, accepted, NOW))
    );
    assert_eq!(verdict.commit.open_prompt, None);
    assert_eq!(verdict.commit.close_prompt, None);
}

#[test]
fn the_replay_cache_entry_expires_after_max_age_plus_skew() {
    let mut w = World::new();
    let (cert, req) = w.fresh_request();
    let verdict = w.receive(&req, NOW);
    assert_eq!(
        verdict.commit.seen_nonce.unwrap().expires_at,
        Timestamp::from_millis(cert.issued_at.as_millis() + 300_000 + 60_000)
    );
}

// ---------------------------------------------------------------------------------------
// Check 4: the time window, at its boundaries.

fn outcome_at_age(age: i64) -> Outcome {
    let mut w = World::new();
    let issued = Timestamp::from_millis((NOW.as_millis() as i64 - age) as u64);
    let cert = w.cert(issued);
    let req = w.request(&cert);
    w.receive(&req, NOW).outcome
}

#[test]
fn a_vouch_299_seconds_old_is_accepted() {
    assert_eq!(
        outcome_at_age(299_000),
        Outcome::Accepted(AcceptedHow::Automatic)
    );
}

#[test]
fn a_vouch_exactly_300_seconds_old_is_accepted() {
    assert_eq!(
        outcome_at_age(300_000),
        Outcome::Accepted(AcceptedHow::Automatic)
    );
}

#[test]
fn a_vouch_300_001_ms_old_is_stale() {
    assert_eq!(
        outcome_at_age(300_001),
        Outcome::Rejected(VouchRejection::Stale {
            age_ms: 300_001,
            max_ms: 300_000
        })
    );
}

#[test]
fn a_vouch_301_seconds_old_is_stale_and_nothing_is_stored() {
    let mut w = World::new();
    let cert = w.cert(NOW.saturating_sub(ms(301_000)));
    let req = w.request(&cert);
    let v = w.assert_rejected(
        &req,
        NOW,
        VouchRejection::Stale {
            age_ms: 301_000,
            max_ms: 300_000,
        },
    );
    assert!(v.commit.is_empty());
}

#[test]
fn a_vouch_from_the_future_within_the_skew_allowance_is_accepted() {
    assert_eq!(
        outcome_at_age(-1),
        Outcome::Accepted(AcceptedHow::Automatic)
    );
    assert_eq!(
        outcome_at_age(-60_000),
        Outcome::Accepted(AcceptedHow::Automatic)
    );
}

#[test]
fn a_vouch_beyond_the_skew_allowance_is_from_the_future() {
    assert_eq!(
        outcome_at_age(-60_001),
        Outcome::Rejected(VouchRejection::FromFuture {
            ahead_ms: 60_001,
            allowance_ms: 60_000
        })
    );
    let mut w = World::new();
    let cert = w.cert(NOW.saturating_add(ms(3_600_000)));
    let req = w.request(&cert);
    let v = w.assert_rejected(
        &req,
        NOW,
        VouchRejection::FromFuture {
            ahead_ms: 3_600_000,
            allowance_ms: 60_000,
        },
    );
    assert!(v.commit.is_empty());
}

#[test]
fn check_freshness_boundaries_are_inclusive() {
    let cfg = ProtocolConfig::default();
    assert_eq!(
        check_freshness(NOW.saturating_sub(ms(300_000)), NOW, &cfg),
        Ok(())
    );
    assert_eq!(
        check_freshness(NOW.saturating_add(ms(60_000)), NOW, &cfg),
        Ok(())
    );
    assert_eq!(check_freshness(NOW, NOW, &cfg), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Checks 1–3: who sent it. Nothing is stored, but a signed refusal is sent.

#[test]
fn a_vouch_naming_another_voucher_than_the_connection_is_not_from_voucher() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    let xid = w.x.device_id();
    let verdict = w.receive_from(&xid, &req, NOW).unwrap();
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(VouchRejection::NotFromVoucher)
    );
    w.assert_signed_answer(
        &verdict.reply,
        &req,
        Decision::Rejected {
            reason: VouchRejection::NotFromVoucher,
        },
        NOW,
    );
    assert!(verdict.commit.is_empty());
}

#[test]
fn an_unknown_voucher_is_not_paired() {
    let mut w = World::new();
    w.view.devices.remove(&w.vid());
    let (_, req) = w.fresh_request();
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::VoucherNotPaired)
        .commit
        .is_empty());
}

#[test]
fn a_proxied_voucher_is_refused_as_multi_hop() {
    let mut w = World::new();
    let vid = w.vid();
    w.view.devices.get_mut(&vid).unwrap().pairing_type = PairingType::Proxied;
    let (_, req) = w.fresh_request();
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::VoucherNotDirect)
        .commit
        .is_empty());
}

#[test]
fn an_unreliable_voucher_is_not_trusted() {
    let mut w = World::new();
    let vid = w.vid();
    w.view.devices.get_mut(&vid).unwrap().trust_level = TrustLevel::Unreliable;
    let (_, req) = w.fresh_request();
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::VoucherNotTrusted)
        .commit
        .is_empty());
}

#[test]
fn a_blocked_voucher_is_not_trusted() {
    let mut w = World::new();
    let vid = w.vid();
    w.view.devices.get_mut(&vid).unwrap().trust_level = TrustLevel::Blocked;
    let (_, req) = w.fresh_request();
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::VoucherNotTrusted)
        .commit
        .is_empty());
}

#[test]
fn a_valid_signature_by_another_paired_device_is_a_bad_signature() {
    let mut w = World::new();
    let cert = w.cert(NOW);
    let x = DeviceKeypair::from_seed(&w.x.seed());
    let req = w.request_signed_by(&cert, &x);
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::BadSignature)
        .commit
        .is_empty());
}

#[test]
fn a_random_signature_is_a_bad_signature() {
    let mut w = World::new();
    let (_, mut req) = w.fresh_request();
    let mut sig = [0u8; 64];
    rand_chacha::rand_core::RngCore::fill_bytes(&mut w.rng, &mut sig);
    req.vouch = Signed::from_parts(req.vouch.body().to_vec(), sig.to_vec());
    assert!(w
        .assert_rejected(&req, NOW, VouchRejection::BadSignature)
        .commit
        .is_empty());
}

#[test]
fn the_signature_is_checked_with_the_stored_key_not_a_key_from_the_message() {
    // V's record holds X's key (as if V had re-keyed without re-pairing): V's real
    // signature must not verify.
    let mut w = World::new();
    let vid = w.vid();
    w.view.devices.get_mut(&vid).unwrap().public_key = w.x.public();
    let (_, req) = w.fresh_request();
    w.assert_rejected(&req, NOW, VouchRejection::BadSignature);
}

#[test]
fn a_signature_made_for_another_message_kind_is_a_bad_signature() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    let sig = sign_bytes(&w.v, TAG_VOUCH_RESPONSE, req.vouch.body());
    let forged = ProxyPairingRequest {
        vouch: Signed::from_parts(req.vouch.body().to_vec(), sig.to_vec()),
        sealed_key: req.sealed_key.clone(),
    };
    w.assert_rejected(&forged, NOW, VouchRejection::BadSignature);
}

#[test]
fn an_undecodable_certificate_is_malformed_and_unanswered() {
    let w = World::new();
    let req = ProxyPairingRequest {
        vouch: Signed::from_parts(Vec::new(), vec![0; 64]),
        sealed_key: SealedKey {
            nonce: [0; 24],
            ciphertext: [0; 48],
        },
    };
    assert_eq!(
        w.receive_from(&w.vid(), &req, NOW),
        Err(ReceiveError::Malformed(DecodeError::Empty))
    );
}

#[test]
fn an_unknown_certificate_version_is_unanswered() {
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.v = 2;
    let req = w.request(&cert);
    assert_eq!(
        w.receive_from(&w.vid(), &req, NOW),
        Err(ReceiveError::UnsupportedCertificateVersion(2))
    );
}

// ---------------------------------------------------------------------------------------
// Check 5: replay.

#[test]
fn the_same_nonce_again_is_a_replay_and_stores_nothing() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    let first = w.receive(&req, NOW);
    w.view.apply(&first.commit);
    let again = w.assert_rejected(&req, NOW.saturating_add(ms(1_000)), VouchRejection::Replay);
    assert!(again.commit.is_empty());
}

#[test]
fn the_same_nonce_after_the_replay_cache_is_reloaded_is_a_replay() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    let first = w.receive(&req, NOW);
    w.view.apply(&first.commit);
    let persisted = w.view.persist_nonces();

    // "Restart": a new view built from the persisted replay cache and the device records.
    let reloaded: Vec<(VouchNonce, Timestamp)> =
        codec::decode(&persisted, &Limits::default()).unwrap();
    let old = std::mem::take(&mut w.view);
    w.view.devices = old.devices;
    w.view.keys = old.keys;
    w.view.nonces = reloaded.into_iter().collect();
    w.view.devices.remove(&w.eid()); // even if the acceptance itself had been lost
    w.assert_rejected(&req, NOW.saturating_add(ms(5_000)), VouchRejection::Replay);
}

// ---------------------------------------------------------------------------------------
// Checks 6–10: what it says. The nonce is stored from here on.

#[test]
fn a_vouch_for_another_target_is_wrong_target() {
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.target = w.x.device_id();
    let req = w.request(&cert);
    let v = w.assert_rejected(&req, NOW, VouchRejection::WrongTarget);
    assert_eq!(
        v.commit,
        Commit {
            seen_nonce: Some(w.seen(&cert)),
            ..Commit::default()
        }
    );
}

#[test]
fn a_vouch_for_this_device_is_vouchee_is_self() {
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.vouchee = w.tid();
    cert.vouchee_key = w.t.public();
    let req = w.request(&cert);
    let v = w.assert_rejected(&req, NOW, VouchRejection::VoucheeIsSelf);
    assert_eq!(v.commit.seen_nonce, Some(w.seen(&cert)));
    assert_eq!(v.commit.device, None);
}

#[test]
fn a_vouch_for_the_voucher_itself_is_vouchee_is_voucher() {
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.vouchee = w.vid();
    cert.vouchee_key = w.v.public();
    let req = w.request(&cert);
    w.assert_rejected(&req, NOW, VouchRejection::VoucheeIsVoucher);
}

#[test]
fn a_vouchee_key_that_does_not_match_its_id_is_a_key_mismatch() {
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.vouchee_key = w.x.public();
    let req = w.request(&cert);
    let v = w.assert_rejected(&req, NOW, VouchRejection::VoucheeKeyMismatch);
    assert_eq!(v.commit.device, None);
}

#[test]
fn an_already_paired_vouchee_is_already_paired() {
    let mut w = World::new();
    let eid = w.eid();
    w.view
        .devices
        .insert(eid, direct(&w.e, TrustLevel::Trusted));
    let (cert, req) = w.fresh_request();
    let v = w.assert_rejected(&req, NOW, VouchRejection::AlreadyPaired);
    let rejection = Decision::Rejected {
        reason: VouchRejection::AlreadyPaired,
    };
    assert_eq!(
        v.commit,
        Commit {
            seen_nonce: Some(w.seen(&cert)),
            decision: Some(w.remembered(&cert, rejection, NOW)),
            ..Commit::default()
        }
    );
}

/// The voucher paired again with a device it had vouched for (the device had lost its side)
/// and vouches for it again: a target that accepted it on that voucher's earlier vouch gives
/// the same acceptance, signed afresh for this vouch, so the device can learn of it.
#[test]
fn a_vouchee_accepted_before_from_the_same_voucher_is_accepted_again() {
    let mut w = World::new();
    let (eid, vid) = (w.eid(), w.vid());
    let mut known = direct(&w.e, TrustLevel::Trusted);
    known.pairing_type = PairingType::Proxied;
    w.view.devices.insert(eid, known);
    let before = Decision::Accepted {
        how: AcceptedHow::UserConfirmed,
    };
    w.view.vouched.insert(eid, (vid, before.clone()));
    let (cert, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    assert_eq!(v.outcome, Outcome::Repeated(before.clone()));
    assert_eq!(v.commit.device, None);
    let response = v.reply.response().expect("a signed response").clone();
    let r = response
        .verify(&w.t.public())
        .expect("signed by the target");
    assert_eq!(r.decision, before);
    assert_eq!(r.session_id, cert.session_id);
    assert_eq!(r.vouch_nonce, cert.nonce);
    assert_eq!(v.commit.seen_nonce, Some(w.seen(&cert)));

    // Accepted from another voucher: already paired.
    let other = w.x.device_id();
    w.view.vouched.insert(eid, (other, before.clone()));
    let (_, again) = w.fresh_request();
    w.assert_rejected(&again, NOW, VouchRejection::AlreadyPaired);
    // Blocked since: blocked, whoever vouched for it.
    w.view.vouched.insert(eid, (vid, before));
    w.view.devices.get_mut(&eid).unwrap().trust_level = TrustLevel::Blocked;
    let (_, blocked) = w.fresh_request();
    w.assert_rejected(&blocked, NOW, VouchRejection::VoucheeBlocked);
}

#[test]
fn a_removed_vouchee_is_blocked() {
    let mut w = World::new();
    let eid = w.eid();
    w.view.tombstones.insert(eid);
    let (_, req) = w.fresh_request();
    let v = w.assert_rejected(&req, NOW, VouchRejection::VoucheeBlocked);
    assert_eq!(v.commit.device, None);
}

#[test]
fn a_vouchee_kept_with_trust_level_blocked_is_blocked_not_already_paired() {
    let mut w = World::new();
    let eid = w.eid();
    w.view
        .devices
        .insert(eid, direct(&w.e, TrustLevel::Blocked));
    let (_, req) = w.fresh_request();
    w.assert_rejected(&req, NOW, VouchRejection::VoucheeBlocked);
}

#[test]
fn a_key_sealed_under_another_key_is_a_bad_sealed_key() {
    let mut w = World::new();
    let (cert, mut req) = w.fresh_request();
    req.sealed_key = seal_proxied_key(
        &SymmetricKey::from_bytes([0x44; 32]),
        &w.proxied_key(&cert),
        &cert.session_id,
        &cert.voucher,
        &cert.target,
        &cert.vouchee,
        &mut w.rng,
    );
    let v = w.assert_rejected(&req, NOW, VouchRejection::BadSealedKey);
    assert_eq!(v.commit.device, None);
}

#[test]
fn a_key_sealed_for_another_context_is_a_bad_sealed_key() {
    let mut w = World::new();
    let (cert, mut req) = w.fresh_request();
    let xid = w.x.device_id();
    req.sealed_key = seal_proxied_key(
        &w.k_vt.clone(),
        &w.proxied_key(&cert),
        &cert.session_id,
        &cert.voucher,
        &xid, // sealed for another target
        &cert.vouchee,
        &mut w.rng,
    );
    w.assert_rejected(&req, NOW, VouchRejection::BadSealedKey);
}

#[test]
fn a_voucher_without_a_stored_pairing_key_gives_a_bad_sealed_key() {
    let mut w = World::new();
    let vid = w.vid();
    w.view.keys.remove(&vid);
    let (_, req) = w.fresh_request();
    w.assert_rejected(&req, NOW, VouchRejection::BadSealedKey);
}

#[test]
fn the_checks_run_in_the_designed_order() {
    // Wrong target *and* stale: the time check (4) comes first.
    let mut w = World::new();
    let mut cert = w.cert(NOW.saturating_sub(ms(400_000)));
    cert.target = w.x.device_id();
    let req = w.request(&cert);
    w.assert_rejected(
        &req,
        NOW,
        VouchRejection::Stale {
            age_ms: 400_000,
            max_ms: 300_000,
        },
    );

    // Vouchee is self *and* already paired *and* tombstoned: check 7 first.
    let mut w = World::new();
    let mut cert = w.cert(NOW);
    cert.vouchee = w.tid();
    cert.vouchee_key = w.t.public();
    w.view.tombstones.insert(w.tid());
    let req = w.request(&cert);
    w.assert_rejected(&req, NOW, VouchRejection::VoucheeIsSelf);

    // Already paired *and* a bad sealed key: check 8 first.
    let mut w = World::new();
    let eid = w.eid();
    w.view
        .devices
        .insert(eid, direct(&w.e, TrustLevel::Trusted));
    let (_, mut req) = w.fresh_request();
    req.sealed_key.ciphertext[0] ^= 1;
    w.assert_rejected(&req, NOW, VouchRejection::AlreadyPaired);
}

// ---------------------------------------------------------------------------------------
// Check 8: idempotency.

#[test]
fn a_redelivered_vouch_gets_the_same_decision_again_not_already_paired() {
    let mut w = World::new();
    let (_, first) = w.fresh_request();
    let v1 = w.receive(&first, NOW);
    w.view.apply(&v1.commit);

    // The voucher never saw the answer and redelivers, signed afresh with a new nonce.
    let later = NOW.saturating_add(ms(20_000));
    let cert2 = w.cert(later);
    let second = w.request(&cert2);
    let v2 = w.receive(&second, later);
    let accepted = Decision::Accepted {
        how: AcceptedHow::Automatic,
    };
    assert_eq!(v2.outcome, Outcome::Repeated(accepted.clone()));
    w.assert_signed_answer(&v2.reply, &second, accepted, later);
    assert_eq!(
        v2.commit,
        Commit {
            seen_nonce: Some(w.seen(&cert2)),
            ..Commit::default()
        }
    );
}

#[test]
fn a_redelivered_vouch_after_a_refusal_gets_the_same_refusal() {
    let mut w = World::new();
    let eid = w.eid();
    w.view.tombstones.insert(eid);
    let (_, first) = w.fresh_request();
    let v1 = w.receive(&first, NOW);
    w.view.apply(&v1.commit);
    w.view.tombstones.clear(); // the user un-blocked meanwhile: the session's answer stands
    let (_, second) = w.fresh_request();
    let v2 = w.receive(&second, NOW);
    assert_eq!(
        v2.outcome,
        Outcome::Repeated(Decision::Rejected {
            reason: VouchRejection::VoucheeBlocked
        })
    );
}

#[test]
fn another_voucher_reusing_a_session_id_is_not_handed_the_earlier_answer() {
    let mut w = World::new();
    let (_, first) = w.fresh_request();
    let v1 = w.receive(&first, NOW);
    w.view.apply(&v1.commit);
    // X, also directly paired and trusted, learnt V's session id and replays it for E.
    let x = DeviceKeypair::from_seed(&w.x.seed());
    let xid = x.device_id();
    w.view.keys.insert(xid, w.k_vt.clone());
    let mut cert = w.cert(NOW);
    cert.voucher = xid;
    let req = w.request_signed_by(&cert, &x);
    let v = w.receive_from(&xid, &req, NOW).unwrap();
    assert_eq!(v.outcome, Outcome::Rejected(VouchRejection::AlreadyPaired));
}

#[test]
fn two_concurrent_vouches_for_the_same_device_leave_one_record() {
    // Two vouchers (V and X) vouch for E at the same time; both verdicts are computed before
    // either is stored. The store inserts a device only if absent.
    let mut w = World::new();
    let x = DeviceKeypair::from_seed(&w.x.seed());
    let xid = x.device_id();
    w.view.keys.insert(xid, w.k_vt.clone()); // sealing helper uses k_vt
    let (_, from_v) = w.fresh_request();
    let mut cert_x = w.cert(NOW);
    cert_x.voucher = xid;
    cert_x.session_id = SessionId([9; 16]);
    let from_x = w.request_signed_by(&cert_x, &x);
    let a = w.receive_from(&w.vid(), &from_v, NOW).unwrap();
    let b = w.receive_from(&xid, &from_x, NOW).unwrap();
    assert_eq!(a.outcome, Outcome::Accepted(AcceptedHow::Automatic));
    assert_eq!(b.outcome, Outcome::Accepted(AcceptedHow::Automatic));
    w.view.apply(&a.commit);
    w.view.apply(&b.commit);
    let proxied: Vec<_> = w
        .view
        .devices
        .values()
        .filter(|d| d.pairing_type == PairingType::Proxied)
        .collect();
    assert_eq!(proxied.len(), 1);
    // And a third vouch, now that the record exists, is refused as already paired.
    let mut cert3 = w.cert(NOW);
    cert3.session_id = SessionId([10; 16]);
    let third = w.request(&cert3);
    w.assert_rejected(&third, NOW, VouchRejection::AlreadyPaired);
}

// ---------------------------------------------------------------------------------------
// Asking the user.

fn asking_world() -> World {
    let mut w = World::new();
    w.cfg.auto_accept_vouched = false;
    w
}

#[test]
fn without_auto_accept_the_user_is_asked_and_the_voucher_told() {
    let mut w = asking_world();
    let (cert, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    assert_eq!(v.outcome, Outcome::Prompted);
    let deadline = NOW.saturating_add(w.cfg.proxy_prompt_timeout);
    assert_eq!(
        v.reply,
        Reply::Pending(ProxyPairingPending {
            session_id: cert.session_id,
            vouch_nonce: cert.nonce,
            deadline
        })
    );
    let prompt = v.commit.open_prompt.clone().expect("prompt");
    assert_eq!(prompt.cert, cert);
    assert_eq!(prompt.vouch, req.vouch);
    assert_eq!(prompt.digest, req.vouch.body_digest());
    assert_eq!(prompt.deadline, deadline);
    assert_eq!(prompt.proxied_key, w.proxied_key(&cert));
    assert_eq!(v.commit.seen_nonce, Some(w.seen(&cert)));
    assert_eq!(v.commit.decision, None);
    assert_eq!(v.commit.device, None);
}

#[test]
fn the_user_saying_yes_before_the_deadline_accepts() {
    let mut w = asking_world();
    let (cert, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    w.view.apply(&v.commit);
    let prompt = v.commit.open_prompt.unwrap();
    let at = prompt.deadline.saturating_sub(ms(1));
    let answer = Receiver::new(&w.t, &w.cfg).answer_prompt(&w.view, &prompt, true, at);
    let accepted = Decision::Accepted {
        how: AcceptedHow::UserConfirmed,
    };
    assert_eq!(
        answer.outcome,
        Outcome::Accepted(AcceptedHow::UserConfirmed)
    );
    w.assert_signed_answer(&answer.reply, &req, accepted.clone(), at);
    assert_eq!(answer.commit.close_prompt, Some(prompt.key()));
    assert_eq!(
        answer.commit.decision,
        Some(w.remembered(&cert, accepted, at))
    );
    assert_eq!(answer.commit.seen_nonce, None);
    let device = answer.commit.device.clone().unwrap();
    assert_eq!(device.device_id, w.eid());
    assert_eq!(device.proxied_key, w.proxied_key(&cert));
    assert_eq!(device.accepted_at, at);
    w.view.apply(&answer.commit);
    assert!(w.view.prompts.is_empty());
}

#[test]
fn the_user_saying_no_is_user_rejected() {
    let mut w = asking_world();
    let (_, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    let prompt = v.commit.open_prompt.unwrap();
    let answer = Receiver::new(&w.t, &w.cfg).answer_prompt(&w.view, &prompt, false, NOW);
    assert_eq!(
        answer.outcome,
        Outcome::Rejected(VouchRejection::UserRejected)
    );
    w.assert_signed_answer(
        &answer.reply,
        &req,
        Decision::Rejected {
            reason: VouchRejection::UserRejected,
        },
        NOW,
    );
    assert_eq!(answer.commit.device, None);
}

#[test]
fn an_answer_at_the_deadline_is_prompt_expired() {
    let mut w = asking_world();
    let (_, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    let prompt = v.commit.open_prompt.unwrap();
    let answer = Receiver::new(&w.t, &w.cfg).answer_prompt(&w.view, &prompt, true, prompt.deadline);
    assert_eq!(
        answer.outcome,
        Outcome::Rejected(VouchRejection::PromptExpired)
    );
    assert_eq!(answer.commit.device, None);
    assert_eq!(answer.commit.close_prompt, Some(prompt.key()));
}

#[test]
fn an_unanswered_prompt_expires_at_its_deadline() {
    let mut w = asking_world();
    let (_, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    let prompt = v.commit.open_prompt.unwrap();
    let expired = Receiver::new(&w.t, &w.cfg).expire_prompt(&prompt, prompt.deadline);
    assert_eq!(
        expired.outcome,
        Outcome::Rejected(VouchRejection::PromptExpired)
    );
    w.assert_signed_answer(
        &expired.reply,
        &req,
        Decision::Rejected {
            reason: VouchRejection::PromptExpired,
        },
        prompt.deadline,
    );
}

#[test]
fn a_yes_rechecks_what_changed_while_the_prompt_was_open() {
    let mut w = asking_world();
    let (_, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    let prompt = v.commit.open_prompt.unwrap();
    let r = Receiver::new(&w.t, &w.cfg);

    let mut paired_meanwhile = MemView {
        devices: w.view.devices.clone(),
        ..MemView::default()
    };
    paired_meanwhile
        .devices
        .insert(w.eid(), direct(&w.e, TrustLevel::Trusted));
    let a = r.answer_prompt(&paired_meanwhile, &prompt, true, NOW);
    assert_eq!(a.outcome, Outcome::Rejected(VouchRejection::AlreadyPaired));

    let mut demoted = MemView {
        devices: w.view.devices.clone(),
        ..MemView::default()
    };
    demoted.devices.get_mut(&w.vid()).unwrap().trust_level = TrustLevel::Unreliable;
    let a = r.answer_prompt(&demoted, &prompt, true, NOW);
    assert_eq!(
        a.outcome,
        Outcome::Rejected(VouchRejection::VoucherNotTrusted)
    );

    let mut blocked = MemView {
        devices: w.view.devices.clone(),
        ..MemView::default()
    };
    blocked.tombstones.insert(w.eid());
    let a = r.answer_prompt(&blocked, &prompt, true, NOW);
    assert_eq!(a.outcome, Outcome::Rejected(VouchRejection::VoucheeBlocked));
    assert_eq!(a.commit.device, None);
}

#[test]
fn too_many_open_prompts_is_rate_limited() {
    let mut w = asking_world();
    w.view.other_prompts = w.cfg.max_pending_prompts;
    let (cert, req) = w.fresh_request();
    let v = w.assert_rejected(&req, NOW, VouchRejection::RateLimited);
    // The nonce is stored; the transient refusal is not remembered as the session's answer.
    assert_eq!(
        v.commit,
        Commit {
            seen_nonce: Some(w.seen(&cert)),
            ..Commit::default()
        }
    );

    let mut w = asking_world();
    w.view.other_prompts = w.cfg.max_pending_prompts - 1;
    let (_, req) = w.fresh_request();
    assert_eq!(w.receive(&req, NOW).outcome, Outcome::Prompted);
}

#[test]
fn a_redelivery_for_an_open_prompt_replaces_it_keeping_the_deadline_and_the_count() {
    let mut w = asking_world();
    w.view.other_prompts = w.cfg.max_pending_prompts - 1;
    let (_, req) = w.fresh_request();
    let v = w.receive(&req, NOW);
    w.view.apply(&v.commit);
    assert_eq!(w.view.pending_prompts(), w.cfg.max_pending_prompts);

    let later = NOW.saturating_add(ms(40_000));
    let cert2 = w.cert(later);
    let req2 = w.request(&cert2);
    let v2 = w.receive(&req2, later);
    assert_eq!(v2.outcome, Outcome::Prompted);
    let deadline = NOW.saturating_add(w.cfg.proxy_prompt_timeout);
    assert_eq!(
        v2.reply,
        Reply::Pending(ProxyPairingPending {
            session_id: cert2.session_id,
            vouch_nonce: cert2.nonce,
            deadline
        })
    );
    w.view.apply(&v2.commit);
    assert_eq!(w.view.prompts.len(), 1);
    assert_eq!(w.view.prompts.values().next().unwrap().cert, cert2);
}

#[test]
fn sign_response_binds_the_vouch_and_the_responder() {
    let mut w = World::new();
    let (cert, req) = w.fresh_request();
    let d = Decision::Rejected {
        reason: VouchRejection::UserRejected,
    };
    let signed = sign_response(&w.t, &cert, req.vouch.body_digest(), d.clone(), NOW);
    w.assert_signed_answer(
        &Reply::Response(ProxyPairingResponse {
            response: signed.clone(),
        }),
        &req,
        d,
        NOW,
    );
    // Under another key it does not verify.
    assert_eq!(signed.verify(&w.x.public()), Err(SignatureError::Invalid));
}

// ---------------------------------------------------------------------------------------
// Every single-bit flip of a signed vouch is refused before any trust is given.

fn assert_flip_refused(w: &World, req: &ProxyPairingRequest, in_signature: bool, what: &str) {
    match w.receive_from(&w.vid(), req, NOW) {
        Err(ReceiveError::Malformed(_)) | Err(ReceiveError::UnsupportedCertificateVersion(_)) => {
            assert!(
                !in_signature,
                "{what}: a signature flip cannot break decoding"
            );
        }
        Ok(v) => {
            let allowed: &[VouchRejection] = if in_signature {
                &[VouchRejection::BadSignature]
            } else {
                // A flip inside the voucher id can yield another valid id: checks 1–2 catch it
                // before the signature is even looked at.
                &[
                    VouchRejection::BadSignature,
                    VouchRejection::NotFromVoucher,
                    VouchRejection::VoucherNotPaired,
                ]
            };
            match &v.outcome {
                Outcome::Rejected(r) if allowed.contains(r) => {}
                other => panic!("{what}: {other:?}"),
            }
            assert!(v.commit.is_empty(), "{what}: stored something");
        }
        Err(e) => panic!("{what}: {e:?}"),
    }
}

#[test]
fn every_single_bit_flip_of_a_signed_vouch_is_refused() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    assert_eq!(
        w.receive(&req, NOW).outcome,
        Outcome::Accepted(AcceptedHow::Automatic)
    );
    let body = req.vouch.body().to_vec();
    let sig = req.vouch.signature().to_vec();
    for bit in 0..body.len() * 8 {
        let mut b = body.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let flipped = ProxyPairingRequest {
            vouch: Signed::from_parts(b, sig.clone()),
            sealed_key: req.sealed_key.clone(),
        };
        assert_flip_refused(&w, &flipped, false, &format!("body bit {bit}"));
    }
    for bit in 0..sig.len() * 8 {
        let mut s = sig.clone();
        s[bit / 8] ^= 1 << (bit % 8);
        let flipped = ProxyPairingRequest {
            vouch: Signed::from_parts(body.clone(), s),
            sealed_key: req.sealed_key.clone(),
        };
        assert_flip_refused(&w, &flipped, true, &format!("signature bit {bit}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_multi_byte_mutations_of_a_signed_vouch_are_refused(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        in_signature in any::<bool>(),
    ) {
        let mut w = World::new();
        let (_, req) = w.fresh_request();
        let mut body = req.vouch.body().to_vec();
        let mut sig = req.vouch.signature().to_vec();
        for (i, x) in &edits {
            if in_signature {
                let n = i.index(sig.len());
                sig[n] ^= x;
            } else {
                let n = i.index(body.len());
                body[n] ^= x;
            }
        }
        let mutated = ProxyPairingRequest {
            vouch: Signed::from_parts(body, sig),
            sealed_key: req.sealed_key.clone(),
        };
        assert_flip_refused(&w, &mutated, in_signature, "mutation");
    }
}

// ---------------------------------------------------------------------------------------
// Ed25519 edge cases against `signing::verify_bytes` (Wycheproof / CCTV classes).

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_le(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = a[i] as u16 + b[i] as u16 + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn signed_sample() -> (DeviceKeypair, Vec<u8>, [u8; 64]) {
    let kp = DeviceKeypair::from_seed(&[5; 32]);
    let body = b"a 64-byte-ish message standing in for a vouch certificate body..".to_vec();
    let sig = sign_bytes(&kp, TAG_VOUCH_CERTIFICATE, &body);
    assert_eq!(
        verify_bytes(&kp.public(), TAG_VOUCH_CERTIFICATE, &body, &sig),
        Ok(())
    );
    (kp, body, sig)
}

#[test]
fn non_canonical_s_is_rejected() {
    let (kp, body, sig) = signed_sample();
    let mut bad = sig;
    bad[32..].copy_from_slice(&add_le(&sig[32..], &L));
    assert_ne!(bad, sig);
    assert_eq!(
        verify_bytes(&kp.public(), TAG_VOUCH_CERTIFICATE, &body, &bad),
        Err(SignatureError::Invalid)
    );
}

#[test]
fn small_order_r_is_rejected() {
    let (kp, body, sig) = signed_sample();
    let identity = {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    };
    let order_two = {
        let mut p = [0xffu8; 32];
        p[0] = 0xec;
        p[31] = 0x7f;
        p
    };
    for r in [identity, order_two] {
        let mut bad = sig;
        bad[..32].copy_from_slice(&r);
        assert_eq!(
            verify_bytes(&kp.public(), TAG_VOUCH_CERTIFICATE, &body, &bad),
            Err(SignatureError::Invalid)
        );
    }
}

#[test]
fn small_order_public_keys_are_refused_as_weak() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        DevicePublicKey::from_bytes(&identity),
        Err(KeyError::WeakKey)
    );
    // y = 0: a point of order 4.
    assert_eq!(
        DevicePublicKey::from_bytes(&[0u8; 32]),
        Err(KeyError::WeakKey)
    );
}

#[test]
fn a_signature_for_another_context_tag_is_rejected() {
    let (kp, body, _) = signed_sample();
    let other = sign_bytes(&kp, TAG_VOUCH_RESPONSE, &body);
    assert_eq!(
        verify_bytes(&kp.public(), TAG_VOUCH_CERTIFICATE, &body, &other),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        verify_bytes(&kp.public(), TAG_VOUCH_RESPONSE, &body, &other),
        Ok(())
    );
}

#[test]
fn a_signature_of_the_wrong_length_is_rejected() {
    let (kp, body, sig) = signed_sample();
    assert_eq!(
        verify_bytes(&kp.public(), TAG_VOUCH_CERTIFICATE, &body, &sig[..63]),
        Err(SignatureError::WrongLength(63))
    );
}

#[test]
fn a_non_canonical_s_on_a_vouch_is_a_bad_signature_at_the_receiver() {
    let mut w = World::new();
    let (_, req) = w.fresh_request();
    let mut sig = req.vouch.signature().to_vec();
    let s = add_le(&sig[32..], &L);
    sig[32..].copy_from_slice(&s);
    let bad = ProxyPairingRequest {
        vouch: Signed::from_parts(req.vouch.body().to_vec(), sig),
        sealed_key: req.sealed_key,
    };
    w.assert_rejected(&bad, NOW, VouchRejection::BadSignature);
}

// ---------------------------------------------------------------------------------------
// Wire format: every message kind round-trips; nothing panics the decoder.

fn arb_keypair() -> impl Strategy<Value = DeviceKeypair> {
    any::<[u8; 32]>().prop_map(|s| DeviceKeypair::from_seed(&s))
}
fn arb_device_id() -> impl Strategy<Value = DeviceId> {
    arb_keypair().prop_map(|k| k.device_id())
}
fn arb_public_key() -> impl Strategy<Value = DevicePublicKey> {
    arb_keypair().prop_map(|k| k.public())
}
fn arb_name() -> impl Strategy<Value = DisplayName> {
    "[^\\p{Cc}]{0,16}".prop_map(|s| DisplayName::new(s).unwrap())
}
fn arb_ts() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp::from_millis)
}
fn arb_rejection() -> impl Strategy<Value = VouchRejection> {
    use VouchRejection::*;
    prop_oneof![
        Just(NotFromVoucher),
        Just(VoucherNotPaired),
        Just(VoucherNotDirect),
        Just(VoucherNotTrusted),
        Just(BadSignature),
        (any::<u64>(), any::<u64>()).prop_map(|(age_ms, max_ms)| Stale { age_ms, max_ms }),
        (any::<u64>(), any::<u64>()).prop_map(|(ahead_ms, allowance_ms)| FromFuture {
            ahead_ms,
            allowance_ms
        }),
        Just(Replay),
        Just(WrongTarget),
        Just(VoucheeIsSelf),
        Just(VoucheeIsVoucher),
        Just(VoucheeKeyMismatch),
        Just(AlreadyPaired),
        Just(VoucheeBlocked),
        Just(BadSealedKey),
        Just(UserRejected),
        Just(PromptExpired),
        Just(RateLimited),
        Just(Timeout),
        Just(Unsupported),
    ]
}
fn arb_decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        Just(Decision::Accepted {
            how: AcceptedHow::Automatic
        }),
        Just(Decision::Accepted {
            how: AcceptedHow::UserConfirmed
        }),
        arb_rejection().prop_map(|reason| Decision::Rejected { reason }),
    ]
}
fn arb_cert() -> impl Strategy<Value = VouchCertificate> {
    (
        any::<u64>(),
        any::<[u8; 16]>(),
        arb_device_id(),
        arb_device_id(),
        arb_public_key(),
        arb_name(),
        arb_device_id(),
        arb_ts(),
        any::<[u8; 16]>(),
    )
        .prop_map(
            |(v, s, voucher, vouchee, vouchee_key, vouchee_name, target, issued_at, n)| {
                VouchCertificate {
                    v,
                    session_id: SessionId(s),
                    voucher,
                    vouchee,
                    vouchee_key,
                    vouchee_name,
                    target,
                    issued_at,
                    nonce: VouchNonce(n),
                }
            },
        )
}
fn arb_signed_vouch() -> impl Strategy<Value = SignedVouch> {
    (arb_keypair(), arb_cert()).prop_map(|(k, c)| Signed::sign(&k, &c))
}
fn arb_response() -> impl Strategy<Value = VouchResponse> {
    (
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        arb_device_id(),
        arb_device_id(),
        arb_device_id(),
        arb_decision(),
        arb_ts(),
    )
        .prop_map(
            |(v, s, n, vouch_digest, responder, voucher, vouchee, decision, decided_at)| {
                VouchResponse {
                    v,
                    session_id: SessionId(s),
                    vouch_nonce: VouchNonce(n),
                    vouch_digest,
                    responder,
                    voucher,
                    vouchee,
                    decision,
                    decided_at,
                }
            },
        )
}
fn arb_signed_response() -> impl Strategy<Value = SignedResponse> {
    (arb_keypair(), arb_response()).prop_map(|(k, r)| Signed::sign(&k, &r))
}
fn arb_cancel_reason() -> impl Strategy<Value = CancelReason> {
    use CancelReason::*;
    prop::sample::select(vec![
        UserRejected,
        CommitmentMismatch,
        KeyConfirmationFailed,
        Timeout,
        AlreadyInProgress,
        RateLimited,
        UnexpectedMessage,
        UnsupportedMethod,
        InvalidKeyExchange,
        Aborted,
    ])
}
fn arb_error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        proptest::collection::vec(any::<u64>(), 0..4)
            .prop_map(|supported| ErrorCode::UnsupportedVersion { supported }),
        Just(ErrorCode::Malformed),
        Just(ErrorCode::RateLimited),
        Just(ErrorCode::NotPaired),
    ]
}
fn arb_accepted_target() -> impl Strategy<Value = AcceptedTarget> {
    (
        arb_device_id(),
        arb_public_key(),
        arb_name(),
        arb_signed_response(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
    )
        .prop_map(
            |(device_id, public_key, name, response, addrs)| AcceptedTarget {
                device_id,
                public_key,
                name,
                response,
                addrs: addrs.into_iter().map(AddrHint).collect(),
            },
        )
}

fn arb_message() -> impl Strategy<Value = Message> {
    let b32 = || any::<[u8; 32]>();
    prop_oneof![
        (any::<[u8; 16]>(), ".{0,40}", b32(), arb_name()).prop_map(
            |(t, method, commitment, name)| {
                Message::PairingRequest(PairingRequest {
                    tx_id: TxId(t),
                    method,
                    commitment,
                    name,
                })
            }
        ),
        (any::<[u8; 16]>(), b32(), b32(), arb_name()).prop_map(|(t, ephemeral, nonce, name)| {
            Message::PairingKey(PairingKey {
                tx_id: TxId(t),
                ephemeral,
                nonce,
                name,
            })
        }),
        (any::<[u8; 16]>(), b32(), b32()).prop_map(|(t, ephemeral, nonce)| Message::PairingReveal(
            PairingReveal {
                tx_id: TxId(t),
                ephemeral,
                nonce
            }
        )),
        (any::<[u8; 16]>(), b32()).prop_map(|(t, mac)| Message::PairingConfirm(PairingConfirm {
            tx_id: TxId(t),
            mac
        })),
        (any::<[u8; 16]>(), arb_cancel_reason()).prop_map(|(t, reason)| Message::PairingCancel(
            PairingCancel {
                tx_id: TxId(t),
                reason
            }
        )),
        b32().prop_map(|challenge| Message::KeyProofChallenge(KeyProofChallenge { challenge })),
        (b32(), b32()).prop_map(
            |(challenge, mac)| Message::KeyProofResponse(KeyProofResponse { challenge, mac })
        ),
        (
            arb_signed_vouch(),
            any::<[u8; 24]>(),
            proptest::collection::vec(any::<u8>(), 48)
        )
            .prop_map(|(vouch, nonce, ct)| {
                Message::ProxyPairingRequest(ProxyPairingRequest {
                    vouch,
                    sealed_key: SealedKey {
                        nonce,
                        ciphertext: ct.try_into().unwrap(),
                    },
                })
            }),
        (any::<[u8; 16]>(), any::<[u8; 16]>(), arb_ts()).prop_map(|(s, n, deadline)| {
            Message::ProxyPairingPending(ProxyPairingPending {
                session_id: SessionId(s),
                vouch_nonce: VouchNonce(n),
                deadline,
            })
        }),
        arb_signed_response()
            .prop_map(|response| Message::ProxyPairingResponse(ProxyPairingResponse { response })),
        (
            any::<[u8; 16]>(),
            proptest::collection::vec(arb_accepted_target(), 0..4),
            any::<bool>()
        )
            .prop_map(|(s, accepted, session_completed)| {
                Message::ProxyPairingComplete(ProxyPairingComplete {
                    session_id: SessionId(s),
                    accepted,
                    session_completed,
                })
            }),
        (any::<[u8; 16]>(), b32(), b32()).prop_map(|(r, ephemeral, nonce)| Message::RekeyInit(
            RekeyInit {
                rekey_id: RekeyId(r),
                ephemeral,
                nonce
            }
        )),
        (any::<[u8; 16]>(), b32(), b32(), b32()).prop_map(|(r, ephemeral, nonce, mac)| {
            Message::RekeyAccept(RekeyAccept {
                rekey_id: RekeyId(r),
                ephemeral,
                nonce,
                mac,
            })
        }),
        (any::<[u8; 16]>(), b32()).prop_map(|(r, mac)| Message::RekeyConfirm(RekeyConfirm {
            rekey_id: RekeyId(r),
            mac
        })),
        (
            any::<[u8; 24]>(),
            proptest::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(nonce, ciphertext)| Message::SealedText(SealedText { nonce, ciphertext })),
        Just(Message::Ping(Ping {})),
        Just(Message::Ack(Ack {})),
        arb_error_code().prop_map(|code| Message::Error(ErrorReply { code })),
    ]
}

/// The variant name of a message, from its Debug form.
fn kind(m: &Message) -> String {
    let d = format!("{m:?}");
    d[..d.find('(').unwrap_or(d.len())].to_string()
}

#[test]
fn the_generators_cover_every_message_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[1; 32]),
    );
    let strategy = arb_message();
    let mut kinds = BTreeSet::new();
    for _ in 0..600 {
        kinds.insert(kind(&strategy.new_tree(&mut runner).unwrap().current()));
    }
    let expected: BTreeSet<String> = [
        "PairingRequest",
        "PairingKey",
        "PairingReveal",
        "PairingConfirm",
        "PairingCancel",
        "KeyProofChallenge",
        "KeyProofResponse",
        "ProxyPairingRequest",
        "ProxyPairingPending",
        "ProxyPairingResponse",
        "ProxyPairingComplete",
        "RekeyInit",
        "RekeyAccept",
        "RekeyConfirm",
        "SealedText",
        "Ping",
        "Ack",
        "Error",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips_through_a_frame(msg in arb_message()) {
        let frame = Frame::new(msg);
        let bytes = frame.encode();
        prop_assert_eq!(Frame::decode(&bytes, &Limits::default()), Ok(frame.clone()));
        // The encoding is stable: decoding and re-encoding gives the same bytes.
        prop_assert_eq!(Frame::decode(&bytes, &Limits::default()).unwrap().encode(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let _ = Frame::decode(&bytes, &Limits::default());
    }

    #[test]
    fn mutated_valid_frames_never_panic_the_decoder(
        msg in arb_message(),
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
            1..6,
        ),
    ) {
        let mut bytes = Frame::new(msg).encode();
        for (i, x, op) in edits {
            let n = i.index(bytes.len().max(1));
            match op {
                0 if !bytes.is_empty() => bytes[n] ^= x,
                1 => bytes.insert(n.min(bytes.len()), x),
                _ if !bytes.is_empty() => { bytes.truncate(n); }
                _ => {}
            }
        }
        let _ = Frame::decode(&bytes, &Limits::default());
    }
}
