//! The voucher's side of proxy pairing: one [`VouchingSession`] per vouchee.
//!
//! After a direct pairing with a new device E, the voucher V creates a session
//! ([`VouchingSession::new`], state Pending; the node shows it as `ProxyPairingVouchingReady`)
//! and the user (or `auto_vouch_to_all`) chooses the targets among V's directly paired
//! devices ([`VouchingSession::select_targets`], state InProgress). Each target T then moves
//! through [`VouchStatus`]:
//!
//! ```text
//! select_targets ─┬─ online ──► Waiting { deadline: now + vouch_response_timeout }
//!                 └─ offline ─► Queued ── deliver_queued (signed afresh) ──► Waiting
//! Waiting ── ProxyPairingPending ──► Waiting { user_prompted, deadline extended }
//! Waiting { user_prompted } ── deadline reached ──► Queued (asked again)
//! Waiting ── signed response ──────► Accepted { response } | Rejected { reason, response }
//! Waiting ── deadline reached ─────► Rejected { Timeout }     (never said its user is asked)
//! Waiting ── send failed ──────────► Queued
//! Queued ── expired / no retries ──► Expired
//! any non-final ── unsupported ────► Rejected { Unsupported }
//! ```
//!
//! When every target is final the session is Completed (`finished_at`), and it may be
//! deleted `session_retention` later ([`VouchingSession::is_removable`]).
//!
//! Every vouch is signed at the moment it is sent, with a fresh nonce and `issued_at = now`,
//! so a vouch that waited days in the queue is still fresh when it arrives.
//!
//! Design rules this module implements (REFERENCES.md §2):
//! - a response is accepted only from the target that was asked (the connection's id), for
//!   the vouch in flight (session, nonce, digest), signed by that target's stored key;
//! - a target that says its user is being asked ([`ProxyPairingPending`]) gets the time its
//!   user needs, bounded; a silent one times out after `vouch_response_timeout`;
//! - the vouchee hears of *each* acceptance at once ([`VoucherOutput::NotifyVouchee`], or a
//!   queue entry when it is offline), and of the whole result when every target is done;
//! - everything waiting for an offline device is a persistent [`QueueEntry`].
//!
//! Methods return the outputs the node must apply: persist the session first, then send or
//! queue. Bad input returns a typed [`SessionError`] and changes nothing.

use crate::config::ProtocolConfig;
use crate::identity::{DeviceId, DeviceKeypair, DevicePublicKey};
use crate::ids::{SessionId, VouchNonce};
use crate::keys::{derive_proxied_key, seal_proxied_key};
use crate::messages::{
    AcceptedTarget, AddrHint, Decision, DisplayName, ProxyPairingComplete, ProxyPairingPending,
    ProxyPairingRequest, ProxyPairingResponse, SignedResponse, VouchCertificate, VouchRejection,
    MAX_ADDR_HINTS, MAX_ADDR_HINT_LEN, MAX_COMPLETE_ENTRIES,
};
use crate::model::{
    KnownDevice, PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchStatus,
    VouchingSession,
};
use crate::queue;
use crate::secret::SymmetricKey;
use crate::signing::{SignatureError, Signed};
use crate::time::Timestamp;
use crate::vouch::{CERTIFICATE_VERSION, RESPONSE_VERSION};
use crate::DecodeError;
use core::fmt;
use core::time::Duration;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, BTreeSet};

/// What the voucher needs to know about the node's state.
pub trait VoucherView {
    /// A paired device, or `None` if unknown.
    fn device(&self, id: &DeviceId) -> Option<KnownDevice>;
    /// A paired device's display name, for telling the vouchee who accepted it.
    fn display_name(&self, id: &DeviceId) -> Option<DisplayName>;
    /// The pairing key shared with a directly paired device (targets and the vouchee).
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey>;
    /// True if a connection to the device is up now.
    fn is_online(&self, id: &DeviceId) -> bool;
    /// Where the device was last reached, passed on to the vouchee with its acceptance
    /// (at most [`MAX_ADDR_HINTS`] are sent). None by default.
    fn address_hints(&self, _id: &DeviceId) -> Vec<AddrHint> {
        Vec::new()
    }
}

