//! One-line descriptions of audit entries for `vouchnet audit`.
//!
//! The audit trail itself (hash chain, evidence) belongs to the storage crate; this only
//! renders its events for people and scripts.

use crate::views::trust_level_name;
use vouchnet_protocol::messages::{AcceptedHow, Decision};
use vouchnet_storage::AuditEvent;

/// How a vouch was accepted, in words.
fn how_name(how: AcceptedHow) -> &'static str {
    match how {
        AcceptedHow::Automatic => "automatically",
        AcceptedHow::UserConfirmed => "confirmed by the user",
    }
}

/// A one-line description of an audit event.
pub fn summary(event: &AuditEvent) -> String {
    match event {
        AuditEvent::PairedDirect {
            device,
            name,
            tx_id,
            ..
        } => {
            format!(
                "paired directly with {} ({device}), codes confirmed, transaction {tx_id}",
                name.as_str()
            )
        }
        AuditEvent::Vouched {
            session,
            vouchee,
            targets,
            ..
        } => {
            format!(
                "vouched for {vouchee} to {} device(s), session {session}",
                targets.len()
            )
        }
        AuditEvent::TargetAnswered {
            session,
            target,
            response,
        } => {
            // The entry was verified when it was written; `audit --verify` checks it again.
            let answer = match response.decode_unverified().map(|r| r.decision) {
                Ok(Decision::Accepted { how }) => format!("accepted ({})", how_name(how)),
                Ok(Decision::Rejected { reason }) => {
                    format!("rejected ({})", crate::sessions::rejection_name(&reason))
                }
                Err(_) => "answered".to_owned(),
            };
            format!("{target} {answer} the vouch of session {session}")
        }
        AuditEvent::VouchExpired { session, target } => {
            format!("vouch of session {session} to {target} expired undelivered")
        }
        AuditEvent::VouchAccepted {
            voucher,
            vouchee,
            how,
            ..
        } => {
            format!(
                "accepted {vouchee} on the vouch of {voucher}, {}",
                how_name(*how)
            )
        }
        AuditEvent::VouchRejected {
            voucher,
            vouchee,
            reason,
            ..
        } => {
            format!("refused the vouch of {voucher} for {vouchee}: {reason:?}")
        }
        AuditEvent::ProxiedDeviceAdded {
            device,
            voucher,
            name,
            ..
        } => {
            format!(
                "{} ({device}) accepted this device on the vouch of {voucher}",
                name.as_str()
            )
        }
        AuditEvent::UserConfirmed { action } => format!("user confirmed {action:?}"),
        AuditEvent::Revoked { device, reason } => format!("revoked {device}: {reason:?}"),
        AuditEvent::Unpaired { device } => format!("unpaired {device}"),
        AuditEvent::TrustChanged { device, from, to } => {
            format!(
                "trust of {device}: {} -> {}",
                trust_level_name(*from),
                trust_level_name(*to)
            )
        }
        AuditEvent::KeyProofFailed { device } => {
            format!("{device} failed to prove it holds the pairing key")
        }
        AuditEvent::Rekeyed { device } => format!("key shared with {device} replaced by a rekey"),
        AuditEvent::TombstoneCleared { device } => format!("tombstone of {device} cleared"),
        AuditEvent::Blocked { device } => format!("blocked {device}, which was not paired"),
        AuditEvent::Unblocked { device } => format!("lifted the block on {device}"),
        other => format!("{other:?}"),
    }
}
