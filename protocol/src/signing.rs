//! Domain-separated Ed25519 signatures over exact bytes.
//!
//! A signed object travels as [`Signed<T>`]: the CBOR encoding of the payload *as the signer
//! produced it* plus a 64-byte signature. The signature covers
//! `len(tag) as u8 || tag || body`, where `tag` is the payload kind's context string
//! ([`SignedPayload::TAG`]). A verifier checks the signature over the received bytes with
//! `verify_strict` and only then decodes them, so no re-encoding of decoded fields is ever
//! verified, and a signature made for one kind of object can never verify as another.

use crate::codec::{self, DecodeError, Limits};
use crate::identity::{DeviceKeypair, DevicePublicKey};
use core::fmt;
use core::marker::PhantomData;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::sync::OnceLock;

/// Context tag of vouch certificates, version 1.
pub const TAG_VOUCH_CERTIFICATE: &str = "vouchnet/vouch-certificate/v1";
/// Context tag of signed proxy-pairing responses, version 1.
pub const TAG_VOUCH_RESPONSE: &str = "vouchnet/proxy-pairing-response/v1";

/// A payload kind that is signed, with its context tag.
pub trait SignedPayload: Serialize + DeserializeOwned {
    /// The domain-separation tag; distinct per kind and version.
    const TAG: &'static str;
}

/// Why a signed object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature is not 64 bytes.
    #[error("signature must be 64 bytes, got {0}")]
    WrongLength(usize),
    /// `verify_strict` refused it (wrong key, altered bytes, non-canonical S, small-order R).
    #[error("signature does not verify")]
    Invalid,
    /// The signature verified but the signed bytes are not a valid payload.
    #[error("signed body does not decode: {0}")]
    Body(#[from] DecodeError),
}

/// The exact bytes an Ed25519 signature covers for `tag` and `body`.
pub fn signing_input(tag: &str, body: &[u8]) -> Vec<u8> {
    let tag = tag.as_bytes();
    debug_assert!(tag.len() < 256);
    let mut out = Vec::with_capacity(1 + tag.len() + body.len());
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    out.extend_from_slice(body);
    out
}

/// Signs `body` under `tag`.
pub fn sign_bytes(key: &DeviceKeypair, tag: &str, body: &[u8]) -> [u8; 64] {
    key.sign_raw(&signing_input(tag, body)).to_bytes()
}

/// Verifies a signature over `body` under `tag` with `verify_strict`.
pub fn verify_bytes(
    key: &DevicePublicKey,
    tag: &str,
    body: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sig: &[u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureError::WrongLength(signature.len()))?;
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    key.verifying_key()
        .verify_strict(&signing_input(tag, body), &sig)
        .map_err(|_| SignatureError::Invalid)
}

/// A payload of kind `T`, as signed bytes plus signature.
///
/// The bytes cannot change once the value exists (there is no setter), so the value
/// remembers the key it verified under (or was signed with): checking the same value again,
/// as the store does before it records a vouch or a response as audit evidence, then costs
/// no second `verify_strict`. A value decoded from bytes or rebuilt from parts starts
/// unverified.
pub struct Signed<T> {
    body: Vec<u8>,
    signature: Vec<u8>,
    /// Boxed so that every message holding a signed value stays small.
    verified_by: OnceLock<Box<[u8; 32]>>,
    _kind: PhantomData<fn() -> T>,
}

impl<T: SignedPayload> Signed<T> {
    /// Encodes and signs `payload`.
    pub fn sign(key: &DeviceKeypair, payload: &T) -> Self {
        let body = codec::encode(payload);
        let signature = sign_bytes(key, T::TAG, &body).to_vec();
        Signed {
            body,
            signature,
            verified_by: OnceLock::from(Box::new(key.public().to_bytes())),
            _kind: PhantomData,
        }
    }

    /// Checks the signature over the received bytes, then decodes them.
    pub fn verify(&self, key: &DevicePublicKey) -> Result<T, SignatureError> {
        self.verify_signature(key)?;
        Ok(codec::decode(&self.body, &Limits::default())?)
    }

