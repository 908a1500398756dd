//! Key derivation, MACs and sealing: every KDF label of the protocol lives here.
//!
//! All derivations are HKDF-SHA-256 and all MACs HMAC-SHA-256. Byte strings that vary in
//! length (device ids) are length-prefixed with a big-endian u16 wherever they are hashed,
//! so no two different inputs concatenate to the same bytes. `docs/protocol.md` lists each
//! label and input layout; the test vectors there are produced from these functions.

use crate::identity::DeviceId;
use crate::ids::{RekeyId, SessionId, TxId};
use crate::messages::SealedKey;
use crate::secret::SymmetricKey;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Commitment of the pairing initiator.
pub const LABEL_PAIRING_COMMITMENT: &str = "vouchnet/pairing-commitment/v1";
/// HKDF info prefix of the pairing key schedule.
pub const LABEL_PAIRING_KDF: &str = "vouchnet/pairing-kdf/v1";
/// HKDF expand label: the 6-digit code.
pub const LABEL_SAS: &str = "vouchnet/pairing-sas/v1";
/// HKDF expand label: the key-confirmation MAC key.
pub const LABEL_CONFIRM_KEY: &str = "vouchnet/pairing-confirm-key/v1";
/// HKDF expand label: the long-term pairing (session) key.
pub const LABEL_PAIRING_KEY: &str = "vouchnet/pairing-key/v1";
/// MAC domain of key confirmation.
pub const LABEL_CONFIRM_MAC: &str = "vouchnet/pairing-confirm/v1";
/// MAC domain of the presence key proof.
pub const LABEL_KEY_PROOF: &str = "vouchnet/key-proof/v1";
/// HKDF info of a proxied (target–vouchee) key.
pub const LABEL_PROXIED_KEY: &str = "vouchnet/proxied-key/v1";
/// AEAD associated-data domain of a sealed proxied key.
pub const LABEL_SEALED_KEY: &str = "vouchnet/sealed-proxied-key/v1";
/// HKDF info of a rekey.
pub const LABEL_REKEY_KDF: &str = "vouchnet/rekey-kdf/v1";
/// MAC domain of a rekey.
pub const LABEL_REKEY_MAC: &str = "vouchnet/rekey-mac/v1";
/// AEAD associated-data domain of a sealed text message.
pub const LABEL_SEALED_TEXT: &str = "vouchnet/sealed-text/v1";

/// Why a key operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOpError {
    /// The X25519 result is all zeros: the peer sent a low-order point.
    #[error("non-contributory X25519 exchange")]
    NonContributory,
    /// AEAD authentication failed (wrong key, wrong context, or altered bytes).
    #[error("sealed data does not open")]
    OpenFailed,
    /// A plaintext or ciphertext is too large.
    #[error("sealed data too large")]
    TooLarge,
}

/// Appends `bytes` with a big-endian u16 length prefix.
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("length-prefixed field under 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hmac_verify(key: &[u8], parts: &[&[u8]], mac: &[u8; 32]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.verify_slice(mac).is_ok()
}

fn hkdf_expand(prk: &hkdf::Hkdf<Sha256>, label: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(label.as_bytes(), &mut out[..])
        .expect("32 bytes is a valid HKDF length");
    out
}

