//! # vouchnet storage
//!
//! The durable state of one vouchnet node, in one sled database (`<data dir>/sync.db`),
//! behind a typed [`Store`]. No other crate sees sled: the public API speaks only in the
//! protocol's records ([`vouchnet_protocol::model`]) and the records defined here.
//!
//! ## What it keeps (one tree each, see `docs/storage.md` for key layouts)
//! - **devices**: every paired device with its key, name, pairing type, the user's trust
//!   level, when it was paired and last seen, who vouched for it and the proof, and the
//!   session key (redacted in `Debug`, zeroized on drop, file mode 0600);
//! - **reliability**: connection successes and failures, apart from trust;
//! - **tombstones**: devices the user removed, blocked or revoked, so a vouch cannot bring
//!   them back;
//! - **pairings** in flight, **vouching sessions** with per-target status, the
//!   **vouching queue** ordered by due time, the **replay cache** of vouch nonces, the
//!   targets' **decisions**, an **expiry** index for retention, and the hash-chained
//!   **audit** trail ([`audit`]).
//!
//! ## Guarantees
//! - **Atomic transitions.** Each operation that touches several trees is one
//!   transaction ([`Txn`]); several operations can share one ([`Store::write`]).
//! - **Durable before acknowledged.** Every write method returns only after the database
//!   was flushed to disk, so a caller may acknowledge to a peer or show "Queued" to the
//!   user as soon as it returns.
//! - **Fail closed.** A database that does not decode, lost its schema record, lost writes
//!   it had acknowledged (the generation watermark, see [`Store::open`]), or was written by
//!   a newer schema is refused with a typed [`StoreError`], never read as empty.
//! - **Injected time.** Nothing here reads a clock: every timestamp, including the `now`
//!   of [`Store::prune`] and [`Store::due`], is a parameter.

pub mod audit;
mod codec;
mod error;
mod fsperm;
mod layout;
mod records;
mod retention;
mod store;
mod txn;
mod watermark;

pub use audit::{
    AuditEntry, AuditError, AuditEvent, AuditHead, AuditReport, ConfirmedAction, EvidenceError,
    EvidenceKind, VoucherRemovalPolicy,
};
pub use codec::STORED_LIMITS;
pub use error::{RecordKind, StoreError, StoreFailure};
pub use fsperm::{DIR_MODE, FILE_MODE};
pub use layout::{
    QueueRef, META_AUDIT_HEAD, META_INBOX_BOUNDS, META_SCHEMA_VERSION, TREE_AUDIT, TREE_DECISIONS,
    TREE_DEVICES, TREE_EXPIRY, TREE_INBOX, TREE_META, TREE_PAIRINGS, TREE_PROMPTS, TREE_QUEUE,
    TREE_QUEUE_INDEX, TREE_RELIABILITY, TREE_REPLAY, TREE_SESSIONS, TREE_TOMBSTONES,
};
pub use records::{
    DecisionRecord, DeviceProof, DeviceRecord, InboxRecord, PairingRecord, PreviousKey,
    PromptNonce, PromptRecord, Reliability, RevokeReason, SecretBytes, Tombstone, TombstoneReason,
};
pub use retention::{PruneReport, RetentionPolicy};
pub use store::{Store, StoreMetrics, StoreOptions, DB_DIR_NAME, SCHEMA_VERSION};
pub use txn::{
    AcceptOutcome, AcceptVouch, DirectPairing, Enqueued, ProxiedDevice, ProxiedOutcome,
    RejectOutcome, RejectVouch, Retry, TxError, Txn,
};
