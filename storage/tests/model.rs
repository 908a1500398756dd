//! Model-based property test: random sequences of store operations, with restarts among
//! them, checked after every step against a plain in-memory model of the same rules.
//!
//! Device 0 is this node ("me"): it is the target of every received vouch. Devices 1..=5
//! are peers that get paired, vouch, are vouched for, and are targets of our own sessions.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use std::collections::BTreeMap;
use std::time::Duration;
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::ids::SessionId;
use vouchnet_protocol::messages::{AcceptedHow, Decision, VouchRejection};
use vouchnet_protocol::model::{
    PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchStatus, VouchingSession,
};
use vouchnet_protocol::queue::{backoff_delay, DropReason};
use vouchnet_protocol::{QueuePolicy, Timestamp};
use vouchnet_storage::*;

const HOUR: u64 = 3_600_000;
const QUEUE_EXPIRY: u64 = 3 * HOUR;

fn retention() -> RetentionPolicy {
    RetentionPolicy {
        session_retention: Duration::from_millis(HOUR),
        decision_retention: Duration::from_millis(2 * HOUR),
    }
}

fn queue_policy() -> QueuePolicy {
    QueuePolicy {
        max_retries: 3,
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        ..QueuePolicy::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    PairDirect(u8),
    SetTrust(u8, TrustLevel),
    Unpair(u8),
    BlockUnpaired(u8),
    UnblockUnpaired(u8),
    Touch(u8),
    Accept {
        voucher: u8,
        vouchee: u8,
        session: u64,
        nonce: u64,
    },
    Reject {
        voucher: u8,
        vouchee: u8,
        session: u64,
        nonce: u64,
    },
    StartSession {
        session: u64,
        vouchee: u8,
        targets: Vec<u8>,
    },
    Enqueue {
        session: u64,
        target: u8,
        delay: u64,
    },
    EnqueueNotify {
        session: u64,
    },
    Deliver {
        session: u64,
        target: u8,
    },
    Notify {
        session: u64,
    },
    Fail {
        session: u64,
        target: u8,
    },
    Reschedule {
        session: u64,
        target: u8,
        delay: u64,
    },
    Answer {
        session: u64,
        target: u8,
    },
    Finish {
        session: u64,
    },
    /// Deliver the `pick`-th queued entry (mod the queue's length), so valid deliveries
    /// are common.
    DeliverQueued {
        pick: usize,
    },
    /// Enqueue a vouch to the `pick`-th (session, target) pair that exists.
    EnqueueExisting {
        pick: usize,
        delay: u64,
    },
    /// Fail the `pick`-th queued vouch.
    FailQueued {
        pick: usize,
    },
    /// Accept a vouch from the `pick`-th paired device.
    AcceptFromPaired {
        pick: usize,
        vouchee: u8,
        session: u64,
        nonce: u64,
    },
    Due {
        limit: usize,
    },
    Advance(u64),
    Prune,
    Restart,
    /// A prompt opened (or replaced by a redelivery) for (session, vouchee, voucher).
    PutPrompt {
        voucher: u8,
        vouchee: u8,
        session: u64,
        nonce: u64,
    },
    /// A text received from `from`, into an inbox of `capacity`.
    PushInbox {
        from: u8,
        capacity: u64,
    },
    /// The user deletes every received text.
    ClearInbox,
    /// A prompt answered.
    RemovePrompt {
        voucher: u8,
        vouchee: u8,
        session: u64,
    },
}

fn peer() -> impl Strategy<Value = u8> {
    1u8..=5
}

fn trust() -> impl Strategy<Value = TrustLevel> {
    prop_oneof![
        Just(TrustLevel::Trusted),
        Just(TrustLevel::Unreliable),
        Just(TrustLevel::Blocked)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let s = 1u64..=3;
    prop_oneof![
        3 => peer().prop_map(Op::PairDirect),
        1 => (peer(), trust()).prop_map(|(d, t)| Op::SetTrust(d, t)),
        1 => peer().prop_map(Op::Unpair),
        1 => peer().prop_map(Op::BlockUnpaired),
        1 => peer().prop_map(Op::UnblockUnpaired),
        1 => peer().prop_map(Op::Touch),
        3 => (peer(), peer(), s.clone(), 1u64..=6)
            .prop_map(|(voucher, vouchee, session, nonce)| Op::Accept { voucher, vouchee, session, nonce }),
        1 => (peer(), peer(), s.clone(), 1u64..=6)
            .prop_map(|(voucher, vouchee, session, nonce)| Op::Reject { voucher, vouchee, session, nonce }),
        3 => (s.clone(), peer(), proptest::collection::btree_set(peer(), 1..6))
            .prop_map(|(session, vouchee, t)| Op::StartSession { session, vouchee, targets: t.into_iter().collect() }),
        4 => (s.clone(), peer(), 0u64..20_000).prop_map(|(session, target, delay)| Op::Enqueue { session, target, delay }),
        1 => s.clone().prop_map(|session| Op::EnqueueNotify { session }),
        3 => (s.clone(), peer()).prop_map(|(session, target)| Op::Deliver { session, target }),
        1 => s.clone().prop_map(|session| Op::Notify { session }),
        2 => (s.clone(), peer()).prop_map(|(session, target)| Op::Fail { session, target }),
        1 => (s.clone(), peer(), 0u64..50_000)
            .prop_map(|(session, target, delay)| Op::Reschedule { session, target, delay }),
        1 => (s.clone(), peer()).prop_map(|(session, target)| Op::Answer { session, target }),
        1 => s.prop_map(|session| Op::Finish { session }),
        4 => any::<usize>().prop_map(|pick| Op::DeliverQueued { pick }),
        2 => any::<usize>().prop_map(|pick| Op::FailQueued { pick }),
        4 => (any::<usize>(), 0u64..20_000).prop_map(|(pick, delay)| Op::EnqueueExisting { pick, delay }),
        4 => (any::<usize>(), peer(), 1u64..=3, 1u64..=6)
            .prop_map(|(pick, vouchee, session, nonce)| Op::AcceptFromPaired { pick, vouchee, session, nonce }),
        2 => (1usize..5).prop_map(|limit| Op::Due { limit }),
        3 => prop_oneof![0u64..30_000, 0u64..(4 * HOUR)].prop_map(Op::Advance),
        2 => Just(Op::Prune),
        1 => Just(Op::Restart),
        2 => (peer(), peer(), 1u64..=3, 1u64..=6)
            .prop_map(|(voucher, vouchee, session, nonce)| Op::PutPrompt { voucher, vouchee, session, nonce }),
        1 => (peer(), peer(), 1u64..=3)
            .prop_map(|(voucher, vouchee, session)| Op::RemovePrompt { voucher, vouchee, session }),
        2 => (peer(), 1u64..=4).prop_map(|(from, capacity)| Op::PushInbox { from, capacity }),
        1 => Just(Op::ClearInbox),
    ]
}

/// A store error reduced to what the model predicts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Err {
    NotFound(RecordKind),
    InvalidTransition,
    InvalidInput,
}

fn reduce(e: StoreError) -> Err {
    match e {
        StoreError::NotFound(k) => Err::NotFound(k),
        StoreError::InvalidTransition { .. } => Err::InvalidTransition,
        StoreError::InvalidInput { .. } => Err::InvalidInput,
        other => panic!("unexpected store error {other:?}"),
    }
}

/// The plain in-memory model.
#[derive(Default)]
struct Model {
    now: u64,
    devices: BTreeMap<DeviceId, DeviceRecord>,
    tombstones: BTreeMap<DeviceId, Tombstone>,
    nonces: BTreeMap<u64, u64>,
    decisions: BTreeMap<(SessionId, DeviceId), DecisionRecord>,
    sessions: BTreeMap<SessionId, VouchingSession>,
    queue: BTreeMap<Vec<u8>, QueueEntry>,
    /// By the documented key: `session ‖ vouchee ‖ voucher`.
    prompts: BTreeMap<Vec<u8>, PromptRecord>,
    /// Oldest first, as received, at most the last push's capacity.
    inbox: std::collections::VecDeque<InboxRecord>,
    /// Texts ever received: the next one's sequence number.
    inbox_next: u64,
    audit: u64,
}

/// A prompt's key bytes, in the store's documented layout (for its order).
fn prompt_key(session: SessionId, vouchee: DeviceId, voucher: DeviceId) -> Vec<u8> {
    let mut k = session.0.to_vec();
    k.extend_from_slice(&vouchee.to_bytes());
    k.extend_from_slice(&voucher.to_bytes());
    k
}

impl Model {
    /// Tombstones `device` (replacing any tombstone it had), as the store does.
    fn put_tombstone(
        &mut self,
        device: DeviceId,
        reason: TombstoneReason,
        at: Timestamp,
        blocked_over: Option<TombstoneReason>,
    ) {
        self.tombstones.insert(
            device,
            Tombstone {
                device_id: device,
                reason,
                at,
                blocked_over,
            },
        );
    }
}

/// The queue reference bytes, in the store's documented layout (for due-order).
fn ref_bytes(e: &QueueEntry) -> Vec<u8> {
    let mut k = e.session_id.0.to_vec();
    k.extend_from_slice(&e.recipient.to_bytes());
    k.push(match e.kind {
        QueueKind::Vouch => 1,
        QueueKind::NotifyVouchee => 2,
    });
    k
}

fn qkey(session: SessionId, recipient: DeviceId, kind: QueueKind) -> Vec<u8> {
    ref_bytes(&QueueEntry {
        session_id: session,
        recipient,
        kind,
        enqueued_at: Timestamp::EPOCH,
        expires_at: Timestamp::EPOCH,
        next_attempt_at: Timestamp::EPOCH,
        attempts: 0,
    })
}

impl Model {
    fn t(&self) -> Timestamp {
        at(self.now)
    }

    fn accept(&mut self, a: &AcceptVouch) -> AcceptOutcome {
        if let Some(d) = self.decisions.get(&(a.session_id, a.vouchee)) {
            return AcceptOutcome::AlreadyDecided(Box::new(d.clone()));
        }
        let refuse = match self.devices.get(&a.voucher) {
            None => Some(VouchRejection::VoucherNotPaired),
            Some(v) if v.pairing_type != PairingType::Direct => {
                Some(VouchRejection::VoucherNotDirect)
            }
            Some(v) if v.trust_level != TrustLevel::Trusted => {
                Some(VouchRejection::VoucherNotTrusted)
            }
            Some(_) if a.vouchee == a.voucher => Some(VouchRejection::VoucheeIsVoucher),
            Some(_) if self.tombstones.contains_key(&a.vouchee) => {
                Some(VouchRejection::VoucheeBlocked)
            }
            Some(_) if self.nonces.contains_key(&nonce_num(a)) => Some(VouchRejection::Replay),
            Some(_) if self.devices.contains_key(&a.vouchee) => Some(VouchRejection::AlreadyPaired),
            Some(_) => None,
        };
        if let Some(r) = refuse {
            return AcceptOutcome::Refused(r);
        }
        let rec = DeviceRecord {
            device_id: a.vouchee,
            public_key: a.vouchee_key,
            name: a.vouchee_name.clone(),
            pairing_type: PairingType::Proxied,
            trust_level: TrustLevel::Trusted,
            paired_at: a.at,
            last_seen: None,
            vouched_by: Some(a.voucher),
            proof: Some(DeviceProof::Vouch(a.proof.clone())),
            session_key: a.session_key.clone(),
            previous_key: None,
        };
        self.devices.insert(a.vouchee, rec.clone());
        self.remember(nonce_num(a), a.nonce_expires_at.as_millis());
        self.decisions.insert(
            (a.session_id, a.vouchee),
            DecisionRecord {
                session_id: a.session_id,
                voucher: a.voucher,
                vouchee: a.vouchee,
                nonce: a.nonce,
                decision: Decision::Accepted { how: a.how },
                response: Some(a.proof.response.clone()),
                decided_at: a.at,
            },
        );
        self.audit += 1;
        AcceptOutcome::Accepted(Box::new(rec))
    }

    fn remember(&mut self, n: u64, expires: u64) {
        let e = self.nonces.entry(n).or_insert(expires);
        *e = (*e).max(expires);
    }

    fn session_target(&mut self, s: SessionId, t: DeviceId) -> Result<&mut VouchStatus, Err> {
        let session = self
            .sessions
            .get_mut(&s)
            .ok_or(Err::NotFound(RecordKind::Session))?;
        session
            .targets
            .get_mut(&t)
            .ok_or(Err::NotFound(RecordKind::SessionTarget))
    }

    /// A vouch target still Queued becomes Expired (audited).
    fn expire_target(&mut self, s: SessionId, t: DeviceId) -> (bool, bool) {
        let now = self.t();
        let Some(session) = self.sessions.get_mut(&s) else {
            return (false, false);
        };
        match session.targets.get_mut(&t) {
            Some(status) if *status == VouchStatus::Queued => *status = VouchStatus::Expired,
            _ => return (false, false),
        }
        self.audit += 1;
        if session.state == SessionState::InProgress
            && session.targets.values().all(VouchStatus::is_terminal)
        {
            session.state = SessionState::Completed;
            session.finished_at = Some(now);
            return (true, true);
        }
        (true, false)
    }

    fn remove_session(&mut self, s: SessionId) {
        self.sessions.remove(&s);
        self.queue.retain(|_, e| e.session_id != s);
    }

    fn prune(&mut self) -> PruneReport {
        let mut r = PruneReport::default();
        if let Some(cutoff) = self.now.checked_sub(HOUR) {
            let done: Vec<SessionId> = self
                .sessions
                .values()
                .filter(|s| s.finished_at.is_some_and(|f| f.as_millis() <= cutoff))
                .map(|s| s.id)
                .collect();
            for s in done {
                self.remove_session(s);
                r.sessions_removed += 1;
            }
        }
        let expired: Vec<Vec<u8>> = self
            .queue
            .iter()
            .filter(|(_, e)| e.expires_at.as_millis() <= self.now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let e = self.queue.remove(&k).expect("listed");
            if e.kind == QueueKind::Vouch {
                let (expired, completed) = self.expire_target(e.session_id, e.recipient);
                let qr = QueueRef {
                    session_id: e.session_id,
                    recipient: e.recipient,
                    kind: e.kind,
                };
                if expired {
                    r.targets_expired.push(qr);
                }
                if completed {
                    r.sessions_completed.push(e.session_id);
                }
            }
            r.queue_expired += 1;
        }
        let before = self.nonces.len();
        let now = self.now;
        self.nonces.retain(|_, exp| *exp >= now);
        r.nonces_pruned = before - self.nonces.len();
        if let Some(cutoff) = self.now.checked_sub(2 * HOUR) {
            let before = self.decisions.len();
            self.decisions
                .retain(|_, d| d.decided_at.as_millis() > cutoff);
            r.decisions_pruned = before - self.decisions.len();
        }
        r
    }
}

fn nonce_num(a: &AcceptVouch) -> u64 {
    u64::from_be_bytes(a.nonce.0[..8].try_into().expect("8 bytes"))
}

/// Runs one op on both, asserting the same outcome.
fn step(store: &Store, m: &mut Model, op: &Op) {
    let now = m.t();
    let queued_vouches = || -> Vec<QueueEntry> {
        let mut v: Vec<QueueEntry> = m
            .queue
            .values()
            .filter(|e| e.kind == QueueKind::Vouch)
            .cloned()
            .collect();
        v.sort_by_key(ref_bytes);
        v
    };
    let resolved = match op {
        Op::DeliverQueued { pick } | Op::FailQueued { pick } => {
            let q = queued_vouches();
            let Some(e) = q.get(pick % q.len().max(1)) else {
                return;
            };
            let session = u64::from_be_bytes(e.session_id.0[..8].try_into().expect("8 bytes"));
            let target = (1..=5).find(|t| id(*t) == e.recipient).expect("a peer");
            match op {
                Op::DeliverQueued { .. } => Some(Op::Deliver { session, target }),
                _ => Some(Op::Fail { session, target }),
            }
        }
        Op::EnqueueExisting { pick, delay } => {
            let pairs: Vec<(u64, u8)> = m
                .sessions
                .values()
                .flat_map(|x| {
                    let s = u64::from_be_bytes(x.id.0[..8].try_into().expect("8 bytes"));
                    (1..=5)
                        .filter(|t| x.targets.contains_key(&id(*t)))
                        .map(move |t| (s, t))
                })
                .collect();
            let Some((session, target)) = pairs.get(pick % pairs.len().max(1)) else {
                return;
            };
            Some(Op::Enqueue {
                session: *session,
                target: *target,
                delay: *delay,
            })
        }
        Op::AcceptFromPaired {
            pick,
            vouchee,
            session,
            nonce,
        } => {
            let paired: Vec<u8> = (1..=5)
                .filter(|d| m.devices.contains_key(&id(*d)))
                .collect();
            let Some(voucher) = paired.get(pick % paired.len().max(1)) else {
                return;
            };
            Some(Op::Accept {
                voucher: *voucher,
                vouchee: *vouchee,
                session: *session,
                nonce: *nonce,
            })
        }
        _ => None,
    };
    let op = resolved.as_ref().unwrap_or(op);
    match op {
        Op::PairDirect(d) => {
            let got = store.pair_direct(&direct(*d, now)).map_err(reduce);
            let blocked = !m.devices.contains_key(&id(*d))
                && m.tombstones
                    .get(&id(*d))
                    .is_some_and(|t| t.reason == TombstoneReason::Blocked);
            if blocked {
                assert_eq!(got, Err(Err::InvalidTransition));
            } else {
                let rec = got.expect("pair");
                m.tombstones.remove(&id(*d));
                // Pairing again with a device still stored (a re-pairing) first records
                // that the old pairing ended.
                let again = m.devices.insert(id(*d), rec).is_some();
                m.audit += if again { 2 } else { 1 };
            }
        }
        Op::BlockUnpaired(d) => {
            let got = store.block_unpaired(&id(*d), now).map_err(reduce);
            let want = if m.devices.contains_key(&id(*d)) {
                Err(Err::InvalidTransition)
            } else {
                match m.tombstones.get(&id(*d)).map(|t| t.reason) {
                    Some(TombstoneReason::Blocked) => Ok(false),
                    before => {
                        m.put_tombstone(id(*d), TombstoneReason::Blocked, now, before);
                        m.audit += 1;
                        Ok(true)
                    }
                }
            };
            assert_eq!(got, want);
        }
        Op::UnblockUnpaired(d) => {
            let got = store.unblock_unpaired(&id(*d), now).map_err(reduce);
            let want = if m.devices.contains_key(&id(*d)) {
                Err(Err::InvalidTransition)
            } else {
                match m.tombstones.get(&id(*d)).cloned() {
                    Some(block) if block.reason == TombstoneReason::Blocked => {
                        match block.blocked_over {
                            Some(reason) => {
                                m.put_tombstone(id(*d), reason, now, None);
                            }
                            None => {
                                m.tombstones.remove(&id(*d));
                            }
                        }
                        m.audit += 1;
                        Ok(block)
                    }
                    _ => Err(Err::NotFound(RecordKind::Tombstone)),
                }
            };
            assert_eq!(got, want);
        }
        Op::SetTrust(d, to) => {
            let got = store.set_trust(&id(*d), *to, now).map_err(reduce);
            let want = match m.devices.get_mut(&id(*d)) {
                None => Err(Err::NotFound(RecordKind::Device)),
                Some(rec) => {
                    let from = rec.trust_level;
                    if from != *to {
                        rec.trust_level = *to;
                        m.audit += 1;
                        if *to == TrustLevel::Blocked {
                            m.put_tombstone(id(*d), TombstoneReason::Blocked, now, None);
                        } else if from == TrustLevel::Blocked
                            && m.tombstones
                                .get(&id(*d))
                                .is_some_and(|t| t.reason == TombstoneReason::Blocked)
                        {
                            m.tombstones.remove(&id(*d));
                        }
                    }
                    Ok(from)
                }
            };
            assert_eq!(got, want);
        }
        Op::Unpair(d) => {
            let got = store.unpair(&id(*d), now).map_err(reduce);
            let want = match m.devices.remove(&id(*d)) {
                None => Err(Err::NotFound(RecordKind::Device)),
                Some(rec) => {
                    m.put_tombstone(id(*d), TombstoneReason::Removed, now, None);
                    m.audit += 1;
                    Ok(rec)
                }
            };
            assert_eq!(got, want);
        }
        Op::Touch(d) => {
            let got = store.touch_last_seen(&id(*d), now).map_err(reduce);
            let want = match m.devices.get_mut(&id(*d)) {
                None => Err(Err::NotFound(RecordKind::Device)),
                Some(rec) => {
                    rec.last_seen = Some(rec.last_seen.map_or(now, |s| s.max(now)));
                    Ok(())
                }
            };
            assert_eq!(got, want);
        }
        Op::Accept {
            voucher,
            vouchee,
            session,
            nonce: n,
        } => {
            let a = accept(*voucher, 0, *vouchee, sid(*session), nonce(*n), now);
            assert_eq!(store.accept_vouch(&a).expect("accept"), m.accept(&a));
        }
        Op::Reject {
            voucher,
            vouchee,
            session,
            nonce: n,
        } => {
            let r = reject(
                *voucher,
                0,
                *vouchee,
                sid(*session),
                nonce(*n),
                VouchRejection::UserRejected,
                now,
            );
            let got = store.reject_vouch(&r).expect("reject");
            let want = match m.decisions.get(&(r.session_id, r.vouchee)) {
                Some(d) => RejectOutcome::AlreadyDecided(Box::new(d.clone())),
                None => {
                    m.audit += 1;
                    m.remember(*n, r.nonce_expires_at.as_millis());
                    m.decisions.insert(
                        (r.session_id, r.vouchee),
                        DecisionRecord {
                            session_id: r.session_id,
                            voucher: r.voucher,
                            vouchee: r.vouchee,
                            nonce: r.nonce,
                            decision: Decision::Rejected {
                                reason: r.reason.clone(),
                            },
                            response: r.response.clone(),
                            decided_at: now,
                        },
                    );
                    RejectOutcome::Recorded
                }
            };
            assert_eq!(got, want);
        }
        Op::StartSession {
            session: s,
            vouchee,
            targets,
        } => {
            if m.sessions.contains_key(&sid(*s)) {
                return;
            }
            let sess = session(sid(*s), *vouchee, targets, now);
            store.record_vouched(&sess, now).expect("vouched");
            m.sessions.insert(sid(*s), sess);
            m.audit += 1;
        }
        Op::Enqueue {
            session: s,
            target,
            delay,
        } => {
            let mut e = queue_entry(sid(*s), id(*target), QueueKind::Vouch, now);
            e.next_attempt_at = at(m.now + delay);
            e.expires_at = at(m.now + QUEUE_EXPIRY);
            let got = store.enqueue(&e).map_err(reduce);
            let want = match m.session_target(sid(*s), id(*target)) {
                Err(err) => Err(err),
                Ok(status) if status.is_terminal() => Err(Err::InvalidTransition),
                Ok(status) => {
                    *status = VouchStatus::Queued;
                    let k = ref_bytes(&e);
                    match m.queue.entry(k) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            Ok(Enqueued::AlreadyQueued)
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(e);
                            Ok(Enqueued::New)
                        }
                    }
                }
            };
            assert_eq!(got, want);
        }
        Op::EnqueueNotify { session: s } => {
            let Some(vouchee) = m.sessions.get(&sid(*s)).map(|x| x.vouchee) else {
                let e = queue_entry(sid(*s), id(1), QueueKind::NotifyVouchee, now);
                assert_eq!(
                    store.enqueue(&e).map_err(reduce),
                    Err(Err::NotFound(RecordKind::Session))
                );
                return;
            };
            let mut e = queue_entry(sid(*s), vouchee, QueueKind::NotifyVouchee, now);
            e.expires_at = at(m.now + QUEUE_EXPIRY);
            let got = store.enqueue(&e).expect("enqueue notify");
            let k = ref_bytes(&e);
            let want = match m.queue.entry(k) {
                std::collections::btree_map::Entry::Occupied(_) => Enqueued::AlreadyQueued,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(e);
                    Enqueued::New
                }
            };
            assert_eq!(got, want);
        }
        Op::Deliver { session: s, target } => {
            let w = waiting(nonce(*s), at(m.now + 30_000));
            let got = store
                .mark_delivering(vref(sid(*s), *target), &w)
                .map_err(reduce);
            let k = qkey(sid(*s), id(*target), QueueKind::Vouch);
            let want = match m.queue.get(&k).cloned() {
                None => Err(Err::NotFound(RecordKind::QueueEntry)),
                Some(e) => match m.session_target(sid(*s), id(*target)) {
                    Err(err) => Err(err),
                    Ok(status) if *status != VouchStatus::Queued => Err(Err::InvalidTransition),
                    Ok(status) => {
                        *status = w.clone();
                        m.queue.remove(&k);
                        Ok(e)
                    }
                },
            };
            assert_eq!(got, want);
        }
        Op::Notify { session: s } => {
            let Some(sess) = m.sessions.get(&sid(*s)).cloned() else {
                let r = QueueRef {
                    session_id: sid(*s),
                    recipient: id(1),
                    kind: QueueKind::NotifyVouchee,
                };
                assert_eq!(
                    store.mark_notified(r, &[]).map_err(reduce),
                    Err(Err::NotFound(RecordKind::Session))
                );
                return;
            };
            let told: Vec<DeviceId> = sess.targets.keys().copied().collect();
            let r = QueueRef {
                session_id: sid(*s),
                recipient: sess.vouchee,
                kind: QueueKind::NotifyVouchee,
            };
            let got = store.mark_notified(r, &told).map_err(reduce);
            let k = qkey(sid(*s), sess.vouchee, QueueKind::NotifyVouchee);
            let want = match m.queue.remove(&k) {
                None => Err(Err::NotFound(RecordKind::QueueEntry)),
                Some(e) => {
                    let ms = m.sessions.get_mut(&sid(*s)).expect("exists");
                    for t in told {
                        if !ms.vouchee_notified.contains(&t) {
                            ms.vouchee_notified.push(t);
                        }
                    }
                    Ok(e)
                }
            };
            assert_eq!(got, want);
        }
        Op::Fail { session: s, target } => {
            let policy = queue_policy();
            let got = store
                .delivery_failed(vref(sid(*s), *target), now, &policy)
                .map_err(reduce);
            let k = qkey(sid(*s), id(*target), QueueKind::Vouch);
            let want = match m.queue.remove(&k) {
                None => Err(Err::NotFound(RecordKind::QueueEntry)),
                Some(mut e) => {
                    let drop = if now >= e.expires_at {
                        Some(DropReason::Expired)
                    } else if e.attempts + 1 >= policy.max_retries {
                        Some(DropReason::MaxRetries)
                    } else {
                        None
                    };
                    match drop {
                        Some(reason) => {
                            m.expire_target(sid(*s), id(*target));
                            Ok(Retry::Dropped(reason))
                        }
                        None => {
                            let next = now.saturating_add(backoff_delay(e.attempts, &policy));
                            e.attempts += 1;
                            e.next_attempt_at = next;
                            m.queue.insert(k, e);
                            Ok(Retry::At(next))
                        }
                    }
                }
            };
            assert_eq!(got, want);
        }
        Op::Reschedule {
            session: s,
            target,
            delay,
        } => {
            let next = at(m.now + delay);
            let got = store
                .reschedule(vref(sid(*s), *target), next)
                .map_err(reduce);
            let k = qkey(sid(*s), id(*target), QueueKind::Vouch);
            let want = match m.queue.get_mut(&k) {
                None => Err(Err::NotFound(RecordKind::QueueEntry)),
                Some(e) => {
                    e.next_attempt_at = next;
                    Ok(e.clone())
                }
            };
            assert_eq!(got, want);
        }
        Op::Answer { session: s, target } => {
            let Some(mut sess) = m.sessions.get(&sid(*s)).cloned() else {
                return;
            };
            let v = vouch(0, sid(*s), 5, *target, nonce(*s), now);
            let resp = response(
                *target,
                &v,
                Decision::Accepted {
                    how: AcceptedHow::Automatic,
                },
                now,
            );
            if !sess.targets.contains_key(&id(*target)) {
                assert_eq!(
                    store
                        .record_answer(&sess, &id(*target), &resp, now)
                        .map_err(reduce),
                    Err(Err::NotFound(RecordKind::SessionTarget))
                );
                return;
            }
            sess.targets.insert(
                id(*target),
                VouchStatus::Accepted {
                    response: resp.clone(),
                },
            );
            store
                .record_answer(&sess, &id(*target), &resp, now)
                .expect("answer");
            m.sessions.insert(sid(*s), sess);
            m.audit += 1;
        }
        Op::Finish { session: s } => {
            let Some(mut sess) = m.sessions.get(&sid(*s)).cloned() else {
                return;
            };
            sess.state = SessionState::Completed;
            sess.finished_at = Some(now);
            store.put_session(&sess).expect("finish");
            m.sessions.insert(sid(*s), sess);
        }
        Op::Due { limit } => {
            let got = store.due(now, *limit).expect("due");
            let mut want: Vec<&QueueEntry> = m
                .queue
                .values()
                .filter(|e| e.next_attempt_at <= now)
                .collect();
            want.sort_by_key(|e| (e.next_attempt_at, ref_bytes(e)));
            let want: Vec<QueueEntry> = want.into_iter().take(*limit).cloned().collect();
            assert_eq!(got, want);
        }
        Op::Advance(ms) => m.now += ms,
        Op::PutPrompt {
            voucher,
            vouchee,
            session,
            nonce: n,
        } => {
            let record = PromptRecord {
                session_id: sid(*session),
                voucher: id(*voucher),
                vouchee: id(*vouchee),
                id: format!("{session}-{voucher}-{vouchee}"),
                vouch: vouch(*voucher, sid(*session), *vouchee, 0, nonce(*n), now),
                proxied_key: key(*n as u8),
                deadline: at(m.now + 24 * HOUR),
                nonces: vec![PromptNonce {
                    nonce: nonce(*n),
                    expires_at: at(m.now + HOUR),
                }],
            };
            store.put_prompt(&record).expect("put prompt");
            m.prompts.insert(
                prompt_key(sid(*session), id(*vouchee), id(*voucher)),
                record,
            );
        }
        Op::RemovePrompt {
            voucher,
            vouchee,
            session,
        } => {
            let removed = store
                .remove_prompt(&sid(*session), &id(*vouchee), &id(*voucher))
                .expect("remove prompt");
            let key = prompt_key(sid(*session), id(*vouchee), id(*voucher));
            assert_eq!(removed, m.prompts.remove(&key).is_some());
        }
        Op::PushInbox { from, capacity } => {
            let record = InboxRecord {
                from: id(*from),
                text: format!("text {}", m.inbox_next),
                received_at: now,
            };
            let cap = std::num::NonZeroU64::new(*capacity).expect("capacity");
            let seq = store.push_inbox(&record, cap).expect("push inbox");
            assert_eq!(seq, m.inbox_next);
            m.inbox_next += 1;
            m.inbox.push_back(record);
            while m.inbox.len() as u64 > *capacity {
                m.inbox.pop_front();
            }
        }
        Op::ClearInbox => {
            let cleared = store.clear_inbox().expect("clear inbox");
            assert_eq!(cleared, m.inbox.len() as u64);
            m.inbox.clear();
        }
        Op::Prune => {
            let got = store.prune(now, &retention()).expect("prune");
            assert_eq!(got, m.prune());
        }
        Op::Restart => unreachable!("handled by the driver"),
        Op::DeliverQueued { .. }
        | Op::FailQueued { .. }
        | Op::EnqueueExisting { .. }
        | Op::AcceptFromPaired { .. } => {
            unreachable!("resolved above")
        }
    }
}

