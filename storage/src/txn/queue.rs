//! The persistent offline queue: enqueue, delivery, retries.

use super::*;

/// What [`Txn::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new entry was queued.
    New,
    /// An entry for the same (session, recipient, kind) was already queued; it is kept as
    /// it was (its attempts and schedule are not reset).
    AlreadyQueued,
}

/// What [`Txn::delivery_failed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retried at this time.
    At(Timestamp),
    /// Dropped undelivered (the entry is removed and a vouch target is Expired): after
    /// the maximum retries, or because `expires_at` had come.
    Dropped(DropReason),
}

/// What expiring a queued vouch did to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing changed (not a vouch, session gone, or the target was no longer Queued).
    Unchanged,
    /// The target became Expired.
    TargetExpired,
    /// The target became Expired and, every target now being final, the session Completed.
    SessionCompleted,
}

impl Txn {
    pub(super) fn adjust_depth(&self, delta: i64) -> Result<(), TxError> {
        let current = match self.t(META).get(META_QUEUE_DEPTH).eng()? {
            Some(v) => layout::be_u64(&v)
                .ok_or_else(|| StoreError::undecodable("queue depth", "not 8 bytes"))?,
            None => 0,
        };
        let next = current
            .checked_add_signed(delta)
            .ok_or_else(|| StoreError::Corrupt {
                detail: "queue depth counter out of range".into(),
            })?;
        self.put(META, META_QUEUE_DEPTH, &next.to_be_bytes())
    }

    /// The queued entry for `r`.
    pub fn queue_entry(&self, r: QueueRef) -> Result<Option<QueueEntry>, TxError> {
        let Some(next) = self.t(QUEUE_INDEX).get(r.to_bytes()).eng()? else {
            return Ok(None);
        };
        let next = layout::be_u64(&next)
            .ok_or_else(|| StoreError::undecodable("queue index", "not 8 bytes"))?;
        let key = layout::queue_key(Timestamp::from_millis(next), r);
        match self.get_decoded::<QueueEntry>(QUEUE, "queue entry", &key)? {
            Some(e) => Ok(Some(e)),
            None => Err(StoreError::Corrupt {
                detail: "queue index points at a missing entry".into(),
            }
            .into()),
        }
    }

    pub(super) fn insert_queue_entry(&self, e: &QueueEntry) -> Result<(), TxError> {
        let r = QueueRef::of(e);
        let refb = r.to_bytes();
        self.put(
            QUEUE,
            &layout::queue_key(e.next_attempt_at, r),
            &codec::encode(e),
        )?;
        self.put(
            QUEUE_INDEX,
            &refb,
            &e.next_attempt_at.as_millis().to_be_bytes(),
        )?;
        self.put(
            EXPIRY,
            &layout::expiry_key(ExpiryKind::Queue, e.expires_at, &refb),
            &[],
        )
    }

    /// Removes the entry for `r` from the queue and its indexes, returning it.
    pub(super) fn take_queue_entry(&self, r: QueueRef) -> Result<Option<QueueEntry>, TxError> {
        let Some(e) = self.queue_entry(r)? else {
            return Ok(None);
        };
        let refb = r.to_bytes();
        self.del(QUEUE, &layout::queue_key(e.next_attempt_at, r))?;
        self.del(QUEUE_INDEX, &refb)?;
        self.del(
            EXPIRY,
            &layout::expiry_key(ExpiryKind::Queue, e.expires_at, &refb),
        )?;
        self.adjust_depth(-1)?;
        Ok(Some(e))
    }

    pub(super) fn require_queue_entry(&self, r: QueueRef) -> Result<QueueEntry, TxError> {
        Ok(self
            .take_queue_entry(r)?
            .ok_or(StoreError::NotFound(RecordKind::QueueEntry))?)
    }

    /// Queues a delivery for an offline recipient. For a vouch, the target's status becomes
    /// Queued in the same transaction, so the UI never shows Queued for something that is
    /// not on disk (the store flushes before `write` returns).
    pub fn enqueue(&self, e: &QueueEntry) -> Result<Enqueued, TxError> {
        let r = QueueRef::of(e);
        let already = self.t(QUEUE_INDEX).get(r.to_bytes()).eng()?.is_some();
        let kind = e.kind;
        let recipient = e.recipient;
        self.with_session(&e.session_id, |s| match kind {
            QueueKind::Vouch => {
                let status = s
                    .targets
                    .get_mut(&recipient)
                    .ok_or(StoreError::NotFound(RecordKind::SessionTarget))?;
                if status.is_terminal() {
                    return Err(StoreError::InvalidTransition {
                        detail: "a target with a final status cannot be queued",
                    }
                    .into());
                }
                let changed = *status != VouchStatus::Queued;
                *status = VouchStatus::Queued;
                Ok(((), changed))
            }
            QueueKind::NotifyVouchee => {
                if s.vouchee != recipient {
                    return Err(StoreError::InvalidInput {
                        detail: "a vouchee notification must be addressed to the session's vouchee",
                    }
                    .into());
                }
                Ok(((), false))
            }
        })?;
        if already {
            return Ok(Enqueued::AlreadyQueued);
        }
        self.insert_queue_entry(e)?;
        self.adjust_depth(1)?;
        Ok(Enqueued::New)
    }

