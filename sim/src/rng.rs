//! Seeded randomness.
//!
//! Every random choice of a run comes from a `ChaCha20Rng` derived from the scenario seed,
//! a stream name and an index: `SHA-256("vouchnet-sim/rng/v1" ‖ seed ‖ stream ‖ index)`.
//! Each device has its own streams (keys, protocol nonces, user behaviour), and the network
//! has one. Separate streams keep one device's choices from shifting every other device's
//! when a scenario changes slightly, and the same seed gives the same run.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

/// The independent random streams of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Expanding the scenario into a plan.
    Plan,
    /// A device's long-term key.
    DeviceKey,
    /// A device's protocol randomness (ephemeral keys, nonces, ids).
    Protocol,
    /// A device user's decisions and delays.
    User,
    /// Latency, jitter and loss.
    Network,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Plan => b"plan",
            Stream::DeviceKey => b"device-key",
            Stream::Protocol => b"protocol",
            Stream::User => b"user",
            Stream::Network => b"network",
        }
    }
}

/// The seed of stream `stream` number `index` of a run seeded with `seed`.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vouchnet-sim/rng/v1");
    h.update(seed.to_be_bytes());
    let tag = stream.tag();
    h.update([tag.len() as u8]);
    h.update(tag);
    h.update(index.to_be_bytes());
    h.finalize().into()
}

/// A generator for stream `stream` number `index` of a run seeded with `seed`.
pub fn derive_rng(seed: u64, stream: Stream, index: u64) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_seed(seed, stream, index))
}
