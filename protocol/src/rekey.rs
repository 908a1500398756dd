//! Rekey: two devices that share a key replace it with one only they can compute.
//!
//! The main use is a *proxied* key: after a vouch, the target and the vouchee share a key
//! derived from the voucher–vouchee pairing key, so the voucher knows it too. At first
//! contact the pair runs this exchange and the voucher is locked out. The same exchange
//! rotates any pairing key.
//!
//! ```text
//!   initiator (I)                                          responder (R)
//!   start()      ── RekeyInit{id, eph_I, N_I} ──▶
//!                ◀── RekeyAccept{id, eph_R, N_R, MAC_R} ──  MAC_R = rekey_mac(old, Responder, T)
//!   verify MAC_R ── RekeyConfirm{id, MAC_I} ──▶             verify MAC_I
//!   NewKey                                                  NewKey
//! ```
//!
//! `T` is [`rekey_transcript`] (id, both device ids as authenticated by the connection, both
//! ephemeral keys and nonces). The MACs under the *current* key prove each side is the other
//! half of the existing pair; the new key is [`rekey_derive`] of the fresh X25519 result
//! only, so knowing the old key and every public message is not enough to compute it.
//!
//! ## Rules
//! - The caller passes the current key of the pair with every message; the machine keeps no
//!   copy of it. The node only feeds this machine messages from devices it holds a key for.
//! - One exchange per peer. A `RekeyInit` from a peer with an exchange in flight is refused
//!   ([`RekeyError::AlreadyInProgress`]), except on a simultaneous start: if both sides sent
//!   `RekeyInit` and ours is still unanswered, the side whose PeerId bytes compare lower
//!   keeps its exchange and refuses the other ([`RekeyError::SimultaneousRekey`]); the higher
//!   side drops its own and answers. A byte-identical retransmission is ignored.
//! - A bad MAC, a non-contributory key, an unknown id or an out-of-order message is a typed
//!   [`RekeyError`] and changes nothing: no key changes, and the exchange in flight stays.
//! - An exchange lives `timeout` from its creation; inputs for it are refused with
//!   [`RekeyError::Expired`] from its deadline on, until [`RekeyManager::handle_timeout`]
//!   ends it with [`RekeyFailure::Timeout`].
//! - The initiator switches keys when it sends `RekeyConfirm`; the responder when that
//!   confirmation verifies. If the confirmation is lost, the responder keeps the old key
//!   and times out; the node should keep the previous key until a key proof with the new
//!   one succeeds, and fall back to it otherwise.

use crate::identity::DeviceId;
use crate::ids::RekeyId;
use crate::keys::{rekey_derive, rekey_mac, rekey_transcript, verify_rekey_mac, Ephemeral, Role};
use crate::messages::{Message, RekeyAccept, RekeyConfirm, RekeyInit};
use crate::secret::SymmetricKey;
use crate::time::Timestamp;
use core::fmt;
use core::time::Duration;
use rand_core::CryptoRngCore;
use std::collections::BTreeMap;

/// The rekey message kinds, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RekeyMessageKind {
    /// `RekeyInit`.
    Init,
    /// `RekeyAccept`.
    Accept,
    /// `RekeyConfirm`.
    Confirm,
}

/// Where an exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RekeyStage {
    /// Initiator: `RekeyInit` sent, waiting for `RekeyAccept`.
    AwaitingAccept,
    /// Responder: `RekeyAccept` sent, waiting for `RekeyConfirm`.
    AwaitingConfirm,
}

/// Why an exchange ended without a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RekeyFailure {
    /// No answer before the deadline.
    Timeout,
    /// The connection went away mid-exchange.
    ConnectionLost,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RekeyOutput {
    /// Send `msg` to `to`.
    Send {
        /// The peer.
        to: DeviceId,
        /// The message.
        msg: Message,
    },
    /// Replace the key shared with `peer` by `key`.
    NewKey {
        /// The peer.
        peer: DeviceId,
        /// The exchange.
        rekey_id: RekeyId,
        /// The replacement (redacted in `Debug`).
        key: SymmetricKey,
    },
    /// The exchange ended; the old key stays.
    Failed {
        /// The peer.
        peer: DeviceId,
        /// The exchange.
        rekey_id: RekeyId,
        /// Why.
        failure: RekeyFailure,
    },
}

