//! The voucher's vouching session (`session.rs`) driven against real receivers
//! (`vouch.rs`) and the vouchee's check of `ProxyPairingComplete` (`vouchee.rs`), with no
//! network: whole runs on injected time, and every message from the wrong peer refused with
//! its exact reason and no state change.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair};
use vouchnet_protocol::ids::{SessionId, VouchNonce};
use vouchnet_protocol::messages::*;
use vouchnet_protocol::model::{
    KnownDevice, PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchStatus,
    VouchingSession,
};
use vouchnet_protocol::queue;
use vouchnet_protocol::session::{
    SessionError, VoucherCtx, VoucherOutput, VoucherView, MAX_SESSION_TARGETS,
};
use vouchnet_protocol::signing::Signed;
use vouchnet_protocol::vouch::{
    sign_response, Outcome, ReceiveError, Receiver, ReceiverView, Reply, Verdict, RESPONSE_VERSION,
};
use vouchnet_protocol::vouchee::{accept_complete, CompleteRejection, ProxiedPeer, VoucheeView};
use vouchnet_protocol::{ProtocolConfig, SymmetricKey, Timestamp};

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

fn after(t: Timestamp, ms: u64) -> Timestamp {
    t.saturating_add(Duration::from_millis(ms))
}

fn direct(kp: &DeviceKeypair, trust: TrustLevel) -> KnownDevice {
    KnownDevice {
        public_key: kp.public(),
        pairing_type: PairingType::Direct,
        trust_level: trust,
    }
}

// ---------------------------------------------------------------------------------------
// The voucher's node state.

#[derive(Default)]
struct VView {
    devices: HashMap<DeviceId, KnownDevice>,
    names: HashMap<DeviceId, DisplayName>,
    keys: HashMap<DeviceId, SymmetricKey>,
    online: HashSet<DeviceId>,
}

impl VoucherView for VView {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.devices.get(id).cloned()
    }
    fn display_name(&self, id: &DeviceId) -> Option<DisplayName> {
        self.names.get(id).cloned()
    }
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.keys.get(id).cloned()
    }
    fn is_online(&self, id: &DeviceId) -> bool {
        self.online.contains(id)
    }
}

// A target's node state (the receiver side), minimal.
#[derive(Default)]
struct RView {
    devices: HashMap<DeviceId, KnownDevice>,
    keys: HashMap<DeviceId, SymmetricKey>,
    tombstones: HashSet<DeviceId>,
    nonces: HashSet<VouchNonce>,
}

impl ReceiverView for RView {
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
        self.nonces.contains(nonce)
    }
    fn prior_decision(&self, _: &SessionId, _: &DeviceId, _: &DeviceId) -> Option<Decision> {
        None
    }
    fn open_prompt(&self, _: &SessionId, _: &DeviceId, _: &DeviceId) -> Option<Timestamp> {
        None
    }
    fn pending_prompts(&self) -> usize {
        0
    }
}

// The vouchee's node state.
#[derive(Default)]
struct EView {
    devices: HashMap<DeviceId, KnownDevice>,
    tombstones: HashSet<DeviceId>,
}

impl VoucheeView for EView {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.devices.get(id).cloned()
    }
    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.tombstones.contains(id)
    }
}

struct Target {
    kp: DeviceKeypair,
    view: RView,
}

impl Target {
    fn id(&self) -> DeviceId {
        self.kp.device_id()
    }
}

/// V (voucher), E (vouchee), targets T1..T4 directly paired with V; P a device V knows only
/// by proxy; B a device V's user blocked; S a stranger.
struct Net {
    cfg: ProtocolConfig,
    rng: ChaCha20Rng,
    v: DeviceKeypair,
    e: DeviceKeypair,
    t: Vec<Target>,
    p: DeviceKeypair,
    b: DeviceKeypair,
    s: DeviceKeypair,
    vview: VView,
    k_ve: SymmetricKey,
    sid: SessionId,
}

impl Net {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let v = DeviceKeypair::generate(&mut rng);
        let e = DeviceKeypair::generate(&mut rng);
        let p = DeviceKeypair::generate(&mut rng);
        let b = DeviceKeypair::generate(&mut rng);
        let s = DeviceKeypair::generate(&mut rng);
        let k_ve = SymmetricKey::from_bytes([0xee; 32]);
        let mut vview = VView::default();
        vview
            .devices
            .insert(e.device_id(), direct(&e, TrustLevel::Trusted));
        vview.keys.insert(e.device_id(), k_ve.clone());
        vview
            .names
            .insert(e.device_id(), DisplayName::new("new phone").unwrap());
        vview.online.insert(e.device_id());
        vview.devices.insert(
            p.device_id(),
            KnownDevice {
                public_key: p.public(),
                pairing_type: PairingType::Proxied,
                trust_level: TrustLevel::Trusted,
            },
        );
        vview
            .devices
            .insert(b.device_id(), direct(&b, TrustLevel::Blocked));
        vview
            .keys
            .insert(b.device_id(), SymmetricKey::from_bytes([0xbb; 32]));
        let mut t = Vec::new();
        for i in 1..=4u8 {
            let kp = DeviceKeypair::generate(&mut rng);
            let key = SymmetricKey::from_bytes([i; 32]);
            vview
                .devices
                .insert(kp.device_id(), direct(&kp, TrustLevel::Trusted));
            vview.keys.insert(kp.device_id(), key.clone());
            vview
                .names
                .insert(kp.device_id(), DisplayName::new(format!("t{i}")).unwrap());
            vview.online.insert(kp.device_id());
            let mut view = RView::default();
            view.devices
                .insert(v.device_id(), direct(&v, TrustLevel::Trusted));
            view.keys.insert(v.device_id(), key);
            t.push(Target { kp, view });
        }
        let sid = SessionId::random(&mut rng);
        Net {
            cfg: ProtocolConfig::default(),
            rng,
            v,
            e,
            t,
            p,
            b,
            s,
            vview,
            k_ve,
            sid,
        }
    }

    fn vid(&self) -> DeviceId {
        self.v.device_id()
    }
    fn eid(&self) -> DeviceId {
        self.e.device_id()
    }
    fn tid(&self, i: usize) -> DeviceId {
        self.t[i].id()
    }

    fn session(&self) -> VouchingSession {
        VouchingSession::new(
            self.sid,
            self.eid(),
            self.e.public(),
            DisplayName::new("new phone").unwrap(),
            NOW,
        )
    }

    fn select(
        &mut self,
        s: &mut VouchingSession,
        targets: &[DeviceId],
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        let ctx = VoucherCtx::new(&self.v, &self.cfg, &self.vview);
        s.select_targets(&ctx, targets, now, &mut self.rng)
    }

    fn respond(
        &self,
        s: &mut VouchingSession,
        from: &DeviceId,
        msg: &ProxyPairingResponse,
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        let ctx = VoucherCtx::new(&self.v, &self.cfg, &self.vview);
        s.on_response(&ctx, from, msg, now)
    }

    fn timeout(&self, s: &mut VouchingSession, now: Timestamp) -> Vec<VoucherOutput> {
        let ctx = VoucherCtx::new(&self.v, &self.cfg, &self.vview);
        s.handle_timeout(&ctx, now)
    }

    /// Target `i` receives `req` from V.
    fn deliver(
        &self,
        i: usize,
        req: &ProxyPairingRequest,
        now: Timestamp,
    ) -> Result<Verdict, ReceiveError> {
        Receiver::new(&self.t[i].kp, &self.cfg).receive(&self.t[i].view, &self.vid(), req, now)
    }

    fn answer(
        &self,
        i: usize,
        req: &ProxyPairingRequest,
        now: Timestamp,
    ) -> (Verdict, ProxyPairingResponse) {
        let verdict = self.deliver(i, req, now).unwrap();
        let reply = match verdict.reply.clone() {
            Reply::Response(r) => r,
            Reply::Pending(p) => panic!("expected a response, got {p:?}"),
        };
        (verdict, reply)
    }

    fn accepted_target(&self, i: usize, response: &SignedResponse) -> AcceptedTarget {
        AcceptedTarget {
            device_id: self.tid(i),
            public_key: self.t[i].kp.public(),
            name: DisplayName::new(format!("t{}", i + 1)).unwrap(),
            response: response.clone(),
            addrs: Vec::new(),
        }
    }

    /// The vouchee's state: V paired directly and trusted.
    fn eview(&self) -> EView {
        let mut ev = EView::default();
        ev.devices
            .insert(self.vid(), direct(&self.v, TrustLevel::Trusted));
        ev
    }
}

