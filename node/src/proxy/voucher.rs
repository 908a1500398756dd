//! The voucher: one [`VouchingSession`] per device it vouches for.
//!
//! 1. A direct pairing completes: if there is any other directly paired device to vouch to,
//!    a session is created in Pending, stored, and announced (`ProxyPairingVouchingReady`);
//!    with `auto_vouch_to_all` the targets are chosen at once.
//! 2. `vouch <VOUCHEE> --to …|--all` (`EventLoop::vouch`) chooses the targets
//!    (`select_targets`): online targets get a freshly signed vouch, offline ones a queue
//!    entry. The session, the audit entry and every queue entry are written in **one**
//!    transaction before anything is sent, so the user never sees "Queued" for a vouch that
//!    is not on disk, and a vouch to many targets costs one flush.
//! 3. Pending notices and signed responses arrive from targets; each is accepted only from
//!    the target that was asked, for the vouch in flight (the session machine checks). A
//!    response is stored with its audit entry before the vouchee is told.
//! 4. A target that does not answer by its deadline is rejected (`timeout`); one that does
//!    not speak the proxy-pairing protocol is rejected (`unsupported`); a send that fails
//!    puts the vouch in the queue.
//! 5. The vouchee hears of each acceptance (`ProxyPairingComplete`), or a queue entry waits
//!    for it; when every target is final it gets the whole result.

use super::path;
use super::view::NodeView;
use crate::error::NodeError;
use crate::event_loop::{ack, error_reply, EventLoop, Proto, Token, Undelivered};
use crate::events::{NodeEvent, ResourceKind};
use crate::network::codec::WireFrame;
use crate::views::VouchOutcome;
use libp2p::request_response::ResponseChannel;
use rand_core::OsRng;
use std::collections::BTreeMap;
use vouchnet_protocol::messages::{
    ErrorCode, Message, ProxyPairingComplete, ProxyPairingPending, ProxyPairingResponse,
    SignedResponse, MAX_COMPLETE_ENTRIES,
};
use vouchnet_protocol::model::{
    PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchStatus, VouchingSession,
};
use vouchnet_protocol::pairing::PairingStage;
use vouchnet_protocol::queue::{self, QueueOutcome};
use vouchnet_protocol::session::{SessionError, VoucherCtx, VoucherOutput};
use vouchnet_protocol::{DeviceId, SessionId, Timestamp};
use vouchnet_storage::{
    AuditEvent, ConfirmedAction, DeviceRecord, Enqueued, QueueRef, StoreError, TxError, Txn,
};

/// Targets' answers that were checked and applied to their sessions in memory, waiting to
/// be stored together (one transaction, one flush) before they are acknowledged and acted
/// on. Filled while the event loop handles the swarm events that are ready, and flushed
/// before anything else reads a session ([`EventLoop::flush_answers`]).
#[derive(Default)]
pub(crate) struct AnswerBatch {
    /// The sessions as the answers left them.
    sessions: BTreeMap<SessionId, VouchingSession>,
    /// The answers, in arrival order.
    answers: Vec<Answer>,
    /// The requests that carried them (answers that came as responses have none),
    /// acknowledged once they are stored.
    acks: Vec<ResponseChannel<WireFrame>>,
}

impl std::fmt::Debug for AnswerBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerBatch")
            .field("answers", &self.answers.len())
            .finish_non_exhaustive()
    }
}

struct Answer {
    session: SessionId,
    target: DeviceId,
    response: SignedResponse,
    outputs: Vec<VoucherOutput>,
    at: Timestamp,
}