/// Why an input was refused. No variant changes any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// The message is not one of the rekey messages.
    #[error("not a rekey message")]
    NotARekeyMessage,
    /// A device shares no key with itself.
    #[error("cannot rekey with this device itself")]
    SelfRekey,
    /// An exchange with this peer is already in flight.
    #[error("a rekey with {peer} is already in progress ({rekey_id})")]
    AlreadyInProgress {
        /// The peer.
        peer: DeviceId,
        /// The exchange in flight.
        rekey_id: RekeyId,
    },
    /// Both sides started at once and this side (lower PeerId) keeps its own exchange.
    #[error("simultaneous rekey; keeping ours ({ours})")]
    SimultaneousRekey {
        /// The exchange this side keeps.
        ours: RekeyId,
    },
    /// A message for an exchange id nobody here knows.
    #[error("unknown rekey {rekey_id}")]
    UnknownRekey {
        /// The id in the message.
        rekey_id: RekeyId,
    },
    /// A message for an exchange that belongs to another peer.
    #[error("rekey {rekey_id} belongs to another peer")]
    WrongPeer {
        /// The id in the message.
        rekey_id: RekeyId,
    },
    /// A message the exchange's stage does not expect.
    #[error("unexpected {kind:?} while {stage:?}")]
    UnexpectedMessage {
        /// What arrived.
        kind: RekeyMessageKind,
        /// Where the exchange stands.
        stage: RekeyStage,
    },
    /// The peer's MAC does not verify under the current key.
    #[error("rekey MAC does not verify under the current key")]
    BadMac,
    /// The peer's ephemeral key gave a non-contributory (all-zero) X25519 result.
    #[error("non-contributory X25519 exchange")]
    InvalidKeyExchange,
    /// The exchange reached its deadline; `handle_timeout` will end it.
    #[error("rekey {rekey_id} expired at {deadline:?}")]
    Expired {
        /// The exchange.
        rekey_id: RekeyId,
        /// Its deadline.
        deadline: Timestamp,
    },
}

enum Stage {
    AwaitingAccept {
        ephemeral: Ephemeral,
        nonce: [u8; 32],
    },
    AwaitingConfirm {
        transcript: Vec<u8>,
        new_key: SymmetricKey,
    },
}

impl Stage {
    fn public(&self) -> RekeyStage {
        match self {
            Stage::AwaitingAccept { .. } => RekeyStage::AwaitingAccept,
            Stage::AwaitingConfirm { .. } => RekeyStage::AwaitingConfirm,
        }
    }
}

struct Exchange {
    rekey_id: RekeyId,
    deadline: Timestamp,
    /// The inbound message already handled, so a retransmission is recognised.
    received: Option<Message>,
    stage: Stage,
}

impl Exchange {
    fn expired(&self, now: Timestamp) -> Result<(), RekeyError> {
        if now >= self.deadline {
            return Err(RekeyError::Expired {
                rekey_id: self.rekey_id,
                deadline: self.deadline,
            });
        }
        Ok(())
    }
}

/// Hand-written so the ephemeral secret and the pending new key never reach a log.
impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("rekey_id", &self.rekey_id)
            .field("stage", &self.stage.public())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// All rekey exchanges of one device. See the module docs for the rules.
#[derive(Debug)]
pub struct RekeyManager {
    me: DeviceId,
    timeout: Duration,
    exchanges: BTreeMap<DeviceId, Exchange>,
}

impl RekeyManager {
    /// A manager for device `me`; each exchange must finish within `timeout`.
    pub fn new(me: DeviceId, timeout: Duration) -> Self {
        RekeyManager {
            me,
            timeout,
            exchanges: BTreeMap::new(),
        }
    }

