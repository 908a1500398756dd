//! After a real-stack run: each node's store read back from disk, the simulator's
//! invariants checked on what the nodes actually stored, and the run's outcome counted.
//!
//! The nodes are shut down first, then every data directory is opened with
//! [`Store::open`] (the node's own storage code) one at a time. The checks use the
//! simulator's own proof checks ([`check_target_proof`], [`check_vouchee_proof`]) and the
//! storage crate's audit verifier, and the runner's ledger of the pairings whose codes both
//! users confirmed, never the nodes' word:
//!
//! - **Chain**: a direct record needs a pairing both users confirmed; a proxied record needs
//!   a voucher and a proof whose signatures verify and name these devices.
//! - **One hop**: a proxied record's voucher is a *direct* device of the holder, and the
//!   voucher holds the proxied device as a direct device too.
//! - **Once**: no trail adds a device twice without a removal between.
//! - **Tombstones**: a removed or revoked device is not held as proxied.
//! - **Audit**: every trail verifies ([`Store::verify_audit`], what `vouchnet audit
//!   --verify` runs).

use crate::invariants::{check_target_proof, check_vouchee_proof, pair, Invariant, Violation};
use crate::time::VTime;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use vouchnet_protocol::messages::Decision;
use vouchnet_protocol::model::{PairingType, TrustLevel, VouchStatus, VouchingSession};
use vouchnet_protocol::{DeviceId, Timestamp};
use vouchnet_storage::{
    AuditEntry, AuditEvent, DeviceProof, DeviceRecord, Store, StoreError, Tombstone,
    TombstoneReason,
};

/// What one node's store holds at the end.
#[derive(Debug)]
pub struct Snapshot {
    /// Devices.
    pub devices: Vec<DeviceRecord>,
    /// Tombstones.
    pub tombstones: Vec<Tombstone>,
    /// The audit trail.
    pub audit: Vec<AuditEntry>,
    /// The trail's verification: entries verified, or why it failed.
    pub audit_verified: Result<u64, String>,
    /// Vouching sessions still stored.
    pub sessions: Vec<VouchingSession>,
    /// Entries left in the offline queue.
    pub queue_left: u64,
}

/// Reads the store of the (stopped) node whose data directory is `dir`.
pub fn snapshot(dir: &Path) -> Result<Snapshot, StoreError> {
    let store = Store::open(dir)?;
    Ok(Snapshot {
        devices: store.devices()?,
        tombstones: store.tombstones()?,
        audit: store.audit_entries(0, usize::MAX)?,
        audit_verified: store
            .verify_audit()
            .map(|r| r.entries)
            .map_err(|e| e.to_string()),
        sessions: store.sessions()?,
        queue_left: store
            .due(Timestamp::from_millis(u64::MAX), usize::MAX)?
            .len() as u64,
    })
}

/// The invariants over every node's snapshot. `ids[i]` is device `i`'s id, `confirmed`
/// the pairs whose codes both users confirmed (by the runner, as the users).
pub fn invariants(
    snaps: &[Snapshot],
    ids: &[DeviceId],
    names: &[String],
    confirmed: &BTreeSet<(u32, u32)>,
    seed: u64,
    at: VTime,
) -> Vec<Violation> {
    let index: BTreeMap<DeviceId, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, i as u32))
        .collect();
    let name = |d: &DeviceId| {
        index
            .get(d)
            .map_or_else(|| d.to_string(), |i| names[*i as usize].clone())
    };
    let mut out = Vec::new();
    let mut v = |invariant, detail: String| {
        out.push(Violation {
            invariant,
            at,
            detail,
            seed,
        })
    };
    for (x, snap) in snaps.iter().enumerate() {
        let me = ids[x];
        let holder = &names[x];
        if let Err(e) = &snap.audit_verified {
            v(
                Invariant::Audit,
                format!("{holder}'s audit trail does not verify: {e}"),
            );
        }
        for e in once_violations(&snap.audit) {
            v(Invariant::Once, format!("{holder}: {} {e}", name(&e)));
        }
        let mine: BTreeMap<DeviceId, &DeviceRecord> =
            snap.devices.iter().map(|r| (r.device_id, r)).collect();
        if mine.len() != snap.devices.len() {
            v(Invariant::Once, format!("{holder} lists a device twice"));
        }
        for r in &snap.devices {
            let other = name(&r.device_id);
            match r.pairing_type {
                PairingType::Direct => {
                    let confirmed_pair = index
                        .get(&r.device_id)
                        .is_some_and(|y| confirmed.contains(&pair(x as u32, *y)));
                    if !confirmed_pair {
                        v(
                            Invariant::Chain,
                            format!("{holder} holds {other} as direct without a pairing both users confirmed"),
                        );
                    }
                }
                PairingType::Proxied => {
                    let Some(voucher) = r.vouched_by else {
                        v(
                            Invariant::Chain,
                            format!("{holder} holds {other} as proxied with no voucher"),
                        );
                        continue;
                    };
                    let vname = name(&voucher);
                    if mine.get(&voucher).map(|d| d.pairing_type) != Some(PairingType::Direct) {
                        v(
                            Invariant::OneHop,
                            format!("{holder} holds {other} vouched by {vname}, which is not one of its direct devices"),
                        );
                    }
                    let voucher_holds_direct = index.get(&voucher).is_some_and(|vi| {
                        snaps[*vi as usize].devices.iter().any(|d| {
                            d.device_id == r.device_id && d.pairing_type == PairingType::Direct
                        })
                    });
                    if !voucher_holds_direct {
                        v(
                            Invariant::OneHop,
                            format!("{holder} holds {other} vouched by {vname}, which does not hold {other} as direct"),
                        );
                    }
                    let proof = match &r.proof {
                        Some(DeviceProof::Vouch(p)) => {
                            check_target_proof(&me, &voucher, &r.device_id, p)
                        }
                        Some(DeviceProof::Acceptance(resp)) => {
                            check_vouchee_proof(&me, &voucher, &r.device_id, resp)
                        }
                        None => Err("no proof stored".to_owned()),
                    };
                    if let Err(e) = proof {
                        v(
                            Invariant::Chain,
                            format!("{holder} holds {other} vouched by {vname}: {e}"),
                        );
                    }
                }
            }
        }
        for t in &snap.tombstones {
            if matches!(
                t.reason,
                TombstoneReason::Removed | TombstoneReason::Revoked
            ) && mine
                .get(&t.device_id)
                .is_some_and(|r| r.pairing_type == PairingType::Proxied)
            {
                v(
                    Invariant::Tombstone,
                    format!(
                        "{holder} removed {} but holds it as proxied",
                        name(&t.device_id)
                    ),
                );
            }
        }
    }
    out
}

