//! The JSON view of a vouching session (`vouchnet sessions`, `vouchnet session <ID>`).
//!
//! Sessions are created by vouching, which arrives with proxy pairing; until then the list
//! is empty, but the shape is fixed here so scripts can rely on it.

use serde::{Deserialize, Serialize};
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
    /// Why it was rejected, when it was.
    pub reason: Option<String>,
}

/// The view of a stored session.
pub fn view(s: &VouchingSession) -> SessionView {
    SessionView {
        id: s.id.to_hex(),
        vouchee: s.vouchee.to_string(),
        vouchee_name: s.vouchee_name.as_str().to_owned(),
        state: match s.state {
            SessionState::Pending => "pending",
            SessionState::InProgress => "in_progress",
            SessionState::Completed => "completed",
            SessionState::Cancelled => "cancelled",
        }
        .to_owned(),
        vouches: s
            .targets
            .iter()
            .map(|(target, status)| {
                let (status, reason) = match status {
                    VouchStatus::Selected => ("selected", None),
                    VouchStatus::Waiting { .. } => ("waiting", None),
                    VouchStatus::Queued => ("queued", None),
                    VouchStatus::Accepted { .. } => ("accepted", None),
                    VouchStatus::Rejected { reason, .. } => {
                        ("rejected", Some(format!("{reason:?}")))
                    }
                    VouchStatus::Expired => ("expired", None),
                };
                VouchView {
                    device_id: target.to_string(),
                    status: status.to_owned(),
                    reason,
                }
            })
            .collect(),
        created_at: s.created_at.as_millis(),
    }
}