    /// A queued vouch was handed to its (now online) target: the entry leaves the queue and
    /// the target's status becomes `waiting` (which must be [`VouchStatus::Waiting`]) in one
    /// transaction. Fails with [`StoreError::InvalidTransition`] unless the target is
    /// Queued, so a vouch is never delivered twice from the queue.
    pub fn mark_delivering(
        &self,
        r: QueueRef,
        waiting: &VouchStatus,
    ) -> Result<QueueEntry, TxError> {
        if r.kind != QueueKind::Vouch {
            return Err(StoreError::InvalidInput {
                detail: "only a vouch entry moves to Waiting",
            }
            .into());
        }
        if !matches!(waiting, VouchStatus::Waiting { .. }) {
            return Err(StoreError::InvalidInput {
                detail: "a delivered vouch must be Waiting",
            }
            .into());
        }
        if self.queue_entry(r)?.is_none() {
            return Err(StoreError::NotFound(RecordKind::QueueEntry).into());
        }
        self.with_session(&r.session_id, |s| {
            let status = s
                .targets
                .get_mut(&r.recipient)
                .ok_or(StoreError::NotFound(RecordKind::SessionTarget))?;
            if *status != VouchStatus::Queued {
                return Err(StoreError::InvalidTransition {
                    detail: "the target is not Queued",
                }
                .into());
            }
            *status = waiting.clone();
            Ok(((), true))
        })?;
        self.require_queue_entry(r)
    }

    /// The vouchee was told of these acceptances: the notification leaves the queue and the
    /// session records who it was told of, in one transaction.
    pub fn mark_notified(&self, r: QueueRef, told: &[DeviceId]) -> Result<QueueEntry, TxError> {
        if r.kind != QueueKind::NotifyVouchee {
            return Err(StoreError::InvalidInput {
                detail: "only a vouchee notification is marked notified",
            }
            .into());
        }
        if self.session(&r.session_id)?.is_none() {
            return Err(StoreError::NotFound(RecordKind::Session).into());
        }
        let entry = self.require_queue_entry(r)?;
        self.with_session(&r.session_id, |s| {
            let mut changed = false;
            for t in told {
                if !s.vouchee_notified.contains(t) {
                    s.vouchee_notified.push(*t);
                    changed = true;
                }
            }
            Ok(((), changed))
        })?;
        Ok(entry)
    }

    /// Moves an entry to a new attempt time without counting an attempt (the recipient was
    /// offline when polled).
    pub fn reschedule(
        &self,
        r: QueueRef,
        next_attempt_at: Timestamp,
    ) -> Result<QueueEntry, TxError> {
        let mut e = self.require_queue_entry(r)?;
        e.next_attempt_at = next_attempt_at;
        self.insert_queue_entry(&e)?;
        self.adjust_depth(1)?;
        Ok(e)
    }

    /// A real delivery failure. The protocol's queue policy
    /// ([`vouchnet_protocol::queue::on_delivery_failed`]) decides: retry after an
    /// exponential backoff with one more attempt counted, or drop the entry (maximum
    /// retries reached, or expired), in which case its target expires as in
    /// the entries [`crate::Store::prune`] expires.
    pub fn delivery_failed(
        &self,
        r: QueueRef,
        now: Timestamp,
        policy: &QueuePolicy,
    ) -> Result<Retry, TxError> {
        let e = self.require_queue_entry(r)?;
        match vouchnet_protocol::queue::on_delivery_failed(&e, now, policy) {
            QueueOutcome::Retry(next) => {
                self.insert_queue_entry(&next)?;
                self.adjust_depth(1)?;
                Ok(Retry::At(next.next_attempt_at))
            }
            QueueOutcome::Drop(reason) => {
                self.expire_target(r, now)?;
                Ok(Retry::Dropped(reason))
            }
            QueueOutcome::Keep | QueueOutcome::Remove => Err(StoreError::Internal {
                detail: "the queue policy answered a failure with keep or remove".into(),
            }
            .into()),
        }
    }

    /// Removes an entry without touching its session (the caller updates the session).
    pub fn remove_queue_entry(&self, r: QueueRef) -> Result<Option<QueueEntry>, TxError> {
        self.take_queue_entry(r)
    }

    /// After an entry was removed undelivered: a vouch target that is still Queued becomes
    /// Expired (audited), and when that leaves every target of an in-progress session
    /// final, the session is Completed at `at`, mirroring the protocol's session machine
    /// (`VouchingSession::on_queue_expired`), so that retention removes it in time. The
    /// caller learns of both so it can tell the vouchee and the user.
    pub(crate) fn expire_target(&self, r: QueueRef, at: Timestamp) -> Result<Expiry, TxError> {
        if r.kind != QueueKind::Vouch || self.session(&r.session_id)?.is_none() {
            return Ok(Expiry::Unchanged);
        }
        let outcome = self.with_session(&r.session_id, |s| {
            match s.targets.get_mut(&r.recipient) {
                Some(status) if *status == VouchStatus::Queued => *status = VouchStatus::Expired,
                _ => return Ok((Expiry::Unchanged, false)),
            }
            if s.state == SessionState::InProgress
                && s.targets.values().all(VouchStatus::is_terminal)
            {
                s.state = SessionState::Completed;
                s.finished_at = Some(at);
                return Ok((Expiry::SessionCompleted, true));
            }
            Ok((Expiry::TargetExpired, true))
        })?;
        if outcome != Expiry::Unchanged {
            self.record_event(
                at,
                AuditEvent::VouchExpired {
                    session: r.session_id,
                    target: r.recipient,
                },
            )?;
        }
        Ok(outcome)
    }
}
