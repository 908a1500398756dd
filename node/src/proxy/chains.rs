//! Trust chains: the audit trail read per device, for `vouchnet audit`.
//!
//! The audit trail (storage crate) is one hash-chained list of every trust decision. A
//! person asks a different question: *why do I trust this device?* For each device this
//! module gathers the entries about it, oldest first: paired directly (when, the code
//! confirmed by the user, the key-confirmation MACs), or vouched for by whom (the voucher's
//! signed certificate, this device's signed acceptance, automatic or by the user), or, on
//! the vouchee, which target accepted it (the target's signed acceptance); then what
//! happened since (rekeys, trust changes, the voucher's removal, the review).

use crate::error::NodeError;
use crate::event_loop::EventLoop;
use crate::sessions::rejection_name;
use crate::views::{pairing_type_name, trust_level_name, ChainStep, EvidenceView, TrustChainView};
use std::collections::BTreeMap;
use vouchnet_protocol::messages::{AcceptedHow, Decision, SignedResponse};
use vouchnet_protocol::DeviceId;
use vouchnet_storage::{AuditEvent, VoucherRemovalPolicy};

fn evidence(kind: &str, by: &DeviceId, value: &[u8]) -> EvidenceView {
    EvidenceView {
        kind: kind.to_owned(),
        by: by.to_string(),
        value: hex::encode(value),
    }
}

fn response_evidence(by: &DeviceId, r: &SignedResponse) -> EvidenceView {
    evidence("vouch_response", by, r.signature())
}

fn decision_text(r: &SignedResponse) -> String {
    match r.decode_unverified().map(|r| r.decision) {
        Ok(Decision::Accepted { how }) => format!("accepted ({})", how_text(how)),
        Ok(Decision::Rejected { reason }) => format!("refused ({})", rejection_name(&reason)),
        Err(_) => "answered".to_owned(),
    }
}

fn how_text(how: AcceptedHow) -> &'static str {
    match how {
        AcceptedHow::Automatic => "automatically",
        AcceptedHow::UserConfirmed => "by the user",
    }
}

