//! Per-record removal used by [`crate::Store::prune`].

use super::*;

impl Txn {
    pub(crate) fn prune_expiry_key(&self, key: &[u8]) -> Result<(), TxError> {
        self.del(EXPIRY, key).map(|_| ())
    }

    /// Removes a session whose retention ran out, if its `finished_at` still says so.
    pub(crate) fn prune_session(&self, id: &SessionId, cutoff: Timestamp) -> Result<bool, TxError> {
        match self.session(id)? {
            Some(s) if s.finished_at.is_some_and(|f| f <= cutoff) => {
                self.remove_session(id)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes a queue entry whose `expires_at` has come, expiring its target; returns
    /// what that did to the session, or `None` if the entry was not (or no longer) due.
    pub(crate) fn prune_queue(
        &self,
        r: QueueRef,
        now: Timestamp,
    ) -> Result<Option<Expiry>, TxError> {
        match self.queue_entry(r)? {
            Some(e) if e.expires_at <= now => {
                self.take_queue_entry(r)?;
                Ok(Some(self.expire_target(r, now)?))
            }
            _ => Ok(None),
        }
    }

    /// Removes a nonce past its window.
    pub(crate) fn prune_nonce(&self, nonce_key: &[u8], now: Timestamp) -> Result<bool, TxError> {
        match self.t(REPLAY).get(nonce_key).eng()? {
            Some(v) if layout::be_u64(&v).is_some_and(|at| at < now.as_millis()) => {
                self.del(REPLAY, nonce_key)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes a decision whose retention ran out.
    pub(crate) fn prune_decision(&self, key: &[u8], cutoff: Timestamp) -> Result<bool, TxError> {
        match self.get_decoded::<DecisionRecord>(DECISIONS, "decision record", key)? {
            Some(d) if d.decided_at <= cutoff => {
                self.del(DECISIONS, key)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes a pairing in flight past its expiry.
    pub(crate) fn prune_pairing(&self, peer_key: &[u8], now: Timestamp) -> Result<bool, TxError> {
        match self.get_decoded::<PairingRecord>(PAIRINGS, "pairing record", peer_key)? {
            Some(p) if p.expires_at <= now => {
                self.del(PAIRINGS, peer_key)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
