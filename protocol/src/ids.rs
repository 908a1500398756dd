//! Random identifiers that name transactions, sessions and vouches.

use core::fmt;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; $len]);

        impl $name {
            /// A fresh random id.
            pub fn random(rng: &mut impl CryptoRngCore) -> Self {
                let mut b = [0u8; $len];
                rng.fill_bytes(&mut b);
                $name(b)
            }

            /// Lower-case hex, as shown to users and accepted by the CLI.
            pub fn to_hex(&self) -> String {
                self.0.iter().map(|b| format!("{b:02x}")).collect()
            }

            /// Parses the form produced by [`Self::to_hex`].
            pub fn from_hex(s: &str) -> Option<Self> {
                if s.len() != 2 * $len || !s.is_ascii() {
                    return None;
                }
                let mut b = [0u8; $len];
                for (i, out) in b.iter_mut().enumerate() {
                    *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
                }
                Some($name(b))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

random_id!(
    /// Names one direct-pairing transaction; bound into the commitment, SAS and MACs.
    TxId,
    16
);
random_id!(
    /// Names one vouching session (one vouchee, many targets).
    SessionId,
    16
);
random_id!(
    /// The random nonce of one signed vouch; the receiver's replay cache is keyed by it.
    VouchNonce,
    16
);
random_id!(
    /// Names one rekey exchange between two devices.
    RekeyId,
    16
);
