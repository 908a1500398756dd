//! Rekey: two machines driven against each other with no network, on injected time.

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use vouchnet_protocol::keys::{rekey_derive, rekey_transcript, Ephemeral};
use vouchnet_protocol::messages::{RekeyAccept, RekeyConfirm, RekeyInit};
use vouchnet_protocol::rekey::{
    RekeyError, RekeyFailure, RekeyManager, RekeyMessageKind, RekeyOutput, RekeyStage,
};
use vouchnet_protocol::{DeviceId, DeviceKeypair, Message, RekeyId, SymmetricKey, Timestamp};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);
const TIMEOUT: Duration = Duration::from_secs(60);

struct Dev {
    id: DeviceId,
    mgr: RekeyManager,
    rng: ChaCha20Rng,
}

impl Dev {
    fn new(seed: u64) -> Dev {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let id = DeviceKeypair::generate(&mut rng).device_id();
        Dev {
            id,
            mgr: RekeyManager::new(id, TIMEOUT),
            rng,
        }
    }

    fn start(&mut self, peer: DeviceId, now: Timestamp) -> Vec<RekeyOutput> {
        self.mgr.start(peer, now, &mut self.rng).unwrap()
    }

    fn recv(
        &mut self,
        from: DeviceId,
        msg: &Message,
        current: &SymmetricKey,
        now: Timestamp,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        self.mgr
            .handle_message(from, msg, current, now, &mut self.rng)
    }
}

fn old_key() -> SymmetricKey {
    SymmetricKey::from_bytes([0x42; 32])
}

fn the_send(out: &[RekeyOutput], to: DeviceId) -> Message {
    let sends: Vec<&Message> = out
        .iter()
        .filter_map(|o| match o {
            RekeyOutput::Send { to: t, msg } => {
                assert_eq!(*t, to);
                Some(msg)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected exactly one message in {out:?}");
    sends[0].clone()
}

fn new_key(out: &[RekeyOutput], peer: DeviceId) -> Option<SymmetricKey> {
    out.iter().find_map(|o| match o {
        RekeyOutput::NewKey { peer: p, key, .. } => {
            assert_eq!(*p, peer);
            Some(key.clone())
        }
        _ => None,
    })
}

struct Exchange {
    init: RekeyInit,
    accept: RekeyAccept,
    confirm: RekeyConfirm,
    key_a: SymmetricKey,
    key_b: SymmetricKey,
}

fn run(a: &mut Dev, b: &mut Dev, current: &SymmetricKey) -> Exchange {
    let init = the_send(&a.start(b.id, T0), b.id);
    let out = b.recv(a.id, &init, current, T0).unwrap();
    let accept = the_send(&out, a.id);
    assert!(
        new_key(&out, a.id).is_none(),
        "R switches only after I's MAC"
    );
    let out = a.recv(b.id, &accept, current, T0).unwrap();
    let confirm = the_send(&out, b.id);
    assert!(
        matches!(out[0], RekeyOutput::Send { .. }),
        "confirm before NewKey"
    );
    let key_a = new_key(&out, b.id).expect("I switches after verifying R's MAC");
    let out = b.recv(a.id, &confirm, current, T0).unwrap();
    let key_b = new_key(&out, a.id).expect("R switches after verifying I's MAC");
    let (Message::RekeyInit(init), Message::RekeyAccept(accept), Message::RekeyConfirm(confirm)) =
        (init, accept, confirm)
    else {
        panic!("unexpected message kinds");
    };
    Exchange {
        init,
        accept,
        confirm,
        key_a,
        key_b,
    }
}

#[test]
fn both_sides_get_the_same_new_key_which_differs_from_the_old() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let ex = run(&mut a, &mut b, &old_key());
    assert_eq!(ex.key_a, ex.key_b);
    assert_ne!(ex.key_a, old_key());
    assert_eq!(ex.init.rekey_id, ex.accept.rekey_id);
    assert_eq!(ex.init.rekey_id, ex.confirm.rekey_id);
    assert_eq!(a.mgr.in_flight(&b.id), None);
    assert_eq!(b.mgr.in_flight(&a.id), None);
    assert_eq!(a.mgr.poll_timeout(), None);
    assert_eq!(b.mgr.poll_timeout(), None);
}

/// The voucher knows the old (proxied) key and, say, saw every message. Whatever it
/// derives from those, it does not get the new key: that needs an X25519 secret.
#[test]
fn a_party_knowing_only_the_old_key_and_the_messages_cannot_compute_the_new_key() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let ex = run(&mut a, &mut b, &old_key());
    let transcript = rekey_transcript(
        &ex.init.rekey_id,
        &a.id,
        &b.id,
        &ex.init.ephemeral,
        &ex.init.nonce,
        &ex.accept.ephemeral,
        &ex.accept.nonce,
    );
    let mut attempts = vec![
        rekey_derive(old_key().expose(), &transcript),
        rekey_derive(&ex.init.ephemeral, &transcript),
        rekey_derive(&ex.accept.ephemeral, &transcript),
        rekey_derive(&[0; 32], &transcript),
    ];
    // Its own ephemeral keys against each public key.
    let eve = Ephemeral::generate(&mut ChaCha20Rng::seed_from_u64(666));
    for public in [ex.init.ephemeral, ex.accept.ephemeral] {
        attempts.push(rekey_derive(&eve.agree(&public).unwrap(), &transcript));
    }
    for guess in &attempts {
        assert_ne!(*guess, ex.key_a);
    }
    // Yet the transcript is right: with the real shared secret the key follows.
    assert_eq!(ex.key_a, ex.key_b);
}

#[test]
fn consecutive_rekeys_rotate_to_fresh_keys() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let first = run(&mut a, &mut b, &old_key());
    let second = run(&mut b, &mut a, &first.key_a);
    assert_eq!(second.key_a, second.key_b);
    assert_ne!(second.key_a, first.key_a);
    assert_ne!(second.key_a, old_key());
}

