//! The invariants a run must never break, checked as it goes and in full at the end.
//!
//! - **Chain**: no device is trusted without a valid chain to a direct pairing. A direct
//!   record needs a pairing whose code *both* users confirmed; a proxied record needs a
//!   voucher paired directly with both ends and signatures that verify (the voucher's
//!   certificate and the target's acceptance).
//! - **One hop**: no chain is longer than one vouch: the voucher's own trust in the vouchee
//!   (or target) must come from a direct pairing, never from another vouch.
//! - **Once**: no device is recorded twice: a device that is already stored is never added
//!   again, and a trail never shows two additions of one device without a removal between.
//! - **Tombstones**: a blocked or removed device is never re-added by a vouch.
//! - **Audit**: every audit trail verifies with the storage crate's verifier.
//!
//! The incremental checks run on every change of trust and cost a few map lookups and the
//! signature checks of the proof being stored; the full check at the end re-checks every
//! record and every trail. The checks are independent of the machines they watch: they use
//! the simulator's own record of which pairings both users confirmed, not the machines'
//! word.

use crate::time::VTime;
use core::fmt;
use std::collections::HashSet;
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::messages::{Decision, SignedResponse};
use vouchnet_protocol::model::VouchProof;

/// Which invariant broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// A device is trusted without a valid chain to a direct pairing.
    Chain,
    /// A chain is longer than one vouch.
    OneHop,
    /// A device is recorded twice.
    Once,
    /// A blocked or removed device was re-added by a vouch.
    Tombstone,
    /// An audit trail does not verify.
    Audit,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::Chain => "no device is trusted without a valid chain to a direct pairing",
            Invariant::OneHop => "no chain is longer than one vouch",
            Invariant::Once => "no device is recorded twice",
            Invariant::Tombstone => "a blocked or removed device is never re-added by a vouch",
            Invariant::Audit => "every audit trail verifies",
        })
    }
}

/// A broken invariant: which, when, and what was seen. Carries the seed that reproduces it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated at {}: {invariant}: {detail} (seed {seed})", crate::time::Clock(*.at))]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// Virtual time.
    pub at: VTime,
    /// What was seen.
    pub detail: String,
    /// The seed of the run.
    pub seed: u64,
}

/// The simulator's own record of direct pairings, independent of the machines.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Pairs (low index, high index) whose direct pairing both users confirmed.
    direct: HashSet<(u32, u32)>,
    /// (device, peer, tx) whose user confirmed the matching code.
    confirmed: HashSet<(u32, u32, [u8; 16])>,
}

/// The pair key of two devices.
pub fn pair(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

impl Ledger {
    /// `device`'s user confirmed the code of `tx` with `peer` (the codes matched).
    pub fn user_confirmed(&mut self, device: u32, peer: u32, tx: [u8; 16]) {
        self.confirmed.insert((device, peer, tx));
    }

    /// True when both users of `tx` confirmed.
    pub fn both_confirmed(&self, a: u32, b: u32, tx: [u8; 16]) -> bool {
        self.confirmed.contains(&(a, b, tx)) && self.confirmed.contains(&(b, a, tx))
    }

    /// Records a completed direct pairing; true when the pair is new.
    pub fn paired(&mut self, a: u32, b: u32) -> bool {
        self.direct.insert(pair(a, b))
    }

    /// True when `a` and `b` completed a direct pairing both users confirmed.
    pub fn is_direct(&self, a: u32, b: u32) -> bool {
        self.direct.contains(&pair(a, b))
    }

    /// All direct pairs, sorted.
    pub fn direct_pairs(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = self.direct.iter().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Checks the proof a target stores for a vouchee: the voucher's certificate verifies under
/// the voucher's key and names this target and vouchee; the acceptance verifies under the
/// target's key and answers exactly that certificate.
pub fn check_target_proof(
    target: &DeviceId,
    voucher: &DeviceId,
    vouchee: &DeviceId,
    proof: &VouchProof,
) -> Result<(), String> {
    let vkey = voucher
        .public_key()
        .map_err(|e| format!("voucher key: {e}"))?;
    let cert = proof
        .vouch
        .verify(&vkey)
        .map_err(|e| format!("certificate does not verify under the voucher's key: {e}"))?;
    if cert.voucher != *voucher || cert.target != *target || cert.vouchee != *vouchee {
        return Err("certificate names another voucher, target or vouchee".into());
    }
    let tkey = target
        .public_key()
        .map_err(|e| format!("target key: {e}"))?;
    let r = proof
        .response
        .verify(&tkey)
        .map_err(|e| format!("acceptance does not verify under the target's key: {e}"))?;
    if r.responder != *target
        || r.voucher != *voucher
        || r.vouchee != *vouchee
        || r.vouch_nonce != cert.nonce
        || r.vouch_digest != proof.vouch.body_digest()
        || r.session_id != cert.session_id
    {
        return Err("acceptance does not answer the stored certificate".into());
    }
    if !matches!(r.decision, Decision::Accepted { .. }) {
        return Err("stored response is not an acceptance".into());
    }
    Ok(())
}

/// Checks the proof a vouchee stores for a target: the target's signed acceptance of this
/// vouchee from this voucher.
pub fn check_vouchee_proof(
    vouchee: &DeviceId,
    voucher: &DeviceId,
    target: &DeviceId,
    response: &SignedResponse,
) -> Result<(), String> {
    let tkey = target
        .public_key()
        .map_err(|e| format!("target key: {e}"))?;
    let r = response
        .verify(&tkey)
        .map_err(|e| format!("acceptance does not verify under the target's key: {e}"))?;
    if r.responder != *target || r.voucher != *voucher || r.vouchee != *vouchee {
        return Err("acceptance names another responder, voucher or vouchee".into());
    }
    if !matches!(r.decision, Decision::Accepted { .. }) {
        return Err("stored response is not an acceptance".into());
    }
    Ok(())
}
