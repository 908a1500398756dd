//! The voucher's sessions, cached per transaction so a session with many targets is
//! decoded and encoded once however many of its targets a transaction touches.

use super::*;

impl Txn {
    pub(super) fn load_session(&self, id: &SessionId) -> Result<(), TxError> {
        if self.sessions.borrow().contains_key(id) {
            return Ok(());
        }
        let stored: Option<VouchingSession> =
            self.get_decoded(SESSIONS, "vouching session", &id.0)?;
        let slot = SessionSlot {
            stored_finished_at: stored.as_ref().and_then(|s| s.finished_at),
            value: stored,
            dirty: false,
        };
        self.sessions.borrow_mut().insert(*id, slot);
        Ok(())
    }

    /// Runs `f` on the session in place (no copy of a large target map), marking it changed
    /// when `f` returns true.
    pub(super) fn with_session<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut VouchingSession) -> Result<(R, bool), TxError>,
    ) -> Result<R, TxError> {
        self.load_session(id)?;
        let mut slots = self.sessions.borrow_mut();
        let slot = slots.get_mut(id).expect("loaded above");
        let session = slot
            .value
            .as_mut()
            .ok_or(StoreError::NotFound(RecordKind::Session))?;
        let (r, changed) = f(session)?;
        slot.dirty |= changed;
        Ok(r)
    }

    /// A vouching session.
    pub fn session(&self, id: &SessionId) -> Result<Option<VouchingSession>, TxError> {
        self.load_session(id)?;
        Ok(self.sessions.borrow()[id].value.clone())
    }

    /// Stores (or replaces) a session without auditing (creation in Pending state, status
    /// updates the protocol makes).
    pub fn put_session(&self, session: &VouchingSession) -> Result<(), TxError> {
        self.load_session(&session.id)?;
        let mut slots = self.sessions.borrow_mut();
        let slot = slots.get_mut(&session.id).expect("loaded above");
        slot.value = Some(session.clone());
        slot.dirty = true;
        Ok(())
    }

    /// Voucher side: stores a new session whose targets were chosen and audits the vouch.
    /// A session is vouched once: an existing id is [`StoreError::AlreadyExists`].
    pub fn record_vouched(&self, session: &VouchingSession, at: Timestamp) -> Result<(), TxError> {
        if self.session(&session.id)?.is_some() {
            return Err(StoreError::AlreadyExists(RecordKind::Session).into());
        }
        self.put_session(session)?;
        self.record_event(
            at,
            AuditEvent::Vouched {
                session: session.id,
                vouchee: session.vouchee,
                vouchee_key: session.vouchee_key,
                targets: session.targets.keys().copied().collect(),
            },
        )?;
        Ok(())
    }

    /// Voucher side: stores the session as updated for a target's signed answer and audits
    /// the answer.
    pub fn record_answer(
        &self,
        session: &VouchingSession,
        target: &DeviceId,
        response: &SignedResponse,
        at: Timestamp,
    ) -> Result<(), TxError> {
        if !session.targets.contains_key(target) {
            return Err(StoreError::NotFound(RecordKind::SessionTarget).into());
        }
        self.put_session(session)?;
        self.record_event(
            at,
            AuditEvent::TargetAnswered {
                session: session.id,
                target: *target,
                response: response.clone(),
            },
        )?;
        Ok(())
    }

    /// Removes a session and every queue entry it still has.
    pub fn remove_session(&self, id: &SessionId) -> Result<Option<VouchingSession>, TxError> {
        let Some(session) = self.session(id)? else {
            return Ok(None);
        };
        let refs = session
            .targets
            .keys()
            .map(|t| QueueRef {
                session_id: *id,
                recipient: *t,
                kind: QueueKind::Vouch,
            })
            .chain(std::iter::once(QueueRef {
                session_id: *id,
                recipient: session.vouchee,
                kind: QueueKind::NotifyVouchee,
            }));
        for r in refs {
            self.take_queue_entry(r)?;
        }
        let mut slots = self.sessions.borrow_mut();
        let slot = slots.get_mut(id).expect("loaded above");
        slot.value = None;
        slot.dirty = true;
        Ok(Some(session))
    }
}
