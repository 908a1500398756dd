//! Direct pairing: 6-digit numeric comparison with a commitment (REFERENCES.md §1).
//!
//! A man in the middle runs two pairings at once and wants both screens to show the same
//! code. If the code depended only on values it chooses, it could grind keys offline until
//! the codes match. The commitment stops that: the initiator fixes its ephemeral key and
//! nonce (`PairingRequest.commitment`) before it sees the responder's, and the responder
//! sends its own in the clear before it sees the initiator's. Neither side can steer the
//! code, so a man in the middle gets one blind 10⁻⁶ guess per attempt.
//!
//! ```text
//!   initiator (I)                                        responder (R)
//!   start()            ── PairingRequest{tx, method, C, name} ──▶   AwaitingReveal
//!   AwaitingPeerKey    ◀── PairingKey{tx, eph_R, N_R, name} ──
//!   derive K, code     ── PairingReveal{tx, eph_I, N_I} ──▶          check C, derive K, code
//!   AwaitingUser                                                     AwaitingUser
//!   user_confirm()     ── PairingConfirm{tx, MAC_I} ──▶  ◀── PairingConfirm{tx, MAC_R} ──  user_confirm()
//!   Paired once: own user confirmed AND the peer's MAC verified (whichever comes second)
//! ```
//!
//! [`PairingManager`] is a sans-IO machine in the quinn-proto style: the driver feeds it
//! messages (with the [`DeviceId`] the *connection* authenticated), user decisions and
//! timeouts, and applies the [`PairingOutput`]s it returns, in order. It owns no storage:
//! **the node refuses to start, or to hand a `PairingRequest` to this machine for, a peer that
//! is already paired or blocked** (it answers such a request itself with
//! `PairingCancel{Aborted}`); use [`PairingManager::abort`] if that changes mid-pairing.
//!
//! ## Rules
//! - **One transaction per peer.** A second `PairingRequest` from a peer with a live
//!   transaction is answered with `PairingCancel{AlreadyInProgress}` for the *new* tx; the
//!   live one is untouched. A byte-identical copy of a message already handled (a
//!   retransmission) is ignored: `Ok` with no outputs.
//! - **Simultaneous start.** If both sides sent a `PairingRequest` to each other (ours is
//!   still waiting for `PairingKey`), the side whose PeerId *bytes* compare lower stays the
//!   initiator and refuses the other request with `AlreadyInProgress`; the higher side drops
//!   its own outbound transaction (emitting [`PairingOutput::Changed`] for the replacement)
//!   and answers the inbound request. Both sides therefore converge on the lower side's
//!   transaction, whatever order the two requests arrive in.
//! - **Cap.** At most `ProtocolConfig::max_pending_prompts` transactions are live at once.
//!   Every live transaction counts, not only those already showing a code: each reaches a
//!   prompt one round trip later, and counting only prompting ones would let a flood park
//!   unbounded state in `AwaitingReveal`. Over the cap an inbound request gets
//!   `PairingCancel{RateLimited}` and [`PairingManager::start`] fails with
//!   [`PairingError::TooManyPending`].
//! - **Garbage changes nothing.** An unknown tx id, a tx id that belongs to another peer, or a
//!   message the current stage does not expect is a typed [`PairingError`] and changes no
//!   state: a stranger cannot cancel an honest pairing. Only the authenticated peer of a
//!   transaction can end it, by `PairingCancel` or by a message that fails a check (commitment,
//!   key exchange, confirmation MAC).
//! - **Time.** A transaction lives `ProtocolConfig::pairing_timeout` from its creation. It is
//!   expired from its deadline on (`now >= deadline`): every input for it is refused with
//!   [`PairingError::Expired`] until the driver calls [`PairingManager::handle_timeout`]
//!   (at [`PairingManager::poll_timeout`]), which sends `PairingCancel{Timeout}` and reports
//!   [`PairingFailure::Timeout`]. Refusing rather than reaping inside other calls keeps the
//!   rule "an `Err` changes no state".
//! - **Ordering.** Messages must arrive in protocol order; the node sends the next message of
//!   a transaction only after the previous one was acknowledged. A `PairingConfirm` that
//!   overtakes the `PairingReveal` is refused (`UnexpectedMessage`), not buffered.
//!
//! ## Outputs
//! Every state change of a live transaction emits [`PairingOutput::Changed`] with the new
//! [`PairingView`]; the end of a transaction emits exactly one [`PairingOutput::Paired`] or
//! [`PairingOutput::Failed`] instead (after it the view is gone). Messages to send come first
//! in each batch, so a driver that applies outputs in order never tells the user "paired"
//! before the last confirmation is on its way.

