//! The offline queue worker, and retention.
//!
//! Whatever the voucher cannot deliver now waits on disk as a `QueueEntry` (a vouch to an
//! offline target, acceptances the offline vouchee has not heard of). The worker runs
//! every `queue.poll_interval` (10 s by default) **and** the moment a device comes online
//! (it proved its key), so a device that wakes up gets its vouches at once:
//!
//! - a due entry whose recipient is online is delivered: a vouch is **signed afresh**
//!   (`deliver_queued`: new nonce, `issued_at = now`) and leaves the queue in the same
//!   transaction that makes the target Waiting (`Store::mark_delivering`); a notification
//!   leaves the queue when the vouchee acknowledges it (`Store::mark_notified`);
//! - a due entry whose recipient is offline is looked at again one poll later
//!   (`Store::reschedule`, no attempt counted: a device asleep for a day must not use up
//!   its retries), and the worker dials the recipient's known addresses;
//! - a delivery that fails counts as an attempt and backs off (`queue::on_delivery_failed`);
//!   after `queue.max_retries` failures the vouch expires;
//! - an entry is deleted at `expires_at` (7 days) by `Store::prune`, which also removes
//!   sessions one hour after they finished. Retention runs at every poll.
//!
//! Nothing here is kept only in memory except which entries are being delivered right now:
//! a voucher restarted with entries queued finds them on disk and delivers them.

use crate::event_loop::{EventLoop, Token};
use crate::events::{NodeEvent, ResourceKind};
use crate::NodeError;
use rand_core::OsRng;
use std::collections::BTreeSet;
use vouchnet_protocol::messages::Message;
use vouchnet_protocol::model::{QueueEntry, QueueKind, TrustLevel};
use vouchnet_protocol::queue;
use vouchnet_protocol::session::{SessionError, VoucherCtx, VoucherOutput};
use vouchnet_protocol::{DeviceId, SessionId, Timestamp};
use vouchnet_storage::{AuditEvent, Enqueued, QueueRef, RetentionPolicy};

/// Most queue entries one poll handles (the rest wait for the next poll).
const BATCH: usize = 256;

impl EventLoop {
    /// At start, puts back in the queue what was in flight when the node stopped, as the
    /// store alone can tell (one pass over the sessions):
    /// - the vouches, as the session machine decides (`VouchingSession::on_restart`): an
    ///   answer given to one was lost with the connection, and the deadline would otherwise
    ///   record a timeout while the target may trust the vouchee;
    /// - the acceptances a vouchee has not acknowledged: a notification on its way (or
    ///   waiting for the one on its way) lives only in memory, and without this the targets
    ///   would trust a vouchee that never learns of them. Hearing of one twice is harmless
    ///   (the vouchee stores nothing the second time).
    pub(crate) fn requeue_after_restart(&mut self) -> Result<(), NodeError> {
        let now = self.clock.now();
        for mut session in self.store.sessions()? {
            let outputs = {
                let view = self.view();
                let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
                session.on_restart(&ctx, now)
            };
            if !outputs.is_empty() {
                let count = outputs.len();
                self.commit_session(&session, outputs, |_| Ok(()))?;
                tracing::info!(
                    "{count} vouch(es) of session {} were in flight when this node stopped: queued again",
                    session.id
                );
            }
            let held = self
                .paired_record(&session.vouchee)
                .is_some_and(|d| d.trust_level != TrustLevel::Blocked);
            if session.unnotified_acceptances() > 0
                && held
                && self.queue_notification(session.id, session.vouchee)? == Enqueued::New
            {
                tracing::info!(
                    vouchee = %session.vouchee,
                    "{} acceptance(s) of session {} not yet acknowledged: queued for the vouchee",
                    session.unnotified_acceptances(),
                    session.id
                );
            }
        }
        Ok(())
    }