/// Compares every observable part of the store with the model.
fn check(store: &Store, m: &Model) {
    let mut devices: Vec<DeviceRecord> = m.devices.values().cloned().collect();
    devices.sort_by_key(|d| d.device_id.to_bytes());
    assert_eq!(store.devices().expect("devices"), devices);
    let mut tombstones: Vec<Tombstone> = m.tombstones.values().cloned().collect();
    tombstones.sort_by_key(|t| t.device_id.to_bytes());
    assert_eq!(store.tombstones().expect("tombstones"), tombstones);
    assert_eq!(
        store.sessions().expect("sessions"),
        m.sessions.values().cloned().collect::<Vec<_>>()
    );
    let mut queue = store.queue_entries().expect("queue");
    queue.sort_by_key(ref_bytes);
    assert_eq!(queue, m.queue.values().cloned().collect::<Vec<_>>());
    assert_eq!(store.depth().expect("depth"), m.queue.len() as u64);
    for n in 1..=6 {
        assert_eq!(
            store.nonce_seen(&nonce(n)).expect("nonce"),
            m.nonces.contains_key(&n),
            "nonce {n}"
        );
    }
    for s in 1..=3 {
        for v in 1..=5 {
            assert_eq!(
                store.decision(&sid(s), &id(v)).expect("decision"),
                m.decisions.get(&(sid(s), id(v))).cloned(),
                "decision ({s}, {v})"
            );
        }
    }
    assert_eq!(store.audit_len().expect("audit len"), m.audit);
    assert_eq!(
        store.prompts().expect("prompts"),
        m.prompts.values().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        store.inbox().expect("inbox"),
        m.inbox.iter().cloned().collect::<Vec<_>>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5eed_0001),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_behaves_like_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..100)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let mut m = Model { now: 1_000_000, ..Model::default() };
        for op in &ops {
            if let Op::Restart = op {
                drop(store);
                store = Store::open(dir.path()).expect("reopen");
            } else {
                step(&store, &mut m, op);
            }
            check(&store, &m);
        }
        drop(store);
        let store = Store::open(dir.path()).expect("final reopen");
        check(&store, &m);
        prop_assert_eq!(store.verify_audit().expect("audit verifies").entries, m.audit);
    }
}
