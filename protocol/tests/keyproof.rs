//! Presence key proof on reconnect, driven between machines with no network.

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use vouchnet_protocol::keyproof::{KeyProofError, KeyProofManager};
use vouchnet_protocol::messages::{KeyProofChallenge, KeyProofResponse};
use vouchnet_protocol::{DeviceId, DeviceKeypair, Message, SymmetricKey, Timestamp};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);
const TIMEOUT: Duration = Duration::from_secs(30);

struct Dev {
    id: DeviceId,
    mgr: KeyProofManager,
    rng: ChaCha20Rng,
}

impl Dev {
    fn new(seed: u64) -> Dev {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let id = DeviceKeypair::generate(&mut rng).device_id();
        Dev {
            id,
            mgr: KeyProofManager::new(id, TIMEOUT),
            rng,
        }
    }

    fn challenge(&mut self, peer: DeviceId, now: Timestamp) -> KeyProofChallenge {
        match self.mgr.challenge(peer, now, &mut self.rng).unwrap() {
            Message::KeyProofChallenge(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn respond(
        &self,
        from: DeviceId,
        c: &KeyProofChallenge,
        key: &SymmetricKey,
    ) -> KeyProofResponse {
        match self.mgr.respond(&from, c, key) {
            Message::KeyProofResponse(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

fn key() -> SymmetricKey {
    SymmetricKey::from_bytes([0x11; 32])
}

#[test]
fn both_sides_prove_the_key() {
    let (mut a, mut b) = (Dev::new(1), Dev::new(2));
    let ca = a.challenge(b.id, T0);
    let cb = b.challenge(a.id, T0);
    let rb = b.respond(a.id, &ca, &key());
    let ra = a.respond(b.id, &cb, &key());
    assert_eq!(a.mgr.handle_response(b.id, &rb, &key(), T0), Ok(()));
    assert_eq!(b.mgr.handle_response(a.id, &ra, &key(), T0), Ok(()));
    assert!(!a.mgr.is_outstanding(&b.id));
    assert!(!b.mgr.is_outstanding(&a.id));
    assert_eq!(a.mgr.poll_timeout(), None);
    // The challenge is spent: the same response again has nothing to answer.
    assert_eq!(
        a.mgr.handle_response(b.id, &rb, &key(), T0),
        Err(KeyProofError::NoOutstandingChallenge { peer: b.id })
    );
}

#[test]
fn a_wrong_key_fails_and_leaves_the_challenge_outstanding() {
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let ca = a.challenge(b.id, T0);
    let wrong = b.respond(a.id, &ca, &SymmetricKey::from_bytes([0x12; 32]));
    assert_eq!(
        a.mgr.handle_response(b.id, &wrong, &key(), T0),
        Err(KeyProofError::BadMac)
    );
    assert!(a.mgr.is_outstanding(&b.id));
    // The real device can still answer.
    let right = b.respond(a.id, &ca, &key());
    assert_eq!(a.mgr.handle_response(b.id, &right, &key(), T0), Ok(()));
}

#[test]
fn a_response_to_a_challenge_sent_to_another_peer_fails() {
    let (mut a, b, c) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let key_ab = key();
    let key_ac = SymmetricKey::from_bytes([0x33; 32]);
    let to_b = a.challenge(b.id, T0);
    let to_c = a.challenge(c.id, T0);
    let from_b = b.respond(a.id, &to_b, &key_ab);

    // C replays B's response as its own.
    assert_eq!(
        a.mgr.handle_response(c.id, &from_b, &key_ac, T0),
        Err(KeyProofError::WrongChallenge)
    );
    // C answers B's challenge itself (say it also knows key_ab): bound to prover C, and not
    // the challenge outstanding for C.
    let c_answers_b = c.respond(a.id, &to_b, &key_ab);
    assert_eq!(
        a.mgr.handle_response(c.id, &c_answers_b, &key_ac, T0),
        Err(KeyProofError::WrongChallenge)
    );
    // C pastes B's MAC onto the challenge outstanding for C: B made it over another
    // challenge, as another prover, under another key, so it does not verify.
    let forged = KeyProofResponse {
        challenge: to_c.challenge,
        mac: from_b.mac,
    };
    assert_eq!(
        a.mgr.handle_response(c.id, &forged, &key_ac, T0),
        Err(KeyProofError::BadMac)
    );
    assert!(a.mgr.is_outstanding(&c.id));
    assert_eq!(a.mgr.handle_response(b.id, &from_b, &key_ab, T0), Ok(()));
    let from_c = c.respond(a.id, &to_c, &key_ac);
    assert_eq!(a.mgr.handle_response(c.id, &from_c, &key_ac, T0), Ok(()));
}

#[test]
fn a_reflected_response_fails() {
    // B echoes A's challenge back; A answers; B reflects A's answer to A's own challenge.
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let ca = a.challenge(b.id, T0);
    let a_answer = a.respond(b.id, &ca, &key());
    assert_eq!(
        a.mgr.handle_response(b.id, &a_answer, &key(), T0),
        Err(KeyProofError::BadMac)
    );
    assert!(a.mgr.is_outstanding(&b.id));
}

#[test]
fn a_response_without_an_outstanding_challenge_fails() {
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let unsolicited = b.respond(a.id, &KeyProofChallenge { challenge: [5; 32] }, &key());
    assert_eq!(
        a.mgr.handle_response(b.id, &unsolicited, &key(), T0),
        Err(KeyProofError::NoOutstandingChallenge { peer: b.id })
    );
    assert!(!a.mgr.is_outstanding(&b.id));
}

#[test]
fn a_new_challenge_replaces_the_old_one() {
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let first = a.challenge(b.id, T0);
    let second = a.challenge(b.id, T0);
    assert_ne!(first, second);
    let stale = b.respond(a.id, &first, &key());
    assert_eq!(
        a.mgr.handle_response(b.id, &stale, &key(), T0),
        Err(KeyProofError::WrongChallenge)
    );
    let fresh = b.respond(a.id, &second, &key());
    assert_eq!(a.mgr.handle_response(b.id, &fresh, &key(), T0), Ok(()));
}

#[test]
fn an_unanswered_challenge_times_out_at_exactly_the_deadline() {
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let ca = a.challenge(b.id, T0);
    let deadline = T0.saturating_add(TIMEOUT);
    let just_before = Timestamp::from_millis(deadline.as_millis() - 1);
    assert_eq!(a.mgr.poll_timeout(), Some(deadline));
    assert!(a.mgr.handle_timeout(just_before).is_empty());
    let late = b.respond(a.id, &ca, &key());
    assert_eq!(
        a.mgr.handle_response(b.id, &late, &key(), deadline),
        Err(KeyProofError::Expired { deadline })
    );
    assert!(a.mgr.is_outstanding(&b.id));
    assert_eq!(a.mgr.handle_timeout(deadline), vec![b.id]);
    assert!(!a.mgr.is_outstanding(&b.id));
    assert_eq!(a.mgr.poll_timeout(), None);
}

#[test]
fn answering_in_time_and_connection_loss() {
    let (mut a, b) = (Dev::new(1), Dev::new(2));
    let ca = a.challenge(b.id, T0);
    let r = b.respond(a.id, &ca, &key());
    let just_before = T0
        .saturating_add(TIMEOUT)
        .saturating_sub(Duration::from_millis(1));
    assert_eq!(a.mgr.handle_response(b.id, &r, &key(), just_before), Ok(()));

    let ca = a.challenge(b.id, T0);
    a.mgr.connection_lost(b.id);
    let r = b.respond(a.id, &ca, &key());
    assert_eq!(
        a.mgr.handle_response(b.id, &r, &key(), T0),
        Err(KeyProofError::NoOutstandingChallenge { peer: b.id })
    );
}

#[test]
fn a_device_does_not_challenge_itself() {
    let mut a = Dev::new(1);
    let me = a.id;
    assert_eq!(
        a.mgr.challenge(me, T0, &mut a.rng),
        Err(KeyProofError::SelfChallenge)
    );
}
