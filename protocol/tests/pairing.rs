//! Direct pairing: machines driven against each other with no network, on injected time.
//!
//! Every device has its own seeded ChaCha20 RNG, so each run is identical.

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use vouchnet_protocol::keys::{pairing_commitment, Ephemeral};
use vouchnet_protocol::messages::{
    CancelReason, DisplayName, PairingCancel, PairingConfirm, PairingKey, PairingRequest,
    PairingReveal, PAIRING_METHOD,
};
use vouchnet_protocol::pairing::{
    ConfirmationPrompt, Direction, PairingCompleted, PairingError, PairingFailure, PairingManager,
    PairingMessageKind, PairingOutput, PairingStage, PairingView,
};
use vouchnet_protocol::{
    DeviceId, DeviceKeypair, DevicePublicKey, Message, ProtocolConfig, Timestamp, TxId,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);
const PAIRING_TIMEOUT: Duration = Duration::from_secs(600);

struct Dev {
    id: DeviceId,
    public: DevicePublicKey,
    mgr: PairingManager,
    rng: ChaCha20Rng,
}

impl Dev {
    fn new(seed: u64, name: &str) -> Dev {
        Dev::with_config(seed, name, ProtocolConfig::default())
    }

    fn with_config(seed: u64, name: &str, config: ProtocolConfig) -> Dev {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let kp = DeviceKeypair::generate(&mut rng);
        let id = kp.device_id();
        Dev {
            id,
            public: kp.public(),
            mgr: PairingManager::new(id, DisplayName::new(name).unwrap(), config),
            rng,
        }
    }

    fn start(&mut self, peer: DeviceId, now: Timestamp) -> Vec<PairingOutput> {
        self.mgr.start(peer, now, &mut self.rng).unwrap()
    }

    fn recv(
        &mut self,
        from: DeviceId,
        msg: &Message,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        self.mgr.handle_message(from, msg, now, &mut self.rng)
    }
}