    /// Starts replacing the key shared with `peer` (this device is the initiator).
    pub fn start(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        if peer == self.me {
            return Err(RekeyError::SelfRekey);
        }
        if let Some(ex) = self.exchanges.get(&peer) {
            ex.expired(now)?;
            return Err(RekeyError::AlreadyInProgress {
                peer,
                rekey_id: ex.rekey_id,
            });
        }
        let rekey_id = self.fresh_id(rng);
        let ephemeral = Ephemeral::generate(rng);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let init = Message::RekeyInit(RekeyInit {
            rekey_id,
            ephemeral: ephemeral.public(),
            nonce,
        });
        self.exchanges.insert(
            peer,
            Exchange {
                rekey_id,
                deadline: now.saturating_add(self.timeout),
                received: None,
                stage: Stage::AwaitingAccept { ephemeral, nonce },
            },
        );
        Ok(vec![RekeyOutput::Send {
            to: peer,
            msg: init,
        }])
    }

    /// Handles a rekey message from `from` (the connection's device id); `current` is the
    /// key this device shares with `from` now.
    pub fn handle_message(
        &mut self,
        from: DeviceId,
        msg: &Message,
        current: &SymmetricKey,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        match msg {
            Message::RekeyInit(init) => self.on_init(from, init, msg, current, now, rng),
            Message::RekeyAccept(accept) => self.on_accept(from, accept, msg, current, now),
            Message::RekeyConfirm(confirm) => self.on_confirm(from, confirm, msg, current, now),
            _ => Err(RekeyError::NotARekeyMessage),
        }
    }

    /// The connection to `peer` closed: its exchange ends, the old key stays.
    pub fn connection_lost(&mut self, peer: DeviceId) -> Vec<RekeyOutput> {
        self.fail(peer, RekeyFailure::ConnectionLost)
    }

    /// Ends every exchange whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<RekeyOutput> {
        let due: Vec<DeviceId> = self
            .exchanges
            .iter()
            .filter(|(_, ex)| ex.deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        due.into_iter()
            .flat_map(|peer| self.fail(peer, RekeyFailure::Timeout))
            .collect()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.exchanges.values().map(|ex| ex.deadline).min()
    }

    /// The exchange in flight with `peer`, if any.
    pub fn in_flight(&self, peer: &DeviceId) -> Option<(RekeyId, RekeyStage)> {
        self.exchanges
            .get(peer)
            .map(|ex| (ex.rekey_id, ex.stage.public()))
    }

    fn fresh_id(&self, rng: &mut impl CryptoRngCore) -> RekeyId {
        loop {
            let id = RekeyId::random(rng);
            if !self.id_in_use(&id) {
                return id;
            }
        }
    }

    fn id_in_use(&self, id: &RekeyId) -> bool {
        self.exchanges.values().any(|ex| ex.rekey_id == *id)
    }

    fn locate(
        &mut self,
        from: DeviceId,
        rekey_id: &RekeyId,
        now: Timestamp,
    ) -> Result<&mut Exchange, RekeyError> {
        let ours = matches!(self.exchanges.get(&from), Some(ex) if ex.rekey_id == *rekey_id);
        if !ours {
            return Err(if self.id_in_use(rekey_id) {
                RekeyError::WrongPeer {
                    rekey_id: *rekey_id,
                }
            } else {
                RekeyError::UnknownRekey {
                    rekey_id: *rekey_id,
                }
            });
        }
        let ex = self
            .exchanges
            .get_mut(&from)
            .expect("presence checked above");
        ex.expired(now)?;
        Ok(ex)
    }

