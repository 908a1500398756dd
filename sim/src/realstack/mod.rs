//! # The real-stack runner: the same scenarios, on real nodes
//!
//! `vouchnet-sim real sim/scenarios/<file>.toml` starts one full node per device of the
//! scenario's plan — libp2p swarm on loopback TCP, real sled store in its own temporary
//! data directory, the node's own event loop — all in this process on one multi-thread
//! tokio runtime, and drives them as the scenario's users would, through each node's
//! [`Client`](vouchnet_node::Client) (the handle the control API and the CLI use):
//!
//! 1. **Direct pairing**: the joining device asks (`pair request`), both users read their
//!    screen's code (`pair requests`), and each types the *other* screen's code into its
//!    own device (`pair accept CODE`).
//! 2. **Vouching**: the device that was joined vouches for the newcomer, to every other
//!    device it is directly paired with (`vouch --all`; past the 256 targets one session
//!    takes, in several sessions), to the targets the scenario chooses, or not at all; with
//!    `auto_vouch_to_all` the node does it itself.
//! 3. **Prompts**: with `auto_accept_vouched` off, each target's user answers
//!    (`proxy accept|reject`) or ignores the prompt, with the scenario's probabilities
//!    ([`users`]).
//! 4. **Presence**: a device whose offline window starts is shut down; when it ends, its
//!    node starts again on the same data directory ([`fleet`]).
//! 5. **Actions**: `remove` unpairs, `block` blocks (a paired device by its trust level, one
//!    not paired with a tombstone).
//!
//! ## Scenario time on the wall clock
//!
//! A scenario spans hours or days; the runner does not wait them out. It executes the
//! plan's steps in order ([`timeline`]). After each step it waits — on the nodes' events,
//! never on a timer — until the nodes have *settled*: every vouch of every session is
//! answered, or queued for a device that is offline, or waiting on a user who chose to
//! ignore the prompt, and every vouchee that is online lists the targets that accepted it.
//! Then it moves **every node's clock** forward to the next step's time
//! ([`vouchnet_node::clock::Clock::advance`]). The nodes' timestamps are therefore the
//! scenario's times (plus the real seconds the work took): a queued vouch expires after
//! seven scenario days, a prompt expires, a vouch signed before a jump is stale after it,
//! exactly as the protocol decides with real time. What runs on real time only:
//!
//! - network timeouts (`request_timeout`, redial backoff) and `vouch_response_timeout` for
//!   an online target, which are short;
//! - the offline queue's poll, set to [`fleet::QUEUE_POLL`] s; after the last jump the
//!   runner lets one poll pass before it counts, so that expiries are applied;
//! - the users' delays (`confirm_delay`, `answer_delay`, `select_delay`): users answer at
//!   once.
//!
//! Clock skew is kept: each node's clock starts at its skew (all shifted by the most
//! negative skew, since a clock only moves forward). Not applied on one loopback interface:
//! latency, jitter, loss and partitions (the netns harness in `node/tests/netns_mesh.rs`
//! does those); they are listed in the report.
//!
//! ## Checks and measurements
//!
//! At the end, nodes still running are asked for `audit --verify` and their device list
//! (every proxied device's `vouched_by` must be one of its direct devices); then every node
//! is shut down and its store is read back from disk and checked against the simulator's
//! invariants ([`check`]). The report gives direct pairings against N(N−1)/2, the vouches
//! accepted and rejected, wall time, and memory: the process's peak resident set (`VmHWM`),
//! per node, and the growth per node ([`procfs`]).

pub mod check;
pub mod fleet;
pub mod procfs;
pub mod report;
pub mod timeline;
pub mod users;

use crate::invariants::{pair, Invariant, Violation};
use crate::scenario::{Plan, PlannedActionKind, VouchMode};
use check::{Outcome, Snapshot};
use fleet::Device;
use procfs::{NofileLimit, ProcStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline::StepKind;
use users::{Answer, Shared};
use vouchnet_node::clock::Clock;
use vouchnet_node::{Client, NodeError};
use vouchnet_protocol::model::{TrustLevel, VouchStatus, VouchingSession};
use vouchnet_protocol::session::MAX_SESSION_TARGETS;
use vouchnet_protocol::{DeviceId, SessionId};

pub use report::RealReport;

/// How a real-stack run is set up.
/// Called with (done, total, what) as the run advances.
pub type ProgressFn = Box<dyn Fn(usize, usize, &str) + Send + Sync>;

pub struct RealOptions {
    /// Longest wait for the nodes to settle after one step. A step that does not settle in
    /// time is listed in the report and the run goes on.
    pub settle_timeout: Duration,
    /// How long no node may publish an event before the clocks jump: exchanges that publish
    /// nothing until they end (a rekey and the key proof after it) finish within it.
    pub quiet: Duration,
    /// Where the data directories go (a fresh temporary directory by default).
    pub work_dir: Option<PathBuf>,
    /// Start even when the plan needs more file descriptors than the limit allows.
    pub ignore_fd_limit: bool,
    /// Called after each step with (steps done, steps in all, what the step was).
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for RealOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealOptions")
            .field("settle_timeout", &self.settle_timeout)
            .field("quiet", &self.quiet)
            .field("work_dir", &self.work_dir)
            .field("ignore_fd_limit", &self.ignore_fd_limit)
            .finish_non_exhaustive()
    }
}