/// The devices a trail adds a second time without a removal between.
pub fn once_violations(audit: &[AuditEntry]) -> Vec<DeviceId> {
    let mut held: BTreeSet<DeviceId> = BTreeSet::new();
    let mut twice = Vec::new();
    for e in audit {
        match &e.event {
            AuditEvent::PairedDirect { device, .. }
            | AuditEvent::VouchAccepted {
                vouchee: device, ..
            }
            | AuditEvent::ProxiedDeviceAdded { device, .. } => {
                let first_record = held.insert(*device);
                if !first_record {
                    twice.push(*device);
                }
            }
            AuditEvent::Unpaired { device } | AuditEvent::Revoked { device, .. } => {
                held.remove(device);
            }
            AuditEvent::ReviewResolved {
                device,
                kept: false,
                ..
            } => {
                held.remove(device);
            }
            _ => {}
        }
    }
    twice
}

/// What a run achieved, counted from the stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pairs where both sides hold a direct record of the other.
    pub direct_pairings: u64,
    /// Pairs where only one side holds a direct record.
    pub one_sided_direct: u64,
    /// Σ n(n−1)/2 over groups.
    pub full_mesh_pairs: u64,
    /// Pairs of a group that trust each other both ways.
    pub satisfied_edges: u64,
    /// Pairs where only one side trusts the other.
    pub one_sided: u64,
    /// Vouch targets accepted, over every session (the voucher's view).
    pub vouches_accepted: u64,
    /// Vouch targets rejected, by reason.
    pub vouches_rejected: BTreeMap<String, u64>,
    /// Vouch targets whose queued vouch expired.
    pub vouches_expired: u64,
    /// Vouch targets not in a terminal status.
    pub vouches_open: u64,
    /// Queue entries left.
    pub queue_left: u64,
    /// Sessions counted.
    pub sessions: u64,
    /// Audit entries over all trails.
    pub audit_entries: u64,
    /// Key proofs that failed (`KeyProofFailed` entries over all trails).
    pub key_proofs_failed: u64,
}

/// `session` with each target still open in it set to the end its voucher's audit trail
/// recorded for it: the target's signed answer, or the queued vouch expiring. (A timeout is
/// not audited; a target that timed out after the runner's last look stays open.)
fn with_audited_ends(session: &VouchingSession, audit: &[AuditEntry]) -> VouchingSession {
    let mut s = session.clone();
    for entry in audit {
        let (target, end) = match &entry.event {
            AuditEvent::TargetAnswered {
                session: id,
                target,
                response,
            } if *id == s.id => {
                let Ok(answer) = response.decode_unverified() else {
                    continue;
                };
                let end = match answer.decision {
                    Decision::Accepted { .. } => VouchStatus::Accepted {
                        response: response.clone(),
                    },
                    Decision::Rejected { reason } => VouchStatus::Rejected {
                        reason,
                        response: Some(response.clone()),
                    },
                };
                (target, end)
            }
            AuditEvent::VouchExpired {
                session: id,
                target,
            } if *id == s.id => (target, VouchStatus::Expired),
            _ => continue,
        };
        if let Some(status) = s.targets.get_mut(target) {
            if !status.is_terminal() {
                *status = end;
            }
        }
    }
    s
}

