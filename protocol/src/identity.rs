//! Device identity: one Ed25519 key per device.
//!
//! The same key is the device's libp2p identity (its PeerId is the device id) and its
//! signing key for vouches and responses. libp2p-identity and ed25519-dalek derive the
//! same public key from the same 32-byte seed, which a test checks.
//!
//! Public keys that arrive from the network go through [`DevicePublicKey::from_bytes`],
//! which rejects non-canonical encodings and small-order ("weak") points, and every
//! signature is checked with `verify_strict` (see [`crate::signing`]).

use core::fmt;
use ed25519_dalek::{SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

/// Why a public key or device id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not 32 long.
    #[error("public key must be 32 bytes, got {0}")]
    WrongLength(usize),
    /// The bytes do not decode to a curve point.
    #[error("public key is not a valid Ed25519 point")]
    InvalidPoint,
    /// The point has small order; signatures under it prove nothing.
    #[error("public key is a weak (small-order) point")]
    WeakKey,
    /// The bytes are not a PeerId.
    #[error("invalid device id")]
    InvalidDeviceId,
    /// A PeerId that does not embed an Ed25519 key (vouchnet uses Ed25519 only).
    #[error("device id does not carry an Ed25519 public key")]
    NotEd25519,
    /// The public key given does not match the device id given with it.
    #[error("public key does not match device id")]
    Mismatch,
}

/// A validated Ed25519 public key: canonical encoding, not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey(VerifyingKey);

/// Most keys [`DevicePublicKey::from_bytes`] remembers as already validated.
const VALIDATED_KEYS_MAX: usize = 4096;

/// Keys that passed validation in this process, with their decompressed point.
///
/// Every stored device record and every vouch names keys; validating one means decompressing
/// a curve point (about as costly as half a signature check), and the same few keys are
/// read again and again. The memo holds only keys that passed every check, so it never
/// changes an outcome; it is emptied when full, so it stays bounded whatever a peer sends.
fn validated_keys() -> std::sync::MutexGuard<'static, HashMap<[u8; 32], VerifyingKey>> {
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    KEYS.get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DevicePublicKey {
    /// Validates and wraps 32 key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        if let Some(vk) = validated_keys().get(arr) {
            return Ok(DevicePublicKey(*vk));
        }
        let vk = VerifyingKey::from_bytes(arr).map_err(|_| KeyError::InvalidPoint)?;
        if vk.is_weak() {
            return Err(KeyError::WeakKey);
        }
        // ed25519-dalek accepts some non-canonical y encodings; re-encoding must round-trip.
        if vk.as_bytes() != arr {
            return Err(KeyError::InvalidPoint);
        }
        let mut memo = validated_keys();
        if memo.len() >= VALIDATED_KEYS_MAX {
            memo.clear();
        }
        memo.insert(*arr, vk);
        Ok(DevicePublicKey(vk))
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The device id (libp2p PeerId) of this key.
    pub fn device_id(&self) -> DeviceId {
        // A PeerId of an Ed25519 key is the identity multihash (code 0x00, length 36) of the
        // key's protobuf encoding `08 01 12 20 || key`. Building the bytes directly avoids
        // a second point decompression inside libp2p-identity; a test checks that the
        // result equals libp2p's own `to_peer_id`.
        let mut bytes = [0u8; 38];
        bytes[..6].copy_from_slice(&[0x00, 36, 0x08, 0x01, 0x12, 0x20]);
        bytes[6..].copy_from_slice(self.0.as_bytes());
        DeviceId(PeerId::from_bytes(&bytes).expect("identity multihash of 36 bytes is a PeerId"))
    }

    /// The dalek verifying key, for [`crate::signing`].
    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// A short human-comparable fingerprint: the first 8 bytes of SHA-256(key), hex, in groups.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.0.as_bytes());
        h[..8]
            .chunks(2)
            .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", self.fingerprint())
    }
}

impl Serialize for DevicePublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0.as_bytes())
    }
}

impl<'de> Deserialize<'de> for DevicePublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        DevicePublicKey::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

/// A device id: the libp2p PeerId of the device's Ed25519 key.
///
/// On the wire it is the PeerId's multihash bytes. Only ids that embed an Ed25519 key
/// (identity multihash) are accepted, so a device id always yields its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(PeerId);

impl DeviceId {
    /// Wraps a PeerId taken from an authenticated libp2p connection.
    ///
    /// Only the layout is checked here (an identity multihash of an Ed25519 protobuf key), so
    /// parsing and comparing ids costs no curve arithmetic. The embedded point is validated
    /// (canonical, not of small order) by [`DeviceId::public_key`], which every use of the key
    /// goes through.
    pub fn from_peer_id(peer: PeerId) -> Result<Self, KeyError> {
        let id = DeviceId(peer);
        id.embedded_key_bytes()?;
        Ok(id)
    }

    /// The 32 key bytes embedded in the id, without validating the point.
    fn embedded_key_bytes(&self) -> Result<&[u8], KeyError> {
        let mh = self.0.as_ref();
        if mh.code() != 0x00 {
            return Err(KeyError::NotEd25519);
        }
        // The digest is the deterministic protobuf encoding of the public key. For Ed25519
        // that is exactly `08 01 12 20 || key` (field 1 = KeyType Ed25519, field 2 = 32
        // bytes of key); any other layout is refused rather than interpreted.
        match mh.digest() {
            [0x08, 0x01, 0x12, 0x20, key @ ..] if key.len() == 32 => Ok(key),
            [0x08, 0x01, ..] => Err(KeyError::InvalidDeviceId),
            _ => Err(KeyError::NotEd25519),
        }
    }

    /// The libp2p PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.0
    }

    /// The PeerId's bytes, as encoded on the wire and bound into signatures and KDFs.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Parses and validates PeerId bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let peer = PeerId::from_bytes(bytes).map_err(|_| KeyError::InvalidDeviceId)?;
        Self::from_peer_id(peer)
    }

    /// The Ed25519 key embedded in the id, validated like any other key from the network.
    pub fn public_key(&self) -> Result<DevicePublicKey, KeyError> {
        DevicePublicKey::from_bytes(self.embedded_key_bytes()?)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl core::str::FromStr for DeviceId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let peer: PeerId = s.parse().map_err(|_| KeyError::InvalidDeviceId)?;
        Self::from_peer_id(peer)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.to_bytes())
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        DeviceId::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

/// A device's secret key. `Debug` never prints it; it is zeroized when dropped
/// (ed25519-dalek's `SigningKey` zeroizes on drop with the `zeroize` feature).
pub struct DeviceKeypair(SigningKey);

impl DeviceKeypair {
    /// A fresh key from a CSPRNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        DeviceKeypair(SigningKey::generate(rng))
    }

    /// The key for a 32-byte seed (as stored by the node, mode 0600).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        DeviceKeypair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, in a buffer that is zeroized when dropped. For persisting only.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> DevicePublicKey {
        DevicePublicKey(self.0.verifying_key())
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.public().device_id()
    }

    /// The same key as a libp2p identity, for the swarm.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut seed = self.seed();
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed[..])
            .expect("32-byte seed is a valid ed25519 secret")
    }

    /// Signs raw bytes. Crate-private: callers go through [`crate::signing`], which adds the
    /// domain-separation tag.
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> ed25519_dalek::Signature {
        use ed25519_dalek::Signer;
        self.0.sign(msg)
    }
}

impl fmt::Debug for DeviceKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeypair")
            .field("public", &self.public())
            .field("secret", &"<redacted>")
            .finish()
    }
}