/// The stable name of a refused session input, for events and logs.
pub fn session_error_name(e: &SessionError) -> &'static str {
    match e {
        SessionError::NotPending(_) => "not_pending",
        SessionError::Closed(_) => "session_closed",
        SessionError::NoTargets => "no_targets",
        SessionError::TooManyTargets { .. } => "too_many_targets",
        SessionError::TargetIsVouchee(_) => "target_is_vouchee",
        SessionError::TargetIsSelf(_) => "target_is_self",
        SessionError::TargetNotPaired(_) => "target_not_paired",
        SessionError::TargetNotDirect(_) => "target_not_direct",
        SessionError::TargetBlocked(_) => "target_blocked",
        SessionError::DuplicateTarget(_) => "duplicate_target",
        SessionError::MissingPairingKey(_) => "missing_pairing_key",
        SessionError::NotATarget(_) => "not_a_target",
        SessionError::NotWaiting(_) => "not_waiting",
        SessionError::NotQueued(_) => "not_queued",
        SessionError::AlreadyFinal(_) => "already_final",
        SessionError::BadSignature => "bad_signature",
        SessionError::MalformedResponse(_) => "malformed_response",
        SessionError::UnsupportedResponseVersion(_) => "unsupported_response_version",
        SessionError::WrongSession => "wrong_session",
        SessionError::WrongNonce => "wrong_nonce",
        SessionError::WrongDigest => "wrong_digest",
        SessionError::WrongResponder => "wrong_responder",
        SessionError::WrongVoucher => "wrong_voucher",
        SessionError::WrongVouchee => "wrong_vouchee",
        _ => "other",
    }
}

/// Writes, inside `tx`, what the session machine asked to persist besides the session
/// itself: queue entries to add and to remove.
pub(crate) fn persist_outputs(
    tx: &Txn,
    session: SessionId,
    outputs: &[VoucherOutput],
) -> Result<(), TxError> {
    for out in outputs {
        match out {
            VoucherOutput::Enqueue(entry) => {
                tx.enqueue(entry)?;
            }
            VoucherOutput::Dequeue { recipient, kind } => {
                tx.remove_queue_entry(QueueRef {
                    session_id: session,
                    recipient: *recipient,
                    kind: *kind,
                })?;
            }
            VoucherOutput::SendVouch { .. } | VoucherOutput::NotifyVouchee { .. } => {}
        }
    }
    Ok(())
}

/// Says, for the operator, what a deadline did to each vouch of `session` that it changed
/// (`before` holds their statuses before it).
fn log_timeouts(session: &VouchingSession, before: &BTreeMap<DeviceId, VouchStatus>) {
    for (target, status) in &session.targets {
        if before.get(target) == Some(status) {
            continue;
        }
        match status {
            VouchStatus::Rejected { reason, .. } => tracing::info!(
                %target,
                "no answer to the vouch of session {} by its deadline: rejected ({})",
                session.id,
                crate::sessions::rejection_name(reason)
            ),
            VouchStatus::Queued => tracing::info!(
                %target,
                "its user is still asked at the deadline of the vouch of session {}: \
                 delivered again from the queue",
                session.id
            ),
            _ => {}
        }
    }
}