    fn on_init(
        &mut self,
        from: DeviceId,
        init: &RekeyInit,
        msg: &Message,
        current: &SymmetricKey,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        if from == self.me {
            return Err(RekeyError::SelfRekey);
        }
        if let Some(ex) = self.exchanges.get(&from) {
            ex.expired(now)?;
            if ex.received.as_ref() == Some(msg) {
                return Ok(Vec::new());
            }
            let simultaneous = matches!(ex.stage, Stage::AwaitingAccept { .. });
            if !simultaneous || ex.rekey_id == init.rekey_id {
                return Err(RekeyError::AlreadyInProgress {
                    peer: from,
                    rekey_id: ex.rekey_id,
                });
            }
            // Tie-break: the lower PeerId (as bytes) keeps its exchange.
            if self.me.to_bytes() < from.to_bytes() {
                return Err(RekeyError::SimultaneousRekey { ours: ex.rekey_id });
            }
        }
        if self
            .exchanges
            .iter()
            .any(|(peer, ex)| *peer != from && ex.rekey_id == init.rekey_id)
        {
            return Err(RekeyError::WrongPeer {
                rekey_id: init.rekey_id,
            });
        }
        let ephemeral = Ephemeral::generate(rng);
        let shared = ephemeral
            .agree(&init.ephemeral)
            .map_err(|_| RekeyError::InvalidKeyExchange)?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let transcript = rekey_transcript(
            &init.rekey_id,
            &from,
            &self.me,
            &init.ephemeral,
            &init.nonce,
            &ephemeral.public(),
            &nonce,
        );
        let accept = Message::RekeyAccept(RekeyAccept {
            rekey_id: init.rekey_id,
            ephemeral: ephemeral.public(),
            nonce,
            mac: rekey_mac(current, Role::Responder, &transcript),
        });
        let new_key = rekey_derive(&shared, &transcript);
        // Replaces our own unanswered exchange, if the tie-break said so.
        self.exchanges.insert(
            from,
            Exchange {
                rekey_id: init.rekey_id,
                deadline: now.saturating_add(self.timeout),
                received: Some(msg.clone()),
                stage: Stage::AwaitingConfirm {
                    transcript,
                    new_key,
                },
            },
        );
        Ok(vec![RekeyOutput::Send {
            to: from,
            msg: accept,
        }])
    }

    fn on_accept(
        &mut self,
        from: DeviceId,
        accept: &RekeyAccept,
        msg: &Message,
        current: &SymmetricKey,
        now: Timestamp,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        let me = self.me;
        let ex = self.locate(from, &accept.rekey_id, now)?;
        if ex.received.as_ref() == Some(msg) {
            return Ok(Vec::new());
        }
        let Stage::AwaitingAccept { ephemeral, nonce } = &ex.stage else {
            return Err(RekeyError::UnexpectedMessage {
                kind: RekeyMessageKind::Accept,
                stage: ex.stage.public(),
            });
        };
        let shared = ephemeral
            .agree(&accept.ephemeral)
            .map_err(|_| RekeyError::InvalidKeyExchange)?;
        let transcript = rekey_transcript(
            &accept.rekey_id,
            &me,
            &from,
            &ephemeral.public(),
            nonce,
            &accept.ephemeral,
            &accept.nonce,
        );
        if !verify_rekey_mac(current, Role::Responder, &transcript, &accept.mac) {
            return Err(RekeyError::BadMac);
        }
        let confirm = Message::RekeyConfirm(RekeyConfirm {
            rekey_id: accept.rekey_id,
            mac: rekey_mac(current, Role::Initiator, &transcript),
        });
        let key = rekey_derive(&shared, &transcript);
        self.exchanges.remove(&from);
        Ok(vec![
            RekeyOutput::Send {
                to: from,
                msg: confirm,
            },
            RekeyOutput::NewKey {
                peer: from,
                rekey_id: accept.rekey_id,
                key,
            },
        ])
    }

    fn on_confirm(
        &mut self,
        from: DeviceId,
        confirm: &RekeyConfirm,
        msg: &Message,
        current: &SymmetricKey,
        now: Timestamp,
    ) -> Result<Vec<RekeyOutput>, RekeyError> {
        let ex = self.locate(from, &confirm.rekey_id, now)?;
        if ex.received.as_ref() == Some(msg) {
            return Ok(Vec::new());
        }
        let Stage::AwaitingConfirm {
            transcript,
            new_key,
        } = &ex.stage
        else {
            return Err(RekeyError::UnexpectedMessage {
                kind: RekeyMessageKind::Confirm,
                stage: ex.stage.public(),
            });
        };
        if !verify_rekey_mac(current, Role::Initiator, transcript, &confirm.mac) {
            return Err(RekeyError::BadMac);
        }
        let key = new_key.clone();
        self.exchanges.remove(&from);
        Ok(vec![RekeyOutput::NewKey {
            peer: from,
            rekey_id: confirm.rekey_id,
            key,
        }])
    }

    fn fail(&mut self, peer: DeviceId, failure: RekeyFailure) -> Vec<RekeyOutput> {
        match self.exchanges.remove(&peer) {
            Some(ex) => vec![RekeyOutput::Failed {
                peer,
                rekey_id: ex.rekey_id,
                failure,
            }],
            None => Vec::new(),
        }
    }
}