#[test]
fn a_bad_accept_mac_is_rejected_and_nothing_changes() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let init = the_send(&a.start(b.id, T0), b.id);
    let Message::RekeyAccept(accept) =
        the_send(&b.recv(a.id, &init, &old_key(), T0).unwrap(), a.id)
    else {
        panic!("expected an accept");
    };
    let before = (a.mgr.in_flight(&b.id), a.mgr.poll_timeout());

    let mut tampered = accept.clone();
    tampered.mac[0] ^= 1;
    assert_eq!(
        a.recv(b.id, &Message::RekeyAccept(tampered), &old_key(), T0),
        Err(RekeyError::BadMac)
    );
    // The right MAC under another key (the responder does not hold ours).
    let wrong_key = SymmetricKey::from_bytes([0x43; 32]);
    assert_eq!(
        a.recv(b.id, &Message::RekeyAccept(accept.clone()), &wrong_key, T0),
        Err(RekeyError::BadMac)
    );
    // Swapping in other key material invalidates the MAC, which covers the transcript.
    let mut swapped = accept.clone();
    swapped.nonce[0] ^= 1;
    assert_eq!(
        a.recv(b.id, &Message::RekeyAccept(swapped), &old_key(), T0),
        Err(RekeyError::BadMac)
    );
    assert_eq!((a.mgr.in_flight(&b.id), a.mgr.poll_timeout()), before);

    // The genuine accept still completes the exchange.
    let out = a
        .recv(b.id, &Message::RekeyAccept(accept), &old_key(), T0)
        .unwrap();
    assert!(new_key(&out, b.id).is_some());
}

#[test]
fn a_bad_confirm_mac_is_rejected_and_nothing_changes() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let init = the_send(&a.start(b.id, T0), b.id);
    let accept = the_send(&b.recv(a.id, &init, &old_key(), T0).unwrap(), a.id);
    let Message::RekeyConfirm(confirm) =
        the_send(&a.recv(b.id, &accept, &old_key(), T0).unwrap(), b.id)
    else {
        panic!("expected a confirm");
    };
    let before = b.mgr.in_flight(&a.id);
    assert_eq!(before.map(|(_, s)| s), Some(RekeyStage::AwaitingConfirm));

    let mut tampered = confirm.clone();
    tampered.mac[31] ^= 0x80;
    assert_eq!(
        b.recv(a.id, &Message::RekeyConfirm(tampered), &old_key(), T0),
        Err(RekeyError::BadMac)
    );
    assert_eq!(
        b.recv(
            a.id,
            &Message::RekeyConfirm(confirm.clone()),
            &SymmetricKey::from_bytes([1; 32]),
            T0
        ),
        Err(RekeyError::BadMac)
    );
    assert_eq!(b.mgr.in_flight(&a.id), before);

    let out = b
        .recv(a.id, &Message::RekeyConfirm(confirm), &old_key(), T0)
        .unwrap();
    assert!(new_key(&out, a.id).is_some());
}