fn sends(out: &[VoucherOutput]) -> Vec<(DeviceId, ProxyPairingRequest)> {
    out.iter()
        .filter_map(|o| match o {
            VoucherOutput::SendVouch { to, request } => Some((*to, request.clone())),
            _ => None,
        })
        .collect()
}

fn one_send(out: Vec<VoucherOutput>) -> (DeviceId, ProxyPairingRequest) {
    match <[VoucherOutput; 1]>::try_from(out) {
        Ok([VoucherOutput::SendVouch { to, request }]) => (to, request),
        other => panic!("expected one SendVouch, got {other:?}"),
    }
}

fn waiting(s: &VouchingSession, t: &DeviceId) -> (VouchNonce, [u8; 32], Timestamp, bool) {
    match &s.targets[t] {
        VouchStatus::Waiting {
            nonce,
            digest,
            deadline,
            user_prompted,
        } => (*nonce, *digest, *deadline, *user_prompted),
        other => panic!("not waiting: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Creation and target selection.

#[test]
fn a_new_session_is_pending_with_no_targets() {
    let n = Net::new();
    let s = n.session();
    assert_eq!(s.state, SessionState::Pending);
    assert!(s.targets.is_empty());
    assert_eq!(s.created_at, NOW);
    assert_eq!(s.finished_at, None);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn selecting_online_targets_sends_each_a_freshly_signed_vouch() {
    let mut n = Net::new();
    let mut s = n.session();
    let targets = [n.tid(0), n.tid(1)];
    let out = n.select(&mut s, &targets, NOW).unwrap();
    assert_eq!(s.state, SessionState::InProgress);
    let sent = sends(&out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        sent.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        targets.to_vec()
    );
    for (to, req) in &sent {
        let cert = req.vouch.verify(&n.v.public()).unwrap();
        assert_eq!(cert.session_id, n.sid);
        assert_eq!(cert.voucher, n.vid());
        assert_eq!(cert.vouchee, n.eid());
        assert_eq!(cert.vouchee_key, n.e.public());
        assert_eq!(cert.vouchee_name.as_str(), "new phone");
        assert_eq!(cert.target, *to);
        assert_eq!(cert.issued_at, NOW);
        assert_eq!(
            waiting(&s, to),
            (
                cert.nonce,
                req.vouch.body_digest(),
                after(NOW, 30_000),
                false
            )
        );
    }
    let n0 = sent[0].1.vouch.decode_unverified().unwrap().nonce;
    let n1 = sent[1].1.vouch.decode_unverified().unwrap().nonce;
    assert_ne!(n0, n1);
    assert_eq!(s.poll_timeout(), Some(after(NOW, 30_000)));
}

#[test]
fn an_offline_target_is_queued_for_seven_days() {
    let mut n = Net::new();
    let t3 = n.tid(3);
    n.vview.online.remove(&t3);
    let mut s = n.session();
    let out = n.select(&mut s, &[n.tid(0), t3], NOW).unwrap();
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[0], VoucherOutput::SendVouch { to, .. } if *to == n.tid(0)));
    assert_eq!(
        out[1],
        VoucherOutput::Enqueue(QueueEntry {
            session_id: n.sid,
            recipient: t3,
            kind: QueueKind::Vouch,
            enqueued_at: NOW,
            expires_at: after(NOW, 7 * 24 * 3600 * 1000),
            next_attempt_at: NOW,
            attempts: 0,
        })
    );
    assert_eq!(s.targets[&t3], VouchStatus::Queued);
}

fn assert_select_refused(n: &mut Net, targets: &[DeviceId], err: SessionError) {
    let mut s = n.session();
    let before = s.clone();
    assert_eq!(n.select(&mut s, targets, NOW), Err(err));
    assert_eq!(s, before, "a refused selection changes nothing");
}

#[test]
fn selecting_the_vouchee_itself_is_refused() {
    let mut n = Net::new();
    let (t0, e) = (n.tid(0), n.eid());
    assert_select_refused(&mut n, &[t0, e], SessionError::TargetIsVouchee(e));
}

#[test]
fn selecting_this_device_is_refused() {
    let mut n = Net::new();
    let v = n.vid();
    n.vview.devices.insert(v, direct(&n.v, TrustLevel::Trusted));
    assert_select_refused(&mut n, &[v], SessionError::TargetIsSelf(v));
}

#[test]
fn selecting_an_unpaired_device_is_refused() {
    let mut n = Net::new();
    let (t0, s) = (n.tid(0), n.s.device_id());
    assert_select_refused(&mut n, &[t0, s], SessionError::TargetNotPaired(s));
}

#[test]
fn selecting_a_proxied_device_is_refused_as_not_direct() {
    let mut n = Net::new();
    let p = n.p.device_id();
    assert_select_refused(&mut n, &[p], SessionError::TargetNotDirect(p));
}

#[test]
fn selecting_a_blocked_device_is_refused() {
    let mut n = Net::new();
    let b = n.b.device_id();
    assert_select_refused(&mut n, &[b], SessionError::TargetBlocked(b));
}

#[test]
fn selecting_a_target_twice_is_refused() {
    let mut n = Net::new();
    let (t0, t1) = (n.tid(0), n.tid(1));
    assert_select_refused(&mut n, &[t0, t1, t0], SessionError::DuplicateTarget(t0));
}

#[test]
fn selecting_no_target_or_too_many_is_refused() {
    let mut n = Net::new();
    assert_select_refused(&mut n, &[], SessionError::NoTargets);
    let many = vec![n.tid(0); MAX_SESSION_TARGETS + 1];
    assert_select_refused(
        &mut n,
        &many,
        SessionError::TooManyTargets {
            count: MAX_SESSION_TARGETS + 1,
            max: MAX_SESSION_TARGETS,
        },
    );
}

#[test]
fn selecting_without_a_pairing_key_is_refused() {
    let mut n = Net::new();
    let t0 = n.tid(0);
    n.vview.keys.remove(&t0);
    assert_select_refused(&mut n, &[t0], SessionError::MissingPairingKey(t0));
    let mut n = Net::new();
    let (t0, e) = (n.tid(0), n.eid());
    n.vview.keys.remove(&e);
    assert_select_refused(&mut n, &[t0], SessionError::MissingPairingKey(e));
}

#[test]
fn targets_are_chosen_only_once() {
    let mut n = Net::new();
    let mut s = n.session();
    n.select(&mut s, &[n.tid(0)], NOW).unwrap();
    let before = s.clone();
    assert_eq!(
        n.select(&mut s, &[n.tid(1)], NOW),
        Err(SessionError::NotPending(SessionState::InProgress))
    );
    assert_eq!(s, before);
}

// ---------------------------------------------------------------------------------------
// A whole run: three targets — one accepts, one refuses, one never answers.

#[test]
fn full_run_with_an_acceptance_a_refusal_and_a_timeout() {
    let mut n = Net::new();
    let eid = n.eid();
    n.t[1].view.tombstones.insert(eid); // T2's user had removed E
    let mut s = n.session();
    let (t1, t2, t3) = (n.tid(0), n.tid(1), n.tid(2));
    let out = n.select(&mut s, &[t1, t2, t3], NOW).unwrap();
    let sent = sends(&out);
    assert_eq!(sent.len(), 3);

    // T1 accepts automatically; the vouchee hears of it at once.
    let at = after(NOW, 120);
    let (v1, r1) = n.answer(0, &sent[0].1, at);
    assert_eq!(v1.outcome, Outcome::Accepted(AcceptedHow::Automatic));
    let out = n.respond(&mut s, &t1, &r1, after(at, 50)).unwrap();
    assert_eq!(
        out,
        vec![VoucherOutput::NotifyVouchee {
            to: eid,
            complete: ProxyPairingComplete {
                session_id: n.sid,
                accepted: vec![n.accepted_target(0, &r1.response)],
                session_completed: false,
            },
        }]
    );
    assert_eq!(
        s.targets[&t1],
        VouchStatus::Accepted {
            response: r1.response.clone()
        }
    );

    // T2 refuses: recorded with its signed refusal, nothing to tell the vouchee yet.
    let (v2, r2) = n.answer(1, &sent[1].1, at);
    assert_eq!(
        v2.outcome,
        Outcome::Rejected(VouchRejection::VoucheeBlocked)
    );
    assert_eq!(n.respond(&mut s, &t2, &r2, after(at, 60)).unwrap(), vec![]);
    assert_eq!(
        s.targets[&t2],
        VouchStatus::Rejected {
            reason: VouchRejection::VoucheeBlocked,
            response: Some(r2.response.clone())
        }
    );

    // T3 never answers: it times out exactly at its deadline.
    let deadline = after(NOW, 30_000);
    assert_eq!(s.poll_timeout(), Some(deadline));
    assert_eq!(
        n.timeout(
            &mut s,
            after(deadline, 0).saturating_sub(Duration::from_millis(1))
        ),
        vec![]
    );
    assert_eq!(s.state, SessionState::InProgress);
    let out = n.timeout(&mut s, deadline);
    assert_eq!(
        s.targets[&t3],
        VouchStatus::Rejected {
            reason: VouchRejection::Timeout,
            response: None
        }
    );
    assert_eq!(s.state, SessionState::Completed);
    assert_eq!(s.finished_at, Some(deadline));
    assert_eq!(s.poll_timeout(), None);
    let final_complete = ProxyPairingComplete {
        session_id: n.sid,
        accepted: vec![n.accepted_target(0, &r1.response)],
        session_completed: true,
    };
    assert_eq!(
        out,
        vec![VoucherOutput::NotifyVouchee {
            to: eid,
            complete: final_complete.clone()
        }]
    );

    // The vouchee accepts T1 and derives the same T1–E key that T1 stored.
    let peers = accept_complete(
        &eid,
        &n.vid(),
        &n.vid(),
        &n.eview(),
        &n.k_ve,
        &final_complete,
        deadline,
    )
    .unwrap();
    assert_eq!(
        peers,
        vec![ProxiedPeer {
            device_id: t1,
            public_key: n.t[0].kp.public(),
            name: DisplayName::new("t1").unwrap(),
            vouched_by: n.vid(),
            proof: r1.response.clone(),
            proxied_key: v1.commit.device.clone().unwrap().proxied_key,
            accepted_at: deadline,
        }]
    );

    // Retention: removable exactly one hour after completion.
    let retention = n.cfg.session_retention;
    assert!(!s.is_removable(after(deadline, 3_600_000 - 1), retention));
    assert!(s.is_removable(after(deadline, 3_600_000), retention));
}

#[test]
fn the_last_acceptance_completes_the_session_in_one_notification() {
    let mut n = Net::new();
    let mut s = n.session();
    let (t1, t2) = (n.tid(0), n.tid(1));
    let sent = sends(&n.select(&mut s, &[t1, t2], NOW).unwrap());
    let (_, r1) = n.answer(0, &sent[0].1, NOW);
    let (_, r2) = n.answer(1, &sent[1].1, NOW);
    let first = n.respond(&mut s, &t1, &r1, NOW).unwrap();
    assert_eq!(first.len(), 1);
    let out = n.respond(&mut s, &t2, &r2, after(NOW, 5)).unwrap();
    assert_eq!(
        out,
        vec![VoucherOutput::NotifyVouchee {
            to: n.eid(),
            complete: ProxyPairingComplete {
                session_id: n.sid,
                accepted: by_id(vec![
                    n.accepted_target(0, &r1.response),
                    n.accepted_target(1, &r2.response)
                ]),
                session_completed: true,
            },
        }]
    );
    assert_eq!(s.state, SessionState::Completed);
    assert_eq!(s.finished_at, Some(after(NOW, 5)));
}

/// The session lists acceptances in target-id order.
fn by_id(mut v: Vec<AcceptedTarget>) -> Vec<AcceptedTarget> {
    v.sort_by_key(|a| a.device_id);
    v
}

#[test]
fn an_offline_vouchee_gets_its_notification_queued() {
    let mut n = Net::new();
    let eid = n.eid();
    n.vview.online.remove(&eid);
    let mut s = n.session();
    let (t1, t2) = (n.tid(0), n.tid(1));
    let sent = sends(&n.select(&mut s, &[t1, t2], NOW).unwrap());
    let (_, r1) = n.answer(0, &sent[0].1, NOW);
    let at = after(NOW, 10);
    let out = n.respond(&mut s, &t1, &r1, at).unwrap();
    assert_eq!(
        out,
        vec![VoucherOutput::Enqueue(QueueEntry {
            session_id: n.sid,
            recipient: eid,
            kind: QueueKind::NotifyVouchee,
            enqueued_at: at,
            expires_at: after(at, 7 * 24 * 3600 * 1000),
            next_attempt_at: at,
            attempts: 0,
        })]
    );
    // At delivery the worker sends every acceptance so far.
    assert_eq!(
        s.vouchee_notification(&n.vview),
        ProxyPairingComplete {
            session_id: n.sid,
            accepted: vec![n.accepted_target(0, &r1.response)],
            session_completed: false,
        }
    );
    s.mark_vouchee_notified(&[t1]);
    s.mark_vouchee_notified(&[t1]);
    assert_eq!(s.vouchee_notified, vec![t1]);
}

// ---------------------------------------------------------------------------------------
// The offline queue, unsupported targets, cancellation.

#[test]
fn a_queued_vouch_is_signed_afresh_at_delivery_and_accepted() {
    let mut n = Net::new();
    let t4 = n.tid(3);
    n.vview.online.remove(&t4);
    let mut s = n.session();
    n.select(&mut s, &[t4], NOW).unwrap();
    assert_eq!(s.poll_timeout(), None);

    // Two days later T4 is back; the worker delivers.
    let later = after(NOW, 2 * 24 * 3600 * 1000);
    n.vview.online.insert(t4);
    let ctx = VoucherCtx::new(&n.v, &n.cfg, &n.vview);
    let out = s.deliver_queued(&ctx, &t4, later, &mut n.rng).unwrap();
    let VoucherOutput::SendVouch { to, request } = out else {
        panic!("expected SendVouch, got {out:?}")
    };
    assert_eq!(to, t4);
    let cert = request.vouch.verify(&n.v.public()).unwrap();
    assert_eq!(cert.issued_at, later);
    assert_eq!(
        waiting(&s, &t4),
        (
            cert.nonce,
            request.vouch.body_digest(),
            after(later, 30_000),
            false
        )
    );

    let (verdict, r) = n.answer(3, &request, later);
    assert_eq!(verdict.outcome, Outcome::Accepted(AcceptedHow::Automatic));
    let out = n.respond(&mut s, &t4, &r, later).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(s.state, SessionState::Completed);
}

#[test]
fn delivering_what_is_not_queued_is_refused() {
    let mut n = Net::new();
    let mut s = n.session();
    let t1 = n.tid(0);
    n.select(&mut s, &[t1], NOW).unwrap();
    let before = s.clone();
    let ctx = VoucherCtx::new(&n.v, &n.cfg, &n.vview);
    assert_eq!(
        s.deliver_queued(&ctx, &t1, NOW, &mut n.rng),
        Err(SessionError::NotQueued(t1))
    );
    let t2 = n.tid(1);
    assert_eq!(
        s.deliver_queued(&ctx, &t2, NOW, &mut n.rng),
        Err(SessionError::NotATarget(t2))
    );
    assert_eq!(s, before);
}

#[test]
fn a_failed_send_puts_the_vouch_back_in_the_queue() {
    let mut n = Net::new();
    let mut s = n.session();
    let t1 = n.tid(0);
    n.select(&mut s, &[t1], NOW).unwrap();
    let ctx = VoucherCtx::new(&n.v, &n.cfg, &n.vview);
    let out = s.on_send_failed(&ctx, &t1, after(NOW, 3)).unwrap();
    assert_eq!(s.targets[&t1], VouchStatus::Queued);
    assert_eq!(
        out,
        vec![VoucherOutput::Enqueue(QueueEntry {
            session_id: n.sid,
            recipient: t1,
            kind: QueueKind::Vouch,
            enqueued_at: after(NOW, 3),
            expires_at: after(NOW, 3 + 7 * 24 * 3600 * 1000),
            next_attempt_at: after(NOW, 3),
            attempts: 0,
        })]
    );
}

#[test]
fn an_expired_queue_entry_expires_the_target_and_may_complete() {
    let mut n = Net::new();
    let t4 = n.tid(3);
    n.vview.online.remove(&t4);
    let mut s = n.session();
    n.select(&mut s, &[t4], NOW).unwrap();
    let ctx = VoucherCtx::new(&n.v, &n.cfg, &n.vview);
    let end = after(NOW, 7 * 24 * 3600 * 1000);
    let out = s.on_queue_expired(&ctx, &t4, end).unwrap();
    assert_eq!(s.targets[&t4], VouchStatus::Expired);
    assert_eq!(s.state, SessionState::Completed);
    assert_eq!(
        out,
        vec![VoucherOutput::NotifyVouchee {
            to: n.eid(),
            complete: ProxyPairingComplete {
                session_id: n.sid,
                accepted: vec![],
                session_completed: true
            },
        }]
    );
}

#[test]
fn a_target_that_does_not_speak_the_protocol_is_rejected_unsupported() {
    let mut n = Net::new();
    let mut s = n.session();
    let (t1, t2) = (n.tid(0), n.tid(1));
    n.select(&mut s, &[t1, t2], NOW).unwrap();
    let ctx = VoucherCtx::new(&n.v, &n.cfg, &n.vview);
    assert_eq!(s.on_unsupported(&ctx, &t1, NOW).unwrap(), vec![]);
    assert_eq!(
        s.targets[&t1],
        VouchStatus::Rejected {
            reason: VouchRejection::Unsupported,
            response: None
        }
    );
    assert_eq!(
        s.on_unsupported(&ctx, &t1, NOW),
        Err(SessionError::AlreadyFinal(t1))
    );
    assert_eq!(s.state, SessionState::InProgress);
}

#[test]
fn cancelling_dequeues_queued_vouches_and_closes_the_session() {
    let mut n = Net::new();
    let t4 = n.tid(3);
    n.vview.online.remove(&t4);
    let mut s = n.session();
    let t1 = n.tid(0);
    let sent = sends(&n.select(&mut s, &[t1, t4], NOW).unwrap());
    let out = s.cancel(after(NOW, 9)).unwrap();
    assert_eq!(
        out,
        vec![VoucherOutput::Dequeue {
            recipient: t4,
            kind: QueueKind::Vouch
        }]
    );
    assert_eq!(s.state, SessionState::Cancelled);
    assert_eq!(s.finished_at, Some(after(NOW, 9)));
    assert_eq!(s.poll_timeout(), None);

    let (_, r1) = n.answer(0, &sent[0].1, NOW);
    let before = s.clone();
    assert_eq!(
        n.respond(&mut s, &t1, &r1, NOW),
        Err(SessionError::Closed(SessionState::Cancelled))
    );
    assert_eq!(
        s.cancel(NOW),
        Err(SessionError::Closed(SessionState::Cancelled))
    );
    assert_eq!(s, before);
    assert!(s.is_removable(after(NOW, 9 + 3_600_000), n.cfg.session_retention));
}

// ---------------------------------------------------------------------------------------
// Responses from the wrong peer or for the wrong vouch: typed errors, no state change.

struct Flight {
    n: Net,
    s: VouchingSession,
    sent: Vec<(DeviceId, ProxyPairingRequest)>,
}

fn in_flight() -> Flight {
    let mut n = Net::new();
    let mut s = n.session();
    let targets = [n.tid(0), n.tid(1)];
    let sent = sends(&n.select(&mut s, &targets, NOW).unwrap());
    Flight { n, s, sent }
}

fn assert_response_refused(
    f: &mut Flight,
    from: &DeviceId,
    msg: &ProxyPairingResponse,
    err: SessionError,
) {
    let before = f.s.clone();
    assert_eq!(f.n.respond(&mut f.s, from, msg, NOW), Err(err));
    assert_eq!(f.s, before, "a refused response changes nothing");
}

/// A response T1 signs by hand, starting from an honest one and changing one field.
fn t1_signs(f: &Flight, edit: impl FnOnce(&mut VouchResponse)) -> ProxyPairingResponse {
    let cert = f.sent[0].1.vouch.decode_unverified().unwrap();
    let mut r = VouchResponse {
        v: RESPONSE_VERSION,
        session_id: cert.session_id,
        vouch_nonce: cert.nonce,
        vouch_digest: f.sent[0].1.vouch.body_digest(),
        responder: f.n.tid(0),
        voucher: cert.voucher,
        vouchee: cert.vouchee,
        decision: Decision::Accepted {
            how: AcceptedHow::Automatic,
        },
        decided_at: NOW,
    };
    edit(&mut r);
    ProxyPairingResponse {
        response: Signed::sign(&f.n.t[0].kp, &r),
    }
}

#[test]
fn an_honest_hand_signed_response_is_accepted() {
    let mut f = in_flight();
    let r = t1_signs(&f, |_| {});
    let t1 = f.n.tid(0);
    assert_eq!(f.n.respond(&mut f.s, &t1, &r, NOW).unwrap().len(), 1);
}

#[test]
fn a_response_from_a_device_that_was_not_asked_is_refused() {
    let mut f = in_flight();
    let r = t1_signs(&f, |_| {});
    let t3 = f.n.tid(2);
    assert_response_refused(&mut f, &t3, &r, SessionError::NotATarget(t3));
    let stranger = f.n.s.device_id();
    assert_response_refused(&mut f, &stranger, &r, SessionError::NotATarget(stranger));
}

#[test]
fn a_response_relayed_by_another_target_is_a_bad_signature() {
    // T2's connection delivers T1's (valid) response: it is checked under T2's key.
    let mut f = in_flight();
    let r = t1_signs(&f, |_| {});
    let t2 = f.n.tid(1);
    assert_response_refused(&mut f, &t2, &r, SessionError::BadSignature);
}

#[test]
fn a_response_with_the_wrong_nonce_is_refused() {
    let mut f = in_flight();
    let r = t1_signs(&f, |r| r.vouch_nonce = VouchNonce([0; 16]));
    let t1 = f.n.tid(0);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongNonce);
}

#[test]
fn a_response_with_the_wrong_digest_is_refused() {
    let mut f = in_flight();
    let r = t1_signs(&f, |r| r.vouch_digest = [7; 32]);
    let t1 = f.n.tid(0);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongDigest);
}

