//! What happens when the user unpairs a device that vouched for others
//! (`on_voucher_removed`), and the review list.
//!
//! The design leaves this open; vouchnet lets the user choose, per device, with the
//! setting `on_voucher_removed`:
//! - `keep`: the devices it vouched for stay trusted;
//! - `review` (default): they are flagged (`devices` shows `review: true`, `review` lists
//!   them, a `DeviceReviewRequired` event announces each) and the user keeps or removes
//!   each with `review keep|remove <DEVICE_ID>`;
//! - `revoke`: they are revoked with it (tombstoned, so no vouch brings them back).
//!
//! In every case the vouching sessions about the removed device are dropped: sessions
//! vouching *for* it are cancelled with their queued vouches, and vouches queued *to* it
//! expire. Open prompts of its vouches are refused (`voucher_not_paired`). The unpairing,
//! the revocations, the session changes and a `VoucherRemoved` audit entry that records
//! the policy, the devices concerned and the sessions dropped are one transaction.

use super::voucher::persist_outputs;
use crate::error::NodeError;
use crate::event_loop::EventLoop;
use crate::events::NodeEvent;
use crate::views::{ReviewOutcome, ReviewView};
use vouchnet_protocol::model::{QueueKind, SessionState, VouchStatus, VouchingSession};
use vouchnet_protocol::session::{VoucherCtx, VoucherOutput};
use vouchnet_protocol::DeviceId;
use vouchnet_storage::{AuditEvent, QueueRef, RevokeReason, VoucherRemovalPolicy};

/// A session changed because of a removal, with what to persist and send.
struct Dropped {
    session: VouchingSession,
    outputs: Vec<VoucherOutput>,
    /// Queue entries to remove besides those the machine named.
    remove: Vec<QueueRef>,
    /// The removed device was a queued target of this session: audit its expiry.
    expired_target: bool,
}

impl EventLoop {
    /// Unpairs `device` and applies `on_voucher_removed` to the devices it vouched for.
    /// Returns the devices revoked with it.
    pub(crate) fn remove_device_and_its_vouches(
        &mut self,
        device: DeviceId,
    ) -> Result<Vec<DeviceId>, NodeError> {
        let now = self.clock.now();
        let vouched: Vec<DeviceId> = self
            .store
            .devices()?
            .into_iter()
            .filter(|d| d.vouched_by == Some(device))
            .map(|d| d.device_id)
            .collect();
        let mut dropped = Vec::new();
        for s in self.store.sessions()? {
            let open = matches!(s.state, SessionState::Pending | SessionState::InProgress);
            if !open {
                continue;
            }
            if s.vouchee == device {
                let mut session = s.clone();
                let Ok(outputs) = session.cancel(now) else {
                    continue;
                };
                dropped.push(Dropped {
                    remove: vec![QueueRef {
                        session_id: s.id,
                        recipient: device,
                        kind: QueueKind::NotifyVouchee,
                    }],
                    session,
                    outputs,
                    expired_target: false,
                });
            } else if matches!(s.targets.get(&device), Some(VouchStatus::Queued)) {
                let mut session = s.clone();
                let outputs = {
                    let view = self.view();
                    let ctx = VoucherCtx::new(&self.keypair, &self.protocol, &view);
                    session.on_queue_expired(&ctx, &device, now)
                };
                let Ok(outputs) = outputs else {
                    continue;
                };
                dropped.push(Dropped {
                    remove: vec![QueueRef {
                        session_id: s.id,
                        recipient: device,
                        kind: QueueKind::Vouch,
                    }],
                    session,
                    outputs,
                    expired_target: true,
                });
            }
        }
        let policy = self.on_voucher_removed.policy();
        let revoked: Vec<DeviceId> = if policy == VoucherRemovalPolicy::Revoke {
            vouched.clone()
        } else {
            Vec::new()
        };
        let dropped_ids: Vec<_> = dropped.iter().map(|d| d.session.id).collect();
        self.store.write(|tx| {
            tx.unpair(&device, now)?;
            for d in &revoked {
                tx.revoke(d, RevokeReason::VoucherRemoved, now)?;
            }
            for d in &dropped {
                tx.put_session(&d.session)?;
                persist_outputs(tx, d.session.id, &d.outputs)?;
                for r in &d.remove {
                    tx.remove_queue_entry(*r)?;
                }
                if d.expired_target {
                    tx.record_event(
                        now,
                        AuditEvent::VouchExpired {
                            session: d.session.id,
                            target: device,
                        },
                    )?;
                }
            }
            if !vouched.is_empty() || !dropped.is_empty() {
                tx.record_event(
                    now,
                    AuditEvent::VoucherRemoved {
                        voucher: device,
                        policy,
                        vouched: vouched.clone(),
                        dropped: dropped_ids.clone(),
                    },
                )?;
            }
            Ok(())
        })?;
        if !vouched.is_empty() {
            tracing::info!(
                %device,
                "unpaired a device that vouched for {} device(s): {}",
                vouched.len(),
                self.on_voucher_removed.name()
            );
        }
        for d in dropped {
            self.session_changed(&d.session);
            self.send_outputs(&d.session, d.outputs);
        }
        if policy == VoucherRemovalPolicy::Review {
            for d in &vouched {
                self.proxy.flag(*d, device);
                self.hub.publish(NodeEvent::DeviceReviewRequired {
                    device_id: d.to_string(),
                    voucher: device.to_string(),
                });
                if let Some(rec) = self.paired_record(d) {
                    self.publish_device(&rec);
                }
            }
        }
        self.close_prompts_from(device)?;
        Ok(revoked)
    }

    /// `review`: devices flagged after their voucher was removed.
    pub(crate) fn review_list(&self) -> Result<Vec<ReviewView>, NodeError> {
        Ok(self
            .proxy
            .flagged()
            .map(|(device, voucher)| ReviewView {
                device_id: device.to_string(),
                name: self
                    .paired_record(device)
                    .map(|r| r.name.as_str().to_owned())
                    .unwrap_or_default(),
                voucher: voucher.to_string(),
            })
            .collect())
    }

    /// `review keep|remove <DEVICE_ID>`.
    pub(crate) fn review_decide(
        &mut self,
        device: DeviceId,
        keep: bool,
    ) -> Result<ReviewOutcome, NodeError> {
        let voucher = self
            .proxy
            .flagged_by(&device)
            .ok_or_else(|| NodeError::NotFound(format!("{device} is not waiting for a review")))?;
        let now = self.clock.now();
        let event = AuditEvent::ReviewResolved {
            device,
            voucher,
            kept: keep,
        };
        if keep {
            self.store.record_event(now, event)?;
            self.proxy.unflag(&device);
            if let Some(rec) = self.paired_record(&device) {
                self.publish_device(&rec);
            }
        } else {
            self.store.write(|tx| {
                tx.revoke(&device, RevokeReason::VoucherRemoved, now)?;
                tx.record_event(now, event.clone())?;
                Ok(())
            })?;
            self.forget_device(device);
        }
        Ok(ReviewOutcome {
            device_id: device.to_string(),
            decision: if keep { "kept" } else { "removed" }.to_owned(),
        })
    }
}
