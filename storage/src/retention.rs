//! Retention: what is removed, and when, as of an injected `now`.
//!
//! The rules (design section "retention"):
//! - a vouching session is removed `session_retention` (1 h) after it completes or is
//!   cancelled, together with any queue entries it still has;
//! - a queued delivery is removed on success ([`crate::Txn::mark_delivering`]), after the
//!   maximum retries ([`crate::Txn::delivery_failed`]), or at its `expires_at` (7 days
//!   after it was queued) by [`crate::Store::prune`];
//! - a replay-cache nonce is remembered through its `expires_at` and pruned after it;
//! - a target's recorded decision is kept for `decision_retention`, long enough that a
//!   voucher re-delivering the same session from its queue gets the same answer.
//!
//! Every rule reads only the records that are due, through the expiry index.

use crate::layout::QueueRef;
use core::time::Duration;
use vouchnet_protocol::ids::SessionId;
use vouchnet_protocol::ProtocolConfig;

/// How long finished records are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// A finished session is removed this long after `finished_at`.
    pub session_retention: Duration,
    /// A target's decision is removed this long after `decided_at`.
    pub decision_retention: Duration,
}

impl RetentionPolicy {
    /// The policy the protocol configuration implies: sessions per
    /// `session_retention`; decisions for as long as a voucher may still re-deliver from
    /// its queue (`queue.expiry`) plus the session retention.
    pub fn from_config(config: &ProtocolConfig) -> Self {
        RetentionPolicy {
            session_retention: config.session_retention,
            decision_retention: config.queue.expiry.saturating_add(config.session_retention),
        }
    }
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self::from_config(&ProtocolConfig::default())
    }
}

/// What one [`crate::Store::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Finished sessions removed.
    pub sessions_removed: usize,
    /// Queue entries removed at `expires_at`.
    pub queue_expired: usize,
    /// Vouch targets that became Expired because their queued vouch expired. The node
    /// tells the user; each is also in the audit trail.
    pub targets_expired: Vec<QueueRef>,
    /// Sessions that became Completed because their last open target expired. The node
    /// tells the vouchee the final result, as the protocol's session machine would.
    pub sessions_completed: Vec<SessionId>,
    /// Nonces removed from the replay cache.
    pub nonces_pruned: usize,
    /// Decisions removed.
    pub decisions_pruned: usize,
    /// Pairings in flight removed at `expires_at`.
    pub pairings_expired: usize,
}
