//! Secret key material.
//!
//! [`SymmetricKey`] is the only type that holds a pairing or session key. Its `Debug`
//! prints nothing secret and its bytes are zeroized when it is dropped, so a key can be
//! logged by accident only by calling [`SymmetricKey::expose`] on purpose.

use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte symmetric key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; 32]);

impl SymmetricKey {
    /// Wraps key bytes. The caller should zeroize its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SymmetricKey(bytes)
    }

    /// The key bytes, for a cipher or for persisting with mode 0600. Never log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SymmetricKey::from_bytes([0xab; 32]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "SymmetricKey(<redacted>)");
        assert!(!shown.contains("ab"));
    }
}