#[test]
fn a_response_for_another_session_is_refused() {
    let mut f = in_flight();
    let r = t1_signs(&f, |r| r.session_id = SessionId([1; 16]));
    let t1 = f.n.tid(0);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongSession);
}

#[test]
fn a_response_naming_another_responder_voucher_or_vouchee_is_refused() {
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    let other = f.n.tid(1);
    let r = t1_signs(&f, |r| r.responder = other);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongResponder);
    let r = t1_signs(&f, |r| r.voucher = other);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongVoucher);
    let r = t1_signs(&f, |r| r.vouchee = other);
    assert_response_refused(&mut f, &t1, &r, SessionError::WrongVouchee);
    let r = t1_signs(&f, |r| r.v = 2);
    assert_response_refused(&mut f, &t1, &r, SessionError::UnsupportedResponseVersion(2));
}

#[test]
fn a_second_response_after_the_first_is_refused() {
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    let r = t1_signs(&f, |_| {});
    f.n.respond(&mut f.s, &t1, &r, NOW).unwrap();
    let r2 = t1_signs(&f, |r| {
        r.decision = Decision::Rejected {
            reason: VouchRejection::UserRejected,
        }
    });
    assert_response_refused(&mut f, &t1, &r2, SessionError::NotWaiting(t1));
}