use crate::config::ProtocolConfig;
use crate::identity::{DeviceId, DevicePublicKey, KeyError};
use crate::ids::TxId;
use crate::keys::{pairing_commitment, Ephemeral, PairingKeys, PairingTranscript, Role};
use crate::messages::{
    CancelReason, DisplayName, Message, PairingCancel, PairingConfirm, PairingKey, PairingRequest,
    PairingReveal, PAIRING_METHOD,
};
use crate::secret::SymmetricKey;
use crate::time::Timestamp;
use core::fmt;
use rand_core::CryptoRngCore;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Number of digits of the comparison code.
pub const CODE_DIGITS: usize = 6;

/// Which side of the pairing this device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This device sent the `PairingRequest` (initiator).
    Outbound,
    /// The peer sent the `PairingRequest` (this device is the responder).
    Inbound,
}

impl Direction {
    /// This device's role in the key schedule.
    pub fn our_role(self) -> Role {
        match self {
            Direction::Outbound => Role::Initiator,
            Direction::Inbound => Role::Responder,
        }
    }

    /// The peer's role in the key schedule.
    pub fn peer_role(self) -> Role {
        match self {
            Direction::Outbound => Role::Responder,
            Direction::Inbound => Role::Initiator,
        }
    }
}

/// Where a live transaction stands, as shown to a UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairingStage {
    /// Initiator: `PairingRequest` sent, waiting for the peer's `PairingKey`.
    AwaitingPeerKey,
    /// Responder: `PairingKey` sent, waiting for the initiator's `PairingReveal`.
    AwaitingReveal,
    /// The code is shown; this device's user has not decided yet.
    AwaitingUser {
        /// The peer's confirmation MAC already arrived and verified.
        peer_confirmed: bool,
    },
    /// This device's user confirmed; waiting for the peer's `PairingConfirm`.
    AwaitingPeerConfirmation,
}

/// The pairing message kinds, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairingMessageKind {
    /// `PairingRequest`.
    Request,
    /// `PairingKey`.
    Key,
    /// `PairingReveal`.
    Reveal,
    /// `PairingConfirm`.
    Confirm,
    /// `PairingCancel`.
    Cancel,
}

/// A live transaction as the CLI's `pair requests` and the UI show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingView {
    /// The peer, as authenticated by the connection.
    pub peer: DeviceId,
    /// The transaction.
    pub tx_id: TxId,
    /// The peer's display name, once it sent one.
    pub peer_name: Option<DisplayName>,
    /// Who started it.
    pub direction: Direction,
    /// Where it stands.
    pub stage: PairingStage,
    /// The 6-digit code, once derived.
    pub code: Option<String>,
    /// When it times out.
    pub deadline: Timestamp,
}

/// "Compare this code with the other screen": the prompt for this device's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmationPrompt {
    /// The peer.
    pub peer: DeviceId,
    /// The transaction.
    pub tx_id: TxId,
    /// The peer's display name.
    pub peer_name: DisplayName,
    /// Who started it.
    pub direction: Direction,
    /// The code, six digits with leading zeros.
    pub code: String,
    /// The user must answer before this.
    pub deadline: Timestamp,
}

/// A finished pairing: everything the node stores (and audits) for the new device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingCompleted {
    /// The new device.
    pub peer: DeviceId,
    /// The transaction.
    pub tx_id: TxId,
    /// Its key, taken from its (connection-authenticated) device id.
    pub peer_public_key: DevicePublicKey,
    /// Its display name.
    pub peer_name: DisplayName,
    /// The long-term key of the pair (redacted in `Debug`).
    pub pairing_key: SymmetricKey,
    /// The confirmation MAC this device sent, for the audit trail.
    pub our_mac: [u8; 32],
    /// The confirmation MAC the peer sent, for the audit trail.
    pub their_mac: [u8; 32],
    /// Who started it.
    pub direction: Direction,
}