/// Counts the outcome. `groups` are the plan's groups (device indices);
/// `observed` the sessions the runner saw while they ran, keyed by voucher, used for those
/// the node has since pruned (`session_retention`).
pub fn outcome(
    snaps: &[Snapshot],
    ids: &[DeviceId],
    groups: &[Vec<u32>],
    observed: &BTreeMap<(u32, vouchnet_protocol::SessionId), VouchingSession>,
) -> Outcome {
    let mut o = Outcome::default();
    let holds = |x: usize, y: usize, direct_only: bool| {
        snaps[x].devices.iter().any(|r| {
            r.device_id == ids[y]
                && r.trust_level == TrustLevel::Trusted
                && (!direct_only || r.pairing_type == PairingType::Direct)
        })
    };
    let n = snaps.len();
    for x in 0..n {
        for y in x + 1..n {
            match (holds(x, y, true), holds(y, x, true)) {
                (true, true) => o.direct_pairings += 1,
                (true, false) | (false, true) => o.one_sided_direct += 1,
                _ => {}
            }
        }
    }
    for g in groups {
        o.full_mesh_pairs += crate::scenario::full_mesh_pairs(g.len() as u64);
        for (i, &a) in g.iter().enumerate() {
            for &b in &g[i + 1..] {
                match (
                    holds(a as usize, b as usize, false),
                    holds(b as usize, a as usize, false),
                ) {
                    (true, true) => o.satisfied_edges += 1,
                    (true, false) | (false, true) => o.one_sided += 1,
                    _ => {}
                }
            }
        }
    }
    // A session its voucher has pruned is known from the runner's last look at it, which
    // may predate its end: what the voucher's audit trail recorded since is laid over it.
    let pruned: Vec<((u32, vouchnet_protocol::SessionId), VouchingSession)> = observed
        .iter()
        .filter(|((x, id), _)| !snaps[*x as usize].sessions.iter().any(|s| s.id == *id))
        .map(|(k, s)| (*k, with_audited_ends(s, &snaps[k.0 as usize].audit)))
        .collect();
    let mut sessions: BTreeMap<(u32, vouchnet_protocol::SessionId), &VouchingSession> =
        pruned.iter().map(|(k, s)| (*k, s)).collect();
    for (x, snap) in snaps.iter().enumerate() {
        for s in &snap.sessions {
            sessions.insert((x as u32, s.id), s);
        }
        o.queue_left += snap.queue_left;
        o.audit_entries += snap.audit.len() as u64;
        o.key_proofs_failed += snap
            .audit
            .iter()
            .filter(|e| matches!(e.event, AuditEvent::KeyProofFailed { .. }))
            .count() as u64;
    }
    o.sessions = sessions.len() as u64;
    for s in sessions.values() {
        for status in s.targets.values() {
            match status {
                VouchStatus::Accepted { .. } => o.vouches_accepted += 1,
                VouchStatus::Rejected { reason, .. } => {
                    *o.vouches_rejected
                        .entry(vouchnet_node::sessions::rejection_name(reason).to_owned())
                        .or_insert(0) += 1;
                }
                VouchStatus::Expired => o.vouches_expired += 1,
                VouchStatus::Selected | VouchStatus::Waiting { .. } | VouchStatus::Queued => {
                    o.vouches_open += 1
                }
            }
        }
    }
    o
}

impl Outcome {
    /// Rejections of every reason.
    pub fn rejected_total(&self) -> u64 {
        self.vouches_rejected.values().sum()
    }

    /// Every pair of every group trusts each other both ways.
    pub fn full_mesh(&self) -> bool {
        self.satisfied_edges == self.full_mesh_pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use vouchnet_protocol::messages::DisplayName;
    use vouchnet_protocol::{DeviceKeypair, TxId};

    fn entry(seq: u64, event: AuditEvent) -> AuditEntry {
        AuditEntry {
            seq,
            prev_hash: [0; 32],
            at: Timestamp::from_millis(seq),
            event,
        }
    }

    fn paired(k: &DeviceKeypair, rng: &mut ChaCha20Rng) -> AuditEvent {
        AuditEvent::PairedDirect {
            device: k.device_id(),
            key: k.public(),
            name: DisplayName::new("tv").unwrap(),
            tx_id: TxId::random(rng),
            confirmed_by_user: true,
            our_mac: [1; 32],
            their_mac: [2; 32],
        }
    }

    #[test]
    fn a_device_added_again_after_an_unpairing_is_not_a_double_record() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let tv = DeviceKeypair::generate(&mut rng);
        let trail = vec![
            entry(0, paired(&tv, &mut rng)),
            entry(
                1,
                AuditEvent::Unpaired {
                    device: tv.device_id(),
                },
            ),
            entry(2, paired(&tv, &mut rng)),
        ];
        assert_eq!(once_violations(&trail), vec![]);
    }

    #[test]
    fn a_device_added_twice_is_reported_once_per_extra_addition() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let tv = DeviceKeypair::generate(&mut rng);
        let watch = DeviceKeypair::generate(&mut rng);
        let trail = vec![
            entry(0, paired(&tv, &mut rng)),
            entry(1, paired(&watch, &mut rng)),
            entry(2, paired(&tv, &mut rng)),
        ];
        assert_eq!(once_violations(&trail), vec![tv.device_id()]);
    }
}
