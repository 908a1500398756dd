//! The simulation: devices running the real protocol machines over a simulated network,
//! on virtual time.
//!
//! ## The loop
//! [`Simulation::step`] pops the earliest event (ties broken by scheduling order), sets the
//! virtual clock to its time and hands it to the device it concerns. A device feeds the
//! event to the protocol machine it belongs to — [`PairingManager`], [`Receiver`], a
//! [`VouchingSession`] or [`accept_complete`] — with its own skewed `now` and its own
//! seeded RNG, and applies what comes out exactly as the node does: persist first (the
//! in-memory store), then send frames, queue entries, schedule timers and ask the user.
//! Nothing in this file decides anything the protocol decides.
//!
//! ## What the simulator adds around the machines
//! - **Network** ([`SimNetwork`]): real encoded frames, latency, loss, reachability;
//!   every frame is acknowledged, and a sender that gets no acknowledgement treats the
//!   delivery as failed, as libp2p request-response does.
//! - **Presence**: a device's offline schedule and partitions decide `is_online`; when a
//!   device becomes reachable, vouchers holding queue entries for it run their queue
//!   worker at once, as the node will on a new connection.
//! - **Queue worker**: polls on a grid of `poll_interval` (10 s) per device and applies
//!   [`vouchnet_protocol::queue`] policy to each entry. A poll that can change nothing
//!   (every recipient offline, nothing expiring) is skipped rather than run, so a device
//!   offline for six days costs a handful of events, not 50,000; the next poll that can
//!   act is scheduled on the same grid, so the outcome is the one polling every 10 s gives.
//! - **Users** ([`SimUser`](crate::device::SimUser)): compare pairing codes by reading the
//!   other screen (and type what they read), answer vouch prompts, choose targets.
//! - **Invariants** ([`crate::invariants`]): checked after every change of trust; a
//!   violation stops the run with the seed that reproduces it.
//!
//! [`PairingManager`]: vouchnet_protocol::pairing::PairingManager

use crate::device::{PromptAnswer, SimDevice};
use crate::invariants::{self, pair, Invariant, Ledger, Violation};
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::net::{SimNetwork, Transit};
use crate::scenario::{Plan, PlannedActionKind, PlannedJoin, VouchMode};
use crate::store::{queue_key, Proof, QueueKey, QueueSlot, Record, View};
use crate::time::{Clock, VTime};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use vouchnet_protocol::codec::Limits;
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::ids::{SessionId, TxId};
use vouchnet_protocol::messages::{
    Ack, Message, ProxyPairingComplete, ProxyPairingPending, ProxyPairingRequest,
    ProxyPairingResponse, VouchRejection, MAX_COMPLETE_ENTRIES,
};
use vouchnet_protocol::model::{
    KnownDevice, PairingType, QueueEntry, QueueKind, SessionState, TrustLevel, VouchStatus,
    VouchingSession,
};
use vouchnet_protocol::pairing::{PairingFailure, PairingOutput, PairingStage};
use vouchnet_protocol::queue::{self, QueueOutcome};
use vouchnet_protocol::session::{VoucherCtx, VoucherOutput};
use vouchnet_protocol::vouch::{Outcome, PromptKey, Receiver, Verdict};
use vouchnet_protocol::vouchee::accept_complete;
use vouchnet_protocol::Frame;
use vouchnet_storage::audit::{AuditEvent, ConfirmedAction};

/// Appends one line to the event log, prefixed with the virtual time.
macro_rules! ev {
    ($s:expr, $($arg:tt)*) => {
        $s.log.line(format_args!("{} {}", Clock($s.now), format_args!($($arg)*)))
    };
}

/// Options that do not change what happens in a run, only what is kept of it.
#[derive(Debug, Default)]
pub struct SimOptions {
    /// Keep the event log in memory (tests compare it byte for byte).
    pub keep_log: bool,
    /// Also write the event log to this file.
    pub log_file: Option<std::fs::File>,
    /// Skip the per-append evidence check of audit entries (the full check at the end
    /// still verifies every trail). For very large runs.
    pub skip_incremental_audit: bool,
}

/// Why a delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The peer was not reachable when the frame was sent.
    Unreachable,
    /// The link went down before the frame arrived.
    LinkDown,
    /// The frame was lost; the sender timed out.
    Lost,
    /// The acknowledgement was lost; the sender timed out.
    AckLost,
}

/// What a frame was for, so its acknowledgement or failure can be applied.
#[derive(Debug, Clone)]
enum Purpose {
    /// A pairing message (a failed one ends the transaction, as in the node).
    Pairing { cancel: bool },
    /// A vouch (first send, or a queued redelivery).
    Vouch {
        session: SessionId,
        target: u32,
        queued: bool,
    },
    /// A `ProxyPairingComplete` to the vouchee.
    Notify {
        session: SessionId,
        targets: Vec<DeviceId>,
        queued: bool,
    },
    /// A target's reply (pending or response): sent once, as the node does.
    Reply,
}

#[derive(Debug)]
struct Request {
    from: u32,
    to: u32,
    sent_at: VTime,
    bytes: Vec<u8>,
    purpose: Purpose,
    /// What the receiver answered in the response (a target's answer to a vouch), handled
    /// by the sender when the response arrives; lost with it.
    answer: Option<Message>,
}

#[derive(Debug)]
enum Ev {
    PairAttempt(usize),
    Deliver(u64),
    Ack(u64),
    Fail(u64, Why),
    ConfirmCode {
        dev: u32,
        peer: u32,
        tx: TxId,
    },
    AnswerPrompt {
        dev: u32,
        key: PromptKey,
        accept: bool,
    },
    SelectTargets {
        dev: u32,
        vouchee: u32,
        targets: Option<Vec<u32>>,
    },
    Wake(u32),
    QueueRun(u32),
    Presence {
        dev: u32,
        online: bool,
    },
    PartitionStart(usize),
    PartitionHeal(usize),
    Action(usize),
    Sample,
}

#[derive(Debug)]
struct JoinState {
    plan: PlannedJoin,
    attempts: u32,
    done: bool,
    started: bool,
}

/// The outcome of a finished run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Devices.
    pub devices: usize,
    /// Groups.
    pub groups: usize,
    /// Completed direct pairings (pairs).
    pub direct_pairings: u64,
    /// Σ n(n−1)/2 over groups: what pairing every target pair directly costs.
    pub full_mesh_pairs: u64,
    /// Target edges with mutual trust at the end.
    pub satisfied_edges: u64,
    /// Every target edge has mutual trust.
    pub full_mesh: bool,
    /// Pairs where only one side trusts the other.
    pub one_sided: u64,
    /// Direct pairings that completed on one side only.
    pub one_sided_direct: u64,
    /// Vouches accepted.
    pub vouches_accepted: u64,
    /// Vouches rejected.
    pub vouches_rejected: u64,
    /// Vouches expired in the queue.
    pub vouches_expired: u64,
    /// Vouch targets not in a terminal status.
    pub vouches_open: u64,
    /// Queue entries left.
    pub queue_left: u64,
    /// Virtual time simulated.
    pub simulated: VTime,
    /// Events processed.
    pub events: u64,
    /// Digest of the event log.
    pub log_digest: String,
    /// Lines in the event log.
    pub log_lines: u64,
}

/// A deterministic run of a [`Plan`].
pub struct Simulation {
    plan: Plan,
    now: VTime,
    end: VTime,
    sched: crate::sched::Scheduler<Ev>,
    net: SimNetwork,
    devices: Vec<SimDevice>,
    names: Vec<String>,
    ids: HashMap<DeviceId, u32>,
    requests: HashMap<u64, Request>,
    /// The answer the frame being delivered now gets in its response, if any.
    answer_in_response: Option<Message>,
    next_req: u64,
    joins: Vec<JoinState>,
    join_by_pair: HashMap<(u32, u32), usize>,
    joins_started: usize,
    ledger: Ledger,
    shown_codes: HashMap<(u32, u32, TxId), String>,
    live_tx: BTreeSet<(u32, u32)>,
    waiting_for: BTreeMap<u32, BTreeSet<u32>>,
    queue_holders: BTreeSet<u32>,
    mutual: HashSet<(u32, u32)>,
    ever_mutual: HashSet<(u32, u32)>,
    remaining: Vec<u32>,
    join_start: Vec<Option<VTime>>,
    metrics: Metrics,
    log: EventLog,
    ack_bytes: usize,
    options_skip_audit: bool,
    sample_every: VTime,
    progress: Option<Box<dyn FnMut(VTime, u64) + Send + Sync>>,
    failed: Option<Violation>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("scenario", &self.plan.scenario.name)
            .field("seed", &self.plan.seed)
            .field("now", &Clock(self.now))
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

fn kind_name(msg: &Message) -> &'static str {
    match msg {
        Message::PairingRequest(_) => "PairingRequest",
        Message::PairingKey(_) => "PairingKey",
        Message::PairingReveal(_) => "PairingReveal",
        Message::PairingConfirm(_) => "PairingConfirm",
        Message::PairingCancel(_) => "PairingCancel",
        Message::ProxyPairingRequest(_) => "ProxyPairingRequest",
        Message::ProxyPairingPending(_) => "ProxyPairingPending",
        Message::ProxyPairingResponse(_) => "ProxyPairingResponse",
        Message::ProxyPairingComplete(_) => "ProxyPairingComplete",
        Message::Ack(_) => "Ack",
        Message::Error(_) => "Error",
        _ => "Other",
    }
}

