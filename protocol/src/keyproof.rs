//! Presence key proof: on every connection of two paired devices, each proves it holds the
//! pairing key before the other counts it as a verified online device.
//!
//! A PeerId proves the device holds its identity key; only the pairing key proves it is the
//! device this one *paired* with (and, after a rekey, that both switched to the same key).
//!
//! ```text
//!   A ── KeyProofChallenge{c_A} ──▶ B        B ── KeyProofChallenge{c_B} ──▶ A
//!   A ◀── KeyProofResponse{c_A, mac} ── B    mac = key_proof_mac(key, c_A, prover=B, verifier=A)
//! ```
//!
//! Both directions run independently. The MAC binds prover and verifier, so a response
//! cannot be reflected back to its maker, and the challenger checks the response against
//! the one challenge it has outstanding *for that peer*, so a response to a challenge sent
//! to another device never counts. A new challenge to a peer replaces the previous one.
//! A challenge is answered by `deadline`; from then on a response is refused with
//! [`KeyProofError::Expired`] until [`KeyProofManager::handle_timeout`] reports the peer
//! as unverified. Every refusal changes no state.

use crate::identity::DeviceId;
use crate::keys::{key_proof_mac, verify_key_proof};
use crate::messages::{KeyProofChallenge, KeyProofResponse, Message};
use crate::secret::SymmetricKey;
use crate::time::Timestamp;
use core::time::Duration;
use rand_core::CryptoRngCore;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Why a key proof was refused. No variant changes any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProofError {
    /// A device does not challenge itself.
    #[error("cannot challenge this device itself")]
    SelfChallenge,
    /// No challenge to this peer is outstanding.
    #[error("no key-proof challenge outstanding for {peer}")]
    NoOutstandingChallenge {
        /// The responding peer.
        peer: DeviceId,
    },
    /// The response answers a challenge other than the one outstanding for this peer.
    #[error("response answers another challenge")]
    WrongChallenge,
    /// The MAC does not verify under the pairing key.
    #[error("key proof MAC does not verify")]
    BadMac,
    /// The challenge reached its deadline; `handle_timeout` will report it.
    #[error("key-proof challenge expired at {deadline:?}")]
    Expired {
        /// The deadline.
        deadline: Timestamp,
    },
}

#[derive(Debug)]
struct Outstanding {
    challenge: [u8; 32],
    deadline: Timestamp,
}

/// The challenges this device has outstanding, one per peer.
#[derive(Debug)]
pub struct KeyProofManager {
    me: DeviceId,
    timeout: Duration,
    outstanding: BTreeMap<DeviceId, Outstanding>,
}

impl KeyProofManager {
    /// A manager for device `me`; a challenge must be answered within `timeout`.
    pub fn new(me: DeviceId, timeout: Duration) -> Self {
        KeyProofManager {
            me,
            timeout,
            outstanding: BTreeMap::new(),
        }
    }

    /// A fresh challenge for `peer` (replacing any outstanding one), to send to it.
    pub fn challenge(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Message, KeyProofError> {
        if peer == self.me {
            return Err(KeyProofError::SelfChallenge);
        }
        let mut challenge = [0u8; 32];
        rng.fill_bytes(&mut challenge);
        self.outstanding.insert(
            peer,
            Outstanding {
                challenge,
                deadline: now.saturating_add(self.timeout),
            },
        );
        Ok(Message::KeyProofChallenge(KeyProofChallenge { challenge }))
    }

    /// The answer to `challenge` from `from`, proving this device holds `key` (the key it
    /// shares with `from`). Stateless: answering is always safe, the MAC names both sides.
    pub fn respond(
        &self,
        from: &DeviceId,
        challenge: &KeyProofChallenge,
        key: &SymmetricKey,
    ) -> Message {
        Message::KeyProofResponse(KeyProofResponse {
            challenge: challenge.challenge,
            mac: key_proof_mac(key, &challenge.challenge, &self.me, from),
        })
    }

    /// Checks `from`'s answer under `key` (the key this device shares with `from`). On
    /// success the challenge is spent and `from` counts as verified.
    pub fn handle_response(
        &mut self,
        from: DeviceId,
        response: &KeyProofResponse,
        key: &SymmetricKey,
        now: Timestamp,
    ) -> Result<(), KeyProofError> {
        let pending = self
            .outstanding
            .get(&from)
            .ok_or(KeyProofError::NoOutstandingChallenge { peer: from })?;
        if now >= pending.deadline {
            return Err(KeyProofError::Expired {
                deadline: pending.deadline,
            });
        }
        if !bool::from(pending.challenge.ct_eq(&response.challenge)) {
            return Err(KeyProofError::WrongChallenge);
        }
        if !verify_key_proof(key, &pending.challenge, &from, &self.me, &response.mac) {
            return Err(KeyProofError::BadMac);
        }
        self.outstanding.remove(&from);
        Ok(())
    }

    /// Whether a challenge to `peer` is outstanding.
    pub fn is_outstanding(&self, peer: &DeviceId) -> bool {
        self.outstanding.contains_key(peer)
    }

    /// The connection to `peer` closed: its challenge is dropped.
    pub fn connection_lost(&mut self, peer: DeviceId) {
        self.outstanding.remove(&peer);
    }

    /// Drops every challenge whose deadline is at or before `now` and returns those peers
    /// (they did not prove the key in time), ordered by peer.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<DeviceId> {
        let due: Vec<DeviceId> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &due {
            self.outstanding.remove(peer);
        }
        due
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.outstanding.values().map(|o| o.deadline).min()
    }
}