/// The one message `out` sends, checking it goes to `to`.
fn the_send(out: &[PairingOutput], to: DeviceId) -> Message {
    let sends: Vec<&Message> = out
        .iter()
        .filter_map(|o| match o {
            PairingOutput::Send { to: t, msg } => {
                assert_eq!(*t, to, "message sent to the wrong peer");
                Some(msg)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected exactly one message in {out:?}");
    sends[0].clone()
}

fn no_send(out: &[PairingOutput]) {
    assert!(
        !out.iter().any(|o| matches!(o, PairingOutput::Send { .. })),
        "unexpected send in {out:?}"
    );
}

fn the_prompt(out: &[PairingOutput]) -> ConfirmationPrompt {
    let prompts: Vec<&ConfirmationPrompt> = out
        .iter()
        .filter_map(|o| match o {
            PairingOutput::ConfirmationRequired(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(prompts.len(), 1, "expected exactly one prompt in {out:?}");
    prompts[0].clone()
}

fn paired(out: &[PairingOutput]) -> Option<PairingCompleted> {
    out.iter().find_map(|o| match o {
        PairingOutput::Paired(p) => Some((**p).clone()),
        _ => None,
    })
}

fn assert_not_paired(out: &[PairingOutput]) {
    assert!(paired(out).is_none(), "unexpected Paired in {out:?}");
}

fn the_failure(out: &[PairingOutput]) -> PairingFailure {
    let failures: Vec<PairingFailure> = out
        .iter()
        .filter_map(|o| match o {
            PairingOutput::Failed { failure, .. } => Some(*failure),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "expected exactly one failure in {out:?}");
    assert_not_paired(out);
    failures[0]
}

fn cancel_reason(msg: &Message) -> CancelReason {
    match msg {
        Message::PairingCancel(c) => c.reason,
        other => panic!("expected PairingCancel, got {other:?}"),
    }
}

fn tx_of(msg: &Message) -> TxId {
    match msg {
        Message::PairingRequest(m) => m.tx_id,
        Message::PairingKey(m) => m.tx_id,
        Message::PairingReveal(m) => m.tx_id,
        Message::PairingConfirm(m) => m.tx_id,
        Message::PairingCancel(m) => m.tx_id,
        other => panic!("not a pairing message: {other:?}"),
    }
}

fn changed(out: &[PairingOutput]) -> Vec<PairingView> {
    out.iter()
        .filter_map(|o| match o {
            PairingOutput::Changed(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// Everything observable about a manager's state, to assert that a refusal changed nothing.
fn snapshot(d: &Dev) -> (Vec<PairingView>, Option<Timestamp>) {
    (d.mgr.pending(), d.mgr.poll_timeout())
}

/// The messages of one run up to both codes being shown.
struct Run {
    request: Message,
    key: Message,
    reveal: Message,
    code_a: ConfirmationPrompt,
    code_b: ConfirmationPrompt,
}

/// `a` starts pairing with `b`; runs request, key and reveal; both show their code.
fn run_to_codes(a: &mut Dev, b: &mut Dev, now: Timestamp) -> Run {
    let out = a.start(b.id, now);
    let request = the_send(&out, b.id);
    assert_eq!(changed(&out)[0].stage, PairingStage::AwaitingPeerKey);

    let out = b.recv(a.id, &request, now).unwrap();
    let key = the_send(&out, a.id);
    assert!(matches!(key, Message::PairingKey(_)));
    assert_eq!(changed(&out)[0].stage, PairingStage::AwaitingReveal);

    let out = a.recv(b.id, &key, now).unwrap();
    let reveal = the_send(&out, b.id);
    assert!(matches!(reveal, Message::PairingReveal(_)));
    let code_a = the_prompt(&out);
    assert_eq!(
        changed(&out)[0].stage,
        PairingStage::AwaitingUser {
            peer_confirmed: false
        }
    );

    let out = b.recv(a.id, &reveal, now).unwrap();
    no_send(&out);
    let code_b = the_prompt(&out);
    Run {
        request,
        key,
        reveal,
        code_a,
        code_b,
    }
}

fn assert_pairs_match(pa: &PairingCompleted, pb: &PairingCompleted, a: &Dev, b: &Dev) {
    assert_eq!(pa.pairing_key, pb.pairing_key);
    assert_eq!(pa.peer, b.id);
    assert_eq!(pb.peer, a.id);
    assert_eq!(pa.peer_public_key, b.public);
    assert_eq!(pb.peer_public_key, a.public);
    assert_eq!(pa.peer_name.as_str(), "bob");
    assert_eq!(pb.peer_name.as_str(), "alice");
    assert_eq!(pa.direction, Direction::Outbound);
    assert_eq!(pb.direction, Direction::Inbound);
    assert_eq!(pa.our_mac, pb.their_mac);
    assert_eq!(pa.their_mac, pb.our_mac);
    assert_ne!(pa.our_mac, pa.their_mac, "roles are bound into the MACs");
    assert_eq!(pa.tx_id, pb.tx_id);
    assert!(a.mgr.pending().is_empty());
    assert!(b.mgr.pending().is_empty());
    assert_eq!(a.mgr.poll_timeout(), None);
}

fn alice_bob() -> (Dev, Dev) {
    (Dev::new(1, "alice"), Dev::new(2, "bob"))
}

#[test]
fn happy_path_initiator_confirms_first() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    assert_eq!(run.code_a.code, run.code_b.code);
    assert_eq!(run.code_a.code.len(), 6);
    assert!(run.code_a.code.bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(run.code_a.peer, b.id);
    assert_eq!(run.code_b.peer, a.id);
    assert_eq!(run.code_a.peer_name.as_str(), "bob");
    assert_eq!(run.code_b.peer_name.as_str(), "alice");
    assert_eq!(run.code_a.direction, Direction::Outbound);
    assert_eq!(run.code_b.direction, Direction::Inbound);
    assert_eq!(run.code_a.deadline, T0.saturating_add(PAIRING_TIMEOUT));
    assert_eq!(run.code_a.tx_id, tx_of(&run.request));

    // A's user confirms: A sends its MAC but is not paired (no peer MAC yet).
    let out = a.mgr.user_confirm(b.id, T0).unwrap();
    let confirm_a = the_send(&out, b.id);
    assert_not_paired(&out);
    assert_eq!(
        changed(&out)[0].stage,
        PairingStage::AwaitingPeerConfirmation
    );

    // B gets A's MAC before its own user confirmed: verified, but not paired.
    let out = b.recv(a.id, &confirm_a, T0).unwrap();
    assert_not_paired(&out);
    no_send(&out);
    assert_eq!(
        changed(&out)[0].stage,
        PairingStage::AwaitingUser {
            peer_confirmed: true
        }
    );

    // B's user confirms: B is paired (second condition) and sends its MAC first.
    let out = b.mgr.user_confirm(a.id, T0).unwrap();
    let confirm_b = the_send(&out, a.id);
    assert!(matches!(out[0], PairingOutput::Send { .. }));
    let pb = paired(&out).expect("B paired after its own confirm");

    let out = a.recv(b.id, &confirm_b, T0).unwrap();
    no_send(&out);
    let pa = paired(&out).expect("A paired after B's MAC");
    assert_pairs_match(&pa, &pb, &a, &b);
}

#[test]
fn happy_path_responder_confirms_first() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    assert_eq!(run.code_a.code, run.code_b.code);

    let out = b.mgr.user_confirm(a.id, T0).unwrap();
    let confirm_b = the_send(&out, a.id);
    assert_not_paired(&out);

    let out = a.recv(b.id, &confirm_b, T0).unwrap();
    assert_not_paired(&out);
    assert_eq!(
        a.mgr.view(&b.id).unwrap().stage,
        PairingStage::AwaitingUser {
            peer_confirmed: true
        }
    );

    let out = a.mgr.user_confirm(b.id, T0).unwrap();
    let confirm_a = the_send(&out, b.id);
    let pa = paired(&out).expect("A paired after its own confirm");

    let out = b.recv(a.id, &confirm_a, T0).unwrap();
    let pb = paired(&out).expect("B paired after A's MAC");
    assert_pairs_match(&pa, &pb, &a, &b);
}

#[test]
fn typing_the_right_code_confirms() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let out = a.mgr.user_confirm_code(b.id, &run.code_b.code, T0).unwrap();
    let confirm_a = the_send(&out, b.id);
    let out = b.mgr.user_confirm_code(a.id, &run.code_a.code, T0).unwrap();
    let confirm_b = the_send(&out, a.id);
    assert_not_paired(&out);
    let pb = paired(&b.recv(a.id, &confirm_a, T0).unwrap()).unwrap();
    let pa = paired(&a.recv(b.id, &confirm_b, T0).unwrap()).unwrap();
    assert_pairs_match(&pa, &pb, &a, &b);
}

#[test]
fn typing_a_different_code_is_a_code_mismatch_rejection() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let wrong = format!(
        "{:06}",
        (run.code_a.code.parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let out = b.mgr.user_confirm_code(a.id, &wrong, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, a.id)),
        CancelReason::UserRejected
    );
    assert_eq!(the_failure(&out), PairingFailure::CodeMismatch);
    assert!(b.mgr.pending().is_empty());

    let cancel = the_send(&out, a.id);
    let out = a.recv(b.id, &cancel, T0).unwrap();
    no_send(&out);
    assert_eq!(
        the_failure(&out),
        PairingFailure::CancelledByPeer(CancelReason::UserRejected)
    );
    assert!(a.mgr.pending().is_empty());
}

#[test]
fn malformed_typed_code_changes_nothing() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let before = snapshot(&b);
    for bad in [
        "12345",
        "1234567",
        "12345a",
        " 123456",
        "12 456",
        "",
        "１２３４５６",
    ] {
        assert_eq!(
            b.mgr.user_confirm_code(a.id, bad, T0),
            Err(PairingError::MalformedCode),
            "{bad:?}"
        );
        assert_eq!(snapshot(&b), before);
    }
    // The user can still type it right.
    let out = b.mgr.user_confirm_code(a.id, &run.code_a.code, T0).unwrap();
    assert!(matches!(the_send(&out, a.id), Message::PairingConfirm(_)));
}

#[test]
fn initiator_user_rejects() {
    let (mut a, mut b) = alice_bob();
    run_to_codes(&mut a, &mut b, T0);
    let out = a.mgr.user_reject(b.id, T0).unwrap();
    let cancel = the_send(&out, b.id);
    assert_eq!(cancel_reason(&cancel), CancelReason::UserRejected);
    assert_eq!(the_failure(&out), PairingFailure::UserRejected);

    let out = b.recv(a.id, &cancel, T0).unwrap();
    no_send(&out);
    assert_eq!(
        the_failure(&out),
        PairingFailure::CancelledByPeer(CancelReason::UserRejected)
    );
    assert!(a.mgr.pending().is_empty() && b.mgr.pending().is_empty());
    assert_eq!(
        b.mgr.user_confirm(a.id, T0),
        Err(PairingError::NoTransaction { peer: a.id })
    );
}

#[test]
fn responder_user_rejects_even_after_the_peer_confirmed() {
    let (mut a, mut b) = alice_bob();
    run_to_codes(&mut a, &mut b, T0);
    let out = a.mgr.user_confirm(b.id, T0).unwrap();
    let confirm_a = the_send(&out, b.id);
    assert_not_paired(&b.recv(a.id, &confirm_a, T0).unwrap());

    let out = b.mgr.user_reject(a.id, T0).unwrap();
    let cancel = the_send(&out, a.id);
    assert_eq!(cancel_reason(&cancel), CancelReason::UserRejected);
    assert_eq!(the_failure(&out), PairingFailure::UserRejected);

    let out = a.recv(b.id, &cancel, T0).unwrap();
    assert_eq!(
        the_failure(&out),
        PairingFailure::CancelledByPeer(CancelReason::UserRejected)
    );
}

#[test]
fn a_bad_confirmation_mac_fails_key_confirmation() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let forged = Message::PairingConfirm(PairingConfirm {
        tx_id: tx_of(&run.request),
        mac: [0x5a; 32],
    });
    let out = b.recv(a.id, &forged, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, a.id)),
        CancelReason::KeyConfirmationFailed
    );
    assert_eq!(the_failure(&out), PairingFailure::KeyConfirmationFailed);
    assert!(b.mgr.pending().is_empty());
}

#[test]
fn a_reflected_confirmation_mac_fails() {
    // A MAC is bound to its sender's role: B's own MAC sent back to B does not verify.
    let (mut a, mut b) = alice_bob();
    run_to_codes(&mut a, &mut b, T0);
    let out = b.mgr.user_confirm(a.id, T0).unwrap();
    let confirm_b = the_send(&out, a.id);
    let out = b.recv(a.id, &confirm_b, T0).unwrap();
    assert_eq!(the_failure(&out), PairingFailure::KeyConfirmationFailed);
}

/// A relaying man in the middle M: A pairs with M (which calls itself "bob"), M pairs with B
/// (calling itself "alice"), each half with M's own ephemeral keys.
struct Mitm {
    a: Dev,
    b: Dev,
    m_facing_a: Dev,
    m_facing_b: Dev,
    code_a: String,
    code_b: String,
    tx_am: TxId,
    tx_mb: TxId,
    all_outputs: Vec<PairingOutput>,
}

fn mitm(seed: u64) -> Mitm {
    let mut a = Dev::new(seed * 10 + 1, "alice");
    let mut b = Dev::new(seed * 10 + 2, "bob");
    // Both halves of M share one device id (M has one key); each half runs its own machine.
    let mut m_facing_a = Dev::new(seed * 10 + 3, "bob");
    let mut m_facing_b = Dev::new(seed * 10 + 3, "alice");
    m_facing_b.rng = ChaCha20Rng::seed_from_u64(seed * 10 + 4);
    let m = m_facing_a.id;
    assert_eq!(m, m_facing_b.id);
    let mut all = Vec::new();

    let out = a.start(m, T0);
    let req_a = the_send(&out, m);
    all.extend(out);
    let out = m_facing_a.recv(a.id, &req_a, T0).unwrap();
    let key_m = the_send(&out, a.id);
    all.extend(out);

    let out = m_facing_b.start(b.id, T0);
    let req_m = the_send(&out, b.id);
    all.extend(out);
    let out = b.recv(m, &req_m, T0).unwrap();
    let key_b = the_send(&out, m);
    all.extend(out);

    let out = a.recv(m, &key_m, T0).unwrap();
    let reveal_a = the_send(&out, m);
    let code_a = the_prompt(&out).code;
    all.extend(out);
    all.extend(m_facing_a.recv(a.id, &reveal_a, T0).unwrap());

    let out = m_facing_b.recv(b.id, &key_b, T0).unwrap();
    let reveal_m = the_send(&out, b.id);
    all.extend(out);
    let out = b.recv(m, &reveal_m, T0).unwrap();
    let code_b = the_prompt(&out).code;
    all.extend(out);

    Mitm {
        tx_am: tx_of(&req_a),
        tx_mb: tx_of(&req_m),
        a,
        b,
        m_facing_a,
        m_facing_b,
        code_a,
        code_b,
        all_outputs: all,
    }
}

#[test]
fn relaying_mitm_shows_different_codes_and_fails_key_confirmation() {
    let mut x = mitm(7);
    assert_ne!(x.code_a, x.code_b, "the two honest screens differ");
    let m = x.m_facing_a.id;

    // The users confirm anyway; M relays each confirmation to the other side.
    let out = x.a.mgr.user_confirm(m, T0).unwrap();
    let Message::PairingConfirm(confirm_a) = the_send(&out, m) else {
        panic!("expected a confirmation");
    };
    x.all_outputs.extend(out);
    let out = x.b.mgr.user_confirm(m, T0).unwrap();
    let Message::PairingConfirm(confirm_b) = the_send(&out, m) else {
        panic!("expected a confirmation");
    };
    x.all_outputs.extend(out);

    let relayed_to_b = Message::PairingConfirm(PairingConfirm {
        tx_id: x.tx_mb,
        mac: confirm_a.mac,
    });
    let out = x.b.recv(m, &relayed_to_b, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, m)),
        CancelReason::KeyConfirmationFailed
    );
    assert_eq!(the_failure(&out), PairingFailure::KeyConfirmationFailed);
    x.all_outputs.extend(out);

    let relayed_to_a = Message::PairingConfirm(PairingConfirm {
        tx_id: x.tx_am,
        mac: confirm_b.mac,
    });
    let out = x.a.recv(m, &relayed_to_a, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, m)),
        CancelReason::KeyConfirmationFailed
    );
    assert_eq!(the_failure(&out), PairingFailure::KeyConfirmationFailed);
    x.all_outputs.extend(out);

    assert_not_paired(&x.all_outputs);
    assert!(x.a.mgr.pending().is_empty());
    assert!(x.b.mgr.pending().is_empty());
    // M sees each honest side's code on its own halves, but could not make them equal.
    let m_a = x.m_facing_a.mgr.view(&x.a.id).unwrap();
    let m_b = x.m_facing_b.mgr.view(&x.b.id).unwrap();
    assert_eq!(m_a.code, Some(x.code_a.clone()));
    assert_eq!(m_b.code, Some(x.code_b.clone()));
}

