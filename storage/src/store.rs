//! The [`Store`]: opening the database, typed reads, and writes that are flushed before
//! they return.

use crate::audit::{self, AuditEntry, AuditError, AuditEvent, AuditHead, AuditReport};
use crate::codec;
use crate::error::{StoreError, StoreFailure};
use crate::fsperm;
use crate::layout::{self, ExpiryKind, QueueRef};
use crate::records::{
    DecisionRecord, DeviceRecord, InboxRecord, PairingRecord, PromptRecord, Reliability,
    RevokeReason, Tombstone,
};
use crate::retention::{PruneReport, RetentionPolicy};
use crate::txn::{
    AcceptOutcome, AcceptVouch, DirectPairing, Enqueued, Expiry, ProxiedDevice, ProxiedOutcome,
    RejectOutcome, RejectVouch, Retry, TxError, Txn, META_QUEUE_DEPTH,
};
use crate::watermark::{self, Watermark};
use sled::transaction::{TransactionError, Transactional};
use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::ids::{SessionId, VouchNonce};
use vouchnet_protocol::model::{QueueEntry, TrustLevel, VouchStatus, VouchingSession};
use vouchnet_protocol::{QueuePolicy, SymmetricKey, Timestamp};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The database directory inside a node's data directory.
pub const DB_DIR_NAME: &str = "sync.db";
/// Present only while a new database is being created (see [`Store::open`]).
const CREATING_MARKER: &str = "sync.db.creating";

/// Tuning for [`Store::open_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// The engine's page cache, in bytes.
    pub cache_capacity: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: 64 * 1024 * 1024,
        }
    }
}

/// Counters for tests and benchmarks that check how much work an operation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Queue entries read (decoded) by [`Store::due`] since the store was opened.
    pub queue_entries_read: u64,
    /// Flushes to disk since the store was opened.
    pub flushes: u64,
    /// Write transactions ([`Store::write`]) since the store was opened.
    pub writes: u64,
    /// Time spent in them, transaction and flush, in nanoseconds: what durability costs a
    /// caller, for benchmarks that set it beside the rest of a flow.
    pub write_nanos: u64,
}

/// The durable state of one node. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The engine's log file (`sync.db/db`), opened again to `fdatasync` it after each
    /// flush (see [`Store::flush`]).
    log: std::fs::File,
    path: PathBuf,
    queue_entries_read: AtomicU64,
    flushes: AtomicU64,
    writes: AtomicU64,
    write_nanos: AtomicU64,
    dir_stamps: Mutex<Vec<Option<SystemTime>>>,
    watermark: Mutex<Option<Watermark>>,
    /// Set, once and for good, when a write could not be made durable (see
    /// [`StoreError::Failed`]).
    failure: OnceLock<StoreFailure>,
    _claim: Claim,
}

/// Removes the snapshot files the engine began and never finished.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, syncs it, and only then renames
/// it to `snap.<lsn>`. But when it opens a database it also reads `.generating` files, so one
/// cut short by a crash (power loss, SIGKILL) fails its checksum, is reported as corruption,
/// and the database never opens again (sled issue 1527; the crash test hit it). Such a file
/// is unfinished by construction, and whatever it would have replaced is still there: old
/// snapshots are removed only after the rename. Removing it leaves the state of a crash just
/// before the snapshot was begun, which the engine recovers from by replaying its log.
///
/// Done under the database's lock (the one the engine takes), so the files of a database
/// someone has open are left alone: fails as `Locked`, having done nothing, while the lock
/// is held.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let db_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join("db"))?;
    if db_file.try_lock().is_err() {
        return Err(StoreError::Locked {
            path: path.display().to_string(),
        });
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
        }
    }
    // Dropping the handle releases the lock, before the engine takes it.
    drop(db_file);
    Ok(())
}