/// An ephemeral X25519 key pair for one exchange; the secret is zeroized on drop.
pub struct Ephemeral {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl Ephemeral {
    /// A fresh key pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rng);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    /// From fixed secret bytes, for test vectors only.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    /// The public key to send.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The shared secret with `their_public`; refuses a non-contributory (all-zero) result.
    pub fn agree(&self, their_public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, KeyOpError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*their_public));
        if !shared.was_contributory() {
            return Err(KeyOpError::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl core::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ephemeral")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The initiator's commitment: SHA-256 over its ephemeral key and nonce, bound to the
/// method, transaction and both device ids.
pub fn pairing_commitment(
    method: &str,
    tx_id: &TxId,
    initiator: &DeviceId,
    responder: &DeviceId,
    initiator_ephemeral: &[u8; 32],
    initiator_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut input = Vec::with_capacity(192);
    put_lp(&mut input, LABEL_PAIRING_COMMITMENT.as_bytes());
    put_lp(&mut input, method.as_bytes());
    input.extend_from_slice(&tx_id.0);
    put_lp(&mut input, &initiator.to_bytes());
    put_lp(&mut input, &responder.to_bytes());
    input.extend_from_slice(initiator_ephemeral);
    input.extend_from_slice(initiator_nonce);
    Sha256::digest(&input).into()
}

/// Everything both sides of a direct pairing agree on, in the order it is hashed.
#[derive(Debug, Clone)]
pub struct PairingTranscript<'a> {
    /// [`crate::messages::PAIRING_METHOD`].
    pub method: &'a str,
    /// The transaction.
    pub tx_id: &'a TxId,
    /// Initiator as authenticated by the connection.
    pub initiator: &'a DeviceId,
    /// Responder as authenticated by the connection.
    pub responder: &'a DeviceId,
    /// Initiator's ephemeral key.
    pub initiator_ephemeral: &'a [u8; 32],
    /// Responder's ephemeral key.
    pub responder_ephemeral: &'a [u8; 32],
    /// Initiator's nonce.
    pub initiator_nonce: &'a [u8; 32],
    /// Responder's nonce.
    pub responder_nonce: &'a [u8; 32],
}

impl PairingTranscript<'_> {
    /// The transcript bytes: the HKDF info of the key schedule and the input of the MACs.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_lp(&mut out, LABEL_PAIRING_KDF.as_bytes());
        put_lp(&mut out, self.method.as_bytes());
        out.extend_from_slice(&self.tx_id.0);
        put_lp(&mut out, &self.initiator.to_bytes());
        put_lp(&mut out, &self.responder.to_bytes());
        out.extend_from_slice(self.initiator_ephemeral);
        out.extend_from_slice(self.responder_ephemeral);
        out.extend_from_slice(self.initiator_nonce);
        out.extend_from_slice(self.responder_nonce);
        out
    }
}

/// Which side of a pairing computes a MAC; bound into the MAC so a MAC cannot be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the `PairingRequest`.
    Initiator,
    /// Received it.
    Responder,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Initiator => 0x01,
            Role::Responder => 0x02,
        }
    }
}

/// The keys of one direct pairing.
pub struct PairingKeys {
    /// The 6-digit code, 000000–999999.
    pub sas: u32,
    confirm_key: Zeroizing<[u8; 32]>,
    transcript: Vec<u8>,
    /// The long-term key of the pair, stored after both confirmations.
    pub pairing_key: SymmetricKey,
}

impl core::fmt::Debug for PairingKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PairingKeys").finish_non_exhaustive()
    }
}

impl PairingKeys {
    /// Derives the code, the confirmation key and the pairing key from the X25519 result.
    pub fn derive(shared: &[u8; 32], transcript: &PairingTranscript<'_>) -> Self {
        let info = transcript.bytes();
        let th: [u8; 32] = Sha256::digest(&info).into();
        let prk = hkdf::Hkdf::<Sha256>::new(Some(&th), shared);
        let sas_bytes = hkdf_expand(&prk, LABEL_SAS);
        let mut n = [0u8; 8];
        n.copy_from_slice(&sas_bytes[..8]);
        let sas = (u64::from_be_bytes(n) % 1_000_000) as u32;
        PairingKeys {
            sas,
            confirm_key: hkdf_expand(&prk, LABEL_CONFIRM_KEY),
            transcript: info,
            pairing_key: SymmetricKey::from_bytes(*hkdf_expand(&prk, LABEL_PAIRING_KEY)),
        }
    }

    /// The code as shown to users: six digits with leading zeros.
    pub fn sas_string(&self) -> String {
        format!("{:06}", self.sas)
    }

    /// The key-confirmation MAC that `role` sends.
    pub fn confirm_mac(&self, role: Role) -> [u8; 32] {
        hmac(
            &self.confirm_key[..],
            &[
                LABEL_CONFIRM_MAC.as_bytes(),
                &[role.byte()],
                &self.transcript,
            ],
        )
    }