#[test]
fn mitm_codes_coincide_at_most_rarely_over_200_seeds() {
    let coincidences = (0..200u64)
        .filter(|seed| {
            let x = mitm(100 + seed);
            x.code_a == x.code_b
        })
        .count();
    assert!(
        coincidences <= 1,
        "{coincidences} of 200 MITM runs showed equal codes"
    );
}

#[test]
fn commitment_mismatch_cancels_and_pairs_nothing() {
    for tamper in ["nonce", "ephemeral"] {
        let (mut a, mut b) = alice_bob();
        let out = a.start(b.id, T0);
        let request = the_send(&out, b.id);
        let key = the_send(&b.recv(a.id, &request, T0).unwrap(), a.id);
        let out = a.recv(b.id, &key, T0).unwrap();
        let Message::PairingReveal(mut reveal) = the_send(&out, b.id) else {
            panic!("expected a reveal");
        };
        match tamper {
            "nonce" => reveal.nonce[0] ^= 1,
            _ => {
                reveal.ephemeral = Ephemeral::generate(&mut ChaCha20Rng::seed_from_u64(9)).public()
            }
        }
        let out = b.recv(a.id, &Message::PairingReveal(reveal), T0).unwrap();
        let cancel = the_send(&out, a.id);
        assert_eq!(cancel_reason(&cancel), CancelReason::CommitmentMismatch);
        assert_eq!(the_failure(&out), PairingFailure::CommitmentMismatch);
        assert!(b.mgr.pending().is_empty());

        let out = a.recv(b.id, &cancel, T0).unwrap();
        assert_eq!(
            the_failure(&out),
            PairingFailure::CancelledByPeer(CancelReason::CommitmentMismatch)
        );
        assert!(a.mgr.pending().is_empty());
    }
}