    /// One poll: retention, then every due entry.
    pub(crate) fn queue_tick(&mut self) {
        let now = self.clock.now();
        self.retention(now);
        let due = match self.store.due(now, BATCH) {
            Ok(d) => d,
            Err(e) => return tracing::error!("cannot read the offline queue: {e}"),
        };
        let mut offline = Vec::new();
        for entry in due {
            if self.proxy.in_flight.contains(&QueueRef::of(&entry))
                || queue::is_expired(&entry, now)
            {
                continue;
            }
            if self.presence.is_online(&entry.recipient) {
                self.deliver_entry(entry, now);
            } else {
                offline.push(entry);
            }
        }
        if offline.is_empty() {
            return;
        }
        let next = now.saturating_add(self.protocol.queue.poll_interval);
        let result = self.store.write(|tx| {
            for e in &offline {
                tx.reschedule(QueueRef::of(e), next)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!("cannot reschedule queued deliveries: {e}");
        }
        let recipients: BTreeSet<DeviceId> = offline.iter().map(|e| e.recipient).collect();
        for device in recipients {
            if !self.presence.is_connected(&device) {
                self.dial_paired(device);
            }
        }
    }

    /// `device` came online: deliver everything the queue holds for it now.
    pub(crate) fn deliver_queued_for(&mut self, device: DeviceId) {
        let now = self.clock.now();
        let entries = match self.store.queue_entries() {
            Ok(e) => e,
            Err(e) => return tracing::error!("cannot read the offline queue: {e}"),
        };
        for entry in entries {
            if entry.recipient == device
                && !queue::is_expired(&entry, now)
                && !self.proxy.in_flight.contains(&QueueRef::of(&entry))
            {
                self.deliver_entry(entry, now);
            }
        }
    }

    fn deliver_entry(&mut self, entry: QueueEntry, now: Timestamp) {
        let r = QueueRef::of(&entry);
        // Read for update, through the one place that stores batched answers to the session
        // first (today the batch is always empty here: a delivery follows a key proof or a
        // poll, and the loop stores the batch before either).
        let mut session = match self.session_for_update(&entry.session_id) {
            Ok(Some(s)) => s,
            Ok(None) => {
                // The session is gone (removed by retention or with its vouchee).
                let _ = self.store.remove_queue_entry(r);
                return;
            }
            // Kept: the next poll tries again.
            Err(e) => return tracing::error!("cannot read vouching session {}: {e}", r.session_id),
        };
        match entry.kind {
            QueueKind::Vouch => {
                let out = {
                    let view = self.view();
                    let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
                    session.deliver_queued(&ctx, &entry.recipient, now, &mut OsRng)
                };
                match out {
                    Ok(VoucherOutput::SendVouch { to, request }) => {
                        let waiting = session.targets[&to].clone();
                        if let Err(e) = self.store.mark_delivering(r, &waiting) {
                            return tracing::error!(%to, "cannot mark the vouch delivered: {e}");
                        }
                        tracing::info!(%to, "delivering a queued vouch of session {}", session.id);
                        self.session_changed(&session);
                        self.send(
                            to,
                            Message::ProxyPairingRequest(request),
                            Token::Vouch {
                                session: session.id,
                                target: to,
                                queued: Some(entry),
                            },
                        );
                    }
                    Ok(_) => {}
                    Err(
                        SessionError::Closed(_)
                        | SessionError::NotQueued(_)
                        | SessionError::NotATarget(_),
                    ) => {
                        // Stale: the session moved on without this entry.
                        let _ = self.store.remove_queue_entry(r);
                    }
                    Err(e) => {
                        // The target can no longer be vouched to (removed, blocked): the
                        // queued vouch expires undelivered.
                        tracing::info!(target = %entry.recipient, "queued vouch dropped: {e}");
                        self.expire_queued(session, entry, now);
                    }
                }
            }
            QueueKind::NotifyVouchee => {
                let complete = {
                    let view = self.view();
                    session.vouchee_notification(&view)
                };
                self.proxy.in_flight.insert(r);
                self.dispatch_notification(session.id, entry.recipient, complete, Some(r));
            }
        }
    }

    /// A queued vouch that cannot be delivered any more: Expired, entry removed, audited.
    fn expire_queued(
        &mut self,
        mut session: vouchnet_protocol::model::VouchingSession,
        entry: QueueEntry,
        now: Timestamp,
    ) {
        let target = entry.recipient;
        let outputs = {
            let view = self.view();
            let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
            session.on_queue_expired(&ctx, &target, now)
        };
        let Ok(outputs) = outputs else {
            let _ = self.store.remove_queue_entry(QueueRef::of(&entry));
            return;
        };
        let id = session.id;
        let result = self.commit_session(&session, outputs, |tx| {
            tx.remove_queue_entry(QueueRef::of(&entry))?;
            tx.record_event(
                now,
                AuditEvent::VouchExpired {
                    session: id,
                    target,
                },
            )?;
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!("cannot store the expired vouch: {e}");
        }
    }

    /// Retention as of `now`: finished sessions after `session_retention`, queued vouches
    /// at their expiry (their targets Expired, the vouchee told when that completes a
    /// session), and the replay cache and decisions past their windows.
    pub(crate) fn retention(&mut self, now: Timestamp) {
        let policy = RetentionPolicy::from_config(&self.protocol);
        let removable: Vec<SessionId> = match self.store.sessions() {
            Ok(list) => list
                .into_iter()
                .filter(|s| s.is_removable(now, policy.session_retention))
                .map(|s| s.id)
                .collect(),
            Err(e) => return tracing::error!("cannot read vouching sessions: {e}"),
        };
        let report = match self.store.prune(now, &policy) {
            Ok(r) => r,
            Err(e) => return tracing::error!("retention failed: {e}"),
        };
        for id in removable {
            if matches!(self.store.session(&id), Ok(None)) {
                self.proxy.forget_session(&id);
                self.hub.publish(NodeEvent::ResourceDeleted {
                    resource: ResourceKind::VouchingSession,
                    id: id.to_hex(),
                });
            }
        }
        let touched: BTreeSet<SessionId> = report
            .targets_expired
            .iter()
            .map(|r| r.session_id)
            .collect();
        for id in &touched {
            if let Ok(Some(s)) = self.store.session(id) {
                tracing::info!("queued vouches of session {id} expired undelivered");
                self.session_changed(&s);
            }
        }
        for id in report.sessions_completed {
            let Ok(Some(s)) = self.store.session(&id) else {
                continue;
            };
            // The session machine tells the vouchee the whole result when the last target
            // is final; an expiry completes it here, so the node does.
            self.tell_vouchee(&s);
        }
    }
}