/// The voucher's identity, parameters and view of the node, passed to each session call.
pub struct VoucherCtx<'a, V> {
    /// This device's key; vouches are signed with it.
    pub keypair: &'a DeviceKeypair,
    /// This device's id.
    pub me: DeviceId,
    /// Protocol parameters.
    pub config: &'a ProtocolConfig,
    /// The node's state.
    pub view: &'a V,
}

impl<'a, V: VoucherView> VoucherCtx<'a, V> {
    /// A context for the device holding `keypair`.
    pub fn new(keypair: &'a DeviceKeypair, config: &'a ProtocolConfig, view: &'a V) -> Self {
        VoucherCtx {
            keypair,
            me: keypair.device_id(),
            config,
            view,
        }
    }
}

impl<V> fmt::Debug for VoucherCtx<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoucherCtx")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// What the node must do after a session call, in order, after persisting the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherOutput {
    /// Send this vouch to `to` now. If the send fails, call
    /// [`VouchingSession::on_send_failed`]; if `to` does not speak the proxy protocol, call
    /// [`VouchingSession::on_unsupported`].
    SendVouch {
        /// The target.
        to: DeviceId,
        /// The request.
        request: ProxyPairingRequest,
    },
    /// Tell the vouchee now (it is connected). If the send fails, enqueue
    /// `queue::new_entry(session, vouchee, QueueKind::NotifyVouchee, ..)` and, at delivery,
    /// send [`VouchingSession::vouchee_notification`]. After the vouchee acknowledged, call
    /// [`VouchingSession::mark_vouchee_notified`].
    NotifyVouchee {
        /// The vouchee.
        to: DeviceId,
        /// What to tell it.
        complete: ProxyPairingComplete,
    },
    /// Persist this queue entry. The queue holds at most one entry per (session, recipient,
    /// kind): if one exists already, keep the existing one.
    Enqueue(QueueEntry),
    /// Delete the queue entry of this session for `recipient` and `kind`.
    Dequeue {
        /// Who it was for.
        recipient: DeviceId,
        /// What it was.
        kind: QueueKind,
    },
}

/// Why a session call was refused. No state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Targets can be chosen only once, while the session is Pending.
    #[error("session is {0:?}, not Pending")]
    NotPending(SessionState),
    /// The session is Completed or Cancelled.
    #[error("session is closed ({0:?})")]
    Closed(SessionState),
    /// No target was chosen.
    #[error("no target chosen")]
    NoTargets,
    /// More targets than a `ProxyPairingComplete` can report.
    #[error("{count} targets chosen, at most {max}")]
    TooManyTargets {
        /// How many were chosen.
        count: usize,
        /// The limit ([`MAX_SESSION_TARGETS`]).
        max: usize,
    },
    /// A target is the vouchee itself.
    #[error("target {0} is the vouchee")]
    TargetIsVouchee(DeviceId),
    /// A target is this device.
    #[error("target {0} is this device")]
    TargetIsSelf(DeviceId),
    /// A target is not a paired device.
    #[error("target {0} is not paired")]
    TargetNotPaired(DeviceId),
    /// A target is paired by proxy only: vouching to it would make trust multi-hop.
    #[error("target {0} is not directly paired")]
    TargetNotDirect(DeviceId),
    /// A target is blocked by the user.
    #[error("target {0} is blocked")]
    TargetBlocked(DeviceId),
    /// A target appears twice.
    #[error("target {0} chosen twice")]
    DuplicateTarget(DeviceId),
    /// No pairing key is stored for this device (a target or the vouchee).
    #[error("no pairing key for {0}")]
    MissingPairingKey(DeviceId),
    /// The device is not a target of this session.
    #[error("{0} is not a target of this session")]
    NotATarget(DeviceId),
    /// The target has no vouch in flight.
    #[error("no vouch in flight to {0}")]
    NotWaiting(DeviceId),
    /// The target's vouch is not in the queue.
    #[error("no queued vouch for {0}")]
    NotQueued(DeviceId),
    /// The target's status is already final.
    #[error("the vouch to {0} is already final")]
    AlreadyFinal(DeviceId),
    /// The response's signature does not verify under the target's stored key.
    #[error("response signature does not verify")]
    BadSignature,
    /// The signed response body does not decode.
    #[error("response does not decode: {0}")]
    MalformedResponse(DecodeError),
    /// The response format version is not [`RESPONSE_VERSION`].
    #[error("unsupported response version {0}")]
    UnsupportedResponseVersion(u64),
    /// The message names another session.
    #[error("message is for another session")]
    WrongSession,
    /// The message answers another vouch than the one in flight.
    #[error("message answers another vouch (nonce)")]
    WrongNonce,
    /// The response's digest is not that of the vouch in flight.
    #[error("response answers other vouch bytes (digest)")]
    WrongDigest,
    /// The response names another responder than the connection's peer.
    #[error("response names another responder")]
    WrongResponder,
    /// The response names another voucher.
    #[error("response names another voucher")]
    WrongVoucher,
    /// The response names another vouchee.
    #[error("response names another vouchee")]
    WrongVouchee,
}