/// For one fixed initiator commitment, whatever the responder sends, the initiator can only
/// open the commitment to the (ephemeral, nonce) it chose first: the honest reveal is always
/// the same and always accepted, and any other opening is refused. The code, meanwhile,
/// moves unpredictably with the responder's nonce, so neither side can steer it.
#[test]
fn grinding_is_pointless_the_commitment_fixes_the_initiator() {
    let b_id = Dev::new(2, "bob").id;
    let fixed_request = || {
        let mut a = Dev::new(1, "alice");
        let req = the_send(&a.start(b_id, T0), b_id);
        (a, req)
    };
    let (_, request) = fixed_request();
    let Message::PairingRequest(req) = &request else {
        panic!("expected a request");
    };
    let mut honest_openings = std::collections::BTreeSet::new();
    let mut codes = std::collections::BTreeSet::new();
    let rounds = 64u64;
    for i in 0..rounds {
        // A responder with a different key and nonce each round.
        let mut b = Dev::new(2, "bob");
        b.rng = ChaCha20Rng::seed_from_u64(1000 + i);
        let (mut a, request_again) = fixed_request();
        assert_eq!(request_again, request, "the commitment is fixed");
        let key = the_send(&b.recv(a.id, &request, T0).unwrap(), a.id);
        let out_a = a.recv(b.id, &key, T0).unwrap();
        let Message::PairingReveal(reveal) = the_send(&out_a, b.id) else {
            panic!("expected a reveal");
        };
        assert_eq!(
            pairing_commitment(
                PAIRING_METHOD,
                &req.tx_id,
                &a.id,
                &b.id,
                &reveal.ephemeral,
                &reveal.nonce
            ),
            req.commitment
        );
        honest_openings.insert((reveal.ephemeral, reveal.nonce));

        // A grinder that picks its opening after seeing the responder's values is refused.
        let mut grind = ChaCha20Rng::seed_from_u64(5000 + i);
        let mut other_nonce = [0u8; 32];
        grind.fill_bytes(&mut other_nonce);
        let ground = Message::PairingReveal(PairingReveal {
            tx_id: req.tx_id,
            ephemeral: Ephemeral::generate(&mut grind).public(),
            nonce: other_nonce,
        });
        let mut b2 = Dev::new(2, "bob");
        b2.rng = ChaCha20Rng::seed_from_u64(1000 + i);
        assert_eq!(
            b2.recv(a.id, &request, T0).unwrap()[0],
            PairingOutput::Send {
                to: a.id,
                msg: key.clone()
            }
        );
        let refused = b2.recv(a.id, &ground, T0).unwrap();
        assert_eq!(the_failure(&refused), PairingFailure::CommitmentMismatch);

        // The honest opening goes through, and yields the same code on both sides.
        let out_b = b.recv(a.id, &Message::PairingReveal(reveal), T0).unwrap();
        let code = the_prompt(&out_a).code;
        assert_eq!(the_prompt(&out_b).code, code);
        codes.insert(code);
    }
    assert_eq!(
        honest_openings.len(),
        1,
        "one and the same opening every round"
    );
    assert_eq!(
        codes.len() as u64,
        rounds,
        "the code changes with every responder nonce"
    );
}