/// Runs `attempt` until it does not fail as `Locked`, for at most [`LOCK_WAIT`] from
/// `since`. No handle of this process holds the database (the claim says so), so a held
/// lock is another process's, or one sled has not yet let go of after a handle of this
/// process was dropped (it does so lazily).
fn while_locked<T>(
    since: Instant,
    mut attempt: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    loop {
        match attempt() {
            Err(StoreError::Locked { .. }) if since.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The databases this process has open. sled's file lock only tells processes apart, and
/// sled releases it lazily after the last handle is dropped (background writes and deferred
/// destruction may still hold the file), so the store keeps its own in-process claim: a
/// second open of a database this process holds is refused at once, and an open after the
/// last handle was dropped waits (bounded) for sled to let go of the file.
static OPEN_DATABASES: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// How long an open waits for a lock that a dropped handle of this process still holds.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// This process's claim on one database path, released on drop.
#[derive(Debug)]
struct Claim(PathBuf);

impl Claim {
    fn take(path: &Path) -> Result<Claim, StoreError> {
        let mut open = OPEN_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        if !open.insert(path.to_path_buf()) {
            return Err(StoreError::Locked {
                path: path.display().to_string(),
            });
        }
        Ok(Claim(path.to_path_buf()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        OPEN_DATABASES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
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

/// How many expired records one prune transaction handles.
const PRUNE_CHUNK: usize = 512;

impl Store {
    /// Opens (or creates) the database `sync.db` in the node data directory `dir`.
    ///
    /// - A new database is created behind a marker file, so a crash during creation is
    ///   told apart from a database that lost its contents.
    /// - An existing database must record its schema version: a newer one fails with
    ///   [`StoreError::NewerSchema`], a missing or unreadable one with
    ///   [`StoreError::Corrupt`]. A damaged database is never treated as empty.
    /// - A database that recovered an older generation than the last one flushed (a
    ///   damaged log that the engine silently cut short) is [`StoreError::Corrupt`]; see
    ///   the generation watermark in `docs/storage.md`.
    /// - The trust store (devices, tombstones) and the audit head are decoded once here,
    ///   so corruption there stops the node at start.
    /// - A database this process already has open is [`StoreError::Locked`] at once; one
    ///   that another process holds is `Locked` after a bounded wait.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_with(dir, &StoreOptions::default())
    }

    /// [`Store::open`] with tuning options.
    pub fn open_with(dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Store, StoreError> {
        let dir = dir.as_ref();
        fsperm::create_private_dir(dir)?;
        let path = std::fs::canonicalize(dir)?.join(DB_DIR_NAME);
        let claim = Claim::take(&path)?;
        let marker = dir.join(CREATING_MARKER);
        let fresh = !path.exists();
        let waiting_since = Instant::now();
        if fresh {
            fsperm::create_private_file(&marker)?;
            fsperm::sync_dir(dir)?;
            fsperm::create_private_dir(&path)?;
            fsperm::create_private_dir(&path.join("blobs"))?;
            fsperm::create_private_file(&path.join("conf"))?;
            fsperm::create_private_file(&path.join("db"))?;
            fsperm::sync_dir(dir)?;
        } else if !path.join("db").is_file() {
            return Err(StoreError::Corrupt {
                detail: format!("{} exists but holds no database file", path.display()),
            });
        } else {
            // Waited for like the engine's own open below: skipping the clean-up while a
            // just-dropped handle still held the lock let the engine read an unfinished
            // snapshot as corruption.
            while_locked(waiting_since, || remove_unfinished_snapshots(&path))?;
        }
        let creating = marker.exists();

        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_capacity)
            // Every write is flushed before it returns (see `write`), so the engine's own
            // periodic flusher would only add a thread that wakes twice a second.
            .flush_every_ms(None);
        let db = while_locked(waiting_since, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|panic| StoreError::Corrupt {
                    detail: format!(
                        "storage engine failed while opening: {}",
                        panic_text(&panic)
                    ),
                })?
                .map_err(StoreError::from)
        })?;
        let trees = layout::ALL_TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let log = std::fs::File::open(path.join("db"))?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                trees,
                log,
                path: path.clone(),
                queue_entries_read: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                write_nanos: AtomicU64::new(0),
                dir_stamps: Mutex::new(Vec::new()),
                watermark: Mutex::new(None),
                failure: OnceLock::new(),
                _claim: claim,
            }),
        };

        match store.t(META)?.get(layout::META_SCHEMA_VERSION)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        detail: "schema version record is not 4 bytes".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < 1 {
                    return Err(StoreError::Corrupt {
                        detail: format!("unknown schema version {found}"),
                    });
                }
            }
            None if fresh || creating => {
                store
                    .t(META)?
                    .insert(layout::META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
                store.flush()?;
            }
            None => {
                return Err(StoreError::Corrupt {
                    detail: "the database records no schema version: it was wiped or damaged"
                        .into(),
                })
            }
        }
        store.check_generation(fresh || creating)?;
        if creating {
            std::fs::remove_file(&marker)?;
            fsperm::sync_dir(dir)?;
        }

        store.check_trust_store()?;
        fsperm::secure_tree(&path)?;
        // The engine writes its `conf` without syncing it, and may have written snapshots
        // while opening: everything it holds is made durable before the first write is.
        fsperm::sync_tree(&path)?;
        *store.inner.dir_stamps.lock().expect("stamps lock") = fsperm::dir_stamps(&path);
        Ok(store)
    }

    /// Refuses a database that lost writes it had acknowledged (see [`crate::watermark`]),
    /// then records its generation as the new watermark.
    fn check_generation(&self, new_database: bool) -> Result<(), StoreError> {
        let db_gen = self.generation()?;
        match watermark::read(&self.inner.path)? {
            watermark::Read16::Missing if new_database => {}
            watermark::Read16::Missing => {
                return Err(StoreError::Corrupt { detail: "the generation watermark file is missing".into() })
            }
            watermark::Read16::Damaged => {
                return Err(StoreError::Corrupt { detail: "the generation watermark file is damaged".into() })
            }
            watermark::Read16::At(acknowledged) if acknowledged > db_gen => {
                return Err(StoreError::Corrupt {
                    detail: format!(
                        "the database recovered generation {db_gen}, but generation {acknowledged} had been \
                         flushed: acknowledged writes were lost"
                    ),
                })
            }
            watermark::Read16::At(_) => {}
        }
        let w = Watermark::open(&self.inner.path, db_gen)?;
        fsperm::sync_dir(&self.inner.path)?;
        *self.inner.watermark.lock().expect("watermark lock") = Some(w);
        Ok(())
    }

    /// The generation counter: how many write transactions the database has committed.
    fn generation(&self) -> Result<u64, StoreError> {
        match self.t(META)?.get(crate::txn::META_GENERATION)? {
            Some(v) => layout::be_u64(&v)
                .ok_or_else(|| StoreError::undecodable("generation", "not 8 bytes")),
            None => Ok(0),
        }
    }

    /// Decodes every device, tombstone and the audit head, so a damaged trust store is
    /// reported at open rather than silently skipped later.
    fn check_trust_store(&self) -> Result<(), StoreError> {
        self.devices()?;
        self.tombstones()?;
        self.audit_head()?;
        Ok(())
    }

    /// Tree `i`, unless the store has failed (every read goes through here).
    fn t(&self, i: usize) -> Result<&sled::Tree, StoreError> {
        self.usable()?;
        Ok(&self.inner.trees[i])
    }

    /// `Ok` until a write could not be made durable; then [`StoreError::Failed`] for good.
    fn usable(&self) -> Result<(), StoreError> {
        match self.inner.failure.get() {
            Some(failure) => Err(StoreError::Failed {
                cause: failure.cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Why the store stopped serving reads and writes, if it did: the error of the write
    /// that could not be made durable. The node stops when it sees one.
    pub fn failure(&self) -> Option<&StoreFailure> {
        self.inner.failure.get()
    }

    /// Records that a write could not be made durable: every later read and write fails
    /// (see [`StoreError::Failed`]). Returns the error to hand back to the caller.
    fn fail(&self, e: StoreError) -> StoreError {
        let _ = self.inner.failure.set(StoreFailure::of(&e));
        e
    }

    /// The database directory (`<data dir>/sync.db`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of work done.
    pub fn metrics(&self) -> StoreMetrics {
        StoreMetrics {
            queue_entries_read: self.inner.queue_entries_read.load(Ordering::Relaxed),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
            writes: self.inner.writes.load(Ordering::Relaxed),
            write_nanos: self.inner.write_nanos.load(Ordering::Relaxed),
        }
    }

    /// Makes every write so far durable. Every write method already calls it before it
    /// returns; the engine would otherwise write in the background only every 500 ms.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.usable()?;
        if let Err(e) = self.inner.db.flush() {
            return Err(self.fail(e.into()));
        }
        // On Linux the engine's flush ends in `sync_file_range`, which persists neither the
        // log's new size nor the disk's write cache: a power cut could still take what it
        // flushed. `fdatasync` persists both.
        if let Err(e) = self.inner.log.sync_data() {
            return Err(self.fail(StoreError::Io(e)));
        }
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        let stamps = fsperm::dir_stamps(&self.inner.path);
        let mut seen = self.inner.dir_stamps.lock().expect("stamps lock");
        if *seen != stamps {
            // New files: the engine writes large values as files of their own (`blobs/`)
            // without syncing them.
            fsperm::secure_tree(&self.inner.path)?;
            if let Err(e) = fsperm::sync_tree(&self.inner.path) {
                return Err(self.fail(StoreError::Io(e)));
            }
            *seen = stamps;
        }
        Ok(())
    }

    /// Runs `f` as one atomic transaction over every tree, then flushes, and only then
    /// returns. Several operations inside one `f` share one flush (group commit).
    ///
    /// `f` may run more than once if the engine detects a conflict, so it must have no
    /// effects outside the [`Txn`], and it must pass on every [`TxError`] it gets (with
    /// `?`) rather than ignore it.
    pub fn write<R>(&self, f: impl Fn(&Txn) -> Result<R, TxError>) -> Result<R, StoreError> {
        let started = Instant::now();
        let result = self.write_untimed(f);
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner.write_nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }

    fn write_untimed<R>(&self, f: impl Fn(&Txn) -> Result<R, TxError>) -> Result<R, StoreError> {
        self.usable()?;
        let trees: Vec<&sled::Tree> = self.inner.trees.iter().collect();
        let result =
            trees
                .as_slice()
                .transaction(|view: &Vec<sled::transaction::TransactionalTree>| {
                    let tx = Txn::new(view.clone());
                    let r = f(&tx).map_err(TxError::into_engine)?;
                    tx.finish().map_err(TxError::into_engine)?;
                    let generation = tx.bump_generation().map_err(TxError::into_engine)?;
                    Ok((r, generation))
                });
        let (r, generation) = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            // The engine may have applied part of it in memory.
            Err(TransactionError::Storage(e)) => return Err(self.fail(e.into())),
        };
        // Flushed even when this transaction wrote nothing: what it read may have been
        // committed, but not yet flushed, by another thread, and the caller may act on it.
        self.flush()?;
        if let Some(generation) = generation {
            if let Some(w) = self
                .inner
                .watermark
                .lock()
                .expect("watermark lock")
                .as_mut()
            {
                // The write is durable whatever happens here. A watermark left behind the
                // database is allowed (see `watermark`), and the next write advances it.
                let _ = w.advance(generation);
            }
        }
        Ok(r)
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        tree: usize,
        what: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.t(tree)?.get(key)? {
            Some(v) => Ok(Some(codec::decode(what, &v)?)),
            None => Ok(None),
        }
    }

    fn all_decoded<T: serde::de::DeserializeOwned>(
        &self,
        tree: usize,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.t(tree)?
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode(what, &v)
            })
            .collect()
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self
            .t(META)?
            .get(layout::META_SCHEMA_VERSION)?
            .ok_or_else(|| StoreError::Corrupt {
                detail: "schema version record vanished".into(),
            })?;
        <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                detail: "schema version record is not 4 bytes".into(),
            })
    }

    // ---------------------------------------------------------------- devices

    /// Stores a completed direct pairing (see [`Txn::pair_direct`]).
    pub fn pair_direct(&self, p: &DirectPairing) -> Result<DeviceRecord, StoreError> {
        self.write(|tx| tx.pair_direct(p))
    }

    /// A paired device.
    pub fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_decoded(DEVICES, "device record", &id.to_bytes())
    }

    /// Every paired device, in device-id byte order.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.all_decoded(DEVICES, "device record")
    }

    /// Changes a device's trust level (see [`Txn::set_trust`]); returns the previous one.
    pub fn set_trust(
        &self,
        id: &DeviceId,
        to: TrustLevel,
        at: Timestamp,
    ) -> Result<TrustLevel, StoreError> {
        self.write(|tx| tx.set_trust(id, to, at))
    }

    /// Unpairs a device (see [`Txn::unpair`]).
    pub fn unpair(&self, id: &DeviceId, at: Timestamp) -> Result<DeviceRecord, StoreError> {
        self.write(|tx| tx.unpair(id, at))
    }

    /// Revokes a device (see [`Txn::revoke`]).
    pub fn revoke(
        &self,
        id: &DeviceId,
        reason: RevokeReason,
        at: Timestamp,
    ) -> Result<DeviceRecord, StoreError> {
        self.write(|tx| tx.revoke(id, reason, at))
    }

    /// Records an authenticated connection from the device.
    pub fn touch_last_seen(&self, id: &DeviceId, at: Timestamp) -> Result<(), StoreError> {
        self.write(|tx| tx.touch_last_seen(id, at))
    }

    /// Replaces the key shared with a device (see [`Txn::set_session_key`]).
    pub fn set_session_key(
        &self,
        id: &DeviceId,
        key: &SymmetricKey,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| tx.set_session_key(id, key, at))
    }

    /// A rekey switched the key shared with a device (see [`Txn::switch_session_key`]).
    pub fn switch_session_key(
        &self,
        id: &DeviceId,
        key: &SymmetricKey,
        initiated: bool,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| tx.switch_session_key(id, key, initiated, at))
    }

    /// Drops the key kept from before a rekey (see [`Txn::forget_previous_key`]).
    pub fn forget_previous_key(&self, id: &DeviceId) -> Result<bool, StoreError> {
        self.write(|tx| tx.forget_previous_key(id))
    }

    /// Counts a connection success or failure (see [`Txn::record_connection`]).
    pub fn record_connection(
        &self,
        id: &DeviceId,
        at: Timestamp,
        ok: bool,
    ) -> Result<Reliability, StoreError> {
        self.write(|tx| tx.record_connection(id, at, ok))
    }

    /// A device's connection reliability.
    pub fn reliability(&self, id: &DeviceId) -> Result<Option<Reliability>, StoreError> {
        self.get_decoded(RELIABILITY, "reliability record", &id.to_bytes())
    }

    /// A device's tombstone.
    pub fn tombstone(&self, id: &DeviceId) -> Result<Option<Tombstone>, StoreError> {
        self.get_decoded(TOMBSTONES, "tombstone", &id.to_bytes())
    }

    /// Every tombstone.
    pub fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError> {
        self.all_decoded(TOMBSTONES, "tombstone")
    }

    /// Blocks a device this one holds no record of (see [`Txn::block_unpaired`]).
    pub fn block_unpaired(&self, id: &DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        self.write(|tx| tx.block_unpaired(id, at))
    }

    /// Lifts such a block (see [`Txn::unblock_unpaired`]).
    pub fn unblock_unpaired(&self, id: &DeviceId, at: Timestamp) -> Result<Tombstone, StoreError> {
        self.write(|tx| tx.unblock_unpaired(id, at))
    }

    /// True if the user blocked this device while it had no record (see
    /// [`Txn::block_unpaired`]).
    pub fn is_blocked_unpaired(&self, id: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.device(id)?.is_none() && self.tombstone(id)?.is_some_and(|t| t.is_block()))
    }

    /// Clears a tombstone (see [`Txn::clear_tombstone`]).
    pub fn clear_tombstone(&self, id: &DeviceId, at: Timestamp) -> Result<Tombstone, StoreError> {
        self.write(|tx| tx.clear_tombstone(id, at))
    }

    // ---------------------------------------------------------------- pairings in flight

    /// Stores the pairing in flight with `record.peer`.
    pub fn put_pairing(&self, record: &PairingRecord) -> Result<(), StoreError> {
        self.write(|tx| tx.put_pairing(record))
    }

    /// The pairing in flight with `peer`.
    pub fn pairing(&self, peer: &DeviceId) -> Result<Option<PairingRecord>, StoreError> {
        self.get_decoded(PAIRINGS, "pairing record", &peer.to_bytes())
    }

    /// Every pairing in flight (bounded by the protocol's prompt limit).
    pub fn pairings(&self) -> Result<Vec<PairingRecord>, StoreError> {
        self.all_decoded(PAIRINGS, "pairing record")
    }

    /// Ends the pairing in flight with `peer`.
    pub fn remove_pairing(&self, peer: &DeviceId) -> Result<Option<PairingRecord>, StoreError> {
        self.write(|tx| tx.remove_pairing(peer))
    }

    // ---------------------------------------------------------------- receiving vouches

    /// Accepts a vouch (see [`Txn::accept_vouch`]). Returns only after the acceptance is on
    /// disk, so the signed acceptance may be sent when this returns.
    pub fn accept_vouch(&self, a: &AcceptVouch) -> Result<AcceptOutcome, StoreError> {
        self.write(|tx| tx.accept_vouch(a))
    }

    /// Records a rejection (see [`Txn::reject_vouch`]).
    pub fn reject_vouch(&self, r: &RejectVouch) -> Result<RejectOutcome, StoreError> {
        self.write(|tx| tx.reject_vouch(r))
    }

    /// The decision recorded for (session, vouchee).
    pub fn decision(
        &self,
        session: &SessionId,
        vouchee: &DeviceId,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        self.get_decoded(
            DECISIONS,
            "decision record",
            &layout::decision_key(*session, *vouchee),
        )
    }

    /// True if the nonce is in the replay cache.
    pub fn nonce_seen(&self, nonce: &VouchNonce) -> Result<bool, StoreError> {
        Ok(self.t(REPLAY)?.get(layout::nonce_key(*nonce))?.is_some())
    }

    /// Adds a nonce to the replay cache (see [`Txn::remember_nonce`]).
    pub fn remember_nonce(
        &self,
        nonce: &VouchNonce,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| tx.remember_nonce(nonce, expires_at))
    }

    /// Stores a prompt waiting for the user (see [`Txn::put_prompt`]).
    pub fn put_prompt(&self, p: &PromptRecord) -> Result<(), StoreError> {
        self.write(|tx| tx.put_prompt(p))
    }

    /// Removes a prompt (see [`Txn::remove_prompt`]).
    pub fn remove_prompt(
        &self,
        session: &SessionId,
        vouchee: &DeviceId,
        voucher: &DeviceId,
    ) -> Result<bool, StoreError> {
        self.write(|tx| tx.remove_prompt(session, vouchee, voucher))
    }

    /// Every prompt waiting for the user, to open again at start.
    pub fn prompts(&self) -> Result<Vec<PromptRecord>, StoreError> {
        self.all_decoded(PROMPTS, "prompt record")
    }

    /// Stores a received message, dropping the oldest beyond `capacity` (see
    /// [`Txn::push_inbox`]).
    pub fn push_inbox(&self, m: &InboxRecord, capacity: NonZeroU64) -> Result<u64, StoreError> {
        self.write(|tx| tx.push_inbox(m, capacity))
    }

    /// Deletes every received message (see [`Txn::clear_inbox`]); returns how many.
    pub fn clear_inbox(&self) -> Result<u64, StoreError> {
        self.write(|tx| tx.clear_inbox())
    }

    /// The received messages, oldest first.
    pub fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError> {
        self.all_decoded(INBOX, "inbox record")
    }

    /// Vouchee side: adds a target that accepted us (see [`Txn::add_proxied_device`]).
    pub fn add_proxied_device(&self, p: &ProxiedDevice) -> Result<ProxiedOutcome, StoreError> {
        self.write(|tx| tx.add_proxied_device(p))
    }

    // ---------------------------------------------------------------- sessions

    /// Stores a session (see [`Txn::put_session`]).
    pub fn put_session(&self, session: &VouchingSession) -> Result<(), StoreError> {
        self.write(|tx| tx.put_session(session))
    }

    /// Stores a session whose targets were chosen, audited (see [`Txn::record_vouched`]).
    pub fn record_vouched(
        &self,
        session: &VouchingSession,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| tx.record_vouched(session, at))
    }

    /// Stores a session updated for a target's answer, audited (see [`Txn::record_answer`]).
    pub fn record_answer(
        &self,
        session: &VouchingSession,
        target: &DeviceId,
        response: &vouchnet_protocol::messages::SignedResponse,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| tx.record_answer(session, target, response, at))
    }

    /// A vouching session.
    pub fn session(&self, id: &SessionId) -> Result<Option<VouchingSession>, StoreError> {
        self.get_decoded(SESSIONS, "vouching session", &id.0)
    }

    /// Every vouching session, in id order.
    pub fn sessions(&self) -> Result<Vec<VouchingSession>, StoreError> {
        self.all_decoded(SESSIONS, "vouching session")
    }

    /// Removes a session and its queue entries.
    pub fn remove_session(&self, id: &SessionId) -> Result<Option<VouchingSession>, StoreError> {
        self.write(|tx| tx.remove_session(id))
    }

    // ---------------------------------------------------------------- queue

    /// Queues a delivery (see [`Txn::enqueue`]); returns after it is on disk.
    pub fn enqueue(&self, entry: &QueueEntry) -> Result<Enqueued, StoreError> {
        self.write(|tx| tx.enqueue(entry))
    }

    /// Queues several deliveries in one transaction and one flush (group commit).
    pub fn enqueue_batch(&self, entries: &[QueueEntry]) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|tx| entries.iter().map(|e| tx.enqueue(e)).collect())
    }

    /// At most `limit` entries due at `now` (`next_attempt_at <= now`), earliest first.
    ///
    /// This reads only due entries: the queue is keyed by due time, so the scan stops at
    /// the first entry not yet due, whatever the queue's size.
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let range = match layout::queue_due_upper(now) {
            Some(upper) => self.t(QUEUE)?.range(..upper),
            None => self.t(QUEUE)?.range::<&[u8], _>(..),
        };
        let mut out = Vec::new();
        for kv in range.take(limit) {
            let (_, v) = kv?;
            self.inner
                .queue_entries_read
                .fetch_add(1, Ordering::Relaxed);
            out.push(codec::decode("queue entry", &v)?);
        }
        Ok(out)
    }

    /// When the earliest entry is due, for the worker's next wake-up (one key read).
    pub fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        match self.t(QUEUE)?.first()? {
            Some((k, _)) => {
                let at =
                    k.get(..8)
                        .and_then(layout::be_u64)
                        .ok_or_else(|| StoreError::Corrupt {
                            detail: "queue key shorter than its timestamp".into(),
                        })?;
                Ok(Some(Timestamp::from_millis(at)))
            }
            None => Ok(None),
        }
    }

    /// The queued entry for `r`.
    pub fn queue_entry(&self, r: QueueRef) -> Result<Option<QueueEntry>, StoreError> {
        let Some(next) = self.t(QUEUE_INDEX)?.get(r.to_bytes())? else {
            return Ok(None);
        };
        let next = layout::be_u64(&next)
            .ok_or_else(|| StoreError::undecodable("queue index", "not 8 bytes"))?;
        self.get_decoded(
            QUEUE,
            "queue entry",
            &layout::queue_key(Timestamp::from_millis(next), r),
        )
    }

    /// Every queued entry of one session (a prefix scan of the index).
    pub fn queued_for_session(&self, session: &SessionId) -> Result<Vec<QueueEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.t(QUEUE_INDEX)?.scan_prefix(session.0) {
            let (k, next) = kv?;
            let next = layout::be_u64(&next)
                .ok_or_else(|| StoreError::undecodable("queue index", "not 8 bytes"))?;
            let mut key = next.to_be_bytes().to_vec();
            key.extend_from_slice(&k);
            let e = self
                .get_decoded(QUEUE, "queue entry", &key)?
                .ok_or_else(|| StoreError::Corrupt {
                    detail: "queue index points at a missing entry".into(),
                })?;
            out.push(e);
        }
        Ok(out)
    }

    /// Every queued entry, in due order. For inspection and tests; the worker uses
    /// [`Store::due`].
    pub fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.all_decoded(QUEUE, "queue entry")
    }

    /// How many entries are queued (a counter kept in the same transactions, O(1)).
    pub fn depth(&self) -> Result<u64, StoreError> {
        match self.t(META)?.get(META_QUEUE_DEPTH)? {
            Some(v) => layout::be_u64(&v)
                .ok_or_else(|| StoreError::undecodable("queue depth", "not 8 bytes")),
            None => Ok(0),
        }
    }

    /// Moves a queued vouch to Waiting (see [`Txn::mark_delivering`]).
    pub fn mark_delivering(
        &self,
        r: QueueRef,
        waiting: &VouchStatus,
    ) -> Result<QueueEntry, StoreError> {
        self.write(|tx| tx.mark_delivering(r, waiting))
    }

    /// Marks a vouchee notification delivered (see [`Txn::mark_notified`]).
    pub fn mark_notified(&self, r: QueueRef, told: &[DeviceId]) -> Result<QueueEntry, StoreError> {
        self.write(|tx| tx.mark_notified(r, told))
    }

    /// Moves an entry to a new attempt time (see [`Txn::reschedule`]).
    pub fn reschedule(
        &self,
        r: QueueRef,
        next_attempt_at: Timestamp,
    ) -> Result<QueueEntry, StoreError> {
        self.write(|tx| tx.reschedule(r, next_attempt_at))
    }

    /// Counts a failed delivery (see [`Txn::delivery_failed`]).
    pub fn delivery_failed(
        &self,
        r: QueueRef,
        now: Timestamp,
        policy: &QueuePolicy,
    ) -> Result<Retry, StoreError> {
        self.write(|tx| tx.delivery_failed(r, now, policy))
    }

    /// Removes an entry without touching its session.
    pub fn remove_queue_entry(&self, r: QueueRef) -> Result<Option<QueueEntry>, StoreError> {
        self.write(|tx| tx.remove_queue_entry(r))
    }

    // ---------------------------------------------------------------- audit

    /// Appends an event on its own (see [`Txn::record_event`]).
    pub fn record_event(&self, at: Timestamp, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        self.write(|tx| tx.record_event(at, event.clone()))
    }

    /// The chain head.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.get_decoded(META, "audit head", layout::META_AUDIT_HEAD)
    }

    /// How many entries the trail holds.
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.audit_head()?.map(|h| h.seq + 1).unwrap_or(0))
    }

    /// Up to `limit` entries from `from_seq` on, decoded (not verified: see
    /// [`Store::verify_audit`]).
    pub fn audit_entries(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.t(AUDIT)?
            .range(from_seq.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode("audit entry", &v)
            })
            .collect()
    }

    /// Walks the whole audit trail and checks every hash link, the head, and every
    /// signature embedded as evidence. The error names the first bad entry.
    pub fn verify_audit(&self) -> Result<AuditReport, AuditError> {
        let read = |e: sled::Error| AuditError::Read {
            detail: StoreError::from(e).to_string(),
        };
        let tree = |i: usize| {
            self.t(i).map_err(|e| AuditError::Read {
                detail: e.to_string(),
            })
        };
        let head_of = |bytes: Option<sled::IVec>| -> Result<Option<AuditHead>, AuditError> {
            bytes
                .map(|b| {
                    codec::decode("audit head", &b).map_err(|e| AuditError::HeadUndecodable {
                        detail: e.to_string(),
                    })
                })
                .transpose()
        };
        let head = head_of(tree(META)?.get(layout::META_AUDIT_HEAD).map_err(read)?)?;
        let entries = match head {
            Some(h) => tree(AUDIT)?.range(..=h.seq.to_be_bytes()),
            None => tree(AUDIT)?.range::<&[u8], _>(..),
        };
        let report = audit::verify_entries(
            head,
            entries.map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(read)),
        )?;
        if let Some(h) = head {
            // Entries past the head: either appended since we read it, or forged.
            if let Some((k, _)) = self
                .t(AUDIT)
                .map_err(|e| AuditError::Read {
                    detail: e.to_string(),
                })?
                .range((h.seq + 1).to_be_bytes()..)
                .next()
                .transpose()
                .map_err(read)?
            {
                let beyond = layout::be_u64(&k).unwrap_or(u64::MAX);
                let now_head = head_of(tree(META)?.get(layout::META_AUDIT_HEAD).map_err(read)?)?;
                if now_head.is_none_or(|nh| nh.seq < beyond) {
                    return Err(AuditError::HeadMismatch {
                        head: Some(h.seq),
                        last: Some(beyond),
                    });
                }
            }
        }
        Ok(report)
    }

    // ---------------------------------------------------------------- retention

    /// Removes what retention says must go, as of `now` (the injected clock):
    /// - sessions finished at least `policy.session_retention` ago (with their queue
    ///   entries);
    /// - queue entries whose `expires_at <= now` (a vouch target still Queued becomes
    ///   Expired, audited);
    /// - replay-cache nonces whose `expires_at < now` (a nonce is remembered through its
    ///   expiry instant);
    /// - decisions made at least `policy.decision_retention` ago;
    /// - pairings in flight whose `expires_at <= now`.
    ///
    /// Only records that are due are read, through the expiry index.
    pub fn prune(
        &self,
        now: Timestamp,
        policy: &RetentionPolicy,
    ) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let cutoff = |retention: core::time::Duration| {
            let ms = vouchnet_protocol::time::duration_millis(retention);
            now.as_millis().checked_sub(ms).map(Timestamp::from_millis)
        };
        if let Some(c) = cutoff(policy.session_retention) {
            report.sessions_removed = self
                .prune_kind(ExpiryKind::Session, c, |tx, id| {
                    let sid =
                        SessionId(id.try_into().map_err(|_| {
                            StoreError::undecodable("session expiry key", "bad id")
                        })?);
                    Ok(tx.prune_session(&sid, c)?.then_some(()))
                })?
                .len();
        }
        let expired = self.prune_kind(ExpiryKind::Queue, now, |tx, id| {
            let r = QueueRef::from_bytes(id)?;
            Ok(tx.prune_queue(r, now)?.map(|e| (r, e)))
        })?;
        report.queue_expired = expired.len();
        for (r, e) in expired {
            if e != Expiry::Unchanged {
                report.targets_expired.push(r);
            }
            if e == Expiry::SessionCompleted {
                report.sessions_completed.push(r.session_id);
            }
        }
        if let Some(before) = now.as_millis().checked_sub(1).map(Timestamp::from_millis) {
            report.nonces_pruned = self
                .prune_kind(ExpiryKind::Replay, before, |tx, id| {
                    Ok(tx.prune_nonce(id, now)?.then_some(()))
                })?
                .len();
        }
        if let Some(c) = cutoff(policy.decision_retention) {
            report.decisions_pruned = self
                .prune_kind(ExpiryKind::Decision, c, |tx, id| {
                    Ok(tx.prune_decision(id, c)?.then_some(()))
                })?
                .len();
        }
        report.pairings_expired = self
            .prune_kind(ExpiryKind::Pairing, now, |tx, id| {
                Ok(tx.prune_pairing(id, now)?.then_some(()))
            })?
            .len();
        fsperm::secure_tree(&self.inner.path)?;
        Ok(report)
    }

    /// Visits the expiry-index keys of `kind` with time `<= upto`, in chunks, one
    /// transaction per chunk; returns what `f` reported for each record it removed.
    fn prune_kind<T>(
        &self,
        kind: ExpiryKind,
        upto: Timestamp,
        f: impl Fn(&Txn, &[u8]) -> Result<Option<T>, TxError>,
    ) -> Result<Vec<T>, StoreError> {
        let lower = layout::expiry_lower(kind);
        let upper = layout::expiry_upper_inclusive(kind, upto);
        let mut removed = Vec::new();
        loop {
            let keys: Vec<sled::IVec> = self
                .t(EXPIRY)?
                .range(lower.clone()..upper.clone())
                .keys()
                .take(PRUNE_CHUNK)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(removed);
            }
            removed.extend(self.write(|tx| {
                let mut out = Vec::new();
                for k in &keys {
                    tx.prune_expiry_key(k)?;
                    if let Some(t) = f(tx, layout::expiry_id(k))? {
                        out.push(t);
                    }
                }
                Ok(out)
            })?);
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