impl VouchingSession {
    /// A new session for `vouchee`, right after the direct pairing with it: state Pending,
    /// no targets. The node announces it as `ProxyPairingVouchingReady`.
    pub fn new(
        id: SessionId,
        vouchee: DeviceId,
        vouchee_key: DevicePublicKey,
        vouchee_name: DisplayName,
        now: Timestamp,
    ) -> Self {
        VouchingSession {
            id,
            vouchee,
            vouchee_key,
            vouchee_name,
            state: SessionState::Pending,
            targets: BTreeMap::new(),
            vouchee_notified: Vec::new(),
            created_at: now,
            finished_at: None,
        }
    }

    /// Chooses the targets (Pending → InProgress). Each target must be directly paired, not
    /// blocked, not the vouchee, not this device, and chosen once; all are checked before
    /// anything changes. Online targets get a freshly signed vouch now and become Waiting;
    /// offline ones become Queued with a [`QueueKind::Vouch`] entry.
    pub fn select_targets<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        targets: &[DeviceId],
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        if self.state != SessionState::Pending {
            return Err(SessionError::NotPending(self.state));
        }
        if targets.is_empty() {
            return Err(SessionError::NoTargets);
        }
        if targets.len() > MAX_SESSION_TARGETS {
            return Err(SessionError::TooManyTargets {
                count: targets.len(),
                max: MAX_SESSION_TARGETS,
            });
        }
        let vouchee_key = ctx
            .view
            .pairing_key(&self.vouchee)
            .ok_or(SessionError::MissingPairingKey(self.vouchee))?;
        let mut seen = BTreeSet::new();
        let mut keyed = Vec::with_capacity(targets.len());
        for target in targets {
            if !seen.insert(*target) {
                return Err(SessionError::DuplicateTarget(*target));
            }
            keyed.push((*target, self.check_target(ctx, target)?));
        }