#[test]
fn the_code_changes_with_the_responder_nonce_alone() {
    let b = Dev::new(2, "bob");
    let responder_ephemeral = Ephemeral::generate(&mut ChaCha20Rng::seed_from_u64(77)).public();
    let mut codes = std::collections::BTreeSet::new();
    for i in 0..100u8 {
        let mut a = Dev::new(1, "alice");
        let tx_id = tx_of(&the_send(&a.start(b.id, T0), b.id));
        let mut nonce = [0u8; 32];
        nonce[0] = i;
        let key = Message::PairingKey(PairingKey {
            tx_id,
            ephemeral: responder_ephemeral,
            nonce,
            name: DisplayName::new("bob").unwrap(),
        });
        codes.insert(the_prompt(&a.recv(b.id, &key, T0).unwrap()).code);
    }
    assert_eq!(codes.len(), 100);
}

#[test]
fn timeout_at_exactly_the_deadline() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let deadline = T0.saturating_add(PAIRING_TIMEOUT);
    assert_eq!(a.mgr.poll_timeout(), Some(deadline));
    assert_eq!(b.mgr.poll_timeout(), Some(deadline));
    assert_eq!(run.code_b.deadline, deadline);

    let just_before = Timestamp::from_millis(deadline.as_millis() - 1);
    let before = snapshot(&a);
    assert_eq!(a.mgr.handle_timeout(just_before), Vec::new());
    assert_eq!(snapshot(&a), before);

    // From the deadline on, inputs for the transaction are refused until handle_timeout.
    let tx_id = tx_of(&run.request);
    assert_eq!(
        a.mgr.user_confirm(b.id, deadline),
        Err(PairingError::Expired { tx_id, deadline })
    );
    assert_eq!(snapshot(&a), before);

    let out = a.mgr.handle_timeout(deadline);
    assert_eq!(cancel_reason(&the_send(&out, b.id)), CancelReason::Timeout);
    assert_eq!(the_failure(&out), PairingFailure::Timeout);
    assert!(a.mgr.pending().is_empty());
    assert_eq!(a.mgr.poll_timeout(), None);

    // B confirms in time (1 ms before its deadline) but A is gone: B times out too.
    let out = b.mgr.user_confirm(a.id, just_before).unwrap();
    assert_not_paired(&out);
    let out = b.mgr.handle_timeout(deadline);
    assert_eq!(the_failure(&out), PairingFailure::Timeout);
}

#[test]
fn timeout_covers_a_request_that_is_never_answered() {
    let (mut a, b) = alice_bob();
    a.start(b.id, T0);
    let deadline = T0.saturating_add(PAIRING_TIMEOUT);
    assert!(a
        .mgr
        .handle_timeout(Timestamp::from_millis(deadline.as_millis() - 1))
        .is_empty());
    let out = a.mgr.handle_timeout(deadline);
    assert_eq!(cancel_reason(&the_send(&out, b.id)), CancelReason::Timeout);
    assert_eq!(the_failure(&out), PairingFailure::Timeout);
}

#[test]
fn connection_lost_mid_pairing_never_pairs() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let out = a.mgr.user_confirm(b.id, T0).unwrap();
    let confirm_a = the_send(&out, b.id);
    let out = b.mgr.user_confirm(a.id, T0).unwrap();
    let confirm_b = the_send(&out, a.id);

    let out = a.mgr.connection_lost(b.id);
    no_send(&out);
    assert_eq!(the_failure(&out), PairingFailure::ConnectionLost);
    let out = b.mgr.connection_lost(a.id);
    assert_eq!(the_failure(&out), PairingFailure::ConnectionLost);
    assert!(a.mgr.connection_lost(b.id).is_empty());

    // Confirmations arriving afterwards find nothing.
    let tx_id = tx_of(&run.request);
    assert_eq!(
        a.recv(b.id, &confirm_b, T0),
        Err(PairingError::UnknownTransaction { tx_id })
    );
    assert_eq!(
        b.recv(a.id, &confirm_a, T0),
        Err(PairingError::UnknownTransaction { tx_id })
    );
}

#[test]
fn duplicate_start_is_refused() {
    let (mut a, b) = alice_bob();
    let out = a.start(b.id, T0);
    let tx_id = tx_of(&the_send(&out, b.id));
    let before = snapshot(&a);
    assert_eq!(
        a.mgr.start(b.id, T0, &mut a.rng),
        Err(PairingError::AlreadyInProgress { peer: b.id, tx_id })
    );
    assert_eq!(snapshot(&a), before);
}

#[test]
fn retransmitted_messages_are_ignored_idempotently() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    let (a_before, b_before) = (snapshot(&a), snapshot(&b));
    assert_eq!(b.recv(a.id, &run.request, T0), Ok(Vec::new()));
    assert_eq!(a.recv(b.id, &run.key, T0), Ok(Vec::new()));
    assert_eq!(b.recv(a.id, &run.reveal, T0), Ok(Vec::new()));
    assert_eq!((snapshot(&a), snapshot(&b)), (a_before, b_before));

    let confirm_a = the_send(&a.mgr.user_confirm(b.id, T0).unwrap(), b.id);
    assert_not_paired(&b.recv(a.id, &confirm_a, T0).unwrap());
    let b_before = snapshot(&b);
    assert_eq!(b.recv(a.id, &confirm_a, T0), Ok(Vec::new()));
    assert_eq!(snapshot(&b), b_before);

    let out = b.mgr.user_confirm(a.id, T0).unwrap();
    assert!(paired(&out).is_some());
}

