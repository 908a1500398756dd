//! The vouchee's side of proxy pairing: accepting a [`ProxyPairingComplete`].
//!
//! After E paired directly with V, V vouches for E to its targets and tells E which of them
//! accepted. E must not take V's word for it: each entry carries the target's own signed
//! acceptance, which E verifies under the target's key before storing the target as a
//! proxied device. A Complete is accepted only from the voucher of the session — the
//! directly paired, Trusted device E expects it from, as authenticated by the connection
//! (REFERENCES.md §2: Spacedrive accepted it from anyone).
//!
//! The check is all-or-nothing: one bad entry refuses the whole message, with a
//! [`CompleteRejection`] that names the entry, and nothing is stored. A message that is
//! accepted twice stores nothing the second time: targets this device already knows (paired
//! directly or by proxy) or has tombstoned are left out of the result.

use crate::identity::{DeviceId, DevicePublicKey};
use crate::ids::SessionId;
use crate::keys::derive_proxied_key;
use crate::messages::{
    Decision, DisplayName, ProxyPairingComplete, SignedResponse, MAX_ADDR_HINTS, MAX_ADDR_HINT_LEN,
    MAX_COMPLETE_ENTRIES,
};
use crate::model::{KnownDevice, PairingType, TrustLevel};
use crate::secret::SymmetricKey;
use crate::signing::SignatureError;
use crate::time::Timestamp;
use crate::vouch::RESPONSE_VERSION;
use crate::DecodeError;
use std::collections::BTreeSet;

/// What the vouchee needs to know about the node's state.
pub trait VoucheeView {
    /// A paired device, or `None` if unknown.
    fn device(&self, id: &DeviceId) -> Option<KnownDevice>;
    /// True if the user blocked or removed this device.
    fn is_tombstoned(&self, id: &DeviceId) -> bool;
}

/// Why a `ProxyPairingComplete` was refused. Nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteRejection {
    /// The sender is not the voucher this device expects the session from.
    #[error("sender is not the voucher of this session")]
    NotFromVoucher,
    /// The sender is not a directly paired, Trusted device.
    #[error("sender is not a directly paired trusted device")]
    VoucherNotTrusted,
    /// More entries than [`MAX_COMPLETE_ENTRIES`].
    #[error("{count} entries, at most {max}")]
    TooManyEntries {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same target appears twice.
    #[error("target {0} listed twice")]
    DuplicateEntry(DeviceId),
    /// An entry carries more than [`MAX_ADDR_HINTS`] address hints, or one longer than
    /// [`MAX_ADDR_HINT_LEN`] bytes.
    #[error("entry {0}: too many or too long address hints")]
    AddressHints(DeviceId),
    /// An entry names this device or the voucher as target.
    #[error("entry {0} names this device or the voucher")]
    InvalidTarget(DeviceId),
    /// An entry's public key does not match its device id.
    #[error("entry {0}: key does not match the device id")]
    KeyMismatch(DeviceId),
    /// An entry's response does not verify under the target's key.
    #[error("entry {0}: response signature does not verify")]
    BadSignature(DeviceId),
    /// An entry's signed response does not decode.
    #[error("entry {target}: response does not decode: {error}")]
    MalformedResponse {
        /// The entry.
        target: DeviceId,
        /// Why.
        error: DecodeError,
    },
    /// An entry's response has an unknown format version.
    #[error("entry {0}: unsupported response version")]
    UnsupportedResponseVersion(DeviceId),
    /// An entry's response was signed by the target but names another responder.
    #[error("entry {0}: response names another responder")]
    WrongResponder(DeviceId),
    /// An entry's response is about another vouchee.
    #[error("entry {0}: response is about another vouchee")]
    WrongVouchee(DeviceId),
    /// An entry's response answers another voucher.
    #[error("entry {0}: response answers another voucher")]
    WrongVoucher(DeviceId),
    /// An entry's response belongs to another session.
    #[error("entry {0}: response belongs to another session")]
    WrongSession(DeviceId),
    /// An entry's response is a refusal.
    #[error("entry {0}: response is not an acceptance")]
    NotAccepted(DeviceId),
}