/// Why a transaction ended without a pairing, as this device saw it.
///
/// Distinct from [`CancelReason`] (what goes on the wire): a wrong typed code is reported
/// locally as [`PairingFailure::CodeMismatch`] but told to the peer as `UserRejected`, and a
/// lost connection sends nothing. [`PairingFailure::sent_reason`] gives the wire reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PairingFailure {
    /// This device's user said the codes differ, or declined.
    UserRejected,
    /// This device's user typed a code that is not the one derived here.
    CodeMismatch,
    /// The initiator's reveal did not open its commitment.
    CommitmentMismatch,
    /// The peer's confirmation MAC did not verify: a man in the middle, or a bug.
    KeyConfirmationFailed,
    /// The peer's ephemeral key gave a non-contributory (all-zero) X25519 result.
    InvalidKeyExchange,
    /// The transaction reached its deadline.
    Timeout,
    /// The connection to the peer went away mid-pairing.
    ConnectionLost,
    /// The node aborted it (e.g. the peer got paired or blocked meanwhile).
    Aborted,
    /// The peer cancelled, for this reason.
    CancelledByPeer(CancelReason),
}

impl PairingFailure {
    /// The reason sent to the peer in `PairingCancel`, if anything is sent.
    pub fn sent_reason(self) -> Option<CancelReason> {
        match self {
            PairingFailure::UserRejected | PairingFailure::CodeMismatch => {
                Some(CancelReason::UserRejected)
            }
            PairingFailure::CommitmentMismatch => Some(CancelReason::CommitmentMismatch),
            PairingFailure::KeyConfirmationFailed => Some(CancelReason::KeyConfirmationFailed),
            PairingFailure::InvalidKeyExchange => Some(CancelReason::InvalidKeyExchange),
            PairingFailure::Timeout => Some(CancelReason::Timeout),
            PairingFailure::Aborted => Some(CancelReason::Aborted),
            PairingFailure::ConnectionLost | PairingFailure::CancelledByPeer(_) => None,
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingOutput {
    /// Send `msg` to `to`.
    Send {
        /// The peer.
        to: DeviceId,
        /// The message.
        msg: Message,
    },
    /// Show the code and ask the user to compare it.
    ConfirmationRequired(ConfirmationPrompt),
    /// Store the pairing: both users confirmed and both MACs verified.
    Paired(Box<PairingCompleted>),
    /// The transaction ended without a pairing.
    Failed {
        /// The peer.
        peer: DeviceId,
        /// The transaction.
        tx_id: TxId,
        /// Why.
        failure: PairingFailure,
    },
    /// A live transaction changed (or was created); the UI refreshes it.
    Changed(PairingView),
}

/// Why an input was refused. No variant changes any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The message is not one of the pairing messages.
    #[error("not a pairing message")]
    NotAPairingMessage,
    /// A device cannot pair with itself.
    #[error("cannot pair with this device itself")]
    SelfPairing,
    /// The peer's device id does not yield a usable public key.
    #[error("peer device id is unusable: {0}")]
    InvalidPeerKey(#[from] KeyError),
    /// `start` for a peer that already has a live transaction.
    #[error("a pairing with {peer} is already in progress ({tx_id})")]
    AlreadyInProgress {
        /// The peer.
        peer: DeviceId,
        /// The live transaction.
        tx_id: TxId,
    },
    /// `start` while the cap on live transactions is reached.
    #[error("too many pairings in progress (max {max})")]
    TooManyPending {
        /// `ProtocolConfig::max_pending_prompts`.
        max: usize,
    },
    /// A user decision for a peer with no live transaction.
    #[error("no pairing in progress with {peer}")]
    NoTransaction {
        /// The peer.
        peer: DeviceId,
    },
    /// A message for a transaction id nobody here knows.
    #[error("unknown pairing transaction {tx_id}")]
    UnknownTransaction {
        /// The id in the message.
        tx_id: TxId,
    },
    /// A message for a transaction that belongs to another peer.
    #[error("pairing transaction {tx_id} belongs to another peer")]
    WrongPeer {
        /// The id in the message.
        tx_id: TxId,
    },
    /// A message the transaction's stage does not expect (out of order, or wrong direction).
    #[error("unexpected {kind:?} while {stage:?}")]
    UnexpectedMessage {
        /// What arrived.
        kind: PairingMessageKind,
        /// Where the transaction stands.
        stage: PairingStage,
    },
    /// A user decision that the stage does not allow (no code yet, or already confirmed).
    #[error("pairing is not waiting for the user ({stage:?})")]
    NotAwaitingUser {
        /// Where the transaction stands.
        stage: PairingStage,
    },
    /// A typed code that is not exactly six ASCII digits; the user may retype it.
    #[error("a code is exactly {CODE_DIGITS} digits")]
    MalformedCode,
    /// The transaction reached its deadline; `handle_timeout` will end it.
    #[error("pairing transaction {tx_id} expired at {deadline:?}")]
    Expired {
        /// The transaction.
        tx_id: TxId,
        /// Its deadline.
        deadline: Timestamp,
    },
}

/// Per-stage secrets and state of one transaction.
enum Stage {
    /// Initiator, request sent. The ephemeral key and nonce stay secret until the reveal.
    AwaitingKey {
        ephemeral: Ephemeral,
        nonce: [u8; 32],
    },
    /// Responder, key sent.
    AwaitingReveal {
        commitment: [u8; 32],
        ephemeral: Ephemeral,
        nonce: [u8; 32],
    },
    /// Both keys known; the code is shown.
    Comparing(Box<Comparing>),
}

struct Comparing {
    keys: PairingKeys,
    code: String,
    own_confirmed: bool,
    /// The peer's MAC, kept only once it verified.
    peer_mac: Option<[u8; 32]>,
}

impl Stage {
    fn public(&self) -> PairingStage {
        match self {
            Stage::AwaitingKey { .. } => PairingStage::AwaitingPeerKey,
            Stage::AwaitingReveal { .. } => PairingStage::AwaitingReveal,
            Stage::Comparing(c) if c.own_confirmed => PairingStage::AwaitingPeerConfirmation,
            Stage::Comparing(c) => PairingStage::AwaitingUser {
                peer_confirmed: c.peer_mac.is_some(),
            },
        }
    }
}

struct Transaction {
    tx_id: TxId,
    direction: Direction,
    peer_key: DevicePublicKey,
    peer_name: Option<DisplayName>,
    deadline: Timestamp,
    /// Inbound messages already handled, so a retransmission is recognised and ignored.
    received: Vec<Message>,
    stage: Stage,
}

impl Transaction {
    fn view(&self, peer: DeviceId) -> PairingView {
        PairingView {
            peer,
            tx_id: self.tx_id,
            peer_name: self.peer_name.clone(),
            direction: self.direction,
            stage: self.stage.public(),
            code: match &self.stage {
                Stage::Comparing(c) => Some(c.code.clone()),
                _ => None,
            },
            deadline: self.deadline,
        }
    }

    fn expired(&self, now: Timestamp) -> Result<(), PairingError> {
        if now >= self.deadline {
            return Err(PairingError::Expired {
                tx_id: self.tx_id,
                deadline: self.deadline,
            });
        }
        Ok(())
    }
}

/// Deliberately hand-written: the stage holds the ephemeral secret, the still-secret
/// commitment opening and the derived keys, none of which may reach a log.
impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("tx_id", &self.tx_id)
            .field("direction", &self.direction)
            .field("peer_name", &self.peer_name)
            .field("stage", &self.stage.public())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// All direct pairings of one device. See the module docs for the rules.
pub struct PairingManager {
    me: DeviceId,
    my_name: DisplayName,
    config: ProtocolConfig,
    txs: BTreeMap<DeviceId, Transaction>,
}

impl fmt::Debug for PairingManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingManager")
            .field("me", &self.me)
            .field("my_name", &self.my_name)
            .field("transactions", &self.txs)
            .finish_non_exhaustive()
    }
}

fn random_nonce(rng: &mut impl CryptoRngCore) -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    nonce
}

