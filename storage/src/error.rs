//! Every way a store operation can fail, as a typed reason.
//!
//! The node reacts differently to each: [`StoreError::Corrupt`] and
//! [`StoreError::NewerSchema`] stop it (it must never fall back to an empty trust store),
//! [`StoreError::NotFound`] and [`StoreError::InvalidTransition`] are bugs or races in the
//! caller that changed nothing, [`StoreError::Io`] is the disk, and [`StoreError::Failed`]
//! means an earlier write could not be made durable: the store must be opened again (the
//! node stops, and its service manager starts it again).

use vouchnet_protocol::KeyError;

/// The kinds of record the store keeps, named in [`StoreError::NotFound`] and
/// [`StoreError::AlreadyExists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A paired device.
    Device,
    /// A tombstone of a removed or blocked device.
    Tombstone,
    /// A pairing transaction in flight.
    Pairing,
    /// A vouching session.
    Session,
    /// One target of a vouching session.
    SessionTarget,
    /// An entry of the offline queue.
    QueueEntry,
}

/// Why a store stopped serving: the write that could not be made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFailure {
    /// The error that write met, as its caller got it.
    pub cause: String,
    /// The disk was full (`ENOSPC`): room cures it. Otherwise the disk failed (an I/O
    /// error), and it needs looking at.
    pub disk_full: bool,
}

impl StoreFailure {
    /// The failure `e` makes of a write it stopped.
    pub fn of(e: &StoreError) -> StoreFailure {
        StoreFailure {
            cause: e.to_string(),
            disk_full: e.is_disk_full(),
        }
    }
}

/// Why a store operation failed. Nothing was written when an operation returns an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused a file operation.
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Another process holds the database open.
    #[error("the database at {path} is locked by another process")]
    Locked {
        /// The database directory.
        path: String,
    },
    /// The database is damaged. The store refuses to open or to read on, rather than
    /// treating what it cannot read as absent.
    #[error("database is corrupt: {detail}")]
    Corrupt {
        /// What was found damaged.
        detail: String,
    },
    /// The database was written by a newer vouchnet with a schema this one does not know.
    #[error("database schema version {found} is newer than the supported version {supported}")]
    NewerSchema {
        /// The version recorded in the database.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The storage engine refused the configuration or the on-disk format.
    #[error("storage engine refused the database: {detail}")]
    Unsupported {
        /// The engine's explanation.
        detail: String,
    },
    /// The record the operation needs does not exist.
    #[error("{0:?} not found")]
    NotFound(RecordKind),
    /// A record that must be new already exists.
    #[error("{0:?} already exists")]
    AlreadyExists(RecordKind),
    /// A public key that does not belong to the device id given with it.
    #[error("public key does not match the device id: {0}")]
    KeyMismatch(KeyError),
    /// The requested change does not apply to the record's current state (for example,
    /// delivering a vouch whose target is no longer queued).
    #[error("invalid transition: {detail}")]
    InvalidTransition {
        /// Which rule the change broke.
        detail: &'static str,
    },
    /// An audit event whose embedded signatures do not verify; the audit trail only ever
    /// holds evidence that verifies.
    #[error("audit evidence does not verify: {0}")]
    BadEvidence(crate::audit::EvidenceError),
    /// An input the store refuses to persist (for example, an over-long free text).
    #[error("invalid input: {detail}")]
    InvalidInput {
        /// What is wrong with it.
        detail: &'static str,
    },
    /// An earlier write could not be made durable: the disk was full, or failed. The engine
    /// had already applied that write in memory, and it keeps failing every later flush
    /// even once space is freed. So from then on the store refuses every read and every
    /// write, rather than answer from a state the disk does not hold. Opening the database
    /// again reads exactly what was made durable.
    #[error(
        "the store could not make a write durable ({cause}); it refuses every read and write \
         until it is opened again"
    )]
    Failed {
        /// The error of the write that failed.
        cause: String,
    },
    /// The storage engine reported a bug in itself.
    #[error("storage engine bug: {detail}")]
    Internal {
        /// The engine's report.
        detail: String,
    },
}