#[test]
fn a_second_transaction_from_the_same_peer_is_refused_and_the_first_untouched() {
    let (mut a, mut b) = alice_bob();
    let out = a.start(b.id, T0);
    let request = the_send(&out, b.id);
    let key = the_send(&b.recv(a.id, &request, T0).unwrap(), a.id);
    let before = snapshot(&b);

    let second_tx = TxId([0x22; 16]);
    let second = Message::PairingRequest(PairingRequest {
        tx_id: second_tx,
        method: PAIRING_METHOD.to_owned(),
        commitment: [7; 32],
        name: DisplayName::new("alice").unwrap(),
    });
    let out = b.recv(a.id, &second, T0).unwrap();
    assert_eq!(
        out,
        vec![PairingOutput::Send {
            to: a.id,
            msg: Message::PairingCancel(PairingCancel {
                tx_id: second_tx,
                reason: CancelReason::AlreadyInProgress
            })
        }]
    );
    assert_eq!(snapshot(&b), before);

    // A request reusing the live tx id with other content is out of order, not a duplicate.
    let Message::PairingRequest(mut altered) = request.clone() else {
        unreachable!()
    };
    altered.commitment[0] ^= 1;
    assert_eq!(
        b.recv(a.id, &Message::PairingRequest(altered), T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Request,
            stage: PairingStage::AwaitingReveal
        })
    );
    assert_eq!(snapshot(&b), before);

    // The first transaction still completes.
    let reveal = the_send(&a.recv(b.id, &key, T0).unwrap(), b.id);
    b.recv(a.id, &reveal, T0).unwrap();
    let c_a = the_send(&a.mgr.user_confirm(b.id, T0).unwrap(), b.id);
    let c_b = the_send(&b.mgr.user_confirm(a.id, T0).unwrap(), a.id);
    assert!(paired(&a.recv(b.id, &c_b, T0).unwrap()).is_some());
    assert!(paired(&b.recv(a.id, &c_a, T0).unwrap()).is_some());
}

#[test]
fn unknown_transaction_ids_are_refused_without_state_change() {
    let (mut a, mut b) = alice_bob();
    run_to_codes(&mut a, &mut b, T0);
    let before = snapshot(&b);
    let stray = TxId([0x99; 16]);
    let name = DisplayName::new("x").unwrap();
    for msg in [
        Message::PairingKey(PairingKey {
            tx_id: stray,
            ephemeral: [9; 32],
            nonce: [1; 32],
            name,
        }),
        Message::PairingReveal(PairingReveal {
            tx_id: stray,
            ephemeral: [9; 32],
            nonce: [1; 32],
        }),
        Message::PairingConfirm(PairingConfirm {
            tx_id: stray,
            mac: [3; 32],
        }),
        Message::PairingCancel(PairingCancel {
            tx_id: stray,
            reason: CancelReason::UserRejected,
        }),
    ] {
        assert_eq!(
            b.recv(a.id, &msg, T0),
            Err(PairingError::UnknownTransaction { tx_id: stray }),
            "{msg:?}"
        );
        assert_eq!(snapshot(&b), before);
    }
}

#[test]
fn out_of_order_messages_are_refused_without_state_change() {
    let (mut a, mut b) = alice_bob();
    let out = a.start(b.id, T0);
    let request = the_send(&out, b.id);
    let tx_id = tx_of(&request);

    // A reveal before the responder ever saw the request (so before it sent its key).
    let early_reveal = Message::PairingReveal(PairingReveal {
        tx_id,
        ephemeral: [9; 32],
        nonce: [1; 32],
    });
    assert_eq!(
        b.recv(a.id, &early_reveal, T0),
        Err(PairingError::UnknownTransaction { tx_id })
    );
    assert!(b.mgr.pending().is_empty());

    let key = the_send(&b.recv(a.id, &request, T0).unwrap(), a.id);
    let (a_before, b_before) = (snapshot(&a), snapshot(&b));

    // A confirmation before the code was derived, on either side.
    let early_confirm = Message::PairingConfirm(PairingConfirm {
        tx_id,
        mac: [3; 32],
    });
    assert_eq!(
        b.recv(a.id, &early_confirm, T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Confirm,
            stage: PairingStage::AwaitingReveal
        })
    );
    assert_eq!(
        a.recv(b.id, &early_confirm, T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Confirm,
            stage: PairingStage::AwaitingPeerKey
        })
    );
    // Messages for the other role.
    assert_eq!(
        b.recv(a.id, &key, T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Key,
            stage: PairingStage::AwaitingReveal
        })
    );
    assert_eq!(
        a.recv(b.id, &early_reveal, T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Reveal,
            stage: PairingStage::AwaitingPeerKey
        })
    );
    // Our own request reflected back at us.
    assert_eq!(
        a.recv(b.id, &request, T0),
        Err(PairingError::UnexpectedMessage {
            kind: PairingMessageKind::Request,
            stage: PairingStage::AwaitingPeerKey
        })
    );
    // User decisions before there is a code, and a non-pairing message.
    assert_eq!(
        a.mgr.user_confirm(b.id, T0),
        Err(PairingError::NotAwaitingUser {
            stage: PairingStage::AwaitingPeerKey
        })
    );
    assert_eq!(
        b.mgr.user_confirm_code(a.id, "123456", T0),
        Err(PairingError::NotAwaitingUser {
            stage: PairingStage::AwaitingReveal
        })
    );
    assert_eq!(
        a.recv(
            b.id,
            &Message::KeyProofChallenge(vouchnet_protocol::messages::KeyProofChallenge {
                challenge: [0; 32]
            }),
            T0
        ),
        Err(PairingError::NotAPairingMessage)
    );
    assert_eq!((snapshot(&a), snapshot(&b)), (a_before, b_before));

    // The honest run continues; a second own confirmation is refused.
    let reveal = the_send(&a.recv(b.id, &key, T0).unwrap(), b.id);
    b.recv(a.id, &reveal, T0).unwrap();
    let c_a = the_send(&a.mgr.user_confirm(b.id, T0).unwrap(), b.id);
    assert_eq!(
        a.mgr.user_confirm(b.id, T0),
        Err(PairingError::NotAwaitingUser {
            stage: PairingStage::AwaitingPeerConfirmation
        })
    );
    let c_b = the_send(&b.mgr.user_confirm(a.id, T0).unwrap(), a.id);
    assert!(paired(&a.recv(b.id, &c_b, T0).unwrap()).is_some());
    assert!(paired(&b.recv(a.id, &c_a, T0).unwrap()).is_some());
}