    /// Checks only the signature over the received bytes (for a caller that reads the body
    /// its own way), remembering success like [`Signed::verify`].
    pub fn verify_signature(&self, key: &DevicePublicKey) -> Result<(), SignatureError> {
        let key_bytes = key.to_bytes();
        if self.verified_by.get().map(|k| **k) != Some(key_bytes) {
            verify_bytes(key, T::TAG, &self.body, &self.signature)?;
            // A value verified under one key and then checked under another keeps the first.
            let _ = self.verified_by.set(Box::new(key_bytes));
        }
        Ok(())
    }

    /// Decodes the payload *without* checking the signature, to learn who claims to have
    /// signed it. Nothing read this way may be trusted before [`Signed::verify`] succeeds.
    pub fn decode_unverified(&self) -> Result<T, DecodeError> {
        codec::decode(&self.body, &Limits::default())
    }

    /// The signed bytes exactly as received.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signature bytes exactly as received.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// SHA-256 over the signed body, used to bind a response to the vouch it answers.
    pub fn body_digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.body).into()
    }

    /// Rebuilds from stored parts (e.g. an audit entry). Nothing is checked here.
    pub fn from_parts(body: Vec<u8>, signature: Vec<u8>) -> Self {
        Signed {
            body,
            signature,
            verified_by: OnceLock::new(),
            _kind: PhantomData,
        }
    }
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Signed {
            body: self.body.clone(),
            signature: self.signature.clone(),
            verified_by: self.verified_by.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signature == other.signature
    }
}
impl<T> Eq for Signed<T> {}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("kind", &core::any::type_name::<T>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct SignedWire {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

impl<T> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SignedWire {
            body: self.body.clone(),
            sig: self.signature.clone(),
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = SignedWire::deserialize(d)?;
        if w.sig.len() != 64 {
            return Err(serde::de::Error::custom(format!(
                "signature must be 64 bytes, got {}",
                w.sig.len()
            )));
        }
        Ok(Signed {
            body: w.body,
            signature: w.sig,
            verified_by: OnceLock::new(),
            _kind: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, VouchNonce};
    use crate::messages::{Decision, VouchResponse};
    use rand_chacha::rand_core::SeedableRng;

    fn response(signer: &DeviceKeypair) -> VouchResponse {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let other = DeviceKeypair::generate(&mut rng).device_id();
        VouchResponse {
            v: 1,
            session_id: SessionId::random(&mut rng),
            voucher: other,
            vouchee: other,
            responder: signer.device_id(),
            vouch_nonce: VouchNonce::random(&mut rng),
            vouch_digest: [3; 32],
            decision: Decision::Accepted {
                how: crate::messages::AcceptedHow::Automatic,
            },
            decided_at: crate::Timestamp::from_secs(1_700_000_000),
        }
    }

    /// A value remembers only the key it verified under: checking it under any other key
    /// runs the full verification and fails.
    #[test]
    fn a_remembered_check_holds_for_its_key_only() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let signer = DeviceKeypair::generate(&mut rng);
        let stranger = DeviceKeypair::generate(&mut rng);
        let signed = Signed::sign(&signer, &response(&signer));
        assert!(signed.verify(&signer.public()).is_ok());
        assert_eq!(
            signed.verify(&stranger.public()).unwrap_err(),
            SignatureError::Invalid
        );
        assert!(signed.clone().verify(&signer.public()).is_ok());
    }

    /// A value rebuilt from bytes starts unverified: altered bytes fail even though the
    /// original value was checked.
    #[test]
    fn a_value_rebuilt_from_bytes_is_checked_afresh() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let signer = DeviceKeypair::generate(&mut rng);
        let signed = Signed::sign(&signer, &response(&signer));
        assert!(signed.verify(&signer.public()).is_ok());
        let mut body = signed.body().to_vec();
        let last = body.len() - 1;
        body[last] ^= 1;
        let altered: Signed<VouchResponse> = Signed::from_parts(body, signed.signature().to_vec());
        assert_eq!(
            altered.verify(&signer.public()).unwrap_err(),
            SignatureError::Invalid
        );
        let decoded: Signed<VouchResponse> =
            codec::decode(&codec::encode(&signed), &Limits::default()).unwrap();
        assert!(decoded.verified_by.get().is_none());
        assert!(decoded.verify(&signer.public()).is_ok());
    }
}
