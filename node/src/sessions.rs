//! The JSON view of a vouching session (`vouchnet sessions`, `vouchnet session <ID>`), and
//! the stable names of vouch rejections that views and events use.

use serde::{Deserialize, Serialize};
use vouchnet_protocol::messages::VouchRejection;
use vouchnet_protocol::model::{SessionState, VouchStatus, VouchingSession};

/// One vouching session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id (32 hex digits).
    pub id: String,
    /// The device vouched for.
    pub vouchee: String,
    /// Its name.
    pub vouchee_name: String,
    /// `pending`, `in_progress`, `completed` or `cancelled`.
    pub state: String,
    /// One entry per target.
    pub vouches: Vec<VouchView>,
    /// When it was created.
    pub created_at: u64,
}

/// The vouch to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchView {
    /// The target.
    pub device_id: String,
    /// `selected`, `waiting`, `queued`, `accepted`, `rejected` or `expired`.
    pub status: String,
    /// Why it was rejected, when it was (see [`rejection_name`]).
    pub reason: Option<String>,
    /// Waiting, and the target said its user is being asked: the voucher waits for that
    /// person (until the prompt's deadline) rather than for the response timeout.
    #[serde(default)]
    pub user_asked: bool,
}

/// The stable snake_case name of a rejection, as views, events and docs/cli.md use it.
pub fn rejection_name(r: &VouchRejection) -> &'static str {
    match r {
        VouchRejection::NotFromVoucher => "not_from_voucher",
        VouchRejection::VoucherNotPaired => "voucher_not_paired",
        VouchRejection::VoucherNotDirect => "voucher_not_direct",
        VouchRejection::VoucherNotTrusted => "voucher_not_trusted",
        VouchRejection::BadSignature => "bad_signature",
        VouchRejection::Stale { .. } => "stale",
        VouchRejection::FromFuture { .. } => "from_future",
        VouchRejection::Replay => "replay",
        VouchRejection::WrongTarget => "wrong_target",
        VouchRejection::VoucheeIsSelf => "vouchee_is_self",
        VouchRejection::VoucheeIsVoucher => "vouchee_is_voucher",
        VouchRejection::VoucheeKeyMismatch => "vouchee_key_mismatch",
        VouchRejection::AlreadyPaired => "already_paired",
        VouchRejection::VoucheeBlocked => "vouchee_blocked",
        VouchRejection::BadSealedKey => "bad_sealed_key",
        VouchRejection::UserRejected => "user_rejected",
        VouchRejection::PromptExpired => "prompt_expired",
        VouchRejection::RateLimited => "rate_limited",
        VouchRejection::Timeout => "timeout",
        VouchRejection::Unsupported => "unsupported",
        _ => "other",
    }
}

/// The stable name of a session state.
pub fn state_name(s: SessionState) -> &'static str {
    match s {
        SessionState::Pending => "pending",
        SessionState::InProgress => "in_progress",
        SessionState::Completed => "completed",
        SessionState::Cancelled => "cancelled",
    }
}

/// The view of a stored session.
pub fn view(s: &VouchingSession) -> SessionView {
    SessionView {
        id: s.id.to_hex(),
        vouchee: s.vouchee.to_string(),
        vouchee_name: s.vouchee_name.as_str().to_owned(),
        state: state_name(s.state).to_owned(),
        vouches: s
            .targets
            .iter()
            .map(|(target, status)| {
                let user_asked = matches!(
                    status,
                    VouchStatus::Waiting {
                        user_prompted: true,
                        ..
                    }
                );
                let (status, reason) = match status {
                    VouchStatus::Selected => ("selected", None),
                    VouchStatus::Waiting { .. } => ("waiting", None),
                    VouchStatus::Queued => ("queued", None),
                    VouchStatus::Accepted { .. } => ("accepted", None),
                    VouchStatus::Rejected { reason, .. } => {
                        ("rejected", Some(rejection_name(reason).to_owned()))
                    }
                    VouchStatus::Expired => ("expired", None),
                };
                VouchView {
                    device_id: target.to_string(),
                    status: status.to_owned(),
                    reason,
                    user_asked,
                }
            })
            .collect(),
        created_at: s.created_at.as_millis(),
    }
}
