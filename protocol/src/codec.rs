//! The one place that encodes and decodes vouchnet's CBOR.
//!
//! serde_cbor is the encoding the project chose; it carries an "unmaintained" advisory
//! (RUSTSEC-2021-0127, accepted in `deny.toml`), so nothing outside this module names it:
//! replacing it means changing this file only.
//!
//! Decoding is bounded: the frame size is checked first, then the private `wellformed`
//! module walks the structure without recursion or peer-sized allocation, and only then does
//! serde build the typed value. Every failure is a [`DecodeError`]; no input panics.

use serde::{de::DeserializeOwned, Serialize};

/// Hard limits on what a decoder accepts from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes. The network layer reads at most `max_frame + 1`
    /// bytes, so an oversized frame is detected without reading it whole.
    pub max_frame: usize,
    /// Deepest nesting of arrays and maps.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 64 * 1024,
            max_depth: 16,
        }
    }
}

/// Why bytes were not accepted as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame had no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame exceeded [`Limits::max_frame`].
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes seen (at least `max + 1`).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Arrays or maps nested deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input ended inside an item, or declared more than it holds.
    #[error("truncated input")]
    Truncated,
    /// Bytes after the single top-level item.
    #[error("{extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A text string that is not UTF-8.
    #[error("invalid UTF-8 in a text string")]
    InvalidUtf8,
    /// A CBOR item outside the subset vouchnet uses (tags, floats, indefinite lengths).
    #[error("unsupported CBOR item (major type {major}, info {info})")]
    UnsupportedItem {
        /// CBOR major type.
        major: u8,
        /// Additional information / argument.
        info: u64,
    },
    /// A protocol version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// Well-formed CBOR that does not match the message schema (missing or duplicate
    /// fields, wrong types, bad key lengths, unknown variants).
    #[error("invalid message: {0}")]
    Schema(String),
}

/// Encodes a value. Infallible for vouchnet's own types (no maps with non-string keys,
/// no floats), which the round-trip property tests confirm.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::to_vec(value).expect("vouchnet types always encode")
}

/// Decodes exactly one value from `bytes` within `limits`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &Limits) -> Result<T, DecodeError> {
    check_bounds(bytes, limits)?;
    decode_checked(bytes)
}

/// Size and structure checks shared by every decoder.
pub(crate) fn check_bounds(bytes: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_frame {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_frame,
        });
    }
    crate::wellformed::check(bytes, limits.max_depth)
}

/// Decodes bytes that already passed [`check_bounds`].
pub(crate) fn decode_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_cbor::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Schema(e.to_string()))?;
    de.end()
        .map_err(|_| DecodeError::TrailingBytes { extra: 1 })?;
    Ok(value)
}
