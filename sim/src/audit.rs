//! Each simulated device's audit trail, in memory, in the storage crate's exact format.
//!
//! Entries are [`AuditEntry`] values encoded with the protocol codec (as
//! `vouchnet_storage` stores them), hash-chained with
//! [`vouchnet_storage::audit::entry_hash`], and verified with the storage crate's own
//! [`verify_entries`] — the same code that checks a node's trail — so "every audit trail
//! verifies" is checked against the real format, not a look-alike.

use vouchnet_protocol::codec;
use vouchnet_protocol::Timestamp;
use vouchnet_storage::audit::{
    entry_hash, verify_entries, verify_evidence, AuditEntry, AuditError, AuditEvent, AuditHead,
    AuditReport, EvidenceError,
};

/// One device's audit trail.
#[derive(Debug, Default, Clone)]
pub struct AuditLog {
    entries: Vec<Vec<u8>>,
    head: Option<AuditHead>,
}

impl AuditLog {
    /// Appends an event; returns the new entry's seq.
    pub fn append(&mut self, at: Timestamp, event: AuditEvent) -> u64 {
        let (seq, prev_hash) = match self.head {
            Some(h) => (h.seq + 1, h.hash),
            None => (0, [0u8; 32]),
        };
        let entry = AuditEntry {
            seq,
            prev_hash,
            at,
            event,
        };
        let bytes = codec::encode(&entry);
        self.head = Some(AuditHead {
            seq,
            hash: entry_hash(&bytes),
        });
        self.entries.push(bytes);
        seq
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks the evidence of the last entry (incremental check after each append).
    pub fn verify_last(&self) -> Result<(), EvidenceError> {
        let Some(bytes) = self.entries.last() else {
            return Ok(());
        };
        let entry: AuditEntry = codec::decode(bytes, &vouchnet_storage::STORED_LIMITS)
            .expect("an entry encoded here decodes");
        verify_evidence(&entry.event)
    }

    /// Verifies the whole chain with the storage crate's verifier.
    pub fn verify(&self) -> Result<AuditReport, AuditError> {
        verify_entries(
            self.head,
            self.entries
                .iter()
                .enumerate()
                .map(|(i, b)| Ok(((i as u64).to_be_bytes().to_vec(), b.clone()))),
        )
    }

    /// Decoded entries, for reports and tests.
    pub fn decoded(&self) -> Vec<AuditEntry> {
        self.entries
            .iter()
            .map(|b| {
                codec::decode(b, &vouchnet_storage::STORED_LIMITS)
                    .expect("an entry encoded here decodes")
            })
            .collect()
    }

    /// Fault injection for tests of the checker: flips one byte of entry `seq`.
    pub fn tamper(&mut self, seq: usize) {
        if let Some(b) = self.entries.get_mut(seq) {
            let last = b.len() - 1;
            b[last] ^= 0x01;
        }
    }
}
