//! The generation watermark: how the store notices that the database lost writes it had
//! already acknowledged.
//!
//! sled recovers its log up to the first record that fails its checksum and treats the rest
//! as a torn write, which is right after a crash but, after a flipped bit or a truncated
//! file, silently yields an *older* database, perhaps one with no devices at all. That must
//! never be read as "no devices".
//!
//! So every write transaction increments a generation counter in the meta tree, and after
//! the flush that made it durable the store records that generation in a small file beside
//! the log (`sync.db/generation`). On open, a database whose generation is below the file's
//! lost flushed writes and is refused as corrupt. A crash between the flush and the file
//! update only leaves the file behind the database, which is allowed; the file is never
//! ahead of what was flushed, so a crash can never make a sound database look damaged.
//!
//! Format: 16 bytes, `generation (u64 BE) ‖ first 8 bytes of SHA-256(tag ‖ generation)`.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// File name of the watermark inside the database directory.
pub const WATERMARK_FILE: &str = "generation";
const TAG: &[u8] = b"vouchnet/storage-generation/v1";

fn check(generation: u64) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(TAG);
    h.update(generation.to_be_bytes());
    let d = h.finalize();
    d[..8].try_into().expect("8 bytes of a digest")
}

fn encode(generation: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&generation.to_be_bytes());
    out[8..].copy_from_slice(&check(generation));
    out
}

/// What the watermark file says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read16 {
    /// No file.
    Missing,
    /// A valid generation.
    At(u64),
    /// A file that is not a watermark.
    Damaged,
}

/// Reads the watermark of the database directory `db_dir`.
pub(crate) fn read(db_dir: &Path) -> io::Result<Read16> {
    let mut f = match File::open(db_dir.join(WATERMARK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Read16::Missing),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::with_capacity(16);
    Read::by_ref(&mut f).take(17).read_to_end(&mut buf)?;
    let Ok(arr) = <[u8; 16]>::try_from(buf.as_slice()) else {
        return Ok(Read16::Damaged);
    };
    let generation = u64::from_be_bytes(arr[..8].try_into().expect("8 bytes"));
    if arr[8..] == check(generation) {
        Ok(Read16::At(generation))
    } else {
        Ok(Read16::Damaged)
    }
}

/// The open watermark file, rewritten in place after each flush.
#[derive(Debug)]
pub(crate) struct Watermark {
    file: File,
    written: u64,
}

impl Watermark {
    /// Opens (creating with mode 0600) the watermark and records `generation`, durably.
    pub(crate) fn open(db_dir: &Path, generation: u64) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(crate::fsperm::FILE_MODE);
        }
        let file = options.open(db_dir.join(WATERMARK_FILE))?;
        let mut w = Watermark { file, written: 0 };
        w.write_at(generation)?;
        w.file.set_len(16)?;
        w.file.sync_all()?;
        Ok(w)
    }

    fn write_at(&mut self, generation: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&encode(generation))?;
        self.written = generation;
        Ok(())
    }

    /// Records that `generation` is durable. Never moves backwards. Not fsynced: losing
    /// this write to a power cut only leaves the file behind the database, which is safe.
    pub(crate) fn advance(&mut self, generation: u64) -> io::Result<()> {
        if generation > self.written {
            self.write_at(generation)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), Read16::Missing);
        let mut w = Watermark::open(dir.path(), 7).expect("open");
        assert_eq!(read(dir.path()).expect("read"), Read16::At(7));
        w.advance(9).expect("advance");
        w.advance(8).expect("never backwards");
        assert_eq!(read(dir.path()).expect("read"), Read16::At(9));
        let mut bytes = std::fs::read(dir.path().join(WATERMARK_FILE)).expect("read");
        bytes[3] ^= 1;
        std::fs::write(dir.path().join(WATERMARK_FILE), &bytes).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Read16::Damaged);
        std::fs::write(dir.path().join(WATERMARK_FILE), b"short").expect("write");
        assert_eq!(read(dir.path()).expect("read"), Read16::Damaged);
    }
}
