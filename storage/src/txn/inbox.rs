//! The inbox: messages received from paired devices, kept across restarts and bounded.
//!
//! Messages are keyed by a sequence number, so the tree iterates oldest first. Sled's
//! transactions cannot iterate, so the bounds (oldest seq, next seq) are kept in the meta
//! tree: a push and the eviction of the oldest message are O(1), in one transaction.

use super::{Engine, TxError, Txn, INBOX, META};
use crate::codec;
use crate::error::StoreError;
use crate::layout;
use crate::records::InboxRecord;
use std::num::NonZeroU64;

impl Txn {
    /// Stores a received message under the next sequence number and, while more than
    /// `capacity` are kept, drops the oldest. Returns the message's sequence number.
    pub fn push_inbox(&self, m: &InboxRecord, capacity: NonZeroU64) -> Result<u64, TxError> {
        let (mut oldest, seq) = self.inbox_bounds()?;
        self.put(INBOX, &seq.to_be_bytes(), &codec::encode(m))?;
        let next = seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            detail: "inbox sequence number out of range".into(),
        })?;
        // A smaller capacity than before drops several at once.
        while next - oldest > capacity.get() {
            self.del(INBOX, &oldest.to_be_bytes())?;
            oldest += 1;
        }
        self.put_inbox_bounds(oldest, next)?;
        Ok(seq)
    }

    /// Deletes every stored message; returns how many there were. Numbering goes on from
    /// where it was, so a message's sequence number is never reused.
    pub fn clear_inbox(&self) -> Result<u64, TxError> {
        let (oldest, next) = self.inbox_bounds()?;
        for seq in oldest..next {
            self.del(INBOX, &seq.to_be_bytes())?;
        }
        if next > oldest {
            self.put_inbox_bounds(next, next)?;
        }
        Ok(next - oldest)
    }

    fn put_inbox_bounds(&self, oldest: u64, next: u64) -> Result<(), TxError> {
        let mut bounds = [0u8; 16];
        bounds[..8].copy_from_slice(&oldest.to_be_bytes());
        bounds[8..].copy_from_slice(&next.to_be_bytes());
        self.put(META, layout::META_INBOX_BOUNDS, &bounds)
    }

    /// (oldest seq, next seq); (0, 0) while nothing was ever received.
    fn inbox_bounds(&self) -> Result<(u64, u64), TxError> {
        let Some(v) = self.t(META).get(layout::META_INBOX_BOUNDS).eng()? else {
            return Ok((0, 0));
        };
        let bad = || StoreError::undecodable("inbox bounds", "not two ordered u64");
        if v.len() != 16 {
            return Err(bad().into());
        }
        let oldest = layout::be_u64(&v[..8]).ok_or_else(bad)?;
        let next = layout::be_u64(&v[8..]).ok_or_else(bad)?;
        if oldest > next {
            return Err(bad().into());
        }
        Ok((oldest, next))
    }
}