#[test]
fn messages_for_another_peers_transaction_change_nothing() {
    let (mut a, mut b) = alice_bob();
    let mut c = Dev::new(3, "mallory");
    let run = run_to_codes(&mut a, &mut b, T0);
    let tx_id = tx_of(&run.request);
    let before = snapshot(&a);
    for msg in [
        Message::PairingCancel(PairingCancel {
            tx_id,
            reason: CancelReason::UserRejected,
        }),
        Message::PairingConfirm(PairingConfirm {
            tx_id,
            mac: [3; 32],
        }),
        run.key.clone(),
        run.reveal.clone(),
        run.request.clone(),
    ] {
        assert_eq!(
            a.recv(c.id, &msg, T0),
            Err(PairingError::WrongPeer { tx_id }),
            "{msg:?}"
        );
        assert_eq!(snapshot(&a), before);
    }
    // C pairing with A in parallel is its own business and does not disturb A–B.
    let out = c.start(a.id, T0);
    a.recv(c.id, &the_send(&out, a.id), T0).unwrap();
    assert_eq!(a.mgr.pending().len(), 2);

    let c_a = the_send(&a.mgr.user_confirm(b.id, T0).unwrap(), b.id);
    let c_b = the_send(&b.mgr.user_confirm(a.id, T0).unwrap(), a.id);
    assert!(paired(&a.recv(b.id, &c_b, T0).unwrap()).is_some());
    assert!(paired(&b.recv(a.id, &c_a, T0).unwrap()).is_some());
}

#[test]
fn the_cap_on_live_transactions_rate_limits() {
    let config = ProtocolConfig {
        max_pending_prompts: 2,
        ..ProtocolConfig::default()
    };
    let mut b = Dev::with_config(2, "bob", config);
    let mut initiators: Vec<Dev> = (10..13).map(|s| Dev::new(s, "phone")).collect();
    let mut requests = Vec::new();
    for i in initiators.iter_mut() {
        requests.push(the_send(&i.start(b.id, T0), b.id));
    }
    for (i, req) in initiators.iter().zip(&requests).take(2) {
        let out = b.recv(i.id, req, T0).unwrap();
        assert!(matches!(the_send(&out, i.id), Message::PairingKey(_)));
    }
    let before = snapshot(&b);
    let third = &initiators[2];
    let out = b.recv(third.id, &requests[2], T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, third.id)),
        CancelReason::RateLimited
    );
    assert_eq!(out.len(), 1);
    assert_eq!(snapshot(&b), before);

    let d = Dev::new(20, "laptop");
    assert_eq!(
        b.mgr.start(d.id, T0, &mut b.rng),
        Err(PairingError::TooManyPending { max: 2 })
    );

    // Once one ends, there is room again.
    b.mgr.user_reject(initiators[0].id, T0).unwrap();
    let out = b.recv(third.id, &requests[2], T0).unwrap();
    assert!(matches!(the_send(&out, third.id), Message::PairingKey(_)));
}

#[test]
fn simultaneous_start_converges_on_the_lower_peer_as_initiator() {
    for higher_hears_first in [true, false] {
        let (x, y) = alice_bob();
        let (mut lo, mut hi) = if x.id.to_bytes() < y.id.to_bytes() {
            (x, y)
        } else {
            (y, x)
        };
        let req_lo = the_send(&lo.start(hi.id, T0), hi.id);
        let req_hi = the_send(&hi.start(lo.id, T0), lo.id);
        let (tx_lo, tx_hi) = (tx_of(&req_lo), tx_of(&req_hi));

        let lo_id = lo.id;
        let hi_step = |hi: &mut Dev| {
            let out = hi.recv(lo_id, &req_lo, T0).unwrap();
            let key = the_send(&out, lo_id);
            assert_eq!(tx_of(&key), tx_lo);
            let view = &changed(&out)[0];
            assert_eq!(
                (view.tx_id, view.direction, view.stage),
                (tx_lo, Direction::Inbound, PairingStage::AwaitingReveal)
            );
            assert_eq!(hi.mgr.pending().len(), 1);
            key
        };
        let lo_step = |lo: &mut Dev, hi_id: DeviceId| {
            let out = lo.recv(hi_id, &req_hi, T0).unwrap();
            let cancel = the_send(&out, hi_id);
            assert_eq!(tx_of(&cancel), tx_hi);
            assert_eq!(cancel_reason(&cancel), CancelReason::AlreadyInProgress);
            assert_eq!(lo.mgr.view(&hi_id).unwrap().tx_id, tx_lo);
            cancel
        };
        let hi_id = hi.id;
        let (key, cancel) = if higher_hears_first {
            let key = hi_step(&mut hi);
            (key, lo_step(&mut lo, hi_id))
        } else {
            let cancel = lo_step(&mut lo, hi_id);
            (hi_step(&mut hi), cancel)
        };
        // The refusal of hi's own (abandoned) request finds nothing at hi.
        assert_eq!(
            hi.recv(lo.id, &cancel, T0),
            Err(PairingError::UnknownTransaction { tx_id: tx_hi })
        );

        let reveal = the_send(&lo.recv(hi.id, &key, T0).unwrap(), hi.id);
        let code_hi = the_prompt(&hi.recv(lo.id, &reveal, T0).unwrap()).code;
        assert_eq!(lo.mgr.view(&hi.id).unwrap().code, Some(code_hi));
        let c_lo = the_send(&lo.mgr.user_confirm(hi.id, T0).unwrap(), hi.id);
        let c_hi = the_send(&hi.mgr.user_confirm(lo.id, T0).unwrap(), lo.id);
        let p_lo = paired(&lo.recv(hi.id, &c_hi, T0).unwrap()).unwrap();
        let p_hi = paired(&hi.recv(lo.id, &c_lo, T0).unwrap()).unwrap();
        assert_eq!(p_lo.pairing_key, p_hi.pairing_key);
        assert_eq!(p_lo.direction, Direction::Outbound);
        assert_eq!(p_hi.direction, Direction::Inbound);
    }
}