    /// Checks the MAC that `role` (the peer) sent, in constant time.
    pub fn verify_confirm_mac(&self, role: Role, mac: &[u8; 32]) -> bool {
        hmac_verify(
            &self.confirm_key[..],
            &[
                LABEL_CONFIRM_MAC.as_bytes(),
                &[role.byte()],
                &self.transcript,
            ],
            mac,
        )
    }
}

/// The presence key proof: `prover` shows `verifier` it holds their pairing key.
pub fn key_proof_mac(
    key: &SymmetricKey,
    challenge: &[u8; 32],
    prover: &DeviceId,
    verifier: &DeviceId,
) -> [u8; 32] {
    let mut input = Vec::with_capacity(128);
    put_lp(&mut input, &prover.to_bytes());
    put_lp(&mut input, &verifier.to_bytes());
    input.extend_from_slice(challenge);
    hmac(key.expose(), &[LABEL_KEY_PROOF.as_bytes(), &input])
}

/// Checks a presence key proof in constant time.
pub fn verify_key_proof(
    key: &SymmetricKey,
    challenge: &[u8; 32],
    prover: &DeviceId,
    verifier: &DeviceId,
    mac: &[u8; 32],
) -> bool {
    let expected = key_proof_mac(key, challenge, prover, verifier);
    subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..]).into()
}

fn proxy_context(
    label: &str,
    session: &SessionId,
    voucher: &DeviceId,
    target: &DeviceId,
    vouchee: &DeviceId,
) -> Vec<u8> {
    let mut info = Vec::with_capacity(160);
    put_lp(&mut info, label.as_bytes());
    info.extend_from_slice(&session.0);
    put_lp(&mut info, &voucher.to_bytes());
    put_lp(&mut info, &target.to_bytes());
    put_lp(&mut info, &vouchee.to_bytes());
    info
}

/// The key a target and the vouchee share after a vouch: derived from the voucher–vouchee
/// pairing key, bound to voucher, target, vouchee and session. Both the voucher and the
/// vouchee can compute it; the pair replaces it with a rekey at first contact.
pub fn derive_proxied_key(
    voucher_vouchee_key: &SymmetricKey,
    session: &SessionId,
    voucher: &DeviceId,
    target: &DeviceId,
    vouchee: &DeviceId,
) -> SymmetricKey {
    let info = proxy_context(LABEL_PROXIED_KEY, session, voucher, target, vouchee);
    let prk = hkdf::Hkdf::<Sha256>::new(Some(&session.0), voucher_vouchee_key.expose());
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&info, &mut out[..])
        .expect("32 bytes is a valid HKDF length");
    SymmetricKey::from_bytes(*out)
}

/// Seals the proxied key for the target under the voucher–target pairing key.
#[allow(clippy::too_many_arguments)]
pub fn seal_proxied_key(
    voucher_target_key: &SymmetricKey,
    proxied: &SymmetricKey,
    session: &SessionId,
    voucher: &DeviceId,
    target: &DeviceId,
    vouchee: &DeviceId,
    rng: &mut impl CryptoRngCore,
) -> SealedKey {
    let aad = proxy_context(LABEL_SEALED_KEY, session, voucher, target, vouchee);
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(voucher_target_key.expose().into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: proxied.expose(),
                aad: &aad,
            },
        )
        .expect("in-memory AEAD encryption cannot fail");
    let ciphertext: [u8; 48] = ct.as_slice().try_into().expect("32-byte key + 16-byte tag");
    SealedKey { nonce, ciphertext }
}

/// Opens a sealed proxied key; fails unless key and context match exactly.
pub fn open_proxied_key(
    voucher_target_key: &SymmetricKey,
    sealed: &SealedKey,
    session: &SessionId,
    voucher: &DeviceId,
    target: &DeviceId,
    vouchee: &DeviceId,
) -> Result<SymmetricKey, KeyOpError> {
    let aad = proxy_context(LABEL_SEALED_KEY, session, voucher, target, vouchee);
    let cipher = XChaCha20Poly1305::new(voucher_target_key.expose().into());
    let pt = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyOpError::OpenFailed)?,
    );
    let key: [u8; 32] = pt
        .as_slice()
        .try_into()
        .map_err(|_| KeyOpError::OpenFailed)?;
    Ok(SymmetricKey::from_bytes(key))
}