#[test]
fn a_reflected_mac_does_not_verify() {
    // R's accept MAC replayed as I's confirm: roles are bound into the MAC.
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let init = the_send(&a.start(b.id, T0), b.id);
    let Message::RekeyAccept(accept) =
        the_send(&b.recv(a.id, &init, &old_key(), T0).unwrap(), a.id)
    else {
        panic!("expected an accept");
    };
    let reflected = Message::RekeyConfirm(RekeyConfirm {
        rekey_id: accept.rekey_id,
        mac: accept.mac,
    });
    assert_eq!(
        b.recv(a.id, &reflected, &old_key(), T0),
        Err(RekeyError::BadMac)
    );
}

#[test]
fn unknown_foreign_and_out_of_order_messages_are_refused() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let c = Dev::new(3);
    let init = the_send(&a.start(b.id, T0), b.id);
    let Message::RekeyInit(init_body) = &init else {
        panic!("expected an init");
    };
    let id = init_body.rekey_id;
    let stray = RekeyId([9; 16]);
    let confirm = |rekey_id| {
        Message::RekeyConfirm(RekeyConfirm {
            rekey_id,
            mac: [0; 32],
        })
    };
    assert_eq!(
        b.recv(a.id, &confirm(stray), &old_key(), T0),
        Err(RekeyError::UnknownRekey { rekey_id: stray })
    );
    // A confirm before the init was even handled.
    assert_eq!(
        b.recv(a.id, &confirm(id), &old_key(), T0),
        Err(RekeyError::UnknownRekey { rekey_id: id })
    );
    // Someone else answering A's exchange with B.
    let accept_from_c = Message::RekeyAccept(RekeyAccept {
        rekey_id: id,
        ephemeral: [9; 32],
        nonce: [0; 32],
        mac: [0; 32],
    });
    assert_eq!(
        a.recv(c.id, &accept_from_c, &old_key(), T0),
        Err(RekeyError::WrongPeer { rekey_id: id })
    );
    // A confirm sent to the initiator, which is waiting for an accept.
    assert_eq!(
        a.recv(b.id, &confirm(id), &old_key(), T0),
        Err(RekeyError::UnexpectedMessage {
            kind: RekeyMessageKind::Confirm,
            stage: RekeyStage::AwaitingAccept
        })
    );
    assert_eq!(
        a.recv(
            b.id,
            &Message::KeyProofChallenge(vouchnet_protocol::messages::KeyProofChallenge {
                challenge: [0; 32]
            }),
            &old_key(),
            T0
        ),
        Err(RekeyError::NotARekeyMessage)
    );
    assert_eq!(
        a.mgr.in_flight(&b.id),
        Some((id, RekeyStage::AwaitingAccept))
    );

    // B in AwaitingConfirm: an accept is out of order, a retransmitted init is ignored.
    let accept = the_send(&b.recv(a.id, &init, &old_key(), T0).unwrap(), a.id);
    assert_eq!(
        b.recv(a.id, &accept, &old_key(), T0),
        Err(RekeyError::UnexpectedMessage {
            kind: RekeyMessageKind::Accept,
            stage: RekeyStage::AwaitingConfirm
        })
    );
    assert_eq!(b.recv(a.id, &init, &old_key(), T0), Ok(Vec::new()));
    assert_eq!(
        b.mgr.in_flight(&a.id),
        Some((id, RekeyStage::AwaitingConfirm))
    );
    // A second exchange from the same peer while one is in flight.
    let mut again = init_body.clone();
    again.rekey_id = RekeyId([7; 16]);
    assert_eq!(
        b.recv(a.id, &Message::RekeyInit(again), &old_key(), T0),
        Err(RekeyError::AlreadyInProgress {
            peer: a.id,
            rekey_id: id
        })
    );
    assert_eq!(
        a.mgr.start(b.id, T0, &mut a.rng),
        Err(RekeyError::AlreadyInProgress {
            peer: b.id,
            rekey_id: id
        })
    );
}

