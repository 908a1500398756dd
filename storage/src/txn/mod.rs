//! One atomic change to the store: a typed view of a sled transaction over every tree.
//!
//! Every state change that touches more than one tree happens inside one [`Txn`], so a
//! crash leaves either all of it or none of it: accepting a vouch writes the device, the
//! replay nonce, the decision and the audit entry together; delivering a queued vouch
//! removes the queue entry and sets the target's status to Waiting together.
//! [`crate::Store::write`] runs a closure over a `Txn` and flushes before it returns, so
//! several operations can share one flush (group commit).
//!
//! The closure may run more than once if the engine detects a conflict, so it must not
//! have side effects outside the `Txn`.

use crate::audit::{self, AuditEntry, AuditEvent, AuditHead};
use crate::codec;
use crate::error::{RecordKind, StoreError};
use crate::layout::{self, ExpiryKind, QueueRef};
use crate::records::{
    DecisionRecord, DeviceProof, DeviceRecord, PairingRecord, PreviousKey, PromptRecord,
    Reliability, RevokeReason, Tombstone, TombstoneReason,
};
use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use vouchnet_protocol::identity::{DeviceId, DevicePublicKey, KeyError};
use vouchnet_protocol::ids::{SessionId, TxId, VouchNonce};
use vouchnet_protocol::messages::{
    AcceptedHow, Decision, DisplayName, SignedResponse, SignedVouch, VouchRejection,
};
use vouchnet_protocol::model::{
    PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchProof, VouchStatus,
    VouchingSession,
};
use vouchnet_protocol::queue::{DropReason, QueueOutcome};
use vouchnet_protocol::{QueuePolicy, SymmetricKey, Timestamp};

mod devices;
mod inbox;
mod queue;
mod retention;
mod sessions;
mod vouches;

pub use devices::DirectPairing;
pub(crate) use queue::Expiry;
pub use queue::{Enqueued, Retry};
pub use vouches::{
    AcceptOutcome, AcceptVouch, ProxiedDevice, ProxiedOutcome, RejectOutcome, RejectVouch,
};

/// The error type of a [`Txn`] operation and of a [`crate::Store::write`] closure.
///
/// It carries either a [`StoreError`] (which aborts the transaction and is returned by
/// `write`) or an engine signal that the transaction must be retried, which `write`
/// handles itself. Build one from a `StoreError` with `?` or `.into()`.
#[derive(Debug)]
pub struct TxError(TxErrorKind);

#[derive(Debug)]
enum TxErrorKind {
    Engine(UnabortableTransactionError),
    Store(StoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError(TxErrorKind::Store(e))
    }
}

impl TxError {
    /// The store error this aborts with, if it is one (engine retries are not).
    pub fn store_error(&self) -> Option<&StoreError> {
        match &self.0 {
            TxErrorKind::Store(e) => Some(e),
            TxErrorKind::Engine(_) => None,
        }
    }

    pub(crate) fn into_engine(self) -> ConflictableTransactionError<StoreError> {
        match self.0 {
            TxErrorKind::Store(e) => ConflictableTransactionError::Abort(e),
            TxErrorKind::Engine(e) => e.into(),
        }
    }
}

/// Maps an engine result into a [`TxError`] without exposing the engine type.
trait Engine<T> {
    fn eng(self) -> Result<T, TxError>;
}

impl<T> Engine<T> for Result<T, UnabortableTransactionError> {
    fn eng(self) -> Result<T, TxError> {
        self.map_err(|e| TxError(TxErrorKind::Engine(e)))
    }
}

/// A session as loaded in this transaction, written back once at the end.
#[derive(Debug)]
struct SessionSlot {
    stored_finished_at: Option<Timestamp>,
    value: Option<VouchingSession>,
    dirty: bool,
}

/// A typed view of one transaction over every tree. See the module docs.
pub struct Txn {
    trees: Vec<TransactionalTree>,
    sessions: RefCell<BTreeMap<SessionId, SessionSlot>>,
    /// Whether anything was written, so a transaction that only read (an idempotent
    /// repeat) does not advance the generation.
    wrote: std::cell::Cell<bool>,
}

impl core::fmt::Debug for Txn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Txn").finish_non_exhaustive()
    }
}

const META: usize = 0;
const DEVICES: usize = 1;
const TOMBSTONES: usize = 2;
const RELIABILITY: usize = 3;
const PAIRINGS: usize = 4;
const SESSIONS: usize = 5;
const QUEUE: usize = 6;
const QUEUE_INDEX: usize = 7;
const EXPIRY: usize = 8;
const REPLAY: usize = 9;
const DECISIONS: usize = 10;
const AUDIT: usize = 11;
const PROMPTS: usize = 12;
const INBOX: usize = 13;