fn is_well_formed_code(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

impl PairingManager {
    /// A manager for device `me`, which introduces itself to peers as `my_name`.
    pub fn new(me: DeviceId, my_name: DisplayName, config: ProtocolConfig) -> Self {
        PairingManager {
            me,
            my_name,
            config,
            txs: BTreeMap::new(),
        }
    }

    /// This device.
    pub fn me(&self) -> DeviceId {
        self.me
    }

    /// Starts pairing with `peer` (this device is the initiator): sends the commitment.
    pub fn start(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        if peer == self.me {
            return Err(PairingError::SelfPairing);
        }
        let peer_key = peer.public_key()?;
        if let Some(tx) = self.txs.get(&peer) {
            tx.expired(now)?;
            return Err(PairingError::AlreadyInProgress {
                peer,
                tx_id: tx.tx_id,
            });
        }
        if self.txs.len() >= self.config.max_pending_prompts {
            return Err(PairingError::TooManyPending {
                max: self.config.max_pending_prompts,
            });
        }
        let tx_id = self.fresh_tx_id(rng);
        let ephemeral = Ephemeral::generate(rng);
        let nonce = random_nonce(rng);
        let commitment = pairing_commitment(
            PAIRING_METHOD,
            &tx_id,
            &self.me,
            &peer,
            &ephemeral.public(),
            &nonce,
        );
        let tx = Transaction {
            tx_id,
            direction: Direction::Outbound,
            peer_key,
            peer_name: None,
            deadline: now.saturating_add(self.config.pairing_timeout),
            received: Vec::new(),
            stage: Stage::AwaitingKey { ephemeral, nonce },
        };
        let request = Message::PairingRequest(PairingRequest {
            tx_id,
            method: PAIRING_METHOD.to_owned(),
            commitment,
            name: self.my_name.clone(),
        });
        let view = tx.view(peer);
        self.txs.insert(peer, tx);
        Ok(vec![
            PairingOutput::Send {
                to: peer,
                msg: request,
            },
            PairingOutput::Changed(view),
        ])
    }

    /// Handles a pairing message from `from`, the device id the connection authenticated.
    pub fn handle_message(
        &mut self,
        from: DeviceId,
        msg: &Message,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        match msg {
            Message::PairingRequest(req) => self.on_request(from, req, msg, now, rng),
            Message::PairingKey(key) => self.on_key(from, key, msg, now),
            Message::PairingReveal(reveal) => self.on_reveal(from, reveal, msg, now),
            Message::PairingConfirm(confirm) => self.on_confirm(from, confirm, msg, now),
            Message::PairingCancel(cancel) => self.on_cancel(from, cancel, now),
            _ => Err(PairingError::NotAPairingMessage),
        }
    }

    /// This device's user says the codes match.
    pub fn user_confirm(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        let tx = self.awaiting_user(peer, now)?;
        let Stage::Comparing(c) = &mut tx.stage else {
            unreachable!("awaiting_user only returns comparing transactions");
        };
        c.own_confirmed = true;
        let our_mac = c.keys.confirm_mac(tx.direction.our_role());
        let confirm = Message::PairingConfirm(PairingConfirm {
            tx_id: tx.tx_id,
            mac: our_mac,
        });
        let mut out = vec![PairingOutput::Send {
            to: peer,
            msg: confirm,
        }];
        if c.peer_mac.is_some() {
            out.push(self.complete(peer));
        } else {
            out.push(PairingOutput::Changed(tx.view(peer)));
        }
        Ok(out)
    }

    /// This device's user typed the code read from the other screen. The right code confirms;
    /// a different well-formed code rejects the pairing ([`PairingFailure::CodeMismatch`]
    /// locally, `UserRejected` to the peer); a malformed one changes nothing.
    pub fn user_confirm_code(
        &mut self,
        peer: DeviceId,
        code: &str,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        if !is_well_formed_code(code) {
            return Err(PairingError::MalformedCode);
        }
        let tx = self.awaiting_user(peer, now)?;
        let Stage::Comparing(c) = &tx.stage else {
            unreachable!("awaiting_user only returns comparing transactions");
        };
        if c.code == code {
            self.user_confirm(peer, now)
        } else {
            Ok(self.fail(peer, PairingFailure::CodeMismatch))
        }
    }

    /// This device's user declines (codes differ, or a change of mind) at any stage.
    pub fn user_reject(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        self.live(peer, now)?;
        Ok(self.fail(peer, PairingFailure::UserRejected))
    }

    /// The node ends a pairing that must not finish, e.g. because the peer got paired by a
    /// vouch or was blocked meanwhile. Sends `PairingCancel{Aborted}`.
    pub fn abort(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        self.live(peer, now)?;
        Ok(self.fail(peer, PairingFailure::Aborted))
    }

    /// The last connection to `peer` closed: its transaction ends without a pairing. Nothing
    /// is sent (there is no connection to send on).
    pub fn connection_lost(&mut self, peer: DeviceId) -> Vec<PairingOutput> {
        if self.txs.contains_key(&peer) {
            self.fail(peer, PairingFailure::ConnectionLost)
        } else {
            Vec::new()
        }
    }

    /// Ends every transaction whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<PairingOutput> {
        let due: Vec<DeviceId> = self
            .txs
            .iter()
            .filter(|(_, tx)| tx.deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        due.into_iter()
            .flat_map(|peer| self.fail(peer, PairingFailure::Timeout))
            .collect()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.txs.values().map(|tx| tx.deadline).min()
    }

    /// Every live transaction, ordered by peer.
    pub fn pending(&self) -> Vec<PairingView> {
        self.txs.iter().map(|(peer, tx)| tx.view(*peer)).collect()
    }

    /// The live transaction with `peer`, if any.
    pub fn view(&self, peer: &DeviceId) -> Option<PairingView> {
        self.txs.get(peer).map(|tx| tx.view(*peer))
    }

    fn fresh_tx_id(&self, rng: &mut impl CryptoRngCore) -> TxId {
        loop {
            let id = TxId::random(rng);
            if !self.tx_id_in_use(&id) {
                return id;
            }
        }
    }

    fn tx_id_in_use(&self, tx_id: &TxId) -> bool {
        self.txs.values().any(|tx| tx.tx_id == *tx_id)
    }

    /// The live, unexpired transaction with `peer`.
    fn live(&mut self, peer: DeviceId, now: Timestamp) -> Result<&mut Transaction, PairingError> {
        let tx = self
            .txs
            .get_mut(&peer)
            .ok_or(PairingError::NoTransaction { peer })?;
        tx.expired(now)?;
        Ok(tx)
    }

    /// The live transaction with `peer` if its code is shown and its user has not decided.
    fn awaiting_user(
        &mut self,
        peer: DeviceId,
        now: Timestamp,
    ) -> Result<&mut Transaction, PairingError> {
        let tx = self.live(peer, now)?;
        match &tx.stage {
            Stage::Comparing(c) if !c.own_confirmed => Ok(tx),
            other => Err(PairingError::NotAwaitingUser {
                stage: other.public(),
            }),
        }
    }

    /// The live transaction `tx_id` of `from`, or why a message for it is refused.
    fn locate(
        &mut self,
        from: DeviceId,
        tx_id: &TxId,
        now: Timestamp,
    ) -> Result<&mut Transaction, PairingError> {
        let ours = matches!(self.txs.get(&from), Some(tx) if tx.tx_id == *tx_id);
        if !ours {
            return Err(if self.tx_id_in_use(tx_id) {
                PairingError::WrongPeer { tx_id: *tx_id }
            } else {
                PairingError::UnknownTransaction { tx_id: *tx_id }
            });
        }
        let tx = self.txs.get_mut(&from).expect("presence checked above");
        tx.expired(now)?;
        Ok(tx)
    }

    fn on_request(
        &mut self,
        from: DeviceId,
        req: &PairingRequest,
        msg: &Message,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        if from == self.me {
            return Err(PairingError::SelfPairing);
        }
        let peer_key = from.public_key()?;
        let refuse = |reason| {
            Ok(vec![PairingOutput::Send {
                to: from,
                msg: Message::PairingCancel(PairingCancel {
                    tx_id: req.tx_id,
                    reason,
                }),
            }])
        };
        let mut replaces_own_request = false;
        if let Some(existing) = self.txs.get(&from) {
            existing.expired(now)?;
            if existing.tx_id == req.tx_id {
                if existing.received.contains(msg) {
                    return Ok(Vec::new());
                }
                return Err(PairingError::UnexpectedMessage {
                    kind: PairingMessageKind::Request,
                    stage: existing.stage.public(),
                });
            }
        }
        if self
            .txs
            .iter()
            .any(|(peer, tx)| *peer != from && tx.tx_id == req.tx_id)
        {
            return Err(PairingError::WrongPeer { tx_id: req.tx_id });
        }
        if req.method != PAIRING_METHOD {
            return refuse(CancelReason::UnsupportedMethod);
        }
        if let Some(existing) = self.txs.get(&from) {
            let simultaneous = matches!(existing.stage, Stage::AwaitingKey { .. });
            // Tie-break: the lower PeerId (as bytes) stays the initiator.
            if simultaneous && self.me.to_bytes() > from.to_bytes() {
                replaces_own_request = true;
            } else {
                return refuse(CancelReason::AlreadyInProgress);
            }
        }
        if !replaces_own_request && self.txs.len() >= self.config.max_pending_prompts {
            return refuse(CancelReason::RateLimited);
        }

        let ephemeral = Ephemeral::generate(rng);
        let nonce = random_nonce(rng);
        let reply = Message::PairingKey(PairingKey {
            tx_id: req.tx_id,
            ephemeral: ephemeral.public(),
            nonce,
            name: self.my_name.clone(),
        });
        let tx = Transaction {
            tx_id: req.tx_id,
            direction: Direction::Inbound,
            peer_key,
            peer_name: Some(req.name.clone()),
            deadline: now.saturating_add(self.config.pairing_timeout),
            received: vec![msg.clone()],
            stage: Stage::AwaitingReveal {
                commitment: req.commitment,
                ephemeral,
                nonce,
            },
        };
        let view = tx.view(from);
        // Replaces our own outbound transaction, if the tie-break said so.
        self.txs.insert(from, tx);
        Ok(vec![
            PairingOutput::Send {
                to: from,
                msg: reply,
            },
            PairingOutput::Changed(view),
        ])
    }

    fn on_key(
        &mut self,
        from: DeviceId,
        key: &PairingKey,
        msg: &Message,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        let me = self.me;
        let tx = self.locate(from, &key.tx_id, now)?;
        if tx.received.contains(msg) {
            return Ok(Vec::new());
        }
        let Stage::AwaitingKey { ephemeral, nonce } = &tx.stage else {
            return Err(PairingError::UnexpectedMessage {
                kind: PairingMessageKind::Key,
                stage: tx.stage.public(),
            });
        };
        let Ok(shared) = ephemeral.agree(&key.ephemeral) else {
            return Ok(self.fail(from, PairingFailure::InvalidKeyExchange));
        };
        let (our_public, our_nonce) = (ephemeral.public(), *nonce);
        let keys = PairingKeys::derive(
            &shared,
            &PairingTranscript {
                method: PAIRING_METHOD,
                tx_id: &tx.tx_id,
                initiator: &me,
                responder: &from,
                initiator_ephemeral: &our_public,
                responder_ephemeral: &key.ephemeral,
                initiator_nonce: &our_nonce,
                responder_nonce: &key.nonce,
            },
        );
        tx.peer_name = Some(key.name.clone());
        tx.received.push(msg.clone());
        let reveal = Message::PairingReveal(PairingReveal {
            tx_id: tx.tx_id,
            ephemeral: our_public,
            nonce: our_nonce,
        });
        let mut out = vec![PairingOutput::Send {
            to: from,
            msg: reveal,
        }];
        out.extend(Self::enter_comparing(tx, from, keys));
        Ok(out)
    }

    fn on_reveal(
        &mut self,
        from: DeviceId,
        reveal: &PairingReveal,
        msg: &Message,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        let me = self.me;
        let tx = self.locate(from, &reveal.tx_id, now)?;
        if tx.received.contains(msg) {
            return Ok(Vec::new());
        }
        let Stage::AwaitingReveal {
            commitment,
            ephemeral,
            nonce,
        } = &tx.stage
        else {
            return Err(PairingError::UnexpectedMessage {
                kind: PairingMessageKind::Reveal,
                stage: tx.stage.public(),
            });
        };
        let opened = pairing_commitment(
            PAIRING_METHOD,
            &tx.tx_id,
            &from,
            &me,
            &reveal.ephemeral,
            &reveal.nonce,
        );
        if !bool::from(opened.ct_eq(commitment)) {
            return Ok(self.fail(from, PairingFailure::CommitmentMismatch));
        }
        let Ok(shared) = ephemeral.agree(&reveal.ephemeral) else {
            return Ok(self.fail(from, PairingFailure::InvalidKeyExchange));
        };
        let keys = PairingKeys::derive(
            &shared,
            &PairingTranscript {
                method: PAIRING_METHOD,
                tx_id: &tx.tx_id,
                initiator: &from,
                responder: &me,
                initiator_ephemeral: &reveal.ephemeral,
                responder_ephemeral: &ephemeral.public(),
                initiator_nonce: &reveal.nonce,
                responder_nonce: nonce,
            },
        );
        tx.received.push(msg.clone());
        Ok(Self::enter_comparing(tx, from, keys))
    }

    fn enter_comparing(
        tx: &mut Transaction,
        peer: DeviceId,
        keys: PairingKeys,
    ) -> Vec<PairingOutput> {
        let code = keys.sas_string();
        tx.stage = Stage::Comparing(Box::new(Comparing {
            keys,
            code: code.clone(),
            own_confirmed: false,
            peer_mac: None,
        }));
        let prompt = ConfirmationPrompt {
            peer,
            tx_id: tx.tx_id,
            peer_name: tx
                .peer_name
                .clone()
                .expect("the peer's name arrives before the keys can be derived"),
            direction: tx.direction,
            code,
            deadline: tx.deadline,
        };
        vec![
            PairingOutput::ConfirmationRequired(prompt),
            PairingOutput::Changed(tx.view(peer)),
        ]
    }

    fn on_confirm(
        &mut self,
        from: DeviceId,
        confirm: &PairingConfirm,
        msg: &Message,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        let tx = self.locate(from, &confirm.tx_id, now)?;
        if tx.received.contains(msg) {
            return Ok(Vec::new());
        }
        let peer_role = tx.direction.peer_role();
        let stage = tx.stage.public();
        let Stage::Comparing(c) = &mut tx.stage else {
            return Err(PairingError::UnexpectedMessage {
                kind: PairingMessageKind::Confirm,
                stage,
            });
        };
        if c.peer_mac.is_some() {
            return Err(PairingError::UnexpectedMessage {
                kind: PairingMessageKind::Confirm,
                stage,
            });
        }
        if !c.keys.verify_confirm_mac(peer_role, &confirm.mac) {
            return Ok(self.fail(from, PairingFailure::KeyConfirmationFailed));
        }
        c.peer_mac = Some(confirm.mac);
        let own_confirmed = c.own_confirmed;
        tx.received.push(msg.clone());
        if own_confirmed {
            Ok(vec![self.complete(from)])
        } else {
            Ok(vec![PairingOutput::Changed(tx.view(from))])
        }
    }

    fn on_cancel(
        &mut self,
        from: DeviceId,
        cancel: &PairingCancel,
        now: Timestamp,
    ) -> Result<Vec<PairingOutput>, PairingError> {
        self.locate(from, &cancel.tx_id, now)?;
        Ok(self.fail(from, PairingFailure::CancelledByPeer(cancel.reason)))
    }

    /// Ends `peer`'s transaction without a pairing: cancel to the peer (if the failure sends
    /// one), then the local failure.
    fn fail(&mut self, peer: DeviceId, failure: PairingFailure) -> Vec<PairingOutput> {
        let Some(tx) = self.txs.remove(&peer) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        if let Some(reason) = failure.sent_reason() {
            out.push(PairingOutput::Send {
                to: peer,
                msg: Message::PairingCancel(PairingCancel {
                    tx_id: tx.tx_id,
                    reason,
                }),
            });
        }
        out.push(PairingOutput::Failed {
            peer,
            tx_id: tx.tx_id,
            failure,
        });
        out
    }

    /// Ends `peer`'s transaction with a pairing. Only called once the own user confirmed
    /// and the peer's MAC verified.
    fn complete(&mut self, peer: DeviceId) -> PairingOutput {
        let tx = self
            .txs
            .remove(&peer)
            .expect("complete is called on a live transaction");
        let Stage::Comparing(c) = tx.stage else {
            unreachable!("complete is called on a comparing transaction");
        };
        let their_mac = c
            .peer_mac
            .expect("complete requires the peer's verified MAC");
        PairingOutput::Paired(Box::new(PairingCompleted {
            peer,
            tx_id: tx.tx_id,
            peer_public_key: tx.peer_key,
            peer_name: tx
                .peer_name
                .expect("the peer's name arrives before the keys can be derived"),
            our_mac: c.keys.confirm_mac(tx.direction.our_role()),
            their_mac,
            pairing_key: c.keys.pairing_key.clone(),
            direction: tx.direction,
        }))
    }
}