impl EventLoop {
    /// The node as the protocol machines read it.
    pub(crate) fn view(&self) -> NodeView<'_> {
        let pairing_prompts = self
            .pairing
            .pending()
            .iter()
            .filter(|p| matches!(p.stage, PairingStage::AwaitingUser { .. }))
            .count();
        NodeView {
            store: &self.store,
            presence: &self.presence,
            proxy: &self.proxy,
            pairing_prompts,
            addrbook: &self.addrbook,
        }
    }

    /// Tells the UI a proxy-pairing message was refused (nothing was stored for it).
    pub(crate) fn refused(&self, from: DeviceId, message: &str, reason: &str) {
        tracing::info!(%from, "{message} refused: {reason}");
        self.hub.publish(NodeEvent::ProxyMessageRefused {
            from: from.to_string(),
            message: message.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Publishes a session's current view.
    pub(crate) fn publish_session(&self, session: &VouchingSession) {
        self.hub.publish(NodeEvent::ResourceChanged {
            resource: ResourceKind::VouchingSession,
            id: session.id.to_hex(),
            data: serde_json::to_value(crate::sessions::view(session)).expect("views serialize"),
        });
    }

    /// Directly paired, not blocked devices other than `except`: whom this device can vouch
    /// to.
    fn direct_targets(&self, except: &DeviceId) -> Result<Vec<DeviceId>, NodeError> {
        Ok(self
            .store
            .devices()?
            .into_iter()
            .filter(|d| {
                d.pairing_type == PairingType::Direct
                    && d.trust_level != TrustLevel::Blocked
                    && d.device_id != *except
            })
            .map(|d| d.device_id)
            .collect())
    }

    /// After a direct pairing with `rec`: a Pending session, when there is anyone to vouch
    /// to, announced as `ProxyPairingVouchingReady` (and started at once with
    /// `auto_vouch_to_all`).
    pub(crate) fn vouching_ready(&mut self, rec: &DeviceRecord) {
        let targets = match self.direct_targets(&rec.device_id) {
            Ok(t) => t,
            Err(e) => return tracing::error!("cannot list devices: {e}"),
        };
        if targets.is_empty() {
            return;
        }
        let now = self.clock.now();
        let session = VouchingSession::new(
            SessionId::random(&mut OsRng),
            rec.device_id,
            rec.public_key,
            rec.name.clone(),
            now,
        );
        if let Err(e) = self.store.put_session(&session) {
            return tracing::error!("cannot store the vouching session: {e}");
        }
        self.session_changed(&session);
        self.hub.publish(NodeEvent::ProxyPairingVouchingReady {
            session_id: session.id.to_hex(),
            vouchee: rec.device_id.to_string(),
            vouchee_name: rec.name.as_str().to_owned(),
        });
        if self.protocol.auto_vouch_to_all {
            if let Err(e) = self.start_vouching(session, &targets, false) {
                tracing::warn!(vouchee = %rec.device_id, "automatic vouch failed: {e}");
            }
        }
    }

    /// `vouch <VOUCHEE> --to …|--all`.
    pub(crate) fn vouch(
        &mut self,
        vouchee: DeviceId,
        to: Vec<DeviceId>,
        all: bool,
    ) -> Result<VouchOutcome, NodeError> {
        path::step(path::VOUCH_COMMAND);
        if !self.proxy_enabled {
            return Err(NodeError::Conflict(
                "proxy pairing is disabled on this device (proxy_pairing = false)".into(),
            ));
        }
        let rec = self.require_device(&vouchee)?;
        if rec.pairing_type != PairingType::Direct {
            return Err(NodeError::Conflict(format!(
                "{vouchee} is not paired directly: only a device paired directly can be vouched for"
            )));
        }
        if rec.trust_level != TrustLevel::Trusted {
            return Err(NodeError::Conflict(format!(
                "{vouchee} is {}: only a trusted device can be vouched for",
                crate::views::trust_level_name(rec.trust_level)
            )));
        }
        let targets = if all {
            self.direct_targets(&vouchee)?
        } else {
            to
        };
        if targets.is_empty() {
            return Err(NodeError::InvalidArgument(
                "no device to vouch to: pair another device directly first".into(),
            ));
        }
        // The Pending session created at pairing, or a new one.
        let pending = match self.proxy.pending_session(&vouchee) {
            Some(id) => self
                .store
                .session(&id)?
                .filter(|s| s.vouchee == vouchee && s.state == SessionState::Pending),
            None => None,
        };
        let session = match pending {
            Some(s) => s,
            None => VouchingSession::new(
                SessionId::random(&mut OsRng),
                vouchee,
                rec.public_key,
                rec.name.clone(),
                self.clock.now(),
            ),
        };
        let id = self.start_vouching(session, &targets, true)?;
        Ok(VouchOutcome {
            session_id: id.to_hex(),
        })
    }

    /// Chooses `targets` for `session`, persists everything in one transaction, then sends
    /// the vouches to the online targets.
    fn start_vouching(
        &mut self,
        mut session: VouchingSession,
        targets: &[DeviceId],
        by_user: bool,
    ) -> Result<SessionId, NodeError> {
        let now = self.clock.now();
        let outputs = {
            let view = self.view();
            let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
            session.select_targets(&ctx, targets, now, &mut OsRng)
        }
        .map_err(|e| match e {
            SessionError::TargetNotPaired(_) => NodeError::NotFound(e.to_string()),
            SessionError::NotPending(_) | SessionError::Closed(_) => {
                NodeError::Conflict(e.to_string())
            }
            _ => NodeError::InvalidArgument(e.to_string()),
        })?;
        path::step(path::VOUCH_SIGNED);
        self.store.write(|tx| {
            tx.put_session(&session)?;
            tx.record_event(
                now,
                AuditEvent::Vouched {
                    session: session.id,
                    vouchee: session.vouchee,
                    vouchee_key: session.vouchee_key,
                    targets: session.targets.keys().copied().collect(),
                },
            )?;
            if by_user {
                tx.record_event(
                    now,
                    AuditEvent::UserConfirmed {
                        action: ConfirmedAction::VouchTargets {
                            session: session.id,
                        },
                    },
                )?;
            }
            persist_outputs(tx, session.id, &outputs)
        })?;
        path::step(path::VOUCH_STORED);
        tracing::info!(
            vouchee = %session.vouchee,
            "vouching to {} device(s), session {}",
            session.targets.len(),
            session.id
        );
        // Sent before the UI is told: the vouches are on disk, and every step after this
        // one waits on the network.
        self.send_outputs(&session, outputs);
        self.session_changed(&session);
        path::step(path::VOUCH_SENT);
        Ok(session.id)
    }

    /// Bookkeeping after a session was persisted: its deadline, and the UI.
    pub(crate) fn session_changed(&mut self, session: &VouchingSession) {
        self.proxy.track_session(session);
        self.publish_session(session);
    }

    /// Sends what the session machine asked to send (after it was persisted).
    pub(crate) fn send_outputs(&mut self, session: &VouchingSession, outputs: Vec<VoucherOutput>) {
        for out in outputs {
            match out {
                VoucherOutput::SendVouch { to, request } => self.send(
                    to,
                    Message::ProxyPairingRequest(request),
                    Token::Vouch {
                        session: session.id,
                        target: to,
                        queued: None,
                    },
                ),
                VoucherOutput::NotifyVouchee { to, complete } => {
                    self.send_notification(session.id, to, complete)
                }
                VoucherOutput::Enqueue(_) | VoucherOutput::Dequeue { .. } => {}
            }
        }
    }

    /// Sends the vouchee of `session` the notification `complete`, remembering which
    /// acceptances it tells of (they are marked told once it is acknowledged). If one is on
    /// its way already, this one waits and goes out, brought up to date, once that one
    /// settles (see [`super::ProxyState::coalesce_notification`]).
    fn send_notification(
        &mut self,
        session: SessionId,
        to: DeviceId,
        complete: ProxyPairingComplete,
    ) {
        if self.proxy.coalesce_notification(session) {
            return;
        }
        self.dispatch_notification(session, to, complete, None);
    }

    /// Sends `complete` to the vouchee `to`, remembering which acceptances it tells of and,
    /// for a delivery from the queue, which entry it settles.
    pub(crate) fn dispatch_notification(
        &mut self,
        session: SessionId,
        to: DeviceId,
        complete: ProxyPairingComplete,
        queued: Option<QueueRef>,
    ) {
        let told = complete.accepted.iter().map(|a| a.device_id).collect();
        self.send(
            to,
            Message::ProxyPairingComplete(complete),
            Token::Notify {
                session,
                told,
                queued,
            },
        );
    }

    /// Queues a notification for the vouchee `vouchee` of `session` (one entry per session:
    /// an existing one is kept); its delivery tells everything not yet acknowledged.
    pub(crate) fn queue_notification(
        &mut self,
        session: SessionId,
        vouchee: DeviceId,
    ) -> Result<Enqueued, StoreError> {
        let entry = queue::new_entry(
            session,
            vouchee,
            QueueKind::NotifyVouchee,
            self.clock.now(),
            &self.protocol.queue,
        );
        self.store.enqueue(&entry)
    }

    /// Tells the vouchee of `session` what it has not heard yet: now if it is online,
    /// else through the queue.
    pub(crate) fn tell_vouchee(&mut self, session: &VouchingSession) {
        if self.presence.is_online(&session.vouchee) {
            self.notify_vouchee_now(session);
        } else if let Err(e) = self.queue_notification(session.id, session.vouchee) {
            tracing::warn!(vouchee = %session.vouchee, "cannot queue the vouchee's notification: {e}");
        }
    }

    /// Tells the (online) vouchee of `session` what it has not heard yet, as the session
    /// machine words it.
    pub(crate) fn notify_vouchee_now(&mut self, session: &VouchingSession) {
        let complete = {
            let view = self.view();
            session.vouchee_notification(&view)
        };
        self.send_notification(session.id, session.vouchee, complete);
    }

    /// Persists a session changed by the machine together with its queue changes (and
    /// `extra` writes), then tells the UI and sends.
    pub(crate) fn commit_session(
        &mut self,
        session: &VouchingSession,
        outputs: Vec<VoucherOutput>,
        extra: impl Fn(&Txn) -> Result<(), TxError>,
    ) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.put_session(session)?;
            persist_outputs(tx, session.id, &outputs)?;
            extra(tx)
        })?;
        self.session_changed(session);
        self.send_outputs(session, outputs);
        Ok(())
    }

    /// The session as stored, to change and store again; `None` if it is gone or cannot be
    /// read (logged).
    pub(crate) fn load_session(&mut self, id: &SessionId) -> Option<VouchingSession> {
        match self.session_for_update(id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot read vouching session {id}: {e}");
                None
            }
        }
    }

    /// The session as stored, to change (in memory or in a transaction of the store) and
    /// store again. Every such read goes through here: answers to it that wait in the batch
    /// are newer than the stored copy, and storing the batch later would overwrite what the
    /// caller stores, so they are stored first.
    pub(crate) fn session_for_update(
        &mut self,
        id: &SessionId,
    ) -> Result<Option<VouchingSession>, vouchnet_storage::StoreError> {
        if self.answers.sessions.contains_key(id) {
            self.flush_answers();
        }
        self.store.session(id)
    }

    /// A target says its user is being asked.
    pub(crate) fn on_vouch_pending(
        &mut self,
        device: DeviceId,
        msg: ProxyPairingPending,
    ) -> crate::network::codec::WireFrame {
        const WHAT: &str = "ProxyPairingPending";
        let Some(mut session) = self.load_session(&msg.session_id) else {
            self.refused(device, WHAT, "unknown_session");
            return ack();
        };
        let now = self.clock.now();
        if let Err(e) = session.on_pending(&device, &msg, &self.protocol, now) {
            self.refused(device, WHAT, session_error_name(&e));
            return ack();
        }
        match self.store.put_session(&session) {
            Ok(()) => self.session_changed(&session),
            Err(e) => tracing::error!("cannot store the vouching session: {e}"),
        }
        ack()
    }

    /// A target's answer that came as the response to its vouch.
    pub(crate) fn on_vouch_answer(&mut self, device: DeviceId, answer: Message) {
        match answer {
            Message::ProxyPairingResponse(r) => self.on_vouch_response(device, r, None),
            Message::ProxyPairingPending(p) => {
                self.on_vouch_pending(device, p);
            }
            _ => {}
        }
    }

    /// Answers `channel` (when the answer came as a request of its own).
    fn answer_channel(&mut self, channel: Option<ResponseChannel<WireFrame>>, frame: WireFrame) {
        if let Some(channel) = channel {
            self.respond(Proto::ProxyPair, channel, frame);
        }
    }

    /// A target's signed answer, as the response to the vouch or as a request of its own
    /// (`channel`). Checked and applied now; stored with the other answers that arrive
    /// with it, and acknowledged after that ([`Self::flush_answers`]).
    pub(crate) fn on_vouch_response(
        &mut self,
        device: DeviceId,
        msg: ProxyPairingResponse,
        channel: Option<ResponseChannel<WireFrame>>,
    ) {
        const WHAT: &str = "ProxyPairingResponse";
        path::step(path::ANSWER_RECEIVED);
        let session_id = match msg.response.decode_unverified() {
            Ok(r) => r.session_id,
            Err(_) => {
                self.refused(device, WHAT, "malformed_response");
                return self.answer_channel(channel, error_reply(ErrorCode::Malformed));
            }
        };
        let batched = self.answers.sessions.get(&session_id).cloned();
        let Some(mut session) = batched.or_else(|| self.load_session(&session_id)) else {
            self.refused(device, WHAT, "unknown_session");
            return self.answer_channel(channel, ack());
        };
        let now = self.clock.now();
        let outputs = {
            let view = self.view();
            let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
            session.on_response(&ctx, &device, &msg, now)
        };
        let outputs = match outputs {
            Ok(o) => o,
            Err(e) => {
                self.refused(device, WHAT, session_error_name(&e));
                return self.answer_channel(channel, ack());
            }
        };
        tracing::debug!(target = %device, "answered the vouch of session {}", session.id);
        self.answers.sessions.insert(session.id, session);
        self.answers.answers.push(Answer {
            session: session_id,
            target: device,
            response: msg.response,
            outputs,
            at: now,
        });
        self.answers.acks.extend(channel);
        path::step(path::ANSWER_CHECKED);
    }

    /// Stores every answer handled since the last flush in one transaction, then
    /// acknowledges them, tells the UI and sends what they call for (the vouchee is told of
    /// each acceptance only once it is on disk).
    pub(crate) fn flush_answers(&mut self) {
        if self.answers.answers.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.answers);
        let result = self.store.write(|tx| {
            for a in &batch.answers {
                tx.record_answer(&batch.sessions[&a.session], &a.target, &a.response, a.at)?;
                persist_outputs(tx, a.session, &a.outputs)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            // Nothing was stored: the targets are told their answer was not taken, and the
            // sessions stay as they were on disk (waiting, until their deadline).
            tracing::error!("cannot store {} answer(s): {e}", batch.answers.len());
            for channel in batch.acks {
                self.respond(Proto::ProxyPair, channel, error_reply(ErrorCode::Malformed));
            }
            return;
        }
        path::step(path::ANSWER_STORED);
        for channel in batch.acks {
            self.respond(Proto::ProxyPair, channel, ack());
        }
        for s in batch.sessions.values() {
            self.session_changed(s);
        }
        for a in batch.answers {
            let session = &batch.sessions[&a.session];
            self.send_outputs(session, a.outputs);
        }
    }

    /// Vouches in flight whose deadline came are rejected (`timeout`).
    pub(crate) fn session_timeouts(&mut self, now: Timestamp) {
        for id in self.proxy.due_sessions(now) {
            let Some(mut session) = self.load_session(&id) else {
                self.proxy.forget_session(&id);
                continue;
            };
            let before = session.targets.clone();
            let outputs = {
                let view = self.view();
                let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
                session.handle_timeout(&ctx, now)
            };
            log_timeouts(&session, &before);
            if let Err(e) = self.commit_session(&session, outputs, |_| Ok(())) {
                tracing::error!("cannot store the vouching session: {e}");
                self.proxy.forget_session(&id);
            }
        }
    }

    /// A proxy-pairing message was acknowledged by `device`.
    pub(crate) fn proxy_delivered(&mut self, device: DeviceId, token: Token) {
        match token {
            Token::Notify {
                session,
                told,
                queued,
            } => {
                let told_count = told.len();
                let news = queued.is_none() && self.proxy.notification_settled(&session);
                let result = match queued {
                    Some(r) => {
                        self.proxy.in_flight.remove(&r);
                        self.store.mark_notified(r, &told).map(|_| ())
                    }
                    None => match self.load_session(&session) {
                        Some(mut s) => {
                            s.mark_vouchee_notified(&told);
                            self.store.put_session(&s)
                        }
                        None => Ok(()),
                    },
                };
                if let Err(e) = &result {
                    tracing::warn!(%device, "cannot record the notification: {e}");
                }
                if let Some(s) = self.load_session(&session) {
                    if result.is_ok() {
                        self.publish_session(&s);
                    }
                    // News that waited for this notification goes out now. So does the
                    // rest of a full message: one carries at most MAX_COMPLETE_ENTRIES.
                    if news
                        || (told_count >= MAX_COMPLETE_ENTRIES && s.unnotified_acceptances() > 0)
                    {
                        self.tell_vouchee(&s);
                    }
                }
            }
            Token::RekeyConfirm { peer } => self.challenge(peer),
            Token::Vouch { .. } | Token::None | Token::Reply(_) | Token::Ping { .. } => {}
        }
    }

    /// A proxy-pairing message could not be delivered to `device`.
    pub(crate) fn proxy_undelivered(&mut self, device: DeviceId, token: Token, why: &Undelivered) {
        let now = self.clock.now();
        match token {
            Token::Vouch {
                session,
                target,
                queued,
            } => {
                if let Some(e) = &queued {
                    self.proxy.in_flight.remove(&QueueRef::of(e));
                }
                tracing::info!(%target, "vouch not delivered: {why}");
                self.vouch_undelivered(session, target, queued, why, now);
            }
            Token::Notify {
                session,
                told: _,
                queued,
            } => {
                if queued.is_none() {
                    // Whatever waited for this one is in the queue entry below: its
                    // delivery tells everything not yet acknowledged.
                    self.proxy.notification_settled(&session);
                }
                let result = match queued {
                    Some(r) => {
                        self.proxy.in_flight.remove(&r);
                        self.store
                            .delivery_failed(r, now, &self.protocol.queue)
                            .map(|_| ())
                    }
                    None => self.queue_notification(session, device).map(|_| ()),
                };
                if let Err(e) = result {
                    tracing::warn!(%device, "cannot queue the vouchee's notification: {e}");
                }
            }
            Token::RekeyConfirm { peer } => {
                // The peer may or may not have switched: the next key proof decides, with
                // the previous key kept as fallback.
                tracing::info!(%peer, "rekey confirmation not delivered: {why}");
            }
            Token::None | Token::Reply(_) | Token::Ping { .. } => {}
        }
    }

    fn vouch_undelivered(
        &mut self,
        session_id: SessionId,
        target: DeviceId,
        queued: Option<QueueEntry>,
        why: &Undelivered,
        now: Timestamp,
    ) {
        let Some(mut session) = self.load_session(&session_id) else {
            return;
        };
        let (outputs, next_entry, expired) = {
            let view = self.view();
            let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
            if *why == Undelivered::Unsupported {
                (session.on_unsupported(&ctx, &target, now), None, false)
            } else {
                let failed = session.on_send_failed(&ctx, &target, now);
                match (failed, queued) {
                    // A delivery from the queue failed: one more attempt counted.
                    (Ok(_), Some(entry)) => {
                        match queue::on_delivery_failed(&entry, now, &self.protocol.queue) {
                            QueueOutcome::Retry(next) => (Ok(Vec::new()), Some(next), false),
                            _ => (session.on_queue_expired(&ctx, &target, now), None, true),
                        }
                    }
                    (failed, _) => (failed, None, false),
                }
            }
        };
        let outputs = match outputs {
            Ok(o) => o,
            // The vouch is no longer in flight (answered meanwhile, or the session closed).
            Err(e) => return tracing::debug!(%target, "{}", session_error_name(&e)),
        };
        let result = self.commit_session(&session, outputs, |tx| {
            if let Some(next) = &next_entry {
                tx.enqueue(next)?;
            }
            if expired {
                tx.record_event(
                    now,
                    AuditEvent::VouchExpired {
                        session: session_id,
                        target,
                    },
                )?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!("cannot store the vouching session: {e}");
        }
    }
}