impl StoreError {
    /// A record that did not decode: the database is corrupt, not "missing".
    pub(crate) fn undecodable(what: &str, err: impl core::fmt::Display) -> Self {
        StoreError::Corrupt {
            detail: format!("{what} does not decode: {err}"),
        }
    }
}

/// The operating system's own error behind `io`, when sled passed it on as text.
///
/// sled hands an error of its writer thread back as a new error of the same kind whose
/// text is the original's `Debug` form (`Os { code: 28, kind: StorageFull, message: "No
/// space left on device" }`). The error code gives back what a person should read ("No
/// space left on device (os error 28)"), with the same kind; any other error is kept.
fn os_error_of(io: std::io::Error) -> std::io::Error {
    let code = io.get_ref().and_then(|inner| {
        inner
            .to_string()
            .strip_prefix("Os { code: ")?
            .split(',')
            .next()?
            .parse::<i32>()
            .ok()
    });
    match code {
        Some(code) if std::io::Error::from_raw_os_error(code).kind() == io.kind() => {
            std::io::Error::from_raw_os_error(code)
        }
        _ => io,
    }
}

impl StoreError {
    /// Whether the disk was full: `ENOSPC`, read from the error's kind (the operating
    /// system's code, which [`From<sled::Error>`] recovers when sled passes it on as text).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => {
                // sled reports a held file lock as an Io error with this text.
                let text = io.to_string();
                if let Some(rest) = text.strip_prefix("could not acquire lock on ") {
                    let path = rest.split(": ").next().unwrap_or(rest).trim_matches('"');
                    StoreError::Locked {
                        path: path.to_owned(),
                    }
                } else {
                    StoreError::Io(os_error_of(io))
                }
            }
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                detail: match at {
                    Some(at) => format!("storage engine found corruption at {at:?}"),
                    None => "storage engine found corruption".to_owned(),
                },
            },
            sled::Error::Unsupported(detail) => StoreError::Unsupported { detail },
            sled::Error::CollectionNotFound(name) => StoreError::Corrupt {
                detail: format!("tree {:?} missing", String::from_utf8_lossy(&name)),
            },
            sled::Error::ReportableBug(detail) => StoreError::Internal { detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[cfg(target_os = "linux")]
    #[test]
    fn an_os_error_sled_passed_on_as_text_reads_as_the_os_error() {
        let from_sled = sled::Error::Io(Error::new(
            ErrorKind::StorageFull,
            "Os { code: 28, kind: StorageFull, message: \"No space left on device\" }",
        ));
        match StoreError::from(from_sled) {
            StoreError::Io(io) => {
                assert_eq!(io.kind(), ErrorKind::StorageFull);
                assert_eq!(io.raw_os_error(), Some(28));
                assert_eq!(io.to_string(), "No space left on device (os error 28)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_enospc_is_a_full_disk() {
        let full = StoreError::Io(Error::from_raw_os_error(28));
        assert!(full.is_disk_full());
        assert_eq!(
            StoreFailure::of(&full),
            StoreFailure {
                cause: "storage i/o error: No space left on device (os error 28)".to_owned(),
                disk_full: true,
            }
        );
        for other in [
            StoreError::Io(Error::from_raw_os_error(5)),
            StoreError::Io(Error::other("No space left on device")),
            StoreError::Failed {
                cause: "storage i/o error: No space left on device (os error 28)".to_owned(),
            },
        ] {
            assert!(!other.is_disk_full(), "{other:?}");
            assert!(!StoreFailure::of(&other).disk_full, "{other:?}");
        }
    }

    #[test]
    fn other_io_errors_are_kept_as_they_are() {
        for (kind, text) in [
            (ErrorKind::Other, "something else"),
            // A code whose kind is not the one given is not trusted.
            (ErrorKind::NotFound, "Os { code: 28, kind: StorageFull }"),
        ] {
            match StoreError::from(sled::Error::Io(Error::new(kind, text))) {
                StoreError::Io(io) => {
                    assert_eq!(io.kind(), kind);
                    assert_eq!(io.to_string(), text);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