        let mut out = Vec::new();
        for (target, target_key) in keyed {
            if ctx.view.is_online(&target) {
                let (request, status) =
                    self.sign_vouch(ctx, &target, &target_key, &vouchee_key, now, rng);
                self.targets.insert(target, status);
                out.push(VoucherOutput::SendVouch {
                    to: target,
                    request,
                });
            } else {
                self.targets.insert(target, VouchStatus::Queued);
                out.push(VoucherOutput::Enqueue(queue::new_entry(
                    self.id,
                    target,
                    QueueKind::Vouch,
                    now,
                    &ctx.config.queue,
                )));
            }
        }
        self.state = SessionState::InProgress;
        Ok(out)
    }

    /// The queue worker found `target` online: sign the vouch afresh (new nonce,
    /// `issued_at = now`) and send it (Queued → Waiting). The queue entry stays until the
    /// delivery is acknowledged ([`queue::on_delivered`]).
    pub fn deliver_queued<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<VoucherOutput, SessionError> {
        self.ensure_open()?;
        match self.targets.get(target) {
            None => return Err(SessionError::NotATarget(*target)),
            Some(VouchStatus::Queued) => {}
            Some(_) => return Err(SessionError::NotQueued(*target)),
        }
        // The target may have been removed or blocked while the vouch waited.
        let target_key = self.check_target(ctx, target)?;
        let vouchee_key = ctx
            .view
            .pairing_key(&self.vouchee)
            .ok_or(SessionError::MissingPairingKey(self.vouchee))?;
        let (request, status) = self.sign_vouch(ctx, target, &target_key, &vouchee_key, now, rng);
        self.targets.insert(*target, status);
        Ok(VoucherOutput::SendVouch {
            to: *target,
            request,
        })
    }

    /// Sending the vouch to `target` failed (it went offline): Waiting → Queued, with a
    /// [`QueueKind::Vouch`] entry (kept as is if the worker already holds one).
    pub fn on_send_failed<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        self.ensure_open()?;
        self.waiting(target)?;
        self.targets.insert(*target, VouchStatus::Queued);
        Ok(vec![VoucherOutput::Enqueue(queue::new_entry(
            self.id,
            *target,
            QueueKind::Vouch,
            now,
            &ctx.config.queue,
        ))])
    }

    /// The voucher restarted: no vouch it sent before is in flight any more, and an answer
    /// given to one was lost with the connection. Each Waiting target whose user was not
    /// asked goes back to the queue, to be delivered again (signed afresh); a target that
    /// had decided answers with the decision it stored (check 8). Without this, the
    /// deadline would record a timeout while the target may trust the vouchee. A target
    /// whose user is being asked keeps waiting: that answer comes as a request of its own.
    pub fn on_restart<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        now: Timestamp,
    ) -> Vec<VoucherOutput> {
        if self.state != SessionState::InProgress {
            return Vec::new();
        }
        let interrupted: Vec<DeviceId> = self
            .targets
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    VouchStatus::Waiting {
                        user_prompted: false,
                        ..
                    }
                )
            })
            .map(|(t, _)| *t)
            .collect();
        interrupted
            .iter()
            .flat_map(|t| self.on_send_failed(ctx, t, now).unwrap_or_default())
            .collect()
    }

    /// The target says its user is being asked, until `msg.deadline` on its clock. Accepted
    /// only from that target (`from` is the connection's id) and for the vouch in flight.
    /// The voucher then waits until `min(msg.deadline + skew, now + proxy_prompt_timeout +
    /// skew)` — the target's deadline, with the clock-skew allowance as margin, but never
    /// longer than this device would let its own user think — and never less than it
    /// already waited. Repeats are harmless.
    pub fn on_pending(
        &mut self,
        from: &DeviceId,
        msg: &ProxyPairingPending,
        config: &ProtocolConfig,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        self.ensure_open()?;
        let InFlight {
            nonce, deadline, ..
        } = self.waiting(from)?;
        if msg.session_id != self.id {
            return Err(SessionError::WrongSession);
        }
        if msg.vouch_nonce != nonce {
            return Err(SessionError::WrongNonce);
        }
        let cap = now
            .saturating_add(config.proxy_prompt_timeout)
            .saturating_add(config.clock_skew_allowance);
        let wanted = msg
            .deadline
            .saturating_add(config.clock_skew_allowance)
            .min(cap);
        if let Some(VouchStatus::Waiting {
            deadline: d,
            user_prompted,
            ..
        }) = self.targets.get_mut(from)
        {
            *d = deadline.max(wanted);
            *user_prompted = true;
        }
        Ok(())
    }

    /// A signed response from `from` (the connection's id). It must come from a target whose
    /// vouch is in flight, verify under that target's stored key, and name this session, the
    /// nonce and digest of the vouch in flight, `from` as responder, this device as voucher
    /// and the session's vouchee. Then the target's status becomes Accepted or Rejected; an
    /// acceptance is told to the vouchee at once, and when every target is final the session
    /// completes and the vouchee gets the whole result.
    pub fn on_response<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        from: &DeviceId,
        msg: &ProxyPairingResponse,
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        self.ensure_open()?;
        let InFlight { nonce, digest, .. } = self.waiting(from)?;
        let target = ctx
            .view
            .device(from)
            .ok_or(SessionError::TargetNotPaired(*from))?;
        let response = msg
            .response
            .verify(&target.public_key)
            .map_err(|e| match e {
                SignatureError::Body(d) => SessionError::MalformedResponse(d),
                _ => SessionError::BadSignature,
            })?;
        if response.v != RESPONSE_VERSION {
            return Err(SessionError::UnsupportedResponseVersion(response.v));
        }
        if response.session_id != self.id {
            return Err(SessionError::WrongSession);
        }
        if response.vouch_nonce != nonce {
            return Err(SessionError::WrongNonce);
        }
        if response.vouch_digest != digest {
            return Err(SessionError::WrongDigest);
        }
        if response.responder != *from {
            return Err(SessionError::WrongResponder);
        }
        if response.voucher != ctx.me {
            return Err(SessionError::WrongVoucher);
        }
        if response.vouchee != self.vouchee {
            return Err(SessionError::WrongVouchee);
        }

        let signed = msg.response.clone();
        let accepted = matches!(response.decision, Decision::Accepted { .. });
        let status = match response.decision {
            Decision::Accepted { .. } => VouchStatus::Accepted { response: signed },
            Decision::Rejected { reason } => VouchStatus::Rejected {
                reason,
                response: Some(signed),
            },
        };
        self.targets.insert(*from, status);
        let mut out = Vec::new();
        self.after_final(ctx, accepted.then_some(*from), now, &mut out);
        Ok(out)
    }

    /// Waiting targets whose deadline has come (at the deadline itself, not after) and that
    /// never said their user was asked become `Rejected{Timeout}`; the session may complete.
    ///
    /// A target that said its user was asked (`ProxyPairingPending`) is not given up on:
    /// its user's answer travels as a request of its own, which is lost if this device was
    /// unreachable at that moment, and finalising the vouch then would leave the target
    /// trusting the vouchee while the vouchee never hears of it. Such a target goes back to
    /// the queue (`Queued`), so the vouch is delivered again, signed afresh; by then the
    /// target's prompt has been answered or has expired, and it answers with the decision
    /// it stored (check 8 of the receiver). The queue's retry limit and expiry bound this.
    pub fn handle_timeout<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        now: Timestamp,
    ) -> Vec<VoucherOutput> {
        let mut out = Vec::new();
        if self.state != SessionState::InProgress {
            return out;
        }
        let mut finalised = false;
        for (target, status) in self.targets.iter_mut() {
            let VouchStatus::Waiting {
                deadline,
                user_prompted,
                ..
            } = status
            else {
                continue;
            };
            if *deadline > now {
                continue;
            }
            if *user_prompted {
                *status = VouchStatus::Queued;
                out.push(VoucherOutput::Enqueue(queue::new_entry(
                    self.id,
                    *target,
                    QueueKind::Vouch,
                    now,
                    &ctx.config.queue,
                )));
            } else {
                *status = VouchStatus::Rejected {
                    reason: VouchRejection::Timeout,
                    response: None,
                };
                finalised = true;
            }
        }
        if finalised {
            self.after_final(ctx, None, now, &mut out);
        }
        out
    }

    /// `target` does not speak the proxy-pairing protocol: `Rejected{Unsupported}` for any
    /// non-final status.
    pub fn on_unsupported<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        self.ensure_open()?;
        match self.targets.get(target) {
            None => return Err(SessionError::NotATarget(*target)),
            Some(s) if s.is_terminal() => return Err(SessionError::AlreadyFinal(*target)),
            Some(_) => {}
        }
        let was_queued = matches!(self.targets.get(target), Some(VouchStatus::Queued));
        self.targets.insert(
            *target,
            VouchStatus::Rejected {
                reason: VouchRejection::Unsupported,
                response: None,
            },
        );
        let mut out = Vec::new();
        if was_queued {
            out.push(VoucherOutput::Dequeue {
                recipient: *target,
                kind: QueueKind::Vouch,
            });
        }
        self.after_final(ctx, None, now, &mut out);
        Ok(out)
    }

    /// The queued vouch to `target` was dropped (expired, or out of retries): Queued →
    /// Expired.
    pub fn on_queue_expired<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
        now: Timestamp,
    ) -> Result<Vec<VoucherOutput>, SessionError> {
        self.ensure_open()?;
        match self.targets.get(target) {
            None => return Err(SessionError::NotATarget(*target)),
            Some(VouchStatus::Queued) => {}
            Some(_) => return Err(SessionError::NotQueued(*target)),
        }
        self.targets.insert(*target, VouchStatus::Expired);
        let mut out = Vec::new();
        self.after_final(ctx, None, now, &mut out);
        Ok(out)
    }

    /// The user (or the removal of this device's trust in the vouchee) cancels the session:
    /// state Cancelled, `finished_at = now`, and the queued vouches are dequeued. Statuses
    /// are kept as they were, for the audit trail; later messages for the session are refused
    /// with [`SessionError::Closed`].
    pub fn cancel(&mut self, now: Timestamp) -> Result<Vec<VoucherOutput>, SessionError> {
        self.ensure_open()?;
        self.state = SessionState::Cancelled;
        self.finished_at = Some(now);
        Ok(self
            .targets
            .iter()
            .filter(|(_, s)| matches!(s, VouchStatus::Queued))
            .map(|(t, _)| VoucherOutput::Dequeue {
                recipient: *t,
                kind: QueueKind::Vouch,
            })
            .collect())
    }

    /// True when the session may be deleted: it finished (Completed or Cancelled) at least
    /// `retention` ago. At exactly `finished_at + retention` it is removable.
    pub fn is_removable(&self, now: Timestamp, retention: Duration) -> bool {
        matches!(self.finished_at, Some(f) if now >= f.saturating_add(retention))
    }

    /// The earliest deadline of a vouch in flight: call [`Self::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.state != SessionState::InProgress {
            return None;
        }
        self.targets
            .values()
            .filter_map(|s| match s {
                VouchStatus::Waiting { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// Targets that accepted so far, in id order.
    pub fn accepted_targets(&self) -> Vec<DeviceId> {
        self.targets
            .iter()
            .filter(|(_, s)| matches!(s, VouchStatus::Accepted { .. }))
            .map(|(t, _)| *t)
            .collect()
    }

    /// What to tell the vouchee when a queued notification is delivered: every acceptance so
    /// far (the vouchee ignores those it knows), and whether the session is complete.
    ///
    /// One message carries at most [`MAX_COMPLETE_ENTRIES`] acceptances (it must fit in a
    /// frame), taken from those not yet marked as heard by the vouchee
    /// ([`Self::mark_vouchee_notified`]). When more remain, `session_completed` is false in
    /// this message and [`Self::unnotified_acceptances`] stays above zero, so the driver sends
    /// (or queues) another notification after this one is acknowledged.
    pub fn vouchee_notification(&self, view: &impl VoucherView) -> ProxyPairingComplete {
        let pending: Vec<DeviceId> = self
            .accepted_targets()
            .into_iter()
            .filter(|t| !self.vouchee_notified.contains(t))
            .collect();
        let chunk = &pending[..pending.len().min(MAX_COMPLETE_ENTRIES)];
        let mut message = self.complete_message(view, chunk);
        message.session_completed &= pending.len() <= MAX_COMPLETE_ENTRIES;
        message
    }

    /// Acceptances the vouchee has not been marked as having heard of.
    pub fn unnotified_acceptances(&self) -> usize {
        self.accepted_targets()
            .iter()
            .filter(|t| !self.vouchee_notified.contains(t))
            .count()
    }

    /// The vouchee acknowledged a notification listing `targets`.
    pub fn mark_vouchee_notified(&mut self, targets: &[DeviceId]) {
        for t in targets {
            if !self.vouchee_notified.contains(t) {
                self.vouchee_notified.push(*t);
            }
        }
    }

    fn ensure_open(&self) -> Result<(), SessionError> {
        match self.state {
            SessionState::Completed | SessionState::Cancelled => {
                Err(SessionError::Closed(self.state))
            }
            SessionState::Pending | SessionState::InProgress => Ok(()),
        }
    }

    /// The vouch in flight to `target`, or why there is none.
    fn waiting(&self, target: &DeviceId) -> Result<InFlight, SessionError> {
        match self.targets.get(target) {
            None => Err(SessionError::NotATarget(*target)),
            Some(VouchStatus::Waiting {
                nonce,
                digest,
                deadline,
                ..
            }) => Ok(InFlight {
                nonce: *nonce,
                digest: *digest,
                deadline: *deadline,
            }),
            Some(_) => Err(SessionError::NotWaiting(*target)),
        }
    }

    fn check_target<V: VoucherView>(
        &self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
    ) -> Result<SymmetricKey, SessionError> {
        if *target == self.vouchee {
            return Err(SessionError::TargetIsVouchee(*target));
        }
        if *target == ctx.me {
            return Err(SessionError::TargetIsSelf(*target));
        }
        let device = ctx
            .view
            .device(target)
            .ok_or(SessionError::TargetNotPaired(*target))?;
        if device.pairing_type != PairingType::Direct {
            return Err(SessionError::TargetNotDirect(*target));
        }
        if device.trust_level == TrustLevel::Blocked {
            return Err(SessionError::TargetBlocked(*target));
        }
        ctx.view
            .pairing_key(target)
            .ok_or(SessionError::MissingPairingKey(*target))
    }

    /// Signs a fresh vouch for `target` and seals the target–vouchee key for it.
    fn sign_vouch<V: VoucherView>(
        &self,
        ctx: &VoucherCtx<'_, V>,
        target: &DeviceId,
        target_key: &SymmetricKey,
        vouchee_key: &SymmetricKey,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> (ProxyPairingRequest, VouchStatus) {
        let nonce = VouchNonce::random(rng);
        let cert = VouchCertificate {
            v: CERTIFICATE_VERSION,
            session_id: self.id,
            voucher: ctx.me,
            vouchee: self.vouchee,
            vouchee_key: self.vouchee_key,
            vouchee_name: self.vouchee_name.clone(),
            target: *target,
            issued_at: now,
            nonce,
        };
        let vouch = Signed::sign(ctx.keypair, &cert);
        let digest = vouch.body_digest();
        let proxied = derive_proxied_key(vouchee_key, &self.id, &ctx.me, target, &self.vouchee);
        let sealed_key = seal_proxied_key(
            target_key,
            &proxied,
            &self.id,
            &ctx.me,
            target,
            &self.vouchee,
            rng,
        );
        let status = VouchStatus::Waiting {
            nonce,
            digest,
            deadline: now.saturating_add(ctx.config.vouch_response_timeout),
            user_prompted: false,
        };
        (ProxyPairingRequest { vouch, sealed_key }, status)
    }

    /// After a target became final: complete the session if every target is final (the
    /// vouchee then gets every acceptance and `session_completed`), or else tell the vouchee
    /// of the one new acceptance, if any.
    fn after_final<V: VoucherView>(
        &mut self,
        ctx: &VoucherCtx<'_, V>,
        just_accepted: Option<DeviceId>,
        now: Timestamp,
        out: &mut Vec<VoucherOutput>,
    ) {
        if self.state == SessionState::InProgress
            && self.targets.values().all(VouchStatus::is_terminal)
        {
            self.state = SessionState::Completed;
            self.finished_at = Some(now);
            let complete = self.vouchee_notification(ctx.view);
            out.push(self.notify(ctx, complete, now));
        } else if let Some(target) = just_accepted {
            let complete = self.complete_message(ctx.view, &[target]);
            out.push(self.notify(ctx, complete, now));
        }
    }

    fn notify<V: VoucherView>(
        &self,
        ctx: &VoucherCtx<'_, V>,
        complete: ProxyPairingComplete,
        now: Timestamp,
    ) -> VoucherOutput {
        if ctx.view.is_online(&self.vouchee) {
            VoucherOutput::NotifyVouchee {
                to: self.vouchee,
                complete,
            }
        } else {
            VoucherOutput::Enqueue(queue::new_entry(
                self.id,
                self.vouchee,
                QueueKind::NotifyVouchee,
                now,
                &ctx.config.queue,
            ))
        }
    }

    fn complete_message(
        &self,
        view: &impl VoucherView,
        targets: &[DeviceId],
    ) -> ProxyPairingComplete {
        let accepted = targets
            .iter()
            .filter_map(|t| match self.targets.get(t) {
                Some(VouchStatus::Accepted { response }) => accepted_target(view, t, response),
                _ => None,
            })
            .collect();
        ProxyPairingComplete {
            session_id: self.id,
            accepted,
            session_completed: self.state == SessionState::Completed,
        }
    }
}

/// Most targets one vouching session may have. A vouchee hears of acceptances in messages
/// of at most [`MAX_COMPLETE_ENTRIES`], so a larger session notifies it in several messages.
pub const MAX_SESSION_TARGETS: usize = 256;

/// The identifying parts of a Waiting status.
struct InFlight {
    nonce: VouchNonce,
    digest: [u8; 32],
    deadline: Timestamp,
}

/// One acceptance as told to the vouchee. The key is the stored one, or else the one
/// embedded in the id (the target may have been removed since it accepted); the name falls
/// back to empty when unknown.
fn accepted_target(
    view: &impl VoucherView,
    target: &DeviceId,
    response: &SignedResponse,
) -> Option<AcceptedTarget> {
    let public_key = match view.device(target) {
        Some(d) => d.public_key,
        None => target.public_key().ok()?,
    };
    let name = view
        .display_name(target)
        .or_else(|| DisplayName::new("").ok())?;
    let mut addrs = view.address_hints(target);
    addrs.retain(|a| a.0.len() <= MAX_ADDR_HINT_LEN);
    addrs.truncate(MAX_ADDR_HINTS);
    Some(AcceptedTarget {
        device_id: *target,
        public_key,
        name,
        response: response.clone(),
        addrs,
    })
}