fn text_aad(from: &DeviceId, to: &DeviceId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    put_lp(&mut aad, LABEL_SEALED_TEXT.as_bytes());
    put_lp(&mut aad, &from.to_bytes());
    put_lp(&mut aad, &to.to_bytes());
    aad
}

/// Seals a text message from `from` to `to` under their session key.
pub fn seal_text(
    key: &SymmetricKey,
    from: &DeviceId,
    to: &DeviceId,
    text: &str,
    rng: &mut impl CryptoRngCore,
) -> Result<crate::messages::SealedText, KeyOpError> {
    if text.len() + 16 > crate::messages::MAX_SEALED_LEN {
        return Err(KeyOpError::TooLarge);
    }
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: text.as_bytes(),
                aad: &text_aad(from, to),
            },
        )
        .expect("in-memory AEAD encryption cannot fail");
    Ok(crate::messages::SealedText { nonce, ciphertext })
}

/// Opens a sealed text message; the sender is the authenticated connection peer.
pub fn open_text(
    key: &SymmetricKey,
    from: &DeviceId,
    to: &DeviceId,
    sealed: &crate::messages::SealedText,
) -> Result<String, KeyOpError> {
    if sealed.ciphertext.len() > crate::messages::MAX_SEALED_LEN {
        return Err(KeyOpError::TooLarge);
    }
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let pt = cipher
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &text_aad(from, to),
            },
        )
        .map_err(|_| KeyOpError::OpenFailed)?;
    String::from_utf8(pt).map_err(|_| KeyOpError::OpenFailed)
}

/// Transcript of a rekey between `initiator` and `responder`.
pub fn rekey_transcript(
    rekey_id: &RekeyId,
    initiator: &DeviceId,
    responder: &DeviceId,
    initiator_ephemeral: &[u8; 32],
    initiator_nonce: &[u8; 32],
    responder_ephemeral: &[u8; 32],
    responder_nonce: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_lp(&mut out, LABEL_REKEY_KDF.as_bytes());
    out.extend_from_slice(&rekey_id.0);
    put_lp(&mut out, &initiator.to_bytes());
    put_lp(&mut out, &responder.to_bytes());
    out.extend_from_slice(initiator_ephemeral);
    out.extend_from_slice(initiator_nonce);
    out.extend_from_slice(responder_ephemeral);
    out.extend_from_slice(responder_nonce);
    out
}

/// MAC of one side of a rekey, under the key being replaced (proves the pair relationship).
pub fn rekey_mac(current: &SymmetricKey, role: Role, transcript: &[u8]) -> [u8; 32] {
    hmac(
        current.expose(),
        &[LABEL_REKEY_MAC.as_bytes(), &[role.byte()], transcript],
    )
}

/// Checks the peer's rekey MAC in constant time.
pub fn verify_rekey_mac(
    current: &SymmetricKey,
    role: Role,
    transcript: &[u8],
    mac: &[u8; 32],
) -> bool {
    hmac_verify(
        current.expose(),
        &[LABEL_REKEY_MAC.as_bytes(), &[role.byte()], transcript],
        mac,
    )
}

/// The replacement key: HKDF over the fresh X25519 result only (salted with the transcript
/// hash), so whoever knew the old key — the voucher — cannot compute the new one.
pub fn rekey_derive(shared: &[u8; 32], transcript: &[u8]) -> SymmetricKey {
    let th: [u8; 32] = Sha256::digest(transcript).into();
    let prk = hkdf::Hkdf::<Sha256>::new(Some(&th), shared);
    SymmetricKey::from_bytes(*hkdf_expand(&prk, LABEL_REKEY_KDF))
}