#[test]
fn unsupported_method_is_cancelled_without_state() {
    let (a, mut b) = alice_bob();
    let tx_id = TxId([0x31; 16]);
    let req = Message::PairingRequest(PairingRequest {
        tx_id,
        method: "sas-numeric4/v0".to_owned(),
        commitment: [1; 32],
        name: DisplayName::new("alice").unwrap(),
    });
    let out = b.recv(a.id, &req, T0).unwrap();
    assert_eq!(
        out,
        vec![PairingOutput::Send {
            to: a.id,
            msg: Message::PairingCancel(PairingCancel {
                tx_id,
                reason: CancelReason::UnsupportedMethod
            })
        }]
    );
    assert!(b.mgr.pending().is_empty());
}

#[test]
fn a_non_contributory_key_from_the_responder_is_refused() {
    let (mut a, b) = alice_bob();
    let tx_id = tx_of(&the_send(&a.start(b.id, T0), b.id));
    let low_order = Message::PairingKey(PairingKey {
        tx_id,
        ephemeral: [0; 32],
        nonce: [1; 32],
        name: DisplayName::new("bob").unwrap(),
    });
    let out = a.recv(b.id, &low_order, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, b.id)),
        CancelReason::InvalidKeyExchange
    );
    assert_eq!(the_failure(&out), PairingFailure::InvalidKeyExchange);
    assert!(a.mgr.pending().is_empty());
}

#[test]
fn a_non_contributory_key_from_the_initiator_is_refused() {
    // A hostile initiator commits honestly to a low-order point.
    let (a, mut b) = alice_bob();
    let tx_id = TxId([0x41; 16]);
    let nonce = [5; 32];
    let commitment = pairing_commitment(PAIRING_METHOD, &tx_id, &a.id, &b.id, &[0; 32], &nonce);
    let req = Message::PairingRequest(PairingRequest {
        tx_id,
        method: PAIRING_METHOD.to_owned(),
        commitment,
        name: DisplayName::new("alice").unwrap(),
    });
    b.recv(a.id, &req, T0).unwrap();
    let reveal = Message::PairingReveal(PairingReveal {
        tx_id,
        ephemeral: [0; 32],
        nonce,
    });
    let out = b.recv(a.id, &reveal, T0).unwrap();
    assert_eq!(
        cancel_reason(&the_send(&out, a.id)),
        CancelReason::InvalidKeyExchange
    );
    assert_eq!(the_failure(&out), PairingFailure::InvalidKeyExchange);
}

#[test]
fn self_pairing_is_refused() {
    let mut a = Dev::new(1, "alice");
    let me = a.id;
    assert_eq!(
        a.mgr.start(me, T0, &mut a.rng),
        Err(PairingError::SelfPairing)
    );
}

#[test]
fn abort_cancels_with_aborted() {
    let (mut a, mut b) = alice_bob();
    run_to_codes(&mut a, &mut b, T0);
    let out = b.mgr.abort(a.id, T0).unwrap();
    assert_eq!(cancel_reason(&the_send(&out, a.id)), CancelReason::Aborted);
    assert_eq!(the_failure(&out), PairingFailure::Aborted);
}

#[test]
fn pending_view_lists_live_transactions_for_the_cli() {
    let (mut a, mut b) = alice_bob();
    let run = run_to_codes(&mut a, &mut b, T0);
    assert_eq!(
        b.mgr.pending(),
        vec![PairingView {
            peer: a.id,
            tx_id: tx_of(&run.request),
            peer_name: Some(DisplayName::new("alice").unwrap()),
            direction: Direction::Inbound,
            stage: PairingStage::AwaitingUser {
                peer_confirmed: false
            },
            code: Some(run.code_b.code.clone()),
            deadline: T0.saturating_add(PAIRING_TIMEOUT),
        }]
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let (mut a, mut b) = alice_bob();
    let out = a.start(b.id, T0);
    let request = the_send(&out, b.id);
    let a_debug_committed = format!("{:?}", a.mgr);
    let key = the_send(&b.recv(a.id, &request, T0).unwrap(), a.id);
    let out = a.recv(b.id, &key, T0).unwrap();
    let Message::PairingReveal(reveal) = the_send(&out, b.id) else {
        panic!("expected a reveal");
    };
    // Before the reveal, the initiator's opening is secret; its Debug must not show it.
    assert!(!a_debug_committed.contains(&format!("{:?}", reveal.nonce)));
    assert!(!a_debug_committed.contains(&format!("{:?}", reveal.ephemeral)));

    b.recv(a.id, &Message::PairingReveal(reveal), T0).unwrap();
    let c_a = the_send(&a.mgr.user_confirm(b.id, T0).unwrap(), b.id);
    let debug_b_before = format!("{:?}", b.mgr);
    let out = b.recv(a.id, &c_a, T0).unwrap();
    let out2 = b.mgr.user_confirm(a.id, T0).unwrap();
    let done = paired(&out2).unwrap();
    let key_bytes = format!("{:?}", done.pairing_key.expose());
    for shown in [
        format!("{out:?}"),
        format!("{out2:?}"),
        debug_b_before,
        format!("{:?}", a.mgr),
    ] {
        assert!(!shown.contains(&key_bytes));
    }
    assert!(format!("{done:?}").contains("SymmetricKey(<redacted>)"));
}
