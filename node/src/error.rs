//! Errors of the node's commands, as the API and the CLI report them.
//!
//! Each variant maps to one HTTP status and one stable `kind` string (docs/cli.md), so a
//! script can tell "no such device" from "not yet available" without parsing prose.

use vouchnet_protocol::pairing::PairingError;
use vouchnet_storage::StoreError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A parameter is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The device, pairing or session does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The command does not apply in the current state (already paired, blocked, ...).
    #[error("{0}")]
    Conflict(String),
    /// The pairing machine refused the command.
    #[error("pairing: {0}")]
    Pairing(#[from] PairingError),
    /// The code the user typed is not the code this device shows: the pairing was
    /// cancelled on both sides.
    #[error("the code typed does not match the code shown on this device; the pairing was cancelled and nothing was stored")]
    CodeMismatch,
    /// The feature is not implemented yet.
    #[error("{0} is not yet available: proxy pairing is not implemented in this version")]
    NotYetAvailable(&'static str),
    /// The device could not be reached, or refused the message.
    #[error("network: {0}")]
    Network(String),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl NodeError {
    /// The stable identifier of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::InvalidArgument(_) => "invalid_argument",
            NodeError::NotFound(_) => "not_found",
            NodeError::Conflict(_) => "conflict",
            NodeError::Pairing(_) => "pairing_refused",
            NodeError::CodeMismatch => "code_mismatch",
            NodeError::NotYetAvailable(_) => "not_yet_available",
            NodeError::Network(_) => "network",
            NodeError::Store(_) => "storage",
            NodeError::ShuttingDown => "shutting_down",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            NodeError::InvalidArgument(_) => 400,
            NodeError::NotFound(_) => 404,
            NodeError::Conflict(_) | NodeError::Pairing(_) | NodeError::CodeMismatch => 409,
            NodeError::NotYetAvailable(_) => 501,
            NodeError::Network(_) => 502,
            NodeError::Store(_) => 500,
            NodeError::ShuttingDown => 503,
        }
    }
}