/// The steps an audit event adds, as `(device, what, evidence)`.
fn steps_of(me: &DeviceId, event: &AuditEvent) -> Vec<(DeviceId, String, Vec<EvidenceView>)> {
    match event {
        AuditEvent::PairedDirect {
            device,
            name,
            tx_id,
            confirmed_by_user,
            our_mac,
            their_mac,
            ..
        } => vec![(
            *device,
            format!(
                "paired directly with {}: {} (transaction {tx_id}); both key confirmations verified",
                name.as_str(),
                if *confirmed_by_user {
                    "the user confirmed the 6-digit code"
                } else {
                    "the code was not confirmed"
                }
            ),
            vec![
                evidence("key_confirmation_mac", me, our_mac),
                evidence("key_confirmation_mac", device, their_mac),
            ],
        )],
        AuditEvent::Vouched {
            session,
            vouchee,
            targets,
            ..
        } => vec![(
            *vouchee,
            format!(
                "this device vouched for it to {} device(s) (session {session})",
                targets.len()
            ),
            Vec::new(),
        )],
        AuditEvent::TargetAnswered {
            session,
            target,
            response,
        } => {
            let text = decision_text(response);
            let mut out = vec![(
                *target,
                format!("answered this device's vouch (session {session}): {text}"),
                vec![response_evidence(target, response)],
            )];
            if let Ok(r) = response.decode_unverified() {
                out.push((
                    r.vouchee,
                    format!("{target} {text} it on this device's vouch (session {session})"),
                    vec![response_evidence(target, response)],
                ));
            }
            out
        }
        AuditEvent::VouchExpired { session, target } => vec![(
            *target,
            format!("a vouch to it expired undelivered (session {session})"),
            Vec::new(),
        )],
        AuditEvent::VouchAccepted {
            session,
            voucher,
            vouchee,
            how,
            proof,
            ..
        } => vec![(
            *vouchee,
            format!(
                "vouched for by {voucher} (session {session}); accepted {}",
                how_text(*how)
            ),
            vec![
                evidence("vouch_certificate", voucher, proof.vouch.signature()),
                response_evidence(me, &proof.response),
            ],
        )],
        AuditEvent::VouchRejected {
            session,
            voucher,
            vouchee,
            reason,
            vouch,
            response,
        } => {
            let mut ev = Vec::new();
            if let Some(v) = vouch {
                ev.push(evidence("vouch_certificate", voucher, v.signature()));
            }
            if let Some(r) = response {
                ev.push(response_evidence(me, r));
            }
            vec![(
                *vouchee,
                format!(
                    "the vouch of {voucher} for it was refused: {} (session {session})",
                    rejection_name(reason)
                ),
                ev,
            )]
        }
        AuditEvent::ProxiedDeviceAdded {
            session,
            voucher,
            device,
            name,
            acceptance,
            ..
        } => vec![(
            *device,
            format!(
                "{} accepted this device on the vouch of {voucher} (session {session}); added as proxied",
                name.as_str()
            ),
            vec![response_evidence(device, acceptance)],
        )],
        AuditEvent::Revoked { device, reason } => {
            vec![(*device, format!("revoked ({reason:?})"), Vec::new())]
        }
        AuditEvent::Unpaired { device } => {
            vec![(*device, "unpaired by the user".to_owned(), Vec::new())]
        }
        AuditEvent::TrustChanged { device, from, to } => vec![(
            *device,
            format!(
                "trust changed from {} to {}",
                trust_level_name(*from),
                trust_level_name(*to)
            ),
            Vec::new(),
        )],
        AuditEvent::KeyProofFailed { device } => vec![(
            *device,
            "failed to prove it holds the shared key".to_owned(),
            Vec::new(),
        )],
        AuditEvent::Rekeyed { device } => vec![(
            *device,
            "the shared key was replaced by a rekey".to_owned(),
            Vec::new(),
        )],
        AuditEvent::TombstoneCleared { device } => {
            vec![(*device, "tombstone cleared".to_owned(), Vec::new())]
        }
        AuditEvent::Blocked { device } => vec![(
            *device,
            "blocked by the user while not paired".to_owned(),
            Vec::new(),
        )],
        AuditEvent::Unblocked { device } => {
            vec![(*device, "block lifted by the user".to_owned(), Vec::new())]
        }
        AuditEvent::VoucherRemoved {
            voucher,
            policy,
            vouched,
            dropped,
        } => {
            let what = match policy {
                VoucherRemovalPolicy::Keep => "kept",
                VoucherRemovalPolicy::Review => "flagged for review",
                VoucherRemovalPolicy::Revoke => "revoked",
            };
            let mut out = vec![(
                *voucher,
                format!(
                    "removed: the {} device(s) it vouched for were {what}; {} vouching session(s) about it dropped",
                    vouched.len(),
                    dropped.len()
                ),
                Vec::new(),
            )];
            for d in vouched {
                out.push((
                    *d,
                    format!("its voucher {voucher} was removed: {what}"),
                    Vec::new(),
                ));
            }
            out
        }
        AuditEvent::ReviewResolved { device, kept, .. } => vec![(
            *device,
            if *kept {
                "kept by the user after review"
            } else {
                "removed by the user after review"
            }
            .to_owned(),
            Vec::new(),
        )],
        _ => Vec::new(),
    }
}

impl EventLoop {
    /// Every device's trust chain: paired devices first (in id order), then devices that
    /// are no longer paired.
    pub(crate) fn trust_chains(&self) -> Result<Vec<TrustChainView>, NodeError> {
        let mut steps: BTreeMap<DeviceId, Vec<ChainStep>> = BTreeMap::new();
        for entry in self.store.audit_entries(0, usize::MAX)? {
            for (device, what, evidence) in steps_of(&self.me, &entry.event) {
                steps.entry(device).or_default().push(ChainStep {
                    seq: entry.seq,
                    at: entry.at.as_millis(),
                    what,
                    evidence,
                });
            }
        }
        let mut out = Vec::new();
        for rec in self.store.devices()? {
            out.push(TrustChainView {
                device_id: rec.device_id.to_string(),
                name: Some(rec.name.as_str().to_owned()),
                pairing_type: pairing_type_name(rec.pairing_type).to_owned(),
                trust_level: Some(trust_level_name(rec.trust_level).to_owned()),
                vouched_by: rec.vouched_by.map(|v| v.to_string()),
                steps: steps.remove(&rec.device_id).unwrap_or_default(),
            });
        }
        for (device, steps) in steps {
            out.push(TrustChainView {
                device_id: device.to_string(),
                name: None,
                pairing_type: "removed".to_owned(),
                trust_level: None,
                vouched_by: None,
                steps,
            });
        }
        Ok(out)
    }
}