#[test]
fn a_response_to_an_earlier_delivery_is_refused() {
    // The vouch was sent, the send "failed", and it was redelivered with a new nonce: an
    // answer to the first copy does not match the vouch in flight.
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    let first = f.sent[0].1.clone();
    let ctx = VoucherCtx::new(&f.n.v, &f.n.cfg, &f.n.vview);
    f.s.on_send_failed(&ctx, &t1, NOW).unwrap();
    let (_, second) = one_send(vec![f
        .s
        .deliver_queued(&ctx, &t1, after(NOW, 10), &mut f.n.rng)
        .unwrap()]);
    assert_ne!(first, second);
    let (_, r_old) = f.n.answer(0, &first, NOW);
    assert_response_refused(&mut f, &t1, &r_old, SessionError::WrongNonce);
    // The answer to the copy in flight is accepted, signed by the real receiver.
    let cert = first.vouch.decode_unverified().unwrap();
    let direct_answer = sign_response(
        &f.n.t[0].kp,
        &cert,
        first.vouch.body_digest(),
        Decision::Accepted {
            how: AcceptedHow::Automatic,
        },
        NOW,
    );
    assert_response_refused(
        &mut f,
        &t1,
        &ProxyPairingResponse {
            response: direct_answer,
        },
        SessionError::WrongNonce,
    );
    // A fresh T1 state (its copy of the first vouch was never stored).
    let t1view = RView {
        devices: f.n.t[0].view.devices.clone(),
        keys: f.n.t[0].view.keys.clone(),
        ..RView::default()
    };
    let v = Receiver::new(&f.n.t[0].kp, &f.n.cfg)
        .receive(&t1view, &f.n.vid(), &second, after(NOW, 10))
        .unwrap();
    let Reply::Response(r_new) = v.reply else {
        panic!("expected a response")
    };
    assert_eq!(
        f.n.respond(&mut f.s, &t1, &r_new, after(NOW, 10))
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// "Waiting for a person" versus "no answer".

fn pending_for(f: &Flight, i: usize, deadline: Timestamp) -> ProxyPairingPending {
    let cert = f.sent[i].1.vouch.decode_unverified().unwrap();
    ProxyPairingPending {
        session_id: cert.session_id,
        vouch_nonce: cert.nonce,
        deadline,
    }
}

/// The outputs that put the vouch to `target` back in the queue at `at`.
fn requeued(f: &Flight, target: DeviceId, at: Timestamp) -> Vec<VoucherOutput> {
    vec![VoucherOutput::Enqueue(queue::new_entry(
        f.s.id,
        target,
        QueueKind::Vouch,
        at,
        &f.n.cfg.queue,
    ))]
}

/// After a restart of the voucher nothing it sent is in flight: a Waiting target whose user
/// was not asked goes back to the queue (it answers a redelivery with what it stored); a
/// prompted one keeps waiting for its user's answer. A session not in progress is left
/// alone.
#[test]
fn a_restart_requeues_the_vouches_in_flight_but_not_the_prompted_ones() {
    let mut f = in_flight();
    let (t1, t2) = (f.n.tid(0), f.n.tid(1));
    let p = pending_for(&f, 0, after(NOW, 3_600_000));
    f.s.on_pending(&t1, &p, &f.n.cfg, NOW).unwrap();
    let prompted = f.s.targets[&t1].clone();
    let restart = after(NOW, 5);
    let out = {
        let ctx = VoucherCtx::new(&f.n.v, &f.n.cfg, &f.n.vview);
        f.s.on_restart(&ctx, restart)
    };
    assert_eq!(out, requeued(&f, t2, restart));
    assert_eq!(f.s.targets[&t2], VouchStatus::Queued);
    assert_eq!(f.s.targets[&t1], prompted);
    assert_eq!(f.s.state, SessionState::InProgress);

    let mut pending = f.n.session();
    let ctx = VoucherCtx::new(&f.n.v, &f.n.cfg, &f.n.vview);
    assert_eq!(pending.on_restart(&ctx, restart), vec![]);
    assert_eq!(pending.state, SessionState::Pending);
}

/// A target that said its user was asked and then stays silent past its deadline is not
/// finalised as Timeout: its user's answer may have been lost on the way (it travels as a
/// request of its own). The vouch goes back to the queue, to be delivered again at the
/// deadline itself, not a millisecond before; the session stays in progress.
#[test]
fn a_prompted_target_silent_past_its_deadline_is_asked_again_through_the_queue() {
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    let target_deadline = after(NOW, 3_600_000);
    let p = pending_for(&f, 0, target_deadline);
    f.s.on_pending(&t1, &p, &f.n.cfg, NOW).unwrap();
    let due = after(target_deadline, 60_000);
    assert_eq!(
        f.n.timeout(&mut f.s, due.saturating_sub(Duration::from_millis(1))),
        vec![]
    );
    assert!(matches!(f.s.targets[&t1], VouchStatus::Waiting { .. }));
    let out = f.n.timeout(&mut f.s, due);
    assert_eq!(out, requeued(&f, t1, due));
    assert_eq!(f.s.targets[&t1], VouchStatus::Queued);
    // The silent T2, never prompted, timed out long before.
    assert!(matches!(
        f.s.targets[&f.n.tid(1)],
        VouchStatus::Rejected {
            reason: VouchRejection::Timeout,
            ..
        }
    ));
    assert_eq!(f.s.state, SessionState::InProgress);
}

#[test]
fn a_pending_notice_extends_the_deadline_to_the_targets_plus_skew() {
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    let at = after(NOW, 1_000);
    let target_deadline = after(at, 3_600_000);
    let p = pending_for(&f, 0, target_deadline);
    f.s.on_pending(&t1, &p, &f.n.cfg, at).unwrap();
    let (_, _, deadline, prompted) = waiting(&f.s, &t1);
    assert_eq!(deadline, after(target_deadline, 60_000));
    assert!(prompted);
    // The silent T2 still times out at 30 s; T1 does not.
    let out = f.n.timeout(&mut f.s, after(NOW, 30_000));
    assert_eq!(out, vec![]);
    assert!(matches!(
        f.s.targets[&f.n.tid(1)],
        VouchStatus::Rejected {
            reason: VouchRejection::Timeout,
            ..
        }
    ));
    assert!(matches!(f.s.targets[&t1], VouchStatus::Waiting { .. }));
    assert_eq!(f.s.poll_timeout(), Some(after(target_deadline, 60_000)));
    // T1's user answers an hour later.
    let r = t1_signs(&f, |r| {
        r.decision = Decision::Accepted {
            how: AcceptedHow::UserConfirmed,
        }
    });
    assert_eq!(
        f.n.respond(&mut f.s, &t1, &r, after(NOW, 3_000_000))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(f.s.state, SessionState::Completed);
}

#[test]
fn a_pending_deadline_is_capped_and_never_shortens_the_wait() {
    let mut f = in_flight();
    let t1 = f.n.tid(0);
    // A deadline a year away is capped at prompt timeout + skew from now.
    let p = pending_for(&f, 0, after(NOW, 365 * 24 * 3600 * 1000));
    f.s.on_pending(&t1, &p, &f.n.cfg, NOW).unwrap();
    assert_eq!(waiting(&f.s, &t1).2, after(NOW, 24 * 3600 * 1000 + 60_000));
    // A deadline in the past does not shorten it.
    let p = pending_for(&f, 0, NOW);
    f.s.on_pending(&t1, &p, &f.n.cfg, after(NOW, 5)).unwrap();
    assert_eq!(waiting(&f.s, &t1).2, after(NOW, 24 * 3600 * 1000 + 60_000));
}

#[test]
fn a_pending_notice_from_a_non_target_or_for_another_vouch_is_refused() {
    let mut f = in_flight();
    let before = f.s.clone();
    let stranger = f.n.s.device_id();
    let p = pending_for(&f, 0, after(NOW, 1000));
    assert_eq!(
        f.s.on_pending(&stranger, &p, &f.n.cfg, NOW),
        Err(SessionError::NotATarget(stranger))
    );
    let t2 = f.n.tid(1);
    // T2 sending the notice for T1's vouch: the nonce is not the one in flight to T2.
    assert_eq!(
        f.s.on_pending(&t2, &p, &f.n.cfg, NOW),
        Err(SessionError::WrongNonce)
    );
    let t1 = f.n.tid(0);
    let mut wrong_session = p.clone();
    wrong_session.session_id = SessionId([3; 16]);
    assert_eq!(
        f.s.on_pending(&t1, &wrong_session, &f.n.cfg, NOW),
        Err(SessionError::WrongSession)
    );
    assert_eq!(f.s, before);
}

#[test]
fn a_prompting_receiver_and_the_voucher_agree_end_to_end() {
    let mut n = Net::new();
    n.cfg.auto_accept_vouched = false;
    let mut s = n.session();
    let t1 = n.tid(0);
    let (_, req) = one_send(n.select(&mut s, &[t1], NOW).unwrap());
    let verdict = n.deliver(0, &req, NOW).unwrap();
    let Reply::Pending(pending) = verdict.reply.clone() else {
        panic!("expected Pending")
    };
    s.on_pending(&t1, &pending, &n.cfg, NOW).unwrap();
    assert_eq!(waiting(&s, &t1).2, after(NOW, 24 * 3600 * 1000 + 60_000));
    let prompt = verdict.commit.open_prompt.unwrap();
    let answer = Receiver::new(&n.t[0].kp, &n.cfg).answer_prompt(
        &n.t[0].view,
        &prompt,
        true,
        after(NOW, 600_000),
    );
    let Reply::Response(r) = answer.reply else {
        panic!("expected a response")
    };
    let out = n.respond(&mut s, &t1, &r, after(NOW, 600_100)).unwrap();
    assert_eq!(out.len(), 1);
    assert!(matches!(s.targets[&t1], VouchStatus::Accepted { .. }));
}

// ---------------------------------------------------------------------------------------
// The vouchee's check of ProxyPairingComplete.

/// A session where T1 and T2 accepted, and the final Complete.
fn completed() -> (Net, ProxyPairingComplete) {
    let mut n = Net::new();
    let mut s = n.session();
    let (t1, t2) = (n.tid(0), n.tid(1));
    let sent = sends(&n.select(&mut s, &[t1, t2], NOW).unwrap());
    let (_, r1) = n.answer(0, &sent[0].1, NOW);
    let (_, r2) = n.answer(1, &sent[1].1, NOW);
    n.respond(&mut s, &t1, &r1, NOW).unwrap();
    let out = n.respond(&mut s, &t2, &r2, NOW).unwrap();
    let [VoucherOutput::NotifyVouchee { complete, .. }] =
        <[VoucherOutput; 1]>::try_from(out).unwrap()
    else {
        panic!("expected NotifyVouchee")
    };
    (n, complete)
}

fn check(
    n: &Net,
    from: &DeviceId,
    view: &EView,
    msg: &ProxyPairingComplete,
) -> Result<Vec<ProxiedPeer>, CompleteRejection> {
    accept_complete(&n.eid(), from, &n.vid(), view, &n.k_ve, msg, NOW)
}

#[test]
fn a_valid_complete_yields_every_target_once_and_is_idempotent() {
    let (n, c) = completed();
    let mut ev = n.eview();
    let peers = check(&n, &n.vid(), &ev, &c).unwrap();
    assert_eq!(
        peers.iter().map(|p| p.device_id).collect::<Vec<_>>(),
        c.accepted.iter().map(|a| a.device_id).collect::<Vec<_>>()
    );
    for p in &peers {
        ev.devices.insert(
            p.device_id,
            KnownDevice {
                public_key: p.public_key,
                pairing_type: PairingType::Proxied,
                trust_level: TrustLevel::Trusted,
            },
        );
    }
    assert_eq!(check(&n, &n.vid(), &ev, &c), Ok(vec![]));
}

#[test]
fn a_tombstoned_target_is_left_out() {
    let (n, c) = completed();
    let mut ev = n.eview();
    ev.tombstones.insert(n.tid(0));
    let peers = check(&n, &n.vid(), &ev, &c).unwrap();
    assert_eq!(
        peers.iter().map(|p| p.device_id).collect::<Vec<_>>(),
        vec![n.tid(1)]
    );
}

#[test]
fn a_complete_from_a_non_voucher_is_refused() {
    let (n, c) = completed();
    let t1 = n.tid(0);
    assert_eq!(
        check(&n, &t1, &n.eview(), &c),
        Err(CompleteRejection::NotFromVoucher)
    );
    let stranger = n.s.device_id();
    assert_eq!(
        check(&n, &stranger, &n.eview(), &c),
        Err(CompleteRejection::NotFromVoucher)
    );
}

#[test]
fn a_complete_from_a_voucher_that_is_not_direct_and_trusted_is_refused() {
    let (n, c) = completed();
    let mut ev = n.eview();
    ev.devices.get_mut(&n.vid()).unwrap().trust_level = TrustLevel::Unreliable;
    assert_eq!(
        check(&n, &n.vid(), &ev, &c),
        Err(CompleteRejection::VoucherNotTrusted)
    );
    ev.devices.get_mut(&n.vid()).unwrap().trust_level = TrustLevel::Trusted;
    ev.devices.get_mut(&n.vid()).unwrap().pairing_type = PairingType::Proxied;
    assert_eq!(
        check(&n, &n.vid(), &ev, &c),
        Err(CompleteRejection::VoucherNotTrusted)
    );
    assert_eq!(
        check(&n, &n.vid(), &EView::default(), &c),
        Err(CompleteRejection::VoucherNotTrusted)
    );
}

/// `c` with entry `i` replaced by `edit(entry)`.
fn forged(
    c: &ProxyPairingComplete,
    i: usize,
    edit: impl FnOnce(&mut AcceptedTarget),
) -> ProxyPairingComplete {
    let mut c = c.clone();
    edit(&mut c.accepted[i]);
    c
}

/// A response signed by T`i` with one field changed.
fn resigned(
    n: &Net,
    c: &ProxyPairingComplete,
    i: usize,
    edit: impl FnOnce(&mut VouchResponse),
) -> SignedResponse {
    let idx =
        n.t.iter()
            .position(|t| t.id() == c.accepted[i].device_id)
            .unwrap();
    let mut r = c.accepted[i].response.decode_unverified().unwrap();
    edit(&mut r);
    Signed::sign(&n.t[idx].kp, &r)
}

#[test]
fn forged_entries_are_refused_all_or_nothing() {
    let (n, c) = completed();
    let ev = n.eview();
    let victim = c.accepted[1].device_id;

    // The voucher signs an "acceptance" itself.
    let r = c.accepted[1].response.decode_unverified().unwrap();
    let by_voucher = forged(&c, 1, |e| e.response = Signed::sign(&n.v, &r));
    assert_eq!(
        check(&n, &n.vid(), &ev, &by_voucher),
        Err(CompleteRejection::BadSignature(victim))
    );

    // A key that is not the target's.
    let wrong_key = forged(&c, 1, |e| e.public_key = n.s.public());
    assert_eq!(
        check(&n, &n.vid(), &ev, &wrong_key),
        Err(CompleteRejection::KeyMismatch(victim))
    );

    // Another target's acceptance under this target's id and key.
    let swapped = forged(&c, 1, |e| e.response = c.accepted[0].response.clone());
    assert_eq!(
        check(&n, &n.vid(), &ev, &swapped),
        Err(CompleteRejection::BadSignature(victim))
    );

    let other = n.s.device_id();
    let cases: Vec<(SignedResponse, CompleteRejection)> = vec![
        (
            resigned(&n, &c, 1, |r| r.responder = other),
            CompleteRejection::WrongResponder(victim),
        ),
        (
            resigned(&n, &c, 1, |r| r.vouchee = other),
            CompleteRejection::WrongVouchee(victim),
        ),
        (
            resigned(&n, &c, 1, |r| r.voucher = other),
            CompleteRejection::WrongVoucher(victim),
        ),
        (
            resigned(&n, &c, 1, |r| r.session_id = SessionId([5; 16])),
            CompleteRejection::WrongSession(victim),
        ),
        (
            resigned(&n, &c, 1, |r| r.v = 9),
            CompleteRejection::UnsupportedResponseVersion(victim),
        ),
        (
            resigned(&n, &c, 1, |r| {
                r.decision = Decision::Rejected {
                    reason: VouchRejection::UserRejected,
                }
            }),
            CompleteRejection::NotAccepted(victim),
        ),
    ];
    for (response, err) in cases {
        let msg = forged(&c, 1, |e| e.response = response);
        assert_eq!(check(&n, &n.vid(), &ev, &msg), Err(err));
    }
}

#[test]
fn duplicate_self_and_too_many_entries_are_refused() {
    let (n, c) = completed();
    let ev = n.eview();
    let mut dup = c.clone();
    dup.accepted.push(c.accepted[0].clone());
    assert_eq!(
        check(&n, &n.vid(), &ev, &dup),
        Err(CompleteRejection::DuplicateEntry(c.accepted[0].device_id))
    );

    let eid = n.eid();
    let me = forged(&c, 0, |e| {
        e.device_id = eid;
        e.public_key = n.e.public();
    });
    assert_eq!(
        check(&n, &n.vid(), &ev, &me),
        Err(CompleteRejection::InvalidTarget(eid))
    );

    let mut many = c.clone();
    many.accepted = vec![c.accepted[0].clone(); MAX_COMPLETE_ENTRIES + 1];
    assert_eq!(
        check(&n, &n.vid(), &ev, &many),
        Err(CompleteRejection::TooManyEntries { count: 65, max: 64 })
    );
}

/// Address hints are bounded: more than MAX_ADDR_HINTS, or one longer than
/// MAX_ADDR_HINT_LEN bytes, refuses the whole message; at the bounds it is accepted.
#[test]
fn address_hints_beyond_their_bounds_are_refused() {
    let (n, c) = completed();
    let ev = n.eview();
    let target = c.accepted[0].device_id;
    let at_bounds = forged(&c, 0, |e| {
        e.addrs = vec![AddrHint(vec![1; MAX_ADDR_HINT_LEN]); MAX_ADDR_HINTS]
    });
    assert!(check(&n, &n.vid(), &ev, &at_bounds).is_ok());
    let too_many = forged(&c, 0, |e| {
        e.addrs = vec![AddrHint(vec![1; 8]); MAX_ADDR_HINTS + 1]
    });
    assert_eq!(
        check(&n, &n.vid(), &ev, &too_many),
        Err(CompleteRejection::AddressHints(target))
    );
    let too_long = forged(&c, 0, |e| {
        e.addrs = vec![AddrHint(vec![1; MAX_ADDR_HINT_LEN + 1])]
    });
    assert_eq!(
        check(&n, &n.vid(), &ev, &too_long),
        Err(CompleteRejection::AddressHints(target))
    );
}

#[test]
fn a_complete_from_another_session_is_refused() {
    let (n, c) = completed();
    let mut other = c.clone();
    other.session_id = SessionId([8; 16]);
    let first = c.accepted[0].device_id;
    assert_eq!(
        check(&n, &n.vid(), &n.eview(), &other),
        Err(CompleteRejection::WrongSession(first))
    );
}

/// More acceptances than fit in one `ProxyPairingComplete` reach the vouchee in chunks of at
/// most `MAX_COMPLETE_ENTRIES`, and only the last chunk says the session is complete.
#[test]
fn acceptances_beyond_one_message_are_told_in_chunks() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let vouchee = DeviceKeypair::generate(&mut rng);
    let voucher = DeviceKeypair::generate(&mut rng);
    let sid = SessionId([5; 16]);
    let mut session = VouchingSession::new(
        sid,
        vouchee.device_id(),
        vouchee.public(),
        DisplayName::new("phone").unwrap(),
        NOW,
    );
    let total = MAX_COMPLETE_ENTRIES + 6;
    for _ in 0..total {
        let target = DeviceKeypair::generate(&mut rng);
        let response = Signed::sign(
            &target,
            &VouchResponse {
                v: RESPONSE_VERSION,
                session_id: sid,
                vouch_nonce: VouchNonce([1; 16]),
                vouch_digest: [2; 32],
                responder: target.device_id(),
                voucher: voucher.device_id(),
                vouchee: vouchee.device_id(),
                decision: Decision::Accepted {
                    how: AcceptedHow::Automatic,
                },
                decided_at: NOW,
            },
        );
        session
            .targets
            .insert(target.device_id(), VouchStatus::Accepted { response });
    }
    session.state = SessionState::Completed;
    let view = VView::default();

    let first = session.vouchee_notification(&view);
    assert_eq!(first.accepted.len(), MAX_COMPLETE_ENTRIES);
    assert!(!first.session_completed);
    assert!(
        Frame::new(Message::ProxyPairingComplete(first.clone()))
            .encode()
            .len()
            < 64 * 1024
    );
    let told: Vec<DeviceId> = first.accepted.iter().map(|a| a.device_id).collect();
    session.mark_vouchee_notified(&told);
    assert_eq!(session.unnotified_acceptances(), 6);

    let second = session.vouchee_notification(&view);
    assert_eq!(second.accepted.len(), 6);
    assert!(second.session_completed);
    assert!(second.accepted.iter().all(|a| !told.contains(&a.device_id)));
    let rest: Vec<DeviceId> = second.accepted.iter().map(|a| a.device_id).collect();
    session.mark_vouchee_notified(&rest);
    assert_eq!(session.unnotified_acceptances(), 0);
}