impl Default for RealOptions {
    fn default() -> Self {
        RealOptions {
            settle_timeout: Duration::from_secs(60),
            quiet: Duration::from_millis(300),
            work_dir: None,
            ignore_fd_limit: false,
            progress: None,
        }
    }
}

/// Why a real-stack run could not be carried out (as opposed to a run whose checks
/// failed, which is a [`RealReport`] with violations).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealError {
    /// The plan needs more open files than this process may have.
    #[error(
        "the plan needs about {need} file descriptors (both ends of every loopback connection \
         are in this process); the limit is {limit} (hard limit {hard}). Run fewer or smaller \
         groups, raise the hard limit (needs CAP_SYS_RESOURCE), or pass --ignore-fd-limit"
    )]
    FdLimit {
        /// Estimated need ([`procfs::fd_estimate`]).
        need: u64,
        /// The soft limit after raising it.
        limit: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The process's limits or status could not be read, or a directory not created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A node did not start.
    #[error("the node of {name} did not start: {reason}")]
    Start {
        /// The device.
        name: String,
        /// Why.
        reason: String,
    },
    /// A node's store could not be read back after the run.
    #[error("the store of {name} could not be read: {reason}")]
    Store {
        /// The device.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A vouching session the runner started (or saw the node start) and follows until every
/// target is done.
#[derive(Debug)]
struct Tracked {
    voucher: u32,
    vouchee: u32,
    id: SessionId,
    done: bool,
}

/// The run in progress.
struct Runner<'a> {
    plan: &'a Plan,
    devices: Vec<Device>,
    shared: Arc<Shared>,
    /// Reads scenario time: wall clock + `base_ms` + everything skipped.
    reference: Clock,
    start_wall_ms: u64,
    base_ms: u64,
    skipped_ms: u64,
    by_id: BTreeMap<String, u32>,
    confirmed: BTreeSet<(u32, u32)>,
    tracked: Vec<Tracked>,
    observed: BTreeMap<(u32, SessionId), VouchingSession>,
    settle_timeout: Duration,
    quiet: Duration,
    /// Pairs whose presence did not settle once: not waited for again (see `settle`).
    stuck: BTreeSet<(u32, u32)>,
    notes: Notes,
    fds_peak: u64,
    discoveries: u64,
}

/// What the report lists beside the counts.
#[derive(Debug, Default, Clone)]
pub struct Notes {
    /// Joins whose direct pairing completed.
    pub joins_done: u64,
    /// Joins that failed, and why.
    pub joins_failed: Vec<String>,
    /// Steps after which the nodes did not settle in time, with what was still pending.
    pub unsettled: Vec<String>,
    /// User actions carried out.
    pub actions_done: u64,
    /// Parts of the scenario the real stack did not apply.
    pub not_applied: Vec<String>,
    /// Violations seen on running nodes (`audit --verify`, `devices`).
    pub live_violations: Vec<Violation>,
}

/// How often the stand-in for mDNS announces a device again to a device that trusts it
/// and is still not connected to it.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Most devices announced to one device at once. The node now takes as many handshakes in
/// progress as `max_incoming_connections` (it took 32 when this was chosen); spacing the
/// announcements still keeps a join's dials from all landing in the same instant.
const ANNOUNCE_BURST: usize = 16;

/// A wake-up source for waits: the users' ticks (one per node event) and a deadline.
struct Wake {
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
}

impl Wake {
    /// Waits for the next event of any node; false once the deadline has passed.
    async fn next(&mut self) -> bool {
        matches!(
            tokio::time::timeout_at(self.deadline, self.rx.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Waits for the next event of any node or `at_most`; false once the deadline has
    /// passed.
    async fn next_or(&mut self, at_most: Duration) -> bool {
        let until = (tokio::time::Instant::now() + at_most).min(self.deadline);
        let _ = tokio::time::timeout_at(until, self.rx.changed()).await;
        tokio::time::Instant::now() < self.deadline
    }
}

/// Runs `plan` on real nodes. Must be called inside a multi-thread tokio runtime.
pub async fn run(plan: &Plan, opts: RealOptions) -> Result<RealReport, RealError> {
    let total_started = Instant::now();
    let nofile = procfs::raise_nofile()?;
    let fd_need = procfs::fd_estimate(plan, procfs::open_fds()?);
    if fd_need > nofile.soft && !opts.ignore_fd_limit {
        return Err(RealError::FdLimit {
            need: fd_need,
            limit: nofile.soft,
            hard: nofile.hard,
        });
    }
    let before = procfs::status()?;
    let tmp;
    let root = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("vouchnet-realstack-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let users: Vec<_> = plan.devices.iter().map(|d| d.user.clone()).collect();
    let shared = Shared::new(plan.seed, &users);
    let base_ms = plan
        .devices
        .iter()
        .map(|d| d.skew_ms)
        .min()
        .unwrap_or(0)
        .min(0)
        .unsigned_abs();
    let reference = Clock::system();
    reference.advance(Duration::from_millis(base_ms));
    let start_wall_ms = vouchnet_node::clock::now().as_millis();

    // Start every node.
    let start_phase = Instant::now();
    let mut devices = Vec::with_capacity(plan.devices.len());
    for (i, d) in plan.devices.iter().enumerate() {
        let clock = Clock::system();
        clock.advance(Duration::from_millis(
            base_ms.saturating_add_signed(d.skew_ms),
        ));
        let config = fleet::node_config(&d.name, &d.config, plan.devices.len());
        let dev = Device::start(
            i as u32,
            d,
            root.join(format!("{i:05}-{}", d.name)),
            config,
            clock,
            &shared,
        )
        .await
        .map_err(|e| RealError::Start {
            name: d.name.clone(),
            reason: e.to_string(),
        })?;
        devices.push(dev);
    }
    let start_wall = start_phase.elapsed();
    let started = procfs::status()?;
    let by_id = devices
        .iter()
        .map(|d| (d.id_str.clone(), d.index))
        .collect();
    let mut runner = Runner {
        plan,
        devices,
        shared,
        reference,
        start_wall_ms,
        base_ms,
        skipped_ms: 0,
        by_id,
        confirmed: BTreeSet::new(),
        tracked: Vec::new(),
        observed: BTreeMap::new(),
        settle_timeout: opts.settle_timeout,
        quiet: opts.quiet,
        stuck: BTreeSet::new(),
        notes: Notes::default(),
        fds_peak: procfs::open_fds()?,
        discoveries: 0,
    };
    runner.note_unapplied();

    // Run the steps.
    let run_phase = Instant::now();
    let tl = timeline::timeline(plan);
    for j in &tl.missed_joins {
        let join = &plan.joins[*j];
        runner.notes.joins_failed.push(format!(
            "{} → {}: never both online at a try before the end",
            plan.devices[join.device as usize].name, plan.devices[join.voucher as usize].name
        ));
    }
    let total = tl.steps.len();
    for (k, step) in tl.steps.iter().enumerate() {
        runner.jump_to(step.at).await;
        let unsettled = runner.notes.unsettled.len();
        let mut label = runner.step(step.kind).await;
        if let Some(note) = runner.notes.unsettled.get(unsettled) {
            label = format!("{label} — did not settle: {note}");
        }
        runner.fds_peak = runner.fds_peak.max(procfs::open_fds().unwrap_or(0));
        if let Some(p) = &opts.progress {
            p(k + 1, total, &label);
        }
    }
    let virtual_ms = runner.vnow();
    runner.live_checks().await;
    let end = procfs::status()?;
    let run_wall = run_phase.elapsed();

    // Stop every node and read its store back.
    let check_phase = Instant::now();
    for d in &mut runner.devices {
        d.stop().await;
    }
    let mut snaps: Vec<Snapshot> = Vec::with_capacity(runner.devices.len());
    for d in &runner.devices {
        let dir = d.dir().to_path_buf();
        let snap = tokio::task::spawn_blocking(move || check::snapshot(&dir))
            .await
            .map_err(|e| RealError::Store {
                name: d.name.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| RealError::Store {
                name: d.name.clone(),
                reason: e.to_string(),
            })?;
        snaps.push(snap);
    }
    let ids: Vec<DeviceId> = runner.devices.iter().map(|d| d.id).collect();
    let names: Vec<String> = runner.devices.iter().map(|d| d.name.clone()).collect();
    let mut violations = std::mem::take(&mut runner.notes.live_violations);
    violations.extend(check::invariants(
        &snaps,
        &ids,
        &names,
        &runner.confirmed,
        plan.seed,
        virtual_ms,
    ));
    let groups: Vec<Vec<u32>> = plan.groups.iter().map(|g| g.members.clone()).collect();
    let outcome: Outcome = check::outcome(&snaps, &ids, &groups, &runner.observed);
    let check_wall = check_phase.elapsed();
    let peak = procfs::status()?;

    Ok(RealReport {
        scenario: plan.scenario.name.clone(),
        seed: plan.seed,
        devices: plan.devices.len(),
        groups: plan.groups.len(),
        outcome,
        violations,
        steps: total,
        restarts: runner.devices.iter().map(|d| u64::from(d.restarts)).sum(),
        prompts: runner.shared.answer_counts(),
        key_proof_failures: runner.shared.key_proof_failures(),
        virtual_ms,
        skipped_ms: runner.skipped_ms,
        start_wall,
        run_wall,
        check_wall,
        total_wall: total_started.elapsed(),
        before,
        started,
        end,
        peak: ProcStatus {
            vm_hwm_kib: peak.vm_hwm_kib,
            ..end
        },
        nofile,
        fd_need,
        fds_peak: runner.fds_peak,
        discoveries: runner.discoveries,
        notes: runner.notes,
        expect: plan.scenario.expect.clone(),
    })
}

impl Runner<'_> {
    /// Scenario time now, ms from the start.
    fn vnow(&self) -> u64 {
        self.reference
            .now()
            .as_millis()
            .saturating_sub(self.start_wall_ms + self.base_ms)
    }

    /// Moves every clock forward to scenario time `t` (no-op when already past it).
    fn advance_to(&mut self, t: u64) {
        let now = self.vnow();
        if t <= now {
            return;
        }
        let by = Duration::from_millis(t - now);
        for d in &self.devices {
            d.clock().advance(by);
        }
        self.reference.advance(by);
        self.skipped_ms += t - now;
    }

    /// Moves scenario time to `t`, in stages: every deadline of a vouch in flight (a
    /// prompt's, then the voucher's) that falls before `t` is reached on its own, the nodes
    /// left to act on it, before time moves on. One jump over all of them would fire them
    /// at once and let their order race (a voucher could time out before the target's
    /// "prompt expired" answer reached it).
    async fn jump_to(&mut self, t: u64) {
        loop {
            if t <= self.vnow() {
                return;
            }
            self.quiet().await;
            let now = self.vnow();
            let next = self
                .deadlines()
                .await
                .into_iter()
                .filter(|d| *d > now && *d < t)
                .min();
            match next {
                Some(d) => {
                    self.advance_to(d + 1);
                    self.settle("deadline", &BTreeSet::new()).await;
                }
                None => {
                    self.advance_to(t);
                    return;
                }
            }
        }
    }

    /// Scenario time of `device`'s clock reading `at_ms`.
    fn scenario_time(&self, device: u32, at_ms: u64) -> u64 {
        let dev_now = self.devices[device as usize].clock().now().as_millis();
        self.vnow() + at_ms.saturating_sub(dev_now)
    }

    /// The deadlines of the vouches in flight, in scenario time: each waiting vouch's
    /// (voucher's clock) and the prompt about it on the target (target's clock).
    async fn deadlines(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut prompted: BTreeSet<u32> = BTreeSet::new();
        for t in self.tracked.iter().filter(|t| !t.done) {
            let Some(s) = self.observed.get(&(t.voucher, t.id)) else {
                continue;
            };
            for (target, status) in &s.targets {
                if let VouchStatus::Waiting { deadline, .. } = status {
                    out.push(self.scenario_time(t.voucher, deadline.as_millis()));
                    if let Some(&x) = self.by_id.get(&target.to_string()) {
                        prompted.insert(x);
                    }
                }
            }
        }
        for x in prompted {
            let Some(c) = self.client(x) else { continue };
            for p in c.proxy_requests().await.unwrap_or_default() {
                out.push(self.scenario_time(x, p.deadline));
            }
        }
        out
    }

    /// Waits until no node has published an event for `quiet` (bounded by the settle
    /// timeout), so that nothing is in flight when the clocks jump.
    async fn quiet(&self) {
        let mut rx = self.shared.subscribe();
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        loop {
            let until = (tokio::time::Instant::now() + self.quiet).min(deadline);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) if until < deadline => continue,
                _ => return,
            }
        }
    }

    fn wake(&self) -> Wake {
        Wake {
            rx: self.shared.subscribe(),
            deadline: tokio::time::Instant::now() + self.settle_timeout,
        }
    }

    fn name(&self, i: u32) -> &str {
        &self.devices[i as usize].name
    }

    fn client(&self, i: u32) -> Option<Client> {
        self.devices[i as usize].client().cloned()
    }

    fn online(&self, i: u32) -> bool {
        self.devices[i as usize].online()
    }

    fn note_unapplied(&mut self) {
        let s = &self.plan.scenario;
        let n = &s.network;
        if n.loss > 0.0 {
            self.notes
                .not_applied
                .push(format!("network loss {} (loopback loses nothing)", n.loss));
        }
        self.notes.not_applied.push(format!(
            "latency {} ms + jitter {} ms (loopback latency instead)",
            n.latency.ms(),
            n.jitter.ms()
        ));
        if !self.plan.partitions.is_empty() {
            self.notes.not_applied.push(format!(
                "{} partition(s) (one loopback interface; see node/tests/netns_mesh.rs)",
                self.plan.partitions.len()
            ));
        }
        self.notes
            .not_applied
            .push("user delays (confirm, answer, select): users answer at once".to_owned());
    }

    /// Executes one step; returns what it was, for the progress line.
    async fn step(&mut self, kind: StepKind) -> String {
        match kind {
            StepKind::Online(d) => {
                let label = format!("{} back online", self.name(d));
                if let Err(e) = self.devices[d as usize].restart(&self.shared).await {
                    self.notes
                        .unsettled
                        .push(format!("{label}: the node did not restart: {e}"));
                    return label;
                }
                self.stuck.retain(|(a, b)| *a != d && *b != d);
                self.settle(&label, &BTreeSet::from([d])).await;
                label
            }
            StepKind::Offline(d) => {
                self.devices[d as usize].stop().await;
                format!("{} offline", self.name(d))
            }
            StepKind::Action(i) => self.action(i).await,
            StepKind::Join(i) => self.join(i).await,
            StepKind::End => {
                if self.tracked.iter().any(|t| !t.done) {
                    // Let the queue workers poll once after the last jump, so that what
                    // expired in the skipped time is marked so.
                    tokio::time::sleep(Duration::from_millis(fleet::QUEUE_POLL * 1000 + 250)).await;
                }
                let all = self.running();
                self.settle("end", &all).await;
                "end".to_owned()
            }
        }
    }

    async fn action(&mut self, i: usize) -> String {
        let a = self.plan.actions[i].clone();
        let verb = match a.kind {
            PlannedActionKind::Remove => "removes",
            PlannedActionKind::Block => "blocks",
        };
        let label = format!("{} {verb} {}", self.name(a.device), self.name(a.peer));
        let peer = self.devices[a.peer as usize].id;
        let result = match (self.client(a.device), a.kind) {
            (Some(c), PlannedActionKind::Remove) => c.unpair(peer).await.map_err(|e| e.to_string()),
            // `block` works on a device paired or not (a device only heard of is blocked
            // with a tombstone), as the simulator's users block.
            (Some(c), PlannedActionKind::Block) => {
                c.block(peer).await.map(|_| ()).map_err(|e| e.to_string())
            }
            (None, PlannedActionKind::Block) => {
                // The user blocks on a device that is off the network: what the node
                // keeps of a block is the store's (trust level, or a tombstone for a
                // device not paired); the rest (closing connections) has nothing to act on.
                let dev = &self.devices[a.device as usize];
                let (dir, at) = (dev.dir().to_path_buf(), dev.clock().now());
                tokio::task::spawn_blocking(move || {
                    let store = vouchnet_storage::Store::open(&dir)?;
                    if store.device(&peer)?.is_some() {
                        store.set_trust(&peer, TrustLevel::Blocked, at).map(|_| ())
                    } else {
                        store.block_unpaired(&peer, at).map(|_| ())
                    }
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            }
            (None, PlannedActionKind::Remove) => {
                Err("the device is offline (an unpairing needs the running node)".to_owned())
            }
        };
        match result {
            Ok(()) => self.notes.actions_done += 1,
            Err(e) => self.notes.not_applied.push(format!("{label}: {e}")),
        }
        self.settle(&label, &BTreeSet::from([a.device, a.peer]))
            .await;
        label
    }

    async fn join(&mut self, i: usize) -> String {
        let j = self.plan.joins[i].clone();
        let (d, v) = (j.device, j.voucher);
        let label = format!("{} joins via {}", self.name(d), self.name(v));
        if !self.online(d) || !self.online(v) {
            self.notes
                .joins_failed
                .push(format!("{label}: a device is offline"));
            return label;
        }
        if !self.confirmed.contains(&pair(d, v)) {
            let attempts = self.plan.devices[d as usize].user.pairing_attempts.max(1);
            let mut last = String::new();
            for _ in 0..attempts {
                match self.pair(d, v).await {
                    Ok(()) => {
                        last.clear();
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if !last.is_empty() {
                self.notes.joins_failed.push(format!("{label}: {last}"));
                return label;
            }
            self.confirmed.insert(pair(d, v));
            self.notes.joins_done += 1;
        }
        let mut scope = BTreeSet::from([d, v]);
        match self.vouch(i).await {
            Ok(targets) => scope.extend(targets),
            Err(e) => self
                .notes
                .unsettled
                .push(format!("{label}: vouch failed: {e}")),
        }
        self.settle(&label, &scope).await;
        label
    }

    /// The direct pairing of `d` (asking) with `v`, as the two users do it.
    async fn pair(&mut self, d: u32, v: u32) -> Result<(), String> {
        let (cd, cv) = (
            self.client(d).ok_or("offline")?,
            self.client(v).ok_or("offline")?,
        );
        let (dd, dv) = (&self.devices[d as usize], &self.devices[v as usize]);
        let (id_d, id_v) = (dd.id, dv.id);
        let (sd, sv) = (dd.id_str.clone(), dv.id_str.clone());
        let mut wake = self.wake();
        cd.pair_request(id_v, Some(dv.addr()))
            .await
            .map_err(|e| format!("pair request: {e}"))?;
        // Each user reads the code on their own screen.
        let (code_d, code_v) = loop {
            let a = code_for(&cd, &sv).await;
            let b = code_for(&cv, &sd).await;
            if let (Some(a), Some(b)) = (a, b) {
                break (a, b);
            }
            if !wake.next().await {
                let _ = cd.pair_reject(id_v).await;
                return Err("the codes were not shown in time".to_owned());
            }
        };
        if code_d != code_v {
            // The users see different codes: both decline, as they must.
            let _ = cd.pair_reject(id_v).await;
            let _ = cv.pair_reject(id_d).await;
            return Err(format!("codes differ: {code_d} vs {code_v}"));
        }
        // Each types the code shown on the other screen into their own device.
        cd.pair_accept(id_v, Some(code_v))
            .await
            .map_err(|e| format!("pair accept on the joining device: {e}"))?;
        cv.pair_accept(id_d, Some(code_d))
            .await
            .map_err(|e| format!("pair accept on the joined device: {e}"))?;
        loop {
            if holds_direct(&cd, &sv).await && holds_direct(&cv, &sd).await {
                return Ok(());
            }
            if !wake.next().await {
                return Err("the pairing did not complete in time".to_owned());
            }
        }
    }

    /// The voucher of join `i` vouches for the newcomer, per the group's mode. Returns the
    /// targets (device indices).
    async fn vouch(&mut self, i: usize) -> Result<Vec<u32>, String> {
        let j = self.plan.joins[i].clone();
        let (d, v) = (j.device, j.voucher);
        let cv = self.client(v).ok_or("the voucher is offline")?;
        let vouchee = self.devices[d as usize].id;
        let vouchee_str = self.devices[d as usize].id_str.clone();
        let auto = self.plan.devices[v as usize].config.auto_vouch_to_all;
        let views = cv.devices().await.map_err(|e| e.to_string())?;
        let directs: Vec<DeviceId> = views
            .iter()
            .filter(|x| {
                x.pairing_type == "direct"
                    && x.trust_level == "trusted"
                    && x.device_id != vouchee_str
            })
            .filter_map(|x| x.device_id.parse().ok())
            .collect();
        let chosen: Option<Vec<DeviceId>> = match (j.vouch, &j.targets, auto) {
            (VouchMode::None, _, false) => return Ok(Vec::new()),
            (VouchMode::Chosen, Some(t), false) => Some(
                t.iter()
                    .map(|x| self.devices[*x as usize].id)
                    .filter(|x| *x != vouchee)
                    .collect(),
            ),
            _ => None,
        };
        let expected = chosen.as_ref().map_or(directs.len(), Vec::len);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let target_indices: Vec<u32> = chosen
            .as_ref()
            .unwrap_or(&directs)
            .iter()
            .filter_map(|t| self.by_id.get(&t.to_string()).copied())
            .collect();
        let mut ids = Vec::new();
        if auto {
            // The node vouches by itself: find its sessions for the vouchee.
            let mut wake = self.wake();
            loop {
                let sessions = cv.sessions().await.map_err(|e| e.to_string())?;
                let mine: Vec<&VouchingSession> =
                    sessions.iter().filter(|s| s.vouchee == vouchee).collect();
                if mine.iter().map(|s| s.targets.len()).sum::<usize>() >= expected {
                    ids.extend(mine.iter().map(|s| s.id));
                    break;
                }
                if !wake.next().await {
                    return Err("the node's automatic vouch did not show in time".to_owned());
                }
            }
        } else {
            let lists: Vec<(Vec<DeviceId>, bool)> = match chosen {
                Some(t) => t
                    .chunks(MAX_SESSION_TARGETS)
                    .map(|c| (c.to_vec(), false))
                    .collect(),
                None if directs.len() <= MAX_SESSION_TARGETS => vec![(Vec::new(), true)],
                None => directs
                    .chunks(MAX_SESSION_TARGETS)
                    .map(|c| (c.to_vec(), false))
                    .collect(),
            };
            for (to, all) in lists {
                let out = cv
                    .vouch(vouchee, to, all)
                    .await
                    .map_err(|e| e.to_string())?;
                let id = SessionId::from_hex(&out.session_id)
                    .ok_or_else(|| format!("bad session id {}", out.session_id))?;
                ids.push(id);
            }
        }
        for id in ids {
            if !self.tracked.iter().any(|t| t.voucher == v && t.id == id) {
                self.tracked.push(Tracked {
                    voucher: v,
                    vouchee: d,
                    id,
                    done: false,
                });
            }
        }
        Ok(target_indices)
    }

    /// Waits until the nodes have settled (see the module docs), at most the settle
    /// timeout; notes what was still pending if they did not. `scope` are the devices whose
    /// presence must have settled too: each running one sees every running device it
    /// trusts online (connected, key proved), so that no key proof or rekey is in flight
    /// when the clocks jump.
    async fn settle(&mut self, label: &str, scope: &BTreeSet<u32>) {
        let mut wake = self.wake();
        let mut dialed: BTreeMap<(u32, u32), Instant> = BTreeMap::new();
        loop {
            let mut pending = self.pending().await;
            let mut missing_presence = false;
            if pending.is_empty() {
                let missing = self.presence_pending(scope).await;
                self.discover(&missing, &mut dialed).await;
                let stuck = &self.stuck;
                let missing: Vec<(u32, u32)> = missing
                    .into_iter()
                    .filter(|(x, y)| !stuck.contains(&pair(*x, *y)))
                    .collect();
                missing_presence = !missing.is_empty();
                pending.extend(missing.iter().map(|(x, y)| {
                    format!("{} does not see {} online", self.name(*x), self.name(*y))
                }));
            }
            if pending.is_empty() {
                return;
            }
            // Waiting for connections, the stand-in for mDNS announces again after
            // `ANNOUNCE_EVERY` even if nothing happened (a dial that failed raises no event).
            let woke = if missing_presence {
                wake.next_or(ANNOUNCE_EVERY).await
            } else {
                wake.next().await
            };
            if !woke {
                let mut pending = self.pending().await;
                let missing: Vec<(u32, u32)> = self
                    .presence_pending(scope)
                    .await
                    .into_iter()
                    .filter(|(x, y)| !self.stuck.contains(&pair(*x, *y)))
                    .collect();
                pending.extend(missing.iter().map(|(x, y)| {
                    format!("{} does not see {} online", self.name(*x), self.name(*y))
                }));
                // A pair whose presence did not settle is reported once and not waited
                // for again until one of the two restarts.
                self.stuck.extend(missing.iter().map(|(x, y)| pair(*x, *y)));
                if let Some(first) = pending.first() {
                    self.notes
                        .unsettled
                        .push(format!("{label}: {first} ({} pending)", pending.len()));
                }
                return;
            }
        }
    }

    /// The stand-in for mDNS, which ignores loopback: a device that trusts a running device
    /// it is not connected to is told its address, as a discovery on the LAN would (the
    /// node then dials it, proves keys, and rekeys a proxied pairing). A pair is announced
    /// at most once per [`ANNOUNCE_EVERY`], and at most [`ANNOUNCE_BURST`] devices are sent
    /// to one device at once: a node accepts only so many handshakes in progress
    /// (`max_incoming_connections`).
    async fn discover(
        &mut self,
        missing: &[(u32, u32)],
        dialed: &mut BTreeMap<(u32, u32), Instant>,
    ) {
        let mut connected: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        let mut towards: BTreeMap<u32, usize> = BTreeMap::new();
        for &(x, y) in missing {
            if dialed
                .get(&pair(x, y))
                .is_some_and(|t| t.elapsed() < ANNOUNCE_EVERY)
            {
                continue;
            }
            let burst = towards.entry(y).or_insert(0);
            if *burst >= ANNOUNCE_BURST {
                continue;
            }
            let Some(c) = self.client(x) else { continue };
            if let std::collections::btree_map::Entry::Vacant(e) = connected.entry(x) {
                let list = c
                    .peers()
                    .await
                    .map(|p| {
                        p.into_iter()
                            .filter(|v| v.connected)
                            .map(|v| v.device_id)
                            .collect()
                    })
                    .unwrap_or_default();
                e.insert(list);
            }
            let y_dev = &self.devices[y as usize];
            if connected[&x].contains(&y_dev.id_str) {
                continue;
            }
            *burst += 1;
            dialed.insert(pair(x, y), Instant::now());
            self.discoveries += 1;
            if let Err(e) = c.dial(y_dev.addr()).await {
                users::debug_note(&format!("dial {} → {}: {e}", self.name(x), y_dev.name));
            }
        }
    }

    /// For each running device of `scope`: the running devices it trusts that it does not
    /// see online, and the running devices that trust it and do not see it online, as
    /// (who does not see, whom).
    async fn presence_pending(&self, scope: &BTreeSet<u32>) -> Vec<(u32, u32)> {
        let mut pending = Vec::new();
        let mut peers_of_scope: BTreeSet<u32> = BTreeSet::new();
        for &x in scope {
            let Some(c) = self.client(x) else { continue };
            for view in c.devices().await.unwrap_or_default() {
                let Some(&y) = self.by_id.get(&view.device_id) else {
                    continue;
                };
                if view.trust_level == "blocked" || !self.online(y) {
                    continue;
                }
                peers_of_scope.insert(y);
                if !view.online {
                    pending.push((x, y));
                }
            }
        }
        // The other direction, for the peers outside the scope.
        for &y in peers_of_scope.difference(scope) {
            let Some(c) = self.client(y) else { continue };
            for view in c.devices().await.unwrap_or_default() {
                let Some(&x) = self.by_id.get(&view.device_id) else {
                    continue;
                };
                if scope.contains(&x) && view.trust_level != "blocked" && !view.online {
                    pending.push((y, x));
                }
            }
        }
        pending
    }

    /// What is still in flight among the tracked sessions; marks sessions done.
    async fn pending(&mut self) -> Vec<String> {
        let mut pending = Vec::new();
        let mut lists: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for k in 0..self.tracked.len() {
            let (voucher, vouchee, id) = {
                let t = &self.tracked[k];
                if t.done {
                    continue;
                }
                (t.voucher, t.vouchee, t.id)
            };
            let Some(cv) = self.client(voucher) else {
                continue;
            };
            let session = match cv.session(id).await {
                Ok(s) => s,
                Err(NodeError::NotFound(_)) => {
                    // Pruned after `session_retention`: finished long ago.
                    self.tracked[k].done = true;
                    continue;
                }
                Err(e) => {
                    pending.push(format!("session {} unreadable: {e}", id.to_hex()));
                    continue;
                }
            };
            let vouchee_str = self.devices[vouchee as usize].id_str.clone();
            let mut all_done = true;
            for (target, status) in &session.targets {
                let t = self.by_id.get(&target.to_string()).copied();
                let t_online = t.is_some_and(|t| self.online(t));
                let tname = t.map_or("?", |t| self.name(t)).to_owned();
                let what = match status {
                    VouchStatus::Selected => Some("selected, not sent"),
                    VouchStatus::Queued => t_online.then_some("queued for an online target"),
                    VouchStatus::Waiting { user_prompted, .. } => {
                        let ignored = *user_prompted
                            && t.and_then(|t| self.shared.answer_of(t, &vouchee_str))
                                == Some(Answer::Ignore);
                        (t_online && !ignored).then_some("waiting for an answer")
                    }
                    VouchStatus::Accepted { .. } => {
                        if self.online(vouchee) && t_online {
                            if let std::collections::btree_map::Entry::Vacant(slot) =
                                lists.entry(vouchee)
                            {
                                let list = match self.client(vouchee) {
                                    Some(c) => c
                                        .devices()
                                        .await
                                        .map(|v| v.into_iter().map(|x| x.device_id).collect())
                                        .unwrap_or_default(),
                                    None => BTreeSet::new(),
                                };
                                slot.insert(list);
                            }
                            (!lists[&vouchee].contains(&target.to_string()))
                                .then_some("accepted, the vouchee does not know yet")
                        } else {
                            all_done = false;
                            None
                        }
                    }
                    VouchStatus::Rejected { .. } | VouchStatus::Expired => None,
                };
                if !status.is_terminal() {
                    all_done = false;
                }
                if let Some(w) = what {
                    all_done = false;
                    pending.push(format!(
                        "{} → {} for {}: {w}",
                        self.name(voucher),
                        tname,
                        self.name(vouchee)
                    ));
                }
            }
            self.observed.insert((voucher, id), session);
            if all_done {
                self.tracked[k].done = true;
            }
        }
        pending
    }

    /// Every device that is running.
    fn running(&self) -> BTreeSet<u32> {
        self.devices
            .iter()
            .filter(|d| d.online())
            .map(|d| d.index)
            .collect()
    }

    /// On every node still running: its audit trail verifies, and every proxied device it
    /// lists was vouched for by one of its direct devices.
    async fn live_checks(&mut self) {
        let at = self.vnow();
        for d in &self.devices {
            let Some(c) = d.client() else { continue };
            match c.audit_verify().await {
                Ok(v) if v.ok => {}
                Ok(v) => self.notes.live_violations.push(Violation {
                    invariant: Invariant::Audit,
                    at,
                    detail: format!(
                        "{}: audit --verify: {}",
                        d.name,
                        v.error.unwrap_or_default()
                    ),
                    seed: self.plan.seed,
                }),
                Err(e) => self.notes.live_violations.push(Violation {
                    invariant: Invariant::Audit,
                    at,
                    detail: format!("{}: audit --verify failed: {e}", d.name),
                    seed: self.plan.seed,
                }),
            }
            let Ok(list) = c.devices().await else {
                continue;
            };
            let direct: BTreeSet<&str> = list
                .iter()
                .filter(|x| x.pairing_type == "direct")
                .map(|x| x.device_id.as_str())
                .collect();
            for x in list.iter().filter(|x| x.pairing_type == "proxied") {
                let ok = x.vouched_by.as_deref().is_some_and(|v| direct.contains(v));
                if !ok {
                    self.notes.live_violations.push(Violation {
                        invariant: Invariant::OneHop,
                        at,
                        detail: format!(
                            "{} lists {} vouched by {:?}, not one of its direct devices",
                            d.name, x.name, x.vouched_by
                        ),
                        seed: self.plan.seed,
                    });
                }
            }
        }
    }
}

/// The code `client` shows for the pairing with `peer`, once derived.
async fn code_for(client: &Client, peer: &str) -> Option<String> {
    client
        .pair_requests()
        .await
        .ok()?
        .into_iter()
        .find(|p| p.device_id == peer)
        .and_then(|p| p.code)
}

/// True when `client` lists `peer` as a direct device.
async fn holds_direct(client: &Client, peer: &str) -> bool {
    client.devices().await.is_ok_and(|list| {
        list.iter()
            .any(|x| x.device_id == peer && x.pairing_type == "direct")
    })
}

/// The limit report line.
pub fn nofile_line(n: &NofileLimit) -> String {
    format!(
        "{} (raised from {}; hard limit {})",
        n.soft, n.before, n.hard
    )
}