/// The variant name of a rejection, for tallies.
pub fn reason_name(r: &VouchRejection) -> String {
    let s = format!("{r:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_owned()
}

fn failure_name(f: &PairingFailure) -> String {
    let s = format!("{f:?}");
    s.replace(['(', ')'], ":").trim_end_matches(':').to_owned()
}

/// The session id of a signed response, read without parsing the three device ids in it
/// (each costs a point decompression). Used only to find the session; the machine then
/// verifies and parses the whole response.
fn response_session(r: &vouchnet_protocol::messages::SignedResponse) -> Option<SessionId> {
    #[derive(serde::Deserialize)]
    struct Head {
        session_id: SessionId,
    }
    vouchnet_protocol::codec::decode::<Head>(r.body(), &Limits::default())
        .ok()
        .map(|h| h.session_id)
}

fn open_targets(s: &VouchingSession) -> Vec<DeviceId> {
    s.targets
        .iter()
        .filter(|(_, st)| !st.is_terminal())
        .map(|(t, _)| *t)
        .collect()
}

impl Simulation {
    /// Builds the devices and schedules the plan's joins, offline windows, partitions and
    /// actions.
    pub fn new(plan: Plan, options: SimOptions) -> Self {
        let seed = plan.seed;
        let devices: Vec<SimDevice> = plan
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| SimDevice::new(i as u32, d, seed))
            .collect();
        let ids = devices.iter().map(|d| (d.id, d.idx)).collect();
        let names = devices.iter().map(|d| d.name.clone()).collect();
        let net = SimNetwork::new(&plan.scenario.network, devices.len(), seed);
        let end = plan.scenario.duration.ms();
        let mut sim = Simulation {
            now: 0,
            end,
            sched: Default::default(),
            net,
            remaining: plan.devices.iter().map(|d| d.member).collect(),
            join_start: vec![None; devices.len()],
            devices,
            names,
            ids,
            requests: HashMap::new(),
            answer_in_response: None,
            next_req: 0,
            joins: plan
                .joins
                .iter()
                .map(|j| JoinState {
                    plan: j.clone(),
                    attempts: 0,
                    done: false,
                    started: false,
                })
                .collect(),
            join_by_pair: plan
                .joins
                .iter()
                .enumerate()
                .map(|(i, j)| ((j.device, j.voucher), i))
                .collect(),
            joins_started: 0,
            ledger: Ledger::default(),
            shown_codes: HashMap::new(),
            live_tx: BTreeSet::new(),
            waiting_for: BTreeMap::new(),
            queue_holders: BTreeSet::new(),
            mutual: HashSet::new(),
            ever_mutual: HashSet::new(),
            metrics: Metrics::default(),
            log: EventLog::new(options.keep_log, options.log_file),
            ack_bytes: Frame::new(Message::Ack(Ack {})).encode().len(),
            options_skip_audit: options.skip_incremental_audit,
            sample_every: (end / 500).max(1),
            progress: None,
            failed: None,
            plan,
        };
        sim.metrics.target_edges = sim
            .plan
            .groups
            .iter()
            .map(|g| crate::scenario::full_mesh_pairs(g.members.len() as u64))
            .sum();
        for (i, j) in sim.plan.joins.iter().enumerate() {
            sim.sched.push(j.at, Ev::PairAttempt(i));
        }
        for d in &sim.plan.devices {
            let idx = sim
                .names
                .iter()
                .position(|n| *n == d.name)
                .expect("planned") as u32;
            for (from, to) in &d.offline {
                if *from < end {
                    sim.sched.push(
                        *from,
                        Ev::Presence {
                            dev: idx,
                            online: false,
                        },
                    );
                }
                if *to < end {
                    sim.sched.push(
                        *to,
                        Ev::Presence {
                            dev: idx,
                            online: true,
                        },
                    );
                }
            }
        }
        for (i, p) in sim.plan.partitions.iter().enumerate() {
            sim.sched.push(p.at, Ev::PartitionStart(i));
            sim.sched.push(p.heal, Ev::PartitionHeal(i));
        }
        for (i, a) in sim.plan.actions.iter().enumerate() {
            sim.sched.push(a.at, Ev::Action(i));
        }
        sim.sched.push(0, Ev::Sample);
        let (name, n, g) = (
            sim.plan.scenario.name.clone(),
            sim.devices.len(),
            sim.plan.groups.len(),
        );
        ev!(
            sim,
            "start scenario={name} seed={seed} devices={n} groups={g}"
        );
        sim
    }

    /// Calls `f(virtual time, events)` every few thousand events (for a progress bar).
    pub fn on_progress(&mut self, f: impl FnMut(VTime, u64) + Send + Sync + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Runs to the end of the scenario, then checks every invariant in full.
    pub fn run(&mut self) -> Result<Summary, Violation> {
        while self.step()? {}
        self.finish()
    }

    /// Runs every event due at or before `t` (virtual).
    pub fn run_until(&mut self, t: VTime) -> Result<(), Violation> {
        while self
            .sched
            .peek_time()
            .is_some_and(|at| at <= t.min(self.end))
        {
            self.step()?;
        }
        self.now = self.now.max(t.min(self.end));
        Ok(())
    }

    /// Runs one event. `Ok(false)` when the run is over.
    pub fn step(&mut self) -> Result<bool, Violation> {
        if let Some(v) = &self.failed {
            return Err(v.clone());
        }
        let Some(at) = self.sched.peek_time() else {
            return Ok(false);
        };
        if at > self.end {
            return Ok(false);
        }
        let (at, event) = self.sched.pop().expect("peeked");
        self.now = at;
        self.metrics.events += 1;
        self.handle(event);
        if self.metrics.events.is_multiple_of(4096) {
            let (now, n) = (self.now, self.metrics.events);
            if let Some(p) = &mut self.progress {
                p(now, n);
            }
        }
        match &self.failed {
            Some(v) => {
                let v = v.clone();
                ev!(self, "STOP {v}");
                self.log.flush();
                Err(v)
            }
            None => Ok(true),
        }
    }

    /// Ends the run: the full invariant check, then the summary.
    pub fn finish(&mut self) -> Result<Summary, Violation> {
        self.now = self.now.max(self.end);
        self.check_all()?;
        let s = self.summary();
        ev!(
            self,
            "end direct_pairings={} full_mesh={} accepted={} rejected={} expired={} open={} queue_left={}",
            s.direct_pairings,
            s.full_mesh,
            s.vouches_accepted,
            s.vouches_rejected,
            s.vouches_expired,
            s.vouches_open,
            s.queue_left
        );
        self.log.flush();
        Ok(self.summary())
    }

    /// The plan being run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What was measured.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The kept event log.
    pub fn event_log(&self) -> &[u8] {
        self.log.bytes()
    }

    /// The current virtual time.
    pub fn now(&self) -> VTime {
        self.now
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Option<&SimDevice> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.devices[i])
    }

    /// Every device.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// True when `a` stores `b` as a (non-blocked) paired device.
    pub fn trusts(&self, a: &str, b: &str) -> bool {
        match (self.device(a), self.device(b)) {
            (Some(a), Some(b)) => a.store.trusts(&b.id),
            _ => false,
        }
    }

    /// The summary of the run so far.
    pub fn summary(&self) -> Summary {
        let mut one_sided = 0;
        for g in &self.plan.groups {
            for (i, a) in g.members.iter().enumerate() {
                for b in &g.members[i + 1..] {
                    let ab = self.devices[*a as usize]
                        .store
                        .trusts(&self.devices[*b as usize].id);
                    let ba = self.devices[*b as usize]
                        .store
                        .trusts(&self.devices[*a as usize].id);
                    if ab != ba {
                        one_sided += 1;
                    }
                }
            }
        }
        let one_sided_direct = self
            .ledger
            .direct_pairs()
            .iter()
            .filter(|(a, b)| {
                let has = |x: u32, y: u32| {
                    self.devices[x as usize]
                        .store
                        .devices
                        .get(&self.devices[y as usize].id)
                        .is_some_and(|r| r.known.pairing_type == PairingType::Direct)
                };
                let removed = |x: u32, y: u32| {
                    self.devices[x as usize]
                        .store
                        .tombstones
                        .contains(&self.devices[y as usize].id)
                };
                has(*a, *b) != has(*b, *a) && !removed(*a, *b) && !removed(*b, *a)
            })
            .count() as u64;
        let vouches_open = self
            .devices
            .iter()
            .flat_map(|d| d.store.sessions.values())
            .filter(|s| s.state != SessionState::Cancelled)
            .map(|s| open_targets(s).len() as u64)
            .sum();
        Summary {
            devices: self.devices.len(),
            groups: self.plan.groups.len(),
            direct_pairings: self.metrics.direct_pairings,
            full_mesh_pairs: self.metrics.target_edges,
            satisfied_edges: self.metrics.satisfied_edges,
            full_mesh: self.metrics.satisfied_edges == self.metrics.target_edges,
            one_sided,
            one_sided_direct,
            vouches_accepted: self.metrics.vouches_accepted,
            vouches_rejected: self.metrics.rejected_total(),
            vouches_expired: self.metrics.vouches_expired,
            vouches_open,
            queue_left: self
                .devices
                .iter()
                .map(|d| d.store.queue.len() as u64)
                .sum(),
            simulated: self.now,
            events: self.metrics.events,
            log_digest: self.log.digest(),
            log_lines: self.log.lines(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Fault injection, to show that the checker catches what it claims to.

    /// Flips a byte of entry `seq` of `device`'s audit trail.
    pub fn tamper_audit(&mut self, device: &str, seq: usize) {
        if let Some(i) = self.names.iter().position(|n| n == device) {
            self.devices[i].store.audit.tamper(seq);
        }
    }

    /// Appends `event` to `device`'s audit trail, as a buggy node might.
    pub fn append_audit(&mut self, device: &str, event: AuditEvent) {
        if let Some(i) = self.names.iter().position(|n| n == device) {
            let now = self.devices[i].now(self.now);
            self.devices[i].store.audit.append(now, event);
        }
    }

    /// Stores `peer` at `device` as a proxied device with no proof behind it, as a buggy
    /// machine might.
    pub fn inject_unjustified_record(&mut self, device: &str, peer: &str) {
        let (Some(d), Some(p)) = (
            self.names.iter().position(|n| n == device),
            self.names.iter().position(|n| n == peer),
        ) else {
            return;
        };
        let (pid, pkey, pname) = {
            let p = &self.devices[p];
            (p.id, p.keypair.public(), p.display.clone())
        };
        let voucher = self.devices[d].store.direct_trusted(&pid).first().copied();
        self.devices[d].store.devices.insert(
            pid,
            Record {
                known: KnownDevice {
                    public_key: pkey,
                    pairing_type: PairingType::Proxied,
                    trust_level: TrustLevel::Trusted,
                },
                name: pname,
                key: vouchnet_protocol::SymmetricKey::from_bytes([0; 32]),
                vouched_by: voucher,
                proof: Proof::Direct,
                added_at: self.now,
            },
        );
    }

    // ------------------------------------------------------------------------------------
    // Invariants

    fn violate(&mut self, invariant: Invariant, detail: String) {
        if self.failed.is_none() {
            self.failed = Some(Violation {
                invariant,
                at: self.now,
                detail,
                seed: self.plan.seed,
            });
        }
    }

    /// Checks every invariant over the whole state: every record's chain, every trail.
    /// Devices are checked on all available cores; the violation reported is the one of
    /// the first device in index order, so the result does not depend on the thread count.
    pub fn check_all(&self) -> Result<(), Violation> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = self.devices.len().div_ceil(threads).max(1);
        let results: Vec<Result<(), (Invariant, String)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .devices
                .chunks(chunk)
                .map(|devs| scope.spawn(move || devs.iter().try_for_each(|d| self.check_device(d))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("checker thread"))
                .collect()
        });
        for r in results {
            if let Err((invariant, detail)) = r {
                return Err(Violation {
                    invariant,
                    at: self.now,
                    detail,
                    seed: self.plan.seed,
                });
            }
        }
        Ok(())
    }

    fn check_device(&self, d: &SimDevice) -> Result<(), (Invariant, String)> {
        let fail = |invariant, detail| Err((invariant, detail));
        for (pid, r) in &d.store.devices {
            let Some(&p) = self.ids.get(pid) else {
                return fail(
                    Invariant::Chain,
                    format!("{} stores an unknown device", d.name),
                );
            };
            let pname = &self.names[p as usize];
            match r.known.pairing_type {
                PairingType::Direct => {
                    if !self.ledger.is_direct(d.idx, p) {
                        return fail(
                            Invariant::Chain,
                            format!(
                                "{} trusts {pname} directly without a confirmed pairing",
                                d.name
                            ),
                        );
                    }
                }
                PairingType::Proxied => {
                    let Some(v) = r.vouched_by.and_then(|v| self.ids.get(&v).copied()) else {
                        return fail(
                            Invariant::Chain,
                            format!("{} trusts {pname} by proxy with no voucher", d.name),
                        );
                    };
                    let vname = &self.names[v as usize];
                    if !self.ledger.is_direct(d.idx, v) {
                        return fail(
                            Invariant::Chain,
                            format!("{} trusts {pname} on a vouch from {vname}, not paired directly with it", d.name),
                        );
                    }
                    if !self.ledger.is_direct(v, p) {
                        return fail(
                            Invariant::OneHop,
                            format!("{} trusts {pname} on a vouch from {vname}, whose own trust in it is not direct", d.name),
                        );
                    }
                    let vid = self.devices[v as usize].id;
                    let checked = match &r.proof {
                        Proof::Target(proof) => {
                            invariants::check_target_proof(&d.id, &vid, pid, proof)
                        }
                        Proof::Vouchee(resp) => {
                            invariants::check_vouchee_proof(&d.id, &vid, pid, resp)
                        }
                        Proof::Direct => Err("no proof stored".to_owned()),
                    };
                    if let Err(e) = checked {
                        return fail(
                            Invariant::Chain,
                            format!("{} trusts {pname} by proxy: {e}", d.name),
                        );
                    }
                    if d.store.tombstones.contains(pid) {
                        return fail(
                            Invariant::Tombstone,
                            format!(
                                "{} holds a proxied record of {pname}, which it tombstoned",
                                d.name
                            ),
                        );
                    }
                }
            }
        }
        if let Err(e) = d.store.audit.verify() {
            return fail(Invariant::Audit, format!("{}: {e}", d.name));
        }
        // The trail itself must never show a device added twice without a removal.
        let mut present: BTreeSet<DeviceId> = BTreeSet::new();
        for entry in d.store.audit.decoded() {
            let added = match &entry.event {
                AuditEvent::PairedDirect { device, .. } => Some(*device),
                AuditEvent::VouchAccepted { vouchee, .. } => Some(*vouchee),
                AuditEvent::ProxiedDeviceAdded { device, .. } => Some(*device),
                AuditEvent::Unpaired { device } => {
                    present.remove(device);
                    None
                }
                _ => None,
            };
            if let Some(a) = added {
                if !present.insert(a) {
                    let name = self
                        .ids
                        .get(&a)
                        .map_or("?", |i| self.names[*i as usize].as_str());
                    return fail(
                        Invariant::Once,
                        format!(
                            "{}'s audit trail adds {name} twice (entry {})",
                            d.name, entry.seq
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    fn audit(&mut self, x: u32, event: AuditEvent) {
        let now = self.devices[x as usize].now(self.now);
        let store = &mut self.devices[x as usize].store;
        store.audit.append(now, event);
        if !self.options_skip_audit {
            if let Err(e) = store.audit.verify_last() {
                let detail = format!(
                    "{}: new audit entry carries bad evidence: {e}",
                    self.names[x as usize]
                );
                self.violate(Invariant::Audit, detail);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Dispatch

    fn handle(&mut self, event: Ev) {
        match event {
            Ev::PairAttempt(j) => self.pair_attempt(j),
            Ev::Deliver(req) => self.deliver(req),
            Ev::Ack(req) => {
                if let Some(mut r) = self.requests.remove(&req) {
                    let answer = r.answer.take();
                    let (voucher, target) = (r.from, r.to);
                    self.acked(r);
                    if let Some(answer) = answer {
                        ev!(
                            self,
                            "{} <- {} {} (response)",
                            self.names[voucher as usize],
                            self.names[target as usize],
                            kind_name(&answer)
                        );
                        self.handle_frame(voucher, target, answer);
                    }
                }
            }
            Ev::Fail(req, why) => {
                if let Some(r) = self.requests.remove(&req) {
                    self.failed_delivery(r, why);
                }
            }
            Ev::ConfirmCode { dev, peer, tx } => self.confirm_code(dev, peer, tx),
            Ev::AnswerPrompt { dev, key, accept } => self.answer_prompt(dev, key, accept),
            Ev::SelectTargets {
                dev,
                vouchee,
                targets,
            } => {
                let vid = self.devices[vouchee as usize].id;
                self.vouch(dev, vid, targets, true);
            }
            Ev::Wake(d) => self.wake(d),
            Ev::QueueRun(d) => self.queue_run(d),
            Ev::Presence { dev, online } => self.presence(dev, online),
            Ev::PartitionStart(i) => self.partition_start(i),
            Ev::PartitionHeal(i) => self.partition_heal(i),
            Ev::Action(i) => self.action(i),
            Ev::Sample => {
                self.metrics.sample(self.now);
                if self.now + self.sample_every <= self.end {
                    self.sched.push(self.now + self.sample_every, Ev::Sample);
                }
            }
        }
    }

    fn idx(&self, id: &DeviceId) -> Option<u32> {
        self.ids.get(id).copied()
    }

    fn push_wake(&mut self, x: u32, deadline: vouchnet_protocol::Timestamp) {
        let at = self.devices[x as usize].virtual_of(deadline, self.now);
        self.sched.push(at, Ev::Wake(x));
    }

    // ------------------------------------------------------------------------------------
    // Network

    fn send(&mut self, from: u32, to: u32, msg: Message, purpose: Purpose) {
        let kind = kind_name(&msg);
        let req = self.next_req;
        self.next_req += 1;
        if !self.net.reachable(from, to) {
            self.metrics.unreachable_sends += 1;
            ev!(
                self,
                "{} -> {} {kind} unreachable",
                self.names[from as usize],
                self.names[to as usize]
            );
            self.requests.insert(
                req,
                Request {
                    from,
                    to,
                    sent_at: self.now,
                    bytes: Vec::new(),
                    purpose,
                    answer: None,
                },
            );
            self.sched.push(self.now, Ev::Fail(req, Why::Unreachable));
            return;
        }
        let bytes = Frame::new(msg).encode();
        self.metrics.frame(kind, bytes.len());
        let len = bytes.len();
        match self.net.transit(from, to, self.now) {
            Transit::Lost => {
                self.metrics.frames_lost += 1;
                ev!(
                    self,
                    "{} -> {} {kind} {len}B lost",
                    self.names[from as usize],
                    self.names[to as usize]
                );
                self.sched.push(
                    self.now + self.net.request_timeout,
                    Ev::Fail(req, Why::Lost),
                );
            }
            Transit::Arrives(at) => {
                ev!(
                    self,
                    "{} -> {} {kind} {len}B",
                    self.names[from as usize],
                    self.names[to as usize]
                );
                self.sched.push(at, Ev::Deliver(req));
            }
        }
        self.requests.insert(
            req,
            Request {
                from,
                to,
                sent_at: self.now,
                bytes,
                purpose,
                answer: None,
            },
        );
    }

    fn deliver(&mut self, req: u64) {
        let Some(r) = self.requests.get_mut(&req) else {
            return;
        };
        let (from, to, sent_at) = (r.from, r.to, r.sent_at);
        let bytes = std::mem::take(&mut r.bytes);
        if !self.net.reachable(from, to) {
            ev!(
                self,
                "{} -> {} dropped: link down",
                self.names[from as usize],
                self.names[to as usize]
            );
            self.sched.push(self.now, Ev::Fail(req, Why::LinkDown));
            return;
        }
        match Frame::decode(&bytes, &Limits::default()) {
            Ok(frame) => {
                ev!(
                    self,
                    "{} <- {} {}",
                    self.names[to as usize],
                    self.names[from as usize],
                    kind_name(&frame.msg)
                );
                self.handle_frame(to, from, frame.msg);
            }
            Err(e) => {
                ev!(
                    self,
                    "{} <- {} undecodable: {e}",
                    self.names[to as usize],
                    self.names[from as usize]
                );
            }
        }
        // A target answers a vouch in the response, as the node does; anything else is
        // acknowledged with an `Ack`.
        match self.answer_in_response.take() {
            Some(answer) => {
                let len = Frame::new(answer.clone()).encode().len();
                self.metrics.frame(kind_name(&answer), len);
                if let Some(r) = self.requests.get_mut(&req) {
                    r.answer = Some(answer);
                }
            }
            None => self.metrics.frame("Ack", self.ack_bytes),
        }
        match self.net.ack_transit(self.now) {
            Transit::Lost => {
                self.metrics.acks_lost += 1;
                let at = (sent_at + self.net.request_timeout).max(self.now);
                self.sched.push(at, Ev::Fail(req, Why::AckLost));
            }
            Transit::Arrives(at) => self.sched.push(at, Ev::Ack(req)),
        }
    }

    fn handle_frame(&mut self, d: u32, s: u32, msg: Message) {
        match msg {
            Message::PairingRequest(_)
            | Message::PairingKey(_)
            | Message::PairingReveal(_)
            | Message::PairingConfirm(_)
            | Message::PairingCancel(_) => self.on_pairing_message(d, s, msg),
            Message::ProxyPairingRequest(req) => self.on_vouch_request(d, s, &req),
            Message::ProxyPairingPending(p) => self.on_pending(d, s, &p),
            Message::ProxyPairingResponse(r) => self.on_response(d, s, &r),
            Message::ProxyPairingComplete(c) => self.on_complete(d, s, &c),
            other => ev!(
                self,
                "{} ignores {}",
                self.names[d as usize],
                kind_name(&other)
            ),
        }
    }

    fn acked(&mut self, r: Request) {
        match r.purpose {
            Purpose::Pairing { .. } | Purpose::Reply => {}
            Purpose::Vouch {
                session,
                target,
                queued,
            } => {
                if queued {
                    let key =
                        queue_key(session, self.devices[target as usize].id, QueueKind::Vouch);
                    self.queue_delivered(r.from, key);
                }
            }
            Purpose::Notify {
                session,
                targets,
                queued,
            } => {
                let x = r.from as usize;
                if let Some(s) = self.devices[x].store.sessions.get_mut(&session) {
                    s.mark_vouchee_notified(&targets);
                }
                if queued {
                    let key = queue_key(
                        session,
                        self.devices[r.to as usize].id,
                        QueueKind::NotifyVouchee,
                    );
                    self.queue_delivered(r.from, key);
                }
            }
        }
    }

    fn failed_delivery(&mut self, r: Request, why: Why) {
        let (x, to) = (r.from, r.to);
        ev!(
            self,
            "{} -> {} delivery failed ({why:?})",
            self.names[x as usize],
            self.names[to as usize]
        );
        match r.purpose {
            Purpose::Reply => {}
            Purpose::Pairing { cancel } => {
                if !cancel {
                    let peer = self.devices[to as usize].id;
                    if let Some(p) = self.devices[x as usize].pairing.as_mut() {
                        let outs = p.connection_lost(peer);
                        self.apply_pairing(x, outs);
                    }
                }
            }
            Purpose::Vouch {
                session,
                target,
                queued,
            } => self.vouch_send_failed(x, session, target, queued),
            Purpose::Notify {
                session, queued, ..
            } => {
                let key = queue_key(
                    session,
                    self.devices[to as usize].id,
                    QueueKind::NotifyVouchee,
                );
                if queued {
                    self.queue_failed(x, key);
                } else {
                    let (now, policy) = {
                        let d = &self.devices[x as usize];
                        (d.now(self.now), d.config.queue.clone())
                    };
                    let entry = queue::new_entry(
                        session,
                        self.devices[to as usize].id,
                        QueueKind::NotifyVouchee,
                        now,
                        &policy,
                    );
                    self.enqueue(x, entry);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Direct pairing

    fn pair_attempt(&mut self, j: usize) {
        let (e, v) = (self.joins[j].plan.device, self.joins[j].plan.voucher);
        if self.joins[j].done {
            return;
        }
        if !self.joins[j].started {
            self.joins[j].started = true;
            self.joins_started += 1;
            self.join_start[e as usize] = Some(self.now);
            self.metrics.first_join_at.get_or_insert(self.now);
            self.metrics.last_join_at = Some(self.now);
            ev!(
                self,
                "join {} pairs with {}",
                self.names[e as usize],
                self.names[v as usize]
            );
        }
        let retry = self.devices[e as usize]
            .user
            .policy
            .pairing_retry
            .ms()
            .max(1);
        let vid = self.devices[v as usize].id;
        if self.devices[e as usize].store.devices.contains_key(&vid) {
            self.joins[j].done = true;
            return;
        }
        let busy = self.live_tx.contains(&(e, v)) || self.live_tx.contains(&(v, e));
        if !self.net.reachable(e, v) || busy {
            // The users try again when both devices are around.
            self.sched.push(self.now + retry, Ev::PairAttempt(j));
            return;
        }
        if self.joins[j].attempts >= self.devices[e as usize].user.policy.pairing_attempts {
            ev!(
                self,
                "join {} gives up pairing with {}",
                self.names[e as usize],
                self.names[v as usize]
            );
            self.joins[j].done = true;
            return;
        }
        self.joins[j].attempts += 1;
        self.metrics.pairing_attempts += 1;
        let dev = &mut self.devices[e as usize];
        let now = dev.now(self.now);
        let res = dev.with_pairing(|m, rng| m.start(vid, now, rng));
        match res {
            Ok(outs) => self.apply_pairing(e, outs),
            Err(err) => {
                ev!(
                    self,
                    "{} cannot start pairing: {err}",
                    self.names[e as usize]
                );
                self.sched.push(self.now + retry, Ev::PairAttempt(j));
            }
        }
    }

    fn on_pairing_message(&mut self, d: u32, s: u32, msg: Message) {
        let sid = self.devices[s as usize].id;
        if let Message::PairingRequest(req) = &msg {
            // The node refuses a request from a device its user blocked before the machine
            // sees it; one from a device it still holds otherwise is a re-pairing (the
            // other side lost its record), confirmed by both users like any pairing.
            let blocked = self.devices[d as usize]
                .store
                .devices
                .get(&sid)
                .is_some_and(|r| r.known.trust_level == TrustLevel::Blocked);
            if blocked {
                ev!(
                    self,
                    "{} refuses pairing from {}: blocked",
                    self.names[d as usize],
                    self.names[s as usize]
                );
                let cancel = Message::PairingCancel(vouchnet_protocol::messages::PairingCancel {
                    tx_id: req.tx_id,
                    reason: vouchnet_protocol::messages::CancelReason::Aborted,
                });
                self.send(d, s, cancel, Purpose::Pairing { cancel: true });
                return;
            }
        }
        let dev = &mut self.devices[d as usize];
        let now = dev.now(self.now);
        if dev.pairing.is_none() && !matches!(msg, Message::PairingRequest(_)) {
            ev!(
                self,
                "{} pairing message refused: no transaction",
                self.names[d as usize]
            );
            return;
        }
        let res = dev.with_pairing(|m, rng| m.handle_message(sid, &msg, now, rng));
        match res {
            Ok(outs) => self.apply_pairing(d, outs),
            Err(e) => ev!(
                self,
                "{} pairing message refused: {e}",
                self.names[d as usize]
            ),
        }
        self.devices[d as usize].release_pairing();
    }

    fn apply_pairing(&mut self, x: u32, outs: Vec<PairingOutput>) {
        for o in outs {
            match o {
                PairingOutput::Send { to, msg } => {
                    if let Some(t) = self.idx(&to) {
                        let cancel = matches!(msg, Message::PairingCancel(_));
                        self.send(x, t, msg, Purpose::Pairing { cancel });
                    }
                }
                PairingOutput::ConfirmationRequired(prompt) => {
                    let Some(p) = self.idx(&prompt.peer) else {
                        continue;
                    };
                    ev!(
                        self,
                        "{} shows code {} for {}",
                        self.names[x as usize],
                        prompt.code,
                        self.names[p as usize]
                    );
                    self.shown_codes.insert((x, p, prompt.tx_id), prompt.code);
                    let delay = self.devices[x as usize].user.confirm_delay();
                    self.sched.push(
                        self.now + delay,
                        Ev::ConfirmCode {
                            dev: x,
                            peer: p,
                            tx: prompt.tx_id,
                        },
                    );
                }
                PairingOutput::Changed(view) => {
                    if let Some(p) = self.idx(&view.peer) {
                        self.live_tx.insert((x, p));
                        self.push_wake(x, view.deadline);
                    }
                }
                PairingOutput::Paired(done) => {
                    let Some(p) = self.idx(&done.peer) else {
                        continue;
                    };
                    self.live_tx.remove(&(x, p));
                    self.shown_codes.remove(&(x, p, done.tx_id));
                    self.paired(x, p, *done);
                }
                PairingOutput::Failed {
                    peer,
                    tx_id,
                    failure,
                } => {
                    let Some(p) = self.idx(&peer) else { continue };
                    self.live_tx.remove(&(x, p));
                    self.shown_codes.remove(&(x, p, tx_id));
                    let name = failure_name(&failure);
                    ev!(
                        self,
                        "{} pairing with {} failed: {name}",
                        self.names[x as usize],
                        self.names[p as usize]
                    );
                    *self.metrics.pairing_failures.entry(name).or_default() += 1;
                    if let Some(&j) = self.join_by_pair.get(&(x, p)) {
                        if !self.joins[j].done {
                            let retry = self.devices[x as usize]
                                .user
                                .policy
                                .pairing_retry
                                .ms()
                                .max(1);
                            self.sched.push(self.now + retry, Ev::PairAttempt(j));
                        }
                    }
                }
            }
        }
    }

    fn confirm_code(&mut self, x: u32, p: u32, tx: TxId) {
        let pid = self.devices[p as usize].id;
        let Some(view) = self.devices[x as usize]
            .pairing
            .as_ref()
            .and_then(|m| m.view(&pid))
        else {
            return;
        };
        if view.tx_id != tx || !matches!(view.stage, PairingStage::AwaitingUser { .. }) {
            return;
        }
        // The user reads the code on the other screen; if it is not shown yet, they wait.
        let Some(other) = self.shown_codes.get(&(p, x, tx)).cloned() else {
            self.sched.push(
                self.now + 1_000,
                Ev::ConfirmCode {
                    dev: x,
                    peer: p,
                    tx,
                },
            );
            return;
        };
        if Some(&other) == view.code.as_ref() {
            self.ledger.user_confirmed(x, p, tx.0);
            self.audit(
                x,
                AuditEvent::UserConfirmed {
                    action: ConfirmedAction::PairingCode {
                        device: pid,
                        tx_id: tx,
                    },
                },
            );
        }
        ev!(
            self,
            "{} user enters code {other} for {}",
            self.names[x as usize],
            self.names[p as usize]
        );
        let dev = &mut self.devices[x as usize];
        let now = dev.now(self.now);
        let res = dev.with_pairing(|m, _| m.user_confirm_code(pid, &other, now));
        match res {
            Ok(outs) => self.apply_pairing(x, outs),
            Err(e) => ev!(self, "{} code refused: {e}", self.names[x as usize]),
        }
        self.devices[x as usize].release_pairing();
    }

    fn paired(&mut self, x: u32, p: u32, done: vouchnet_protocol::pairing::PairingCompleted) {
        self.metrics.invariant_checks += 1;
        if !self.ledger.both_confirmed(x, p, done.tx_id.0) {
            let detail = format!(
                "{} completed a pairing with {} that both users did not confirm",
                self.names[x as usize], self.names[p as usize]
            );
            self.violate(Invariant::Chain, detail);
            return;
        }
        if self.devices[x as usize]
            .store
            .devices
            .contains_key(&done.peer)
        {
            // A re-pairing (the other side had lost its record): as in the node's store,
            // the trail shows the old pairing ending before the new one.
            ev!(
                self,
                "{} pairs again with {}",
                self.names[x as usize],
                self.names[p as usize]
            );
            self.audit(x, AuditEvent::Unpaired { device: done.peer });
        }
        if self.ledger.paired(x, p) {
            self.metrics.direct_pairings += 1;
        }
        ev!(
            self,
            "{} paired directly with {}",
            self.names[x as usize],
            self.names[p as usize]
        );
        let record = Record {
            known: KnownDevice {
                public_key: done.peer_public_key,
                pairing_type: PairingType::Direct,
                trust_level: TrustLevel::Trusted,
            },
            name: done.peer_name.clone(),
            key: done.pairing_key.clone(),
            vouched_by: None,
            proof: Proof::Direct,
            added_at: self.now,
        };
        self.devices[x as usize]
            .store
            .devices
            .insert(done.peer, record);
        self.audit(
            x,
            AuditEvent::PairedDirect {
                device: done.peer,
                key: done.peer_public_key,
                name: done.peer_name,
                tx_id: done.tx_id,
                confirmed_by_user: true,
                our_mac: done.our_mac,
                their_mac: done.their_mac,
            },
        );
        self.trust_changed(x, p);
        // The device that was joined vouches for the newcomer.
        if let Some(&j) = self.join_by_pair.get(&(x, p)) {
            self.joins[j].done = true;
        }
        let auto = self.devices[x as usize].config.auto_vouch_to_all;
        if let Some(&j) = self.join_by_pair.get(&(p, x)) {
            let (mode, targets) = (self.joins[j].plan.vouch, self.joins[j].plan.targets.clone());
            if auto || mode == VouchMode::All {
                self.vouch(x, done.peer, None, false);
            } else if mode == VouchMode::Chosen {
                let delay = self.devices[x as usize].user.select_delay();
                self.sched.push(
                    self.now + delay,
                    Ev::SelectTargets {
                        dev: x,
                        vouchee: p,
                        targets,
                    },
                );
            }
        } else if auto {
            self.vouch(x, done.peer, None, false);
        }
    }

    // ------------------------------------------------------------------------------------
    // Voucher

    fn vouch(&mut self, x: u32, vouchee: DeviceId, targets: Option<Vec<u32>>, chosen: bool) {
        let rec = match self.devices[x as usize].store.devices.get(&vouchee) {
            Some(r) if r.known.pairing_type == PairingType::Direct => {
                (r.known.public_key, r.name.clone())
            }
            _ => {
                ev!(
                    self,
                    "{} cannot vouch: vouchee not paired directly",
                    self.names[x as usize]
                );
                return;
            }
        };
        let targets: Vec<DeviceId> = match targets {
            None => self.devices[x as usize].store.direct_trusted(&vouchee),
            Some(list) => list.iter().map(|t| self.devices[*t as usize].id).collect(),
        };
        if targets.is_empty() {
            return;
        }
        // A ProxyPairingComplete reports at most MAX_COMPLETE_ENTRIES targets, so a voucher
        // with more direct pairings runs one session per chunk.
        for chunk in targets.chunks(MAX_COMPLETE_ENTRIES) {
            let dev = &mut self.devices[x as usize];
            let now = dev.now(self.now);
            let sid = SessionId::random(&mut dev.rng);
            let mut session = VouchingSession::new(sid, vouchee, rec.0, rec.1.clone(), now);
            let res = {
                let view = View {
                    store: &dev.store,
                    net: &self.net,
                    ids: &self.ids,
                    me: x,
                    pairing_prompts: 0,
                };
                let ctx = VoucherCtx {
                    keypair: &dev.keypair,
                    me: dev.id,
                    config: &dev.config,
                    view: &view,
                };
                session.select_targets(&ctx, chunk, now, &mut dev.rng)
            };
            match res {
                Ok(outs) => {
                    self.metrics.sessions += 1;
                    let vname = self
                        .idx(&vouchee)
                        .map_or("?".into(), |i| self.names[i as usize].clone());
                    ev!(
                        self,
                        "{} vouches for {vname} to {} targets",
                        self.names[x as usize],
                        chunk.len()
                    );
                    if chosen {
                        self.audit(
                            x,
                            AuditEvent::UserConfirmed {
                                action: ConfirmedAction::VouchTargets { session: sid },
                            },
                        );
                    }
                    self.audit(
                        x,
                        AuditEvent::Vouched {
                            session: sid,
                            vouchee,
                            vouchee_key: rec.0,
                            targets: chunk.to_vec(),
                        },
                    );
                    self.devices[x as usize].store.sessions.insert(sid, session);
                    self.apply_voucher(x, sid, outs, false);
                }
                Err(e) => ev!(self, "{} cannot vouch: {e}", self.names[x as usize]),
            }
        }
    }

    /// Runs `f` on session `sid` of device `x` with a voucher context, and tallies the
    /// targets that became final.
    fn with_session<T>(
        &mut self,
        x: u32,
        sid: SessionId,
        f: impl FnOnce(
            &mut VouchingSession,
            &VoucherCtx<'_, View<'_>>,
            &mut rand_chacha::ChaCha20Rng,
            vouchnet_protocol::Timestamp,
        ) -> T,
    ) -> Option<T> {
        let dev = &mut self.devices[x as usize];
        let mut session = dev.store.sessions.remove(&sid)?;
        let before = open_targets(&session);
        let was_open = session.state != SessionState::Completed;
        let now = dev.now(self.now);
        let out = {
            let view = View {
                store: &dev.store,
                net: &self.net,
                ids: &self.ids,
                me: x,
                pairing_prompts: 0,
            };
            let ctx = VoucherCtx {
                keypair: &dev.keypair,
                me: dev.id,
                config: &dev.config,
                view: &view,
            };
            f(&mut session, &ctx, &mut dev.rng, now)
        };
        let completed = was_open && session.state == SessionState::Completed;
        let retention = dev.config.session_retention;
        let vouchee = session.vouchee;
        let mut finals = Vec::new();
        for t in before {
            match session.targets.get(&t) {
                Some(VouchStatus::Accepted { .. }) => finals.push((t, "accepted".to_owned())),
                Some(VouchStatus::Rejected { reason, .. }) => finals.push((t, reason_name(reason))),
                Some(VouchStatus::Expired) => finals.push((t, "expired".to_owned())),
                _ => {}
            }
        }
        dev.store.sessions.insert(sid, session);
        let vname = self
            .idx(&vouchee)
            .map_or("?".into(), |i| self.names[i as usize].clone());
        for (t, what) in finals {
            match what.as_str() {
                "accepted" => self.metrics.vouches_accepted += 1,
                "expired" => self.metrics.vouches_expired += 1,
                other => {
                    *self
                        .metrics
                        .vouches_rejected
                        .entry(other.to_owned())
                        .or_default() += 1
                }
            }
            let tname = self
                .idx(&t)
                .map_or("?".into(), |i| self.names[i as usize].clone());
            ev!(
                self,
                "{} vouch for {vname} to {tname}: {what}",
                self.names[x as usize]
            );
        }
        if completed {
            ev!(
                self,
                "{} session for {vname} completed",
                self.names[x as usize]
            );
            self.sched
                .push(self.now + retention.as_millis() as u64, Ev::Wake(x));
        }
        Some(out)
    }

    fn apply_voucher(&mut self, x: u32, sid: SessionId, outs: Vec<VoucherOutput>, queued: bool) {
        for o in outs {
            match o {
                VoucherOutput::SendVouch { to, request } => {
                    let Some(t) = self.idx(&to) else { continue };
                    self.metrics.vouches_sent += 1;
                    let timeout = self.devices[x as usize].config.vouch_response_timeout;
                    self.sched
                        .push(self.now + timeout.as_millis() as u64, Ev::Wake(x));
                    self.send(
                        x,
                        t,
                        Message::ProxyPairingRequest(request),
                        Purpose::Vouch {
                            session: sid,
                            target: t,
                            queued,
                        },
                    );
                }
                VoucherOutput::NotifyVouchee { to, complete } => {
                    let Some(t) = self.idx(&to) else { continue };
                    let targets = complete.accepted.iter().map(|a| a.device_id).collect();
                    self.send(
                        x,
                        t,
                        Message::ProxyPairingComplete(complete),
                        Purpose::Notify {
                            session: sid,
                            targets,
                            queued: false,
                        },
                    );
                }
                VoucherOutput::Enqueue(entry) => self.enqueue(x, entry),
                VoucherOutput::Dequeue { recipient, kind } => {
                    self.dequeue(x, &queue_key(sid, recipient, kind));
                }
            }
        }
    }

    fn on_pending(&mut self, d: u32, s: u32, p: &ProxyPairingPending) {
        let sid = self.devices[s as usize].id;
        let res = self.with_session(d, p.session_id, |session, ctx, _, now| {
            session
                .on_pending(&sid, p, ctx.config, now)
                .map(|()| match session.targets.get(&sid) {
                    Some(VouchStatus::Waiting { deadline, .. }) => Some(*deadline),
                    _ => None,
                })
        });
        match res {
            None => ev!(
                self,
                "{} pending notice for an unknown session",
                self.names[d as usize]
            ),
            Some(Err(e)) => ev!(
                self,
                "{} pending notice refused: {e}",
                self.names[d as usize]
            ),
            Some(Ok(deadline)) => {
                if let Some(dl) = deadline {
                    self.push_wake(d, dl);
                }
            }
        }
    }

    fn on_response(&mut self, d: u32, s: u32, r: &ProxyPairingResponse) {
        let sid_target = self.devices[s as usize].id;
        let Some(session_id) = response_session(&r.response) else {
            ev!(self, "{} response does not decode", self.names[d as usize]);
            return;
        };
        let res = self.with_session(d, session_id, |session, ctx, _, now| {
            session.on_response(ctx, &sid_target, r, now)
        });
        match res {
            None => ev!(
                self,
                "{} response for an unknown session",
                self.names[d as usize]
            ),
            Some(Err(e)) => ev!(self, "{} response refused: {e}", self.names[d as usize]),
            Some(Ok(outs)) => {
                self.audit(
                    d,
                    AuditEvent::TargetAnswered {
                        session: session_id,
                        target: sid_target,
                        response: r.response.clone(),
                    },
                );
                self.apply_voucher(d, session_id, outs, false);
            }
        }
    }

    fn vouch_send_failed(&mut self, x: u32, sid: SessionId, target: u32, queued: bool) {
        let tid = self.devices[target as usize].id;
        let key = queue_key(sid, tid, QueueKind::Vouch);
        let res = self.with_session(x, sid, |session, ctx, _, now| {
            session.on_send_failed(ctx, &tid, now)
        });
        match res {
            Some(Ok(outs)) => {
                if self.devices[x as usize].store.queue.contains_key(&key) {
                    // The worker already holds the entry: this was a delivery attempt.
                    self.queue_failed(x, key);
                } else {
                    self.apply_voucher(x, sid, outs, false);
                }
            }
            Some(Err(e)) => {
                // The vouch is no longer in flight (answered meanwhile, or timed out): a
                // queued delivery whose answer arrived counts as delivered.
                ev!(
                    self,
                    "{} send failure not applied: {e}",
                    self.names[x as usize]
                );
                if queued {
                    self.queue_delivered(x, key);
                }
            }
            None => {
                if queued {
                    self.dequeue(x, &key);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Queue worker

    fn enqueue(&mut self, x: u32, entry: QueueEntry) {
        let key = queue_key(entry.session_id, entry.recipient, entry.kind);
        let Some(r) = self.idx(&entry.recipient) else {
            return;
        };
        let q = &mut self.devices[x as usize].store.queue;
        if q.contains_key(&key) {
            return;
        }
        let kind = entry.kind;
        q.insert(
            key,
            QueueSlot {
                entry,
                in_flight: false,
            },
        );
        self.metrics.queue_delta(true);
        self.waiting_for.entry(r).or_default().insert(x);
        self.queue_holders.insert(x);
        ev!(
            self,
            "{} queues {kind:?} for {}",
            self.names[x as usize],
            self.names[r as usize]
        );
        self.schedule_queue(x, false);
    }

    fn dequeue(&mut self, x: u32, key: &QueueKey) {
        let q = &mut self.devices[x as usize].store.queue;
        if q.remove(key).is_some() {
            self.metrics.queue_delta(false);
            if q.is_empty() {
                self.queue_holders.remove(&x);
            }
        }
    }

    fn queue_delivered(&mut self, x: u32, key: QueueKey) {
        let Some(slot) = self.devices[x as usize].store.queue.get(&key) else {
            return;
        };
        if queue::on_delivered(&slot.entry) == QueueOutcome::Remove {
            self.dequeue(x, &key);
            ev!(self, "{} queue entry delivered", self.names[x as usize]);
        }
    }

    fn queue_failed(&mut self, x: u32, key: QueueKey) {
        let dev = &mut self.devices[x as usize];
        let now = dev.now(self.now);
        let Some(slot) = dev.store.queue.get_mut(&key) else {
            return;
        };
        slot.in_flight = false;
        match queue::on_delivery_failed(&slot.entry, now, &dev.config.queue) {
            QueueOutcome::Retry(e) => {
                slot.entry = e;
                self.schedule_queue(x, false);
            }
            QueueOutcome::Drop(reason) => {
                ev!(
                    self,
                    "{} drops queue entry ({reason:?})",
                    self.names[x as usize]
                );
                self.queue_drop(x, key);
            }
            QueueOutcome::Keep | QueueOutcome::Remove => {}
        }
    }

    /// Drops an entry undelivered: a vouch becomes Expired at its session.
    fn queue_drop(&mut self, x: u32, key: QueueKey) {
        let Some(slot) = self.devices[x as usize].store.queue.get(&key).cloned() else {
            return;
        };
        self.dequeue(x, &key);
        match slot.entry.kind {
            QueueKind::Vouch => {
                let target = slot.entry.recipient;
                let sid = slot.entry.session_id;
                let res = self.with_session(x, sid, |session, ctx, _, now| {
                    session.on_queue_expired(ctx, &target, now)
                });
                if let Some(Ok(outs)) = res {
                    self.audit(
                        x,
                        AuditEvent::VouchExpired {
                            session: sid,
                            target,
                        },
                    );
                    self.apply_voucher(x, sid, outs, false);
                }
            }
            QueueKind::NotifyVouchee => self.metrics.notifications_expired += 1,
        }
    }

    /// Schedules the next queue run of `x`: now (`immediate`, on presence), or the first
    /// poll tick at which some entry can be delivered or expires.
    fn schedule_queue(&mut self, x: u32, immediate: bool) {
        let dev = &self.devices[x as usize];
        let at = if immediate {
            Some(self.now)
        } else {
            let mut best: Option<VTime> = None;
            for slot in dev.store.queue.values().filter(|s| !s.in_flight) {
                let reachable = self
                    .ids
                    .get(&slot.entry.recipient)
                    .is_some_and(|&r| self.net.reachable(x, r));
                let t = if reachable {
                    dev.virtual_of(slot.entry.next_attempt_at, self.now)
                } else {
                    dev.virtual_of(slot.entry.expires_at, self.now)
                };
                best = Some(best.map_or(t, |b| b.min(t)));
            }
            best.map(|b| dev.next_poll(b.max(self.now)))
        };
        let Some(at) = at else { return };
        if dev.queue_wake.is_none_or(|q| at < q) {
            self.devices[x as usize].queue_wake = Some(at);
            self.sched.push(at, Ev::QueueRun(x));
        }
    }

    fn queue_run(&mut self, x: u32) {
        if self.devices[x as usize].queue_wake != Some(self.now) {
            return; // superseded by an earlier run
        }
        self.devices[x as usize].queue_wake = None;
        let keys: Vec<QueueKey> = self.devices[x as usize]
            .store
            .queue
            .keys()
            .copied()
            .collect();
        for key in keys {
            let dev = &self.devices[x as usize];
            let now = dev.now(self.now);
            let Some(slot) = dev.store.queue.get(&key) else {
                continue;
            };
            if slot.in_flight {
                continue;
            }
            let entry = slot.entry.clone();
            let Some(r) = self.idx(&entry.recipient) else {
                continue;
            };
            if !self.net.reachable(x, r) {
                if let QueueOutcome::Drop(reason) = queue::on_recipient_offline(&entry, now) {
                    ev!(
                        self,
                        "{} drops queued {:?} for {} ({reason:?})",
                        self.names[x as usize],
                        entry.kind,
                        self.names[r as usize]
                    );
                    self.queue_drop(x, key);
                }
                continue;
            }
            if queue::is_expired(&entry, now) {
                ev!(
                    self,
                    "{} drops queued {:?} for {} (Expired)",
                    self.names[x as usize],
                    entry.kind,
                    self.names[r as usize]
                );
                self.queue_drop(x, key);
                continue;
            }
            if !queue::is_due(&entry, now) {
                continue;
            }
            self.queue_deliver(x, key, entry, r);
        }
        self.schedule_queue(x, false);
    }

    fn queue_deliver(&mut self, x: u32, key: QueueKey, entry: QueueEntry, r: u32) {
        let sid = entry.session_id;
        match entry.kind {
            QueueKind::Vouch => {
                let target = entry.recipient;
                let res = self.with_session(x, sid, |session, ctx, rng, now| {
                    session.deliver_queued(ctx, &target, now, rng)
                });
                match res {
                    Some(Ok(out)) => {
                        if let Some(s) = self.devices[x as usize].store.queue.get_mut(&key) {
                            s.in_flight = true;
                        }
                        ev!(
                            self,
                            "{} delivers queued vouch to {}",
                            self.names[x as usize],
                            self.names[r as usize]
                        );
                        self.apply_voucher(x, sid, vec![out], true);
                    }
                    Some(Err(e)) => {
                        // The target was removed or blocked while the vouch waited, or the
                        // session moved on: the entry cannot be delivered any more.
                        ev!(
                            self,
                            "{} cannot deliver queued vouch: {e}",
                            self.names[x as usize]
                        );
                        self.queue_drop(x, key);
                    }
                    None => self.dequeue(x, &key),
                }
            }
            QueueKind::NotifyVouchee => {
                let complete = {
                    let dev = &self.devices[x as usize];
                    dev.store.sessions.get(&sid).map(|s| {
                        let view = View {
                            store: &dev.store,
                            net: &self.net,
                            ids: &self.ids,
                            me: x,
                            pairing_prompts: 0,
                        };
                        s.vouchee_notification(&view)
                    })
                };
                match complete {
                    Some(c) => {
                        if let Some(s) = self.devices[x as usize].store.queue.get_mut(&key) {
                            s.in_flight = true;
                        }
                        let targets = c.accepted.iter().map(|a| a.device_id).collect();
                        self.send(
                            x,
                            r,
                            Message::ProxyPairingComplete(c),
                            Purpose::Notify {
                                session: sid,
                                targets,
                                queued: true,
                            },
                        );
                    }
                    None => self.dequeue(x, &key),
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Target (receiver)

    fn on_vouch_request(&mut self, d: u32, s: u32, req: &ProxyPairingRequest) {
        let sender = self.devices[s as usize].id;
        let verdict = {
            let dev = &self.devices[d as usize];
            let view = View {
                store: &dev.store,
                net: &self.net,
                ids: &self.ids,
                me: d,
                pairing_prompts: dev.pairing_count(),
            };
            let receiver = Receiver::new(&dev.keypair, &dev.config);
            receiver.receive(&view, &sender, req, dev.now(self.now))
        };
        match verdict {
            Ok(v) => self.apply_verdict(d, s, v, Some(&req.vouch), true),
            Err(e) => ev!(self, "{} cannot read vouch: {e}", self.names[d as usize]),
        }
    }

    /// Applies a target's verdict. `in_response`: the verdict answers a vouch being
    /// delivered now, so the answer rides on that vouch's response; otherwise (a prompt
    /// answered or expired later) it is sent as a request of its own.
    fn apply_verdict(
        &mut self,
        d: u32,
        s: u32,
        v: Verdict,
        vouch: Option<&vouchnet_protocol::messages::SignedVouch>,
        in_response: bool,
    ) {
        let outcome_name = match &v.outcome {
            Outcome::Accepted(how) => format!("Accepted{how:?}"),
            Outcome::Prompted => "Prompted".to_owned(),
            Outcome::Rejected(r) => format!("Rejected:{}", reason_name(r)),
            Outcome::Repeated(_) => "Repeated".to_owned(),
        };
        *self
            .metrics
            .receiver_outcomes
            .entry(outcome_name.clone())
            .or_default() += 1;
        ev!(
            self,
            "{} decides vouch from {}: {outcome_name}",
            self.names[d as usize],
            self.names[s as usize]
        );
        let c = v.commit;
        let now = self.devices[d as usize].now(self.now);
        {
            let store = &mut self.devices[d as usize].store;
            if store.replay.len() > 4096 {
                store.prune(now);
            }
            if let Some(n) = c.seen_nonce {
                store.replay.insert(n.nonce, n.expires_at);
            }
            if let Some(dr) = &c.decision {
                store.decisions.insert(
                    (dr.session_id, dr.voucher, dr.vouchee),
                    (dr.decision.clone(), dr.expires_at),
                );
            }
        }
        if let Some(dev) = c.device {
            let how = match v.outcome {
                Outcome::Accepted(how) => how,
                _ => vouchnet_protocol::messages::AcceptedHow::Automatic,
            };
            self.add_proxied_at_target(d, dev, how);
        } else if let (Outcome::Rejected(reason), Some(dr)) = (&v.outcome, &c.decision) {
            self.audit(
                d,
                AuditEvent::VouchRejected {
                    session: dr.session_id,
                    voucher: dr.voucher,
                    vouchee: dr.vouchee,
                    reason: reason.clone(),
                    vouch: vouch.cloned(),
                    response: v.reply.response().cloned(),
                },
            );
        }
        if let Some(k) = c.close_prompt {
            self.devices[d as usize].store.prompts.remove(&k);
        }
        if let Some(p) = c.open_prompt {
            let key = p.key();
            let deadline = p.deadline;
            let existed = self.devices[d as usize]
                .store
                .prompts
                .insert(key, p)
                .is_some();
            if !existed {
                self.metrics.prompts[0] += 1;
                self.push_wake(d, deadline);
                let (answer, delay) = self.devices[d as usize].user.answer_prompt();
                if answer != PromptAnswer::Ignore {
                    self.sched.push(
                        self.now + delay,
                        Ev::AnswerPrompt {
                            dev: d,
                            key,
                            accept: answer == PromptAnswer::Accept,
                        },
                    );
                }
            }
        }
        if in_response {
            self.answer_in_response = Some(v.reply.into_message());
        } else {
            self.send(d, s, v.reply.into_message(), Purpose::Reply);
        }
    }

    fn add_proxied_at_target(
        &mut self,
        d: u32,
        dev: vouchnet_protocol::vouch::ProxiedDevice,
        how: vouchnet_protocol::messages::AcceptedHow,
    ) {
        self.metrics.invariant_checks += 1;
        let Some(p) = self.idx(&dev.device_id) else {
            return;
        };
        let Some(v) = self.idx(&dev.vouched_by) else {
            return;
        };
        let me = self.devices[d as usize].id;
        let (dn, pn, vn) = (
            self.names[d as usize].clone(),
            self.names[p as usize].clone(),
            self.names[v as usize].clone(),
        );
        let store = &self.devices[d as usize].store;
        if store.tombstones.contains(&dev.device_id) {
            return self.violate(
                Invariant::Tombstone,
                format!(
                    "{dn} re-added {pn}, which its user removed or blocked, on a vouch from {vn}"
                ),
            );
        }
        if store.devices.contains_key(&dev.device_id) {
            return self.violate(
                Invariant::Once,
                format!("{dn} was told to add {pn} again on a vouch from {vn}"),
            );
        }
        if !matches!(store.devices.get(&dev.vouched_by), Some(r) if r.known.pairing_type == PairingType::Direct && r.known.trust_level == TrustLevel::Trusted)
            || !self.ledger.is_direct(d, v)
        {
            return self.violate(
                Invariant::Chain,
                format!("{dn} accepted {pn} on a vouch from {vn}, not a direct trusted pairing"),
            );
        }
        if !self.ledger.is_direct(v, p) {
            return self.violate(
                Invariant::OneHop,
                format!(
                    "{dn} accepted {pn} on a vouch from {vn}, whose own trust in it is not direct"
                ),
            );
        }
        if let Err(e) =
            invariants::check_target_proof(&me, &dev.vouched_by, &dev.device_id, &dev.proof)
        {
            return self.violate(Invariant::Chain, format!("{dn} accepted {pn}: {e}"));
        }
        self.metrics.proxied_records += 1;
        let session = response_session(&dev.proof.response);
        self.devices[d as usize].store.devices.insert(
            dev.device_id,
            Record {
                known: KnownDevice {
                    public_key: dev.public_key,
                    pairing_type: PairingType::Proxied,
                    trust_level: TrustLevel::Trusted,
                },
                name: dev.name.clone(),
                key: dev.proxied_key.clone(),
                vouched_by: Some(dev.vouched_by),
                proof: Proof::Target(Box::new(dev.proof.clone())),
                added_at: self.now,
            },
        );
        if let Some(session) = session {
            self.audit(
                d,
                AuditEvent::VouchAccepted {
                    session,
                    voucher: dev.vouched_by,
                    vouchee: dev.device_id,
                    vouchee_key: dev.public_key,
                    how,
                    proof: dev.proof,
                },
            );
        }
        self.trust_changed(d, p);
    }

    fn answer_prompt(&mut self, d: u32, key: PromptKey, accept: bool) {
        let Some(prompt) = self.devices[d as usize].store.prompts.get(&key).cloned() else {
            return;
        };
        let Some(s) = self.idx(&key.voucher) else {
            return;
        };
        self.metrics.prompts[if accept { 1 } else { 2 }] += 1;
        ev!(
            self,
            "{} user {} the vouch for {}",
            self.names[d as usize],
            if accept { "accepts" } else { "rejects" },
            self.idx(&key.vouchee)
                .map_or("?", |i| self.names[i as usize].as_str())
        );
        if accept {
            self.audit(
                d,
                AuditEvent::UserConfirmed {
                    action: ConfirmedAction::VouchPrompt {
                        session: key.session_id,
                        voucher: key.voucher,
                        vouchee: key.vouchee,
                    },
                },
            );
        }
        let verdict = {
            let dev = &self.devices[d as usize];
            let view = View {
                store: &dev.store,
                net: &self.net,
                ids: &self.ids,
                me: d,
                pairing_prompts: dev.pairing_count(),
            };
            Receiver::new(&dev.keypair, &dev.config).answer_prompt(
                &view,
                &prompt,
                accept,
                dev.now(self.now),
            )
        };
        self.apply_verdict(d, s, verdict, Some(&prompt.vouch), false);
    }

    // ------------------------------------------------------------------------------------
    // Vouchee

    fn on_complete(&mut self, e: u32, s: u32, msg: &ProxyPairingComplete) {
        let voucher = self.devices[s as usize].id;
        let dev = &self.devices[e as usize];
        let key = match dev.store.devices.get(&voucher) {
            Some(r) if r.known.pairing_type == PairingType::Direct => r.key.clone(),
            _ => {
                self.metrics.completes_refused += 1;
                ev!(
                    self,
                    "{} refuses Complete from {}: not paired directly",
                    self.names[e as usize],
                    self.names[s as usize]
                );
                return;
            }
        };
        let res = {
            let view = View {
                store: &dev.store,
                net: &self.net,
                ids: &self.ids,
                me: e,
                pairing_prompts: 0,
            };
            accept_complete(
                &dev.id,
                &voucher,
                &voucher,
                &view,
                &key,
                msg,
                dev.now(self.now),
            )
        };
        let peers = match res {
            Ok(p) => p,
            Err(err) => {
                self.metrics.completes_refused += 1;
                ev!(
                    self,
                    "{} refuses Complete from {}: {err}",
                    self.names[e as usize],
                    self.names[s as usize]
                );
                return;
            }
        };
        for peer in peers {
            self.metrics.invariant_checks += 1;
            let Some(t) = self.idx(&peer.device_id) else {
                continue;
            };
            let (en, tn, vn) = (
                self.names[e as usize].clone(),
                self.names[t as usize].clone(),
                self.names[s as usize].clone(),
            );
            let store = &self.devices[e as usize].store;
            if store.tombstones.contains(&peer.device_id) {
                return self.violate(
                    Invariant::Tombstone,
                    format!(
                        "{en} re-added {tn}, which its user removed or blocked, on word from {vn}"
                    ),
                );
            }
            if store.devices.contains_key(&peer.device_id) {
                return self.violate(Invariant::Once, format!("{en} was told to add {tn} again"));
            }
            if !self.ledger.is_direct(e, s) {
                return self.violate(
                    Invariant::Chain,
                    format!("{en} added {tn} on word from {vn}, not a direct pairing"),
                );
            }
            if !self.ledger.is_direct(s, t) {
                return self.violate(
                    Invariant::OneHop,
                    format!(
                        "{en} added {tn} on word from {vn}, whose own trust in it is not direct"
                    ),
                );
            }
            let me = self.devices[e as usize].id;
            if let Err(err) =
                invariants::check_vouchee_proof(&me, &voucher, &peer.device_id, &peer.proof)
            {
                return self.violate(Invariant::Chain, format!("{en} added {tn}: {err}"));
            }
            self.metrics.proxied_records += 1;
            ev!(self, "{en} trusts {tn} (vouched by {vn})");
            self.devices[e as usize].store.devices.insert(
                peer.device_id,
                Record {
                    known: KnownDevice {
                        public_key: peer.public_key,
                        pairing_type: PairingType::Proxied,
                        trust_level: TrustLevel::Trusted,
                    },
                    name: peer.name.clone(),
                    key: peer.proxied_key.clone(),
                    vouched_by: Some(voucher),
                    proof: Proof::Vouchee(Box::new(peer.proof.clone())),
                    added_at: self.now,
                },
            );
            self.audit(
                e,
                AuditEvent::ProxiedDeviceAdded {
                    session: msg.session_id,
                    voucher,
                    device: peer.device_id,
                    key: peer.public_key,
                    name: peer.name,
                    acceptance: peer.proof,
                },
            );
            self.trust_changed(e, t);
        }
    }

    // ------------------------------------------------------------------------------------
    // Timers

    fn wake(&mut self, x: u32) {
        let now = self.devices[x as usize].now(self.now);
        if let Some(p) = self.devices[x as usize].pairing.as_mut() {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                let outs = p.handle_timeout(now);
                self.apply_pairing(x, outs);
            }
            self.devices[x as usize].release_pairing();
        }
        let due: Vec<SessionId> = self.devices[x as usize]
            .store
            .sessions
            .iter()
            .filter(|(_, s)| s.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for sid in due {
            if let Some(outs) =
                self.with_session(x, sid, |s, ctx, _, now| s.handle_timeout(ctx, now))
            {
                self.apply_voucher(x, sid, outs, false);
            }
        }
        let expired: Vec<PromptKey> = self.devices[x as usize]
            .store
            .prompts
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let Some(prompt) = self.devices[x as usize].store.prompts.get(&key).cloned() else {
                continue;
            };
            let Some(s) = self.idx(&key.voucher) else {
                continue;
            };
            self.metrics.prompts[3] += 1;
            let verdict = {
                let dev = &self.devices[x as usize];
                Receiver::new(&dev.keypair, &dev.config).expire_prompt(&prompt, now)
            };
            self.apply_verdict(x, s, verdict, Some(&prompt.vouch), false);
        }
        // Finished sessions are deleted after the retention time, once nothing is queued
        // for them.
        let dev = &mut self.devices[x as usize];
        let retention = dev.config.session_retention;
        let queued: BTreeSet<SessionId> = dev.store.queue.keys().map(|k| k.0).collect();
        dev.store
            .sessions
            .retain(|id, s| !s.is_removable(now, retention) || queued.contains(id));
    }

    // ------------------------------------------------------------------------------------
    // Presence, partitions, user actions

    fn presence(&mut self, x: u32, online: bool) {
        if self.net.is_online(x) == online {
            return;
        }
        self.net.set_online(x, online);
        ev!(
            self,
            "{} goes {}",
            self.names[x as usize],
            if online { "online" } else { "offline" }
        );
        if online {
            self.reachability_gained(Some(x));
        } else {
            self.reachability_lost();
        }
    }

    fn partition_start(&mut self, i: usize) {
        let sides = self.plan.partitions[i].side_of.clone();
        self.net.partition(sides);
        ev!(self, "partition {i} starts");
        self.reachability_lost();
    }

    fn partition_heal(&mut self, i: usize) {
        self.net.heal();
        ev!(self, "partition {i} heals");
        self.reachability_gained(None);
    }

    /// Pairings across links that went down end (the connection is gone).
    fn reachability_lost(&mut self) {
        let broken: Vec<(u32, u32)> = self
            .live_tx
            .iter()
            .filter(|(a, b)| !self.net.reachable(*a, *b))
            .copied()
            .collect();
        for (a, b) in broken {
            let peer = self.devices[b as usize].id;
            if let Some(p) = self.devices[a as usize].pairing.as_mut() {
                let outs = p.connection_lost(peer);
                self.apply_pairing(a, outs);
            }
            self.devices[a as usize].release_pairing();
        }
    }

    /// Devices with queue entries for a device that became reachable deliver now.
    fn reachability_gained(&mut self, device: Option<u32>) {
        let holders: Vec<u32> = match device {
            Some(x) => {
                let mut h: Vec<u32> = self
                    .waiting_for
                    .get(&x)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                if self.queue_holders.contains(&x) {
                    h.push(x);
                }
                h
            }
            None => self.queue_holders.iter().copied().collect(),
        };
        for h in holders {
            if self.devices[h as usize].store.queue.is_empty() {
                continue;
            }
            let rid_ok = match device {
                Some(x) if x != h => self.net.reachable(h, x),
                _ => true,
            };
            if rid_ok {
                self.schedule_queue(h, true);
            }
        }
        if let Some(x) = device {
            // Forget holders that no longer hold anything for x.
            let xid = self.devices[x as usize].id;
            if let Some(set) = self.waiting_for.get_mut(&x) {
                let devices = &self.devices;
                set.retain(|h| devices[*h as usize].store.queue.keys().any(|k| k.1 == xid));
            }
        }
    }

    fn action(&mut self, i: usize) {
        let a = self.plan.actions[i].clone();
        let (x, p) = (a.device, a.peer);
        let pid = self.devices[p as usize].id;
        let now_v = self.now;
        let now = self.devices[x as usize].now(now_v);
        match a.kind {
            PlannedActionKind::Remove => {
                ev!(
                    self,
                    "{} user removes {}",
                    self.names[x as usize],
                    self.names[p as usize]
                );
                self.devices[x as usize].store.devices.remove(&pid);
                self.devices[x as usize].store.tombstones.insert(pid);
                self.audit(x, AuditEvent::Unpaired { device: pid });
            }
            PlannedActionKind::Block => {
                ev!(
                    self,
                    "{} user blocks {}",
                    self.names[x as usize],
                    self.names[p as usize]
                );
                let from = self.devices[x as usize]
                    .store
                    .devices
                    .get_mut(&pid)
                    .map(|r| std::mem::replace(&mut r.known.trust_level, TrustLevel::Blocked));
                self.devices[x as usize].store.tombstones.insert(pid);
                if let Some(from) = from {
                    self.audit(
                        x,
                        AuditEvent::TrustChanged {
                            device: pid,
                            from,
                            to: TrustLevel::Blocked,
                        },
                    );
                }
            }
        }
        // Sessions vouching for the device are cancelled; a pairing with it is aborted.
        let sessions: Vec<SessionId> = self.devices[x as usize]
            .store
            .sessions
            .iter()
            .filter(|(_, s)| s.vouchee == pid)
            .map(|(id, _)| *id)
            .collect();
        for sid in sessions {
            if let Some(Ok(outs)) = self.with_session(x, sid, |s, _, _, _| s.cancel(now)) {
                self.apply_voucher(x, sid, outs, false);
            }
        }
        if let Some(m) = self.devices[x as usize].pairing.as_mut() {
            if let Ok(outs) = m.abort(pid, now) {
                self.apply_pairing(x, outs);
            }
        }
        self.trust_changed(x, p);
    }

    // ------------------------------------------------------------------------------------
    // Convergence

    fn trust_changed(&mut self, a: u32, b: u32) {
        self.metrics.last_trust_change = self.now;
        let (da, db) = (&self.devices[a as usize], &self.devices[b as usize]);
        if da.group != db.group {
            return;
        }
        let key = pair(a, b);
        let now_mutual = da.store.trusts(&db.id) && db.store.trusts(&da.id);
        let was = self.mutual.contains(&key);
        if now_mutual == was {
            return;
        }
        if now_mutual {
            self.mutual.insert(key);
            self.metrics.satisfied_edges += 1;
            if self.ever_mutual.insert(key) {
                let owner = if da.member > db.member { a } else { b };
                let r = &mut self.remaining[owner as usize];
                *r = r.saturating_sub(1);
                if *r == 0 {
                    if let Some(start) = self.join_start[owner as usize] {
                        self.metrics.join_latencies.push(self.now - start);
                    }
                }
            }
            if self.metrics.satisfied_edges == self.metrics.target_edges
                && self.joins_started == self.joins.len()
                && self.metrics.converged_at.is_none()
            {
                self.metrics.converged_at = Some(self.now);
                ev!(self, "target trust graph complete");
            }
        } else {
            self.mutual.remove(&key);
            self.metrics.satisfied_edges -= 1;
        }
    }
}
