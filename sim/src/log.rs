//! The event log: one line per event, in the order the scheduler ran them.
//!
//! Every line is hashed into a running SHA-256, so two runs can be compared by digest even
//! when the log is not kept; tests keep the whole log and compare it byte for byte.

use sha2::{Digest, Sha256};
use std::fmt::{self, Write as _};
use std::io::Write;

/// The event log of one run.
pub struct EventLog {
    keep: bool,
    buf: Vec<u8>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    line: String,
    lines: u64,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("lines", &self.lines)
            .field("kept_bytes", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// A log that keeps its lines in memory when `keep`, and writes them to `file` if given.
    pub fn new(keep: bool, file: Option<std::fs::File>) -> Self {
        EventLog {
            keep,
            buf: Vec::new(),
            file: file.map(std::io::BufWriter::new),
            hasher: Sha256::new(),
            line: String::with_capacity(160),
            lines: 0,
        }
    }

    /// Appends one line.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        self.line.clear();
        let _ = self.line.write_fmt(args);
        self.line.push('\n');
        self.hasher.update(self.line.as_bytes());
        if self.keep {
            self.buf.extend_from_slice(self.line.as_bytes());
        }
        if let Some(f) = &mut self.file {
            // The log file is a by-product; a full disk must not change the run.
            let _ = f.write_all(self.line.as_bytes());
        }
        self.lines += 1;
    }

    /// The kept lines (empty unless kept).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// SHA-256 over every line so far, hex.
    pub fn digest(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Flushes the file, if any.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}
