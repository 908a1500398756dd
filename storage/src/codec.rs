//! Value encoding for the database: the protocol's bounded CBOR codec, with limits sized
//! for stored records rather than for peer frames.
//!
//! Everything the store writes goes through [`vouchnet_protocol::codec`], so serde_cbor
//! stays behind that one module. A value that does not decode is reported as
//! [`StoreError::Corrupt`], never as "absent".

use crate::error::StoreError;
use serde::{de::DeserializeOwned, Serialize};
use vouchnet_protocol::codec::{self, Limits};
use zeroize::Zeroizing;

/// Limits for decoding stored values: large enough for a vouching session with many
/// targets, bounded so a damaged length field cannot trigger a huge allocation.
pub const STORED_LIMITS: Limits = Limits {
    max_frame: 16 * 1024 * 1024,
    max_depth: 32,
};

/// Encodes a value that holds no secret.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

/// Encodes a value that holds a secret, into a buffer zeroized when dropped.
pub(crate) fn encode_secret<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(codec::encode(value))
}

/// Decodes a stored value; `what` names it in the corruption report.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes, &STORED_LIMITS).map_err(|e| StoreError::undecodable(what, e))
}