/// A target that accepted this device: what the node stores for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedPeer {
    /// The target.
    pub device_id: DeviceId,
    /// Its key (checked against the id).
    pub public_key: DevicePublicKey,
    /// Its name, as the voucher gave it.
    pub name: DisplayName,
    /// The voucher (stored as `vouched_by`).
    pub vouched_by: DeviceId,
    /// The target's signed acceptance.
    pub proof: SignedResponse,
    /// The target–vouchee key, derived from the voucher–vouchee pairing key exactly as the
    /// voucher derived the key it sealed for the target.
    pub proxied_key: SymmetricKey,
    /// When it was accepted here.
    pub accepted_at: Timestamp,
}

/// Checks a `ProxyPairingComplete` that arrived from `from` (the connection's id) for the
/// session this device expects from `expected_voucher`, and returns the targets to store:
/// every entry verified, minus targets already known or tombstoned. `voucher_vouchee_key`
/// is the pairing key shared with the voucher.
pub fn accept_complete(
    me: &DeviceId,
    from: &DeviceId,
    expected_voucher: &DeviceId,
    view: &impl VoucheeView,
    voucher_vouchee_key: &SymmetricKey,
    msg: &ProxyPairingComplete,
    now: Timestamp,
) -> Result<Vec<ProxiedPeer>, CompleteRejection> {
    if from != expected_voucher {
        return Err(CompleteRejection::NotFromVoucher);
    }
    match view.device(from) {
        Some(d)
            if d.pairing_type == PairingType::Direct && d.trust_level == TrustLevel::Trusted => {}
        _ => return Err(CompleteRejection::VoucherNotTrusted),
    }
    if msg.accepted.len() > MAX_COMPLETE_ENTRIES {
        return Err(CompleteRejection::TooManyEntries {
            count: msg.accepted.len(),
            max: MAX_COMPLETE_ENTRIES,
        });
    }

    let mut seen = BTreeSet::new();
    for entry in &msg.accepted {
        let target = entry.device_id;
        if !seen.insert(target) {
            return Err(CompleteRejection::DuplicateEntry(target));
        }
        if target == *me || target == *from {
            return Err(CompleteRejection::InvalidTarget(target));
        }
        if entry.addrs.len() > MAX_ADDR_HINTS
            || entry.addrs.iter().any(|a| a.0.len() > MAX_ADDR_HINT_LEN)
        {
            return Err(CompleteRejection::AddressHints(target));
        }
        if entry.public_key.device_id() != target {
            return Err(CompleteRejection::KeyMismatch(target));
        }
        check_response(
            me,
            from,
            &msg.session_id,
            &target,
            &entry.public_key,
            &entry.response,
        )?;
    }

    Ok(msg
        .accepted
        .iter()
        .filter(|e| view.device(&e.device_id).is_none() && !view.is_tombstoned(&e.device_id))
        .map(|e| ProxiedPeer {
            device_id: e.device_id,
            public_key: e.public_key,
            name: e.name.clone(),
            vouched_by: *from,
            proof: e.response.clone(),
            proxied_key: derive_proxied_key(
                voucher_vouchee_key,
                &msg.session_id,
                from,
                &e.device_id,
                me,
            ),
            accepted_at: now,
        })
        .collect())
}

/// One entry's signed acceptance: by the target, for this device, from this voucher, in
/// this session, and an acceptance.
fn check_response(
    me: &DeviceId,
    voucher: &DeviceId,
    session: &SessionId,
    target: &DeviceId,
    key: &DevicePublicKey,
    response: &SignedResponse,
) -> Result<(), CompleteRejection> {
    let r = response.verify(key).map_err(|e| match e {
        SignatureError::Body(error) => CompleteRejection::MalformedResponse {
            target: *target,
            error,
        },
        _ => CompleteRejection::BadSignature(*target),
    })?;
    let target = *target;
    if r.v != RESPONSE_VERSION {
        return Err(CompleteRejection::UnsupportedResponseVersion(target));
    }
    if r.responder != target {
        return Err(CompleteRejection::WrongResponder(target));
    }
    if r.vouchee != *me {
        return Err(CompleteRejection::WrongVouchee(target));
    }
    if r.voucher != *voucher {
        return Err(CompleteRejection::WrongVoucher(target));
    }
    if r.session_id != *session {
        return Err(CompleteRejection::WrongSession(target));
    }
    if !matches!(r.decision, Decision::Accepted { .. }) {
        return Err(CompleteRejection::NotAccepted(target));
    }
    Ok(())
}