/// Meta key of the generation counter (`u64` big-endian), bumped by every write
/// transaction (see [`crate::watermark`]).
pub(crate) const META_GENERATION: &[u8] = b"generation";

/// Meta key of the queue depth counter (`u64` big-endian), kept so `depth()` is O(1).
pub(crate) const META_QUEUE_DEPTH: &[u8] = b"queue_depth";

impl Txn {
    pub(crate) fn new(trees: Vec<TransactionalTree>) -> Self {
        debug_assert_eq!(trees.len(), layout::ALL_TREES.len());
        Txn {
            trees,
            sessions: RefCell::new(BTreeMap::new()),
            wrote: std::cell::Cell::new(false),
        }
    }

    fn t(&self, i: usize) -> &TransactionalTree {
        &self.trees[i]
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        tree: usize,
        what: &str,
        key: &[u8],
    ) -> Result<Option<T>, TxError> {
        match self.t(tree).get(key).eng()? {
            Some(v) => Ok(Some(codec::decode(what, &v)?)),
            None => Ok(None),
        }
    }

    fn put(&self, tree: usize, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        self.t(tree).insert(key, value).eng()?;
        self.wrote.set(true);
        Ok(())
    }

    fn del(&self, tree: usize, key: &[u8]) -> Result<bool, TxError> {
        let existed = self.t(tree).remove(key).eng()?.is_some();
        if existed {
            self.wrote.set(true);
        }
        Ok(existed)
    }

    /// Writes back every session changed in this transaction. Called by the store after the
    /// caller's closure, inside the same transaction.
    pub(crate) fn finish(&self) -> Result<(), TxError> {
        let mut slots = self.sessions.borrow_mut();
        for (id, slot) in slots.iter_mut().filter(|(_, s)| s.dirty) {
            let new_finished = slot.value.as_ref().and_then(|s| s.finished_at);
            match &slot.value {
                Some(s) => self.put(SESSIONS, &id.0, &codec::encode(s))?,
                None => {
                    self.del(SESSIONS, &id.0)?;
                }
            }
            let old_idx = slot
                .stored_finished_at
                .map(|t| layout::expiry_key(ExpiryKind::Session, t, &id.0));
            let new_idx = new_finished.map(|t| layout::expiry_key(ExpiryKind::Session, t, &id.0));
            if old_idx != new_idx {
                if let Some(k) = old_idx {
                    self.del(EXPIRY, &k)?;
                }
                if let Some(k) = &new_idx {
                    self.put(EXPIRY, k, &[])?;
                }
            }
            slot.stored_finished_at = new_finished;
            slot.dirty = false;
        }
        Ok(())
    }

    /// Increments the generation counter if the transaction wrote anything; returns the
    /// new generation.
    pub(crate) fn bump_generation(&self) -> Result<Option<u64>, TxError> {
        if !self.wrote.get() {
            return Ok(None);
        }
        let current = match self.t(META).get(META_GENERATION).eng()? {
            Some(v) => layout::be_u64(&v)
                .ok_or_else(|| StoreError::undecodable("generation", "not 8 bytes"))?,
            None => 0,
        };
        let next = current + 1;
        self.put(META, META_GENERATION, &next.to_be_bytes())?;
        Ok(Some(next))
    }

    // ---------------------------------------------------------------- audit

    /// The current head of the audit chain.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, TxError> {
        self.get_decoded(META, "audit head", layout::META_AUDIT_HEAD)
    }

    /// Appends an event to the audit trail. Its evidence is verified first: an event whose
    /// signatures do not verify is refused ([`StoreError::BadEvidence`]), so the chain never
    /// holds evidence that would fail [`crate::Store::verify_audit`].
    pub fn record_event(&self, at: Timestamp, event: AuditEvent) -> Result<AuditEntry, TxError> {
        audit::verify_evidence(&event).map_err(StoreError::BadEvidence)?;
        let head = self.audit_head()?;
        let (entry, bytes) = audit::next_entry(head, at, event);
        let hash = audit::entry_hash(&bytes);
        self.put(AUDIT, &entry.seq.to_be_bytes(), &bytes)?;
        let new_head = AuditHead {
            seq: entry.seq,
            hash,
        };
        self.put(META, layout::META_AUDIT_HEAD, &codec::encode(&new_head))?;
        Ok(entry)
    }
}