#[test]
fn a_non_contributory_ephemeral_is_refused() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let low_order = Message::RekeyInit(RekeyInit {
        rekey_id: RekeyId([1; 16]),
        ephemeral: [0; 32],
        nonce: [0; 32],
    });
    assert_eq!(
        b.recv(a.id, &low_order, &old_key(), T0),
        Err(RekeyError::InvalidKeyExchange)
    );
    assert_eq!(b.mgr.in_flight(&a.id), None);

    let init = the_send(&a.start(b.id, T0), b.id);
    let Message::RekeyInit(init) = init else {
        panic!("expected an init");
    };
    let low_accept = Message::RekeyAccept(RekeyAccept {
        rekey_id: init.rekey_id,
        ephemeral: [0; 32],
        nonce: [0; 32],
        mac: [0; 32],
    });
    assert_eq!(
        a.recv(b.id, &low_accept, &old_key(), T0),
        Err(RekeyError::InvalidKeyExchange)
    );
    assert!(a.mgr.in_flight(&b.id).is_some());
}

#[test]
fn simultaneous_rekey_converges_on_the_lower_peer_as_initiator() {
    let (x, y) = (Dev::new(1), Dev::new(2));
    let (mut lo, mut hi) = if x.id.to_bytes() < y.id.to_bytes() {
        (x, y)
    } else {
        (y, x)
    };
    let init_lo = the_send(&lo.start(hi.id, T0), hi.id);
    let init_hi = the_send(&hi.start(lo.id, T0), lo.id);
    let Message::RekeyInit(body_lo) = &init_lo else {
        panic!("expected an init");
    };
    let Message::RekeyInit(body_hi) = &init_hi else {
        panic!("expected an init");
    };
    assert_eq!(
        lo.recv(hi.id, &init_hi, &old_key(), T0),
        Err(RekeyError::SimultaneousRekey {
            ours: body_lo.rekey_id
        })
    );
    let accept = the_send(&hi.recv(lo.id, &init_lo, &old_key(), T0).unwrap(), lo.id);
    assert_eq!(
        hi.mgr.in_flight(&lo.id),
        Some((body_lo.rekey_id, RekeyStage::AwaitingConfirm))
    );
    assert_ne!(body_lo.rekey_id, body_hi.rekey_id);
    let out = lo.recv(hi.id, &accept, &old_key(), T0).unwrap();
    let key_lo = new_key(&out, hi.id).unwrap();
    let confirm = the_send(&out, hi.id);
    let key_hi = new_key(&hi.recv(lo.id, &confirm, &old_key(), T0).unwrap(), lo.id).unwrap();
    assert_eq!(key_lo, key_hi);
}

#[test]
fn an_unanswered_rekey_times_out_at_exactly_the_deadline() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let init = the_send(&a.start(b.id, T0), b.id);
    let rekey_id = match &init {
        Message::RekeyInit(i) => i.rekey_id,
        _ => unreachable!(),
    };
    let accept = the_send(&b.recv(a.id, &init, &old_key(), T0).unwrap(), a.id);
    let deadline = T0.saturating_add(TIMEOUT);
    assert_eq!(a.mgr.poll_timeout(), Some(deadline));
    let just_before = Timestamp::from_millis(deadline.as_millis() - 1);
    assert!(a.mgr.handle_timeout(just_before).is_empty());
    assert_eq!(
        a.recv(b.id, &accept, &old_key(), deadline),
        Err(RekeyError::Expired { rekey_id, deadline })
    );
    assert_eq!(
        a.mgr.handle_timeout(deadline),
        vec![RekeyOutput::Failed {
            peer: b.id,
            rekey_id,
            failure: RekeyFailure::Timeout
        }]
    );
    assert_eq!(a.mgr.poll_timeout(), None);
    assert_eq!(
        b.mgr.connection_lost(a.id),
        vec![RekeyOutput::Failed {
            peer: a.id,
            rekey_id,
            failure: RekeyFailure::ConnectionLost
        }]
    );
}

#[test]
fn debug_output_never_shows_the_new_key() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let init = the_send(&a.start(b.id, T0), b.id);
    let out_b = b.recv(a.id, &init, &old_key(), T0).unwrap();
    let accept = the_send(&out_b, a.id);
    let b_debug = format!("{:?}", b.mgr);
    let out = a.recv(b.id, &accept, &old_key(), T0).unwrap();
    let key = new_key(&out, b.id).unwrap();
    let bytes = format!("{:?}", key.expose());
    assert!(!b_debug.contains(&bytes));
    assert!(!format!("{out:?}").contains(&bytes));
}
