//! Scenario files (`sim/scenarios/*.toml`) and their expansion into a concrete plan.
//!
//! A scenario says *what happens*, never *how the protocol decides*: how the network grows
//! (groups of devices, who pairs with whom directly, in which order), when devices are
//! offline, how users answer prompts, the clock skew of each device, partitions, and user
//! actions such as removing a device. The protocol machines make every decision.
//!
//! The file is kept independent of the simulator's internals so that the same file can
//! later drive real nodes (issue part 2): every element names devices and times, and maps
//! to something a harness can do to a real node (start a pairing, take a link down, answer
//! a prompt through the control API, shift a clock).
//!
//! Randomness in a scenario (join jitter, which devices go offline, group start times) is
//! drawn once, at expansion ([`Scenario::plan`]), from a stream derived from the seed, so
//! the plan itself is part of the deterministic run.

use crate::rng::{derive_rng, Stream};
use crate::time::{SignedSpan, Span};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use vouchnet_protocol::ProtocolConfig;

/// A scenario as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Default seed (the CLI's `--seed` overrides it).
    #[serde(default)]
    pub seed: u64,
    /// How much virtual time to simulate.
    pub duration: Span,
    /// Protocol parameters (the design's defaults where absent).
    #[serde(default)]
    pub protocol: ProtocolSection,
    /// Network model.
    #[serde(default)]
    pub network: NetworkSection,
    /// Default user behaviour.
    #[serde(default)]
    pub users: UserSection,
    /// Groups of devices that grow into a trust mesh.
    #[serde(default)]
    pub groups: Vec<GroupSection>,
    /// Per-device settings, by name.
    #[serde(default)]
    pub devices: Vec<DeviceSection>,
    /// Offline windows applied to a selection of devices.
    #[serde(default)]
    pub offline: Vec<OfflineRule>,
    /// Network partitions.
    #[serde(default)]
    pub partitions: Vec<PartitionSection>,
    /// User actions (remove or block a device).
    #[serde(default)]
    pub actions: Vec<ActionSection>,
    /// Sizes at which to re-run the growth of the first group, for the plots.
    #[serde(default)]
    pub sweep: Option<SweepSection>,
    /// Exact outcomes the run must show (checked by `run`, and by the tests).
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `[protocol]`: overrides of [`ProtocolConfig`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSection {
    /// Targets accept vouches without asking their user.
    pub auto_accept_vouched: Option<bool>,
    /// Vouchers vouch to every directly paired device without asking their user.
    pub auto_vouch_to_all: Option<bool>,
    /// Oldest vouch a target accepts.
    pub vouch_signature_max_age: Option<Span>,
    /// Clock-skew allowance for vouches from the future.
    pub clock_skew_allowance: Option<Span>,
    /// How long a voucher waits for an online target.
    pub vouch_response_timeout: Option<Span>,
    /// How long a target's user has to answer a prompt.
    pub proxy_prompt_timeout: Option<Span>,
    /// Lifetime of a direct-pairing transaction.
    pub pairing_timeout: Option<Span>,
    /// Most pending prompts at once.
    pub max_pending_prompts: Option<usize>,
    /// Offline-queue poll interval.
    pub queue_poll_interval: Option<Span>,
    /// Offline-queue entry lifetime.
    pub queue_expiry: Option<Span>,
    /// Failed deliveries before a queue entry is dropped.
    pub queue_max_retries: Option<u32>,
    /// How long a finished session is kept.
    pub session_retention: Option<Span>,
}

impl ProtocolSection {
    /// The design's defaults with this section's overrides.
    pub fn config(&self) -> ProtocolConfig {
        let mut c = ProtocolConfig::default();
        if let Some(v) = self.auto_accept_vouched {
            c.auto_accept_vouched = v;
        }
        if let Some(v) = self.auto_vouch_to_all {
            c.auto_vouch_to_all = v;
        }
        if let Some(v) = self.vouch_signature_max_age {
            c.vouch_signature_max_age = v.duration();
        }
        if let Some(v) = self.clock_skew_allowance {
            c.clock_skew_allowance = v.duration();
        }
        if let Some(v) = self.vouch_response_timeout {
            c.vouch_response_timeout = v.duration();
        }
        if let Some(v) = self.proxy_prompt_timeout {
            c.proxy_prompt_timeout = v.duration();
        }
        if let Some(v) = self.pairing_timeout {
            c.pairing_timeout = v.duration();
        }
        if let Some(v) = self.max_pending_prompts {
            c.max_pending_prompts = v;
        }
        if let Some(v) = self.queue_poll_interval {
            c.queue.poll_interval = v.duration();
        }
        if let Some(v) = self.queue_expiry {
            c.queue.expiry = v.duration();
        }
        if let Some(v) = self.queue_max_retries {
            c.queue.max_retries = v;
        }
        if let Some(v) = self.session_retention {
            c.session_retention = v.duration();
        }
        c
    }
}

/// `[network]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// One-way base latency.
    #[serde(default = "default_latency")]
    pub latency: Span,
    /// Extra one-way latency, uniform in `[0, jitter]`.
    #[serde(default = "default_jitter")]
    pub jitter: Span,
    /// Probability that a frame (or its acknowledgement) is lost.
    #[serde(default)]
    pub loss: f64,
    /// How long a sender waits for an acknowledgement before the delivery fails (libp2p
    /// request-response's default is 10 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Span,
}

fn default_latency() -> Span {
    Span(20)
}
fn default_jitter() -> Span {
    Span(10)
}
fn default_request_timeout() -> Span {
    Span(10_000)
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            latency: default_latency(),
            jitter: default_jitter(),
            loss: 0.0,
            request_timeout: default_request_timeout(),
        }
    }
}

/// How a simulated user answers: the probabilities of each answer to a vouch prompt, and
/// how long people take.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// Probability of accepting a vouch prompt.
    #[serde(default = "one")]
    pub accept: f64,
    /// Probability of rejecting it.
    #[serde(default)]
    pub reject: f64,
    /// Probability of never answering (the prompt expires).
    #[serde(default)]
    pub ignore: f64,
    /// Time to answer a vouch prompt, uniform in `[min, max]`.
    #[serde(default = "default_answer_delay")]
    pub answer_delay: [Span; 2],
    /// Time to compare the pairing codes and confirm, uniform in `[min, max]`.
    #[serde(default = "default_confirm_delay")]
    pub confirm_delay: [Span; 2],
    /// Time to choose vouch targets by hand, uniform in `[min, max]`.
    #[serde(default = "default_select_delay")]
    pub select_delay: [Span; 2],
    /// Wait before retrying a direct pairing that failed (or whose peer was unreachable).
    #[serde(default = "default_pairing_retry")]
    pub pairing_retry: Span,
    /// Most direct-pairing attempts per join.
    #[serde(default = "default_pairing_attempts")]
    pub pairing_attempts: u32,
}

fn one() -> f64 {
    1.0
}
fn default_answer_delay() -> [Span; 2] {
    [Span(5_000), Span(120_000)]
}
fn default_confirm_delay() -> [Span; 2] {
    [Span(2_000), Span(15_000)]
}
fn default_select_delay() -> [Span; 2] {
    [Span(5_000), Span(60_000)]
}
fn default_pairing_retry() -> Span {
    Span(300_000)
}
fn default_pairing_attempts() -> u32 {
    5
}

impl Default for UserSection {
    fn default() -> Self {
        UserSection {
            accept: 1.0,
            reject: 0.0,
            ignore: 0.0,
            answer_delay: default_answer_delay(),
            confirm_delay: default_confirm_delay(),
            select_delay: default_select_delay(),
            pairing_retry: default_pairing_retry(),
            pairing_attempts: default_pairing_attempts(),
        }
    }
}

/// Per-device user overrides (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOverride {
    /// See [`UserSection::accept`].
    pub accept: Option<f64>,
    /// See [`UserSection::reject`].
    pub reject: Option<f64>,
    /// See [`UserSection::ignore`].
    pub ignore: Option<f64>,
    /// See [`UserSection::answer_delay`].
    pub answer_delay: Option<[Span; 2]>,
}

impl UserOverride {
    fn apply(&self, base: &UserSection) -> UserSection {
        let mut u = base.clone();
        if let Some(v) = self.accept {
            u.accept = v;
        }
        if let Some(v) = self.reject {
            u.reject = v;
        }
        if let Some(v) = self.ignore {
            u.ignore = v;
        }
        if let Some(v) = self.answer_delay {
            u.answer_delay = v;
        }
        u
    }
}

/// How a group grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every new member pairs directly with member 0, which vouches for it to every other
    /// member (it is directly paired with all of them).
    #[default]
    Hub,
    /// Every new member pairs directly with a random earlier member, which vouches for it
    /// to that member's own direct pairings only: the mesh is reached only where one
    /// device is directly paired with both ends (no multi-hop).
    Random,
    /// Every new member pairs directly with the member that joined just before it.
    Chain,
    /// The joins are listed in `joins`.
    Explicit,
}

/// Who chooses the vouch targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VouchMode {
    /// `auto_vouch_to_all`: the voucher vouches to all its direct pairings at once.
    #[default]
    All,
    /// The voucher's user chooses the targets (a join's `targets`, or else all direct
    /// pairings) after `select_delay`.
    Chosen,
    /// Nobody vouches: every trust edge needs a direct pairing.
    None,
}

/// `[[groups]]`: `count` groups of `size` devices that each grow into a full trust mesh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Name prefix; devices are `<name><g>-<m>` (or `names` for a single group).
    pub name: String,
    /// How many such groups.
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Members per group (defaults to the length of `names`).
    pub size: Option<u32>,
    /// Member names, for a single group.
    #[serde(default)]
    pub names: Vec<String>,
    /// How the group grows.
    #[serde(default)]
    pub strategy: Strategy,
    /// Who chooses vouch targets.
    #[serde(default)]
    pub vouch: VouchMode,
    /// When the first join of the (first) group happens.
    #[serde(default)]
    pub start: Span,
    /// Group start times are spread uniformly over `[start, start + start_spread)`.
    #[serde(default)]
    pub start_spread: Span,
    /// Time between consecutive joins in a group.
    #[serde(default = "default_join_every")]
    pub join_every: Span,
    /// Each join is delayed by a uniform `[0, join_jitter]`.
    #[serde(default)]
    pub join_jitter: Span,
    /// With `strategy = "explicit"`: the joins, in order.
    #[serde(default)]
    pub joins: Vec<JoinSection>,
}

fn one_u32() -> u32 {
    1
}
fn default_join_every() -> Span {
    Span(600_000)
}

/// One explicit join: `device` pairs directly with `pair_with`, which then vouches for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSection {
    /// The new device.
    pub device: String,
    /// The member it pairs with directly (the voucher).
    pub pair_with: String,
    /// When (default: the group's schedule).
    pub at: Option<Span>,
    /// With `vouch = "chosen"`: the targets the voucher's user picks.
    pub targets: Option<Vec<String>>,
}

/// `[[devices]]`: settings of one named device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// The device.
    pub name: String,
    /// Its clock's offset from true (virtual) time.
    #[serde(default)]
    pub skew: SignedSpan,
    /// Overrides `protocol.auto_accept_vouched` for this device.
    pub auto_accept_vouched: Option<bool>,
    /// Overrides the user behaviour.
    #[serde(default)]
    pub user: UserOverride,
    /// Offline windows of this device.
    #[serde(default)]
    pub offline: Vec<Window>,
}

/// A window of time.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start.
    pub from: Span,
    /// Length.
    #[serde(rename = "for")]
    pub length: Span,
}

/// Which devices a rule applies to. Empty selects nothing; fields combine as a union.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// By name.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Member indices in every generated group (0 is the first member).
    #[serde(default)]
    pub members: Vec<u32>,
    /// This fraction of all devices, chosen at random.
    pub fraction: Option<f64>,
    /// Every device.
    #[serde(default)]
    pub all: bool,
}

/// `[[offline]]`: devices go offline at `from` for `for`, optionally every `every`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    /// Which devices.
    #[serde(flatten)]
    pub select: Selector,
    /// Start.
    pub from: Span,
    /// Length.
    #[serde(rename = "for")]
    pub length: Span,
    /// Repeat period (e.g. `"1d"` for nightly sleep).
    pub every: Option<Span>,
    /// Per-device random shift in `[0, jitter]`.
    #[serde(default)]
    pub jitter: Span,
}

/// `[[partitions]]`: from `at` until `heal`, devices on different sides cannot reach each
/// other. Devices on no side reach everyone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSection {
    /// Start.
    pub at: Span,
    /// End.
    pub heal: Span,
    /// Sides, by device name.
    #[serde(default)]
    pub sides: Vec<Vec<String>>,
    /// Sides, by member index, applied within every generated group.
    #[serde(default)]
    pub member_sides: Vec<Vec<u32>>,
}

/// `[[actions]]`: a user removes or blocks a device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSection {
    /// When.
    pub at: Span,
    /// Whose user acts.
    pub device: String,
    /// Remove (unpair and tombstone) this device.
    pub remove: Option<String>,
    /// Block this device.
    pub block: Option<String>,
}

/// `[sweep]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Group sizes to run.
    pub sizes: Vec<u32>,
}

/// `[expect]`: exact outcomes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Direct pairings completed.
    pub direct_pairings: Option<u64>,
    /// Every group reached its full trust mesh.
    pub full_mesh: Option<bool>,
    /// Vouches accepted (voucher's view).
    pub vouches_accepted: Option<u64>,
    /// Vouches rejected (voucher's view, any reason).
    pub vouches_rejected: Option<u64>,
    /// Queued vouches that expired.
    pub vouches_expired: Option<u64>,
    /// Every vouch reached a terminal status.
    pub all_vouches_terminal: Option<bool>,
    /// Queue entries left at the end.
    pub queue_left: Option<u64>,
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid.
    #[error("invalid scenario: {0}")]
    Toml(#[from] toml::de::Error),
    /// A name refers to no device.
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    /// Two devices have the same name.
    #[error("device name {0:?} used twice")]
    DuplicateName(String),
    /// Something else is inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// One device of the plan.
#[derive(Debug, Clone)]
pub struct PlannedDevice {
    /// Name.
    pub name: String,
    /// Group index.
    pub group: u32,
    /// Position in the group's join order (0 = founder).
    pub member: u32,
    /// Clock skew in ms.
    pub skew_ms: i64,
    /// Protocol parameters.
    pub config: ProtocolConfig,
    /// User behaviour.
    pub user: UserSection,
    /// Offline windows `[from, to)`, sorted, merged.
    pub offline: Vec<(u64, u64)>,
}

/// One join of the plan: `device` pairs with `voucher` at `at`.
#[derive(Debug, Clone)]
pub struct PlannedJoin {
    /// When the users start the pairing.
    pub at: u64,
    /// The new device (initiator).
    pub device: u32,
    /// The member it pairs with (responder, voucher).
    pub voucher: u32,
    /// Who chooses the targets.
    pub vouch: VouchMode,
    /// Chosen targets (for [`VouchMode::Chosen`]); `None` means all direct pairings.
    pub targets: Option<Vec<u32>>,
}

/// A partition of the plan.
#[derive(Debug, Clone)]
pub struct PlannedPartition {
    /// Start.
    pub at: u64,
    /// End.
    pub heal: u64,
    /// Side of each device (0 = reaches everyone).
    pub side_of: BTreeMap<u32, u16>,
}

/// A user action of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedActionKind {
    /// Unpair and tombstone.
    Remove,
    /// Block (trust level Blocked, tombstone).
    Block,
}

/// A user action of the plan.
#[derive(Debug, Clone)]
pub struct PlannedAction {
    /// When.
    pub at: u64,
    /// Whose user acts.
    pub device: u32,
    /// On whom.
    pub peer: u32,
    /// What.
    pub kind: PlannedActionKind,
}

/// A group of the plan.
#[derive(Debug, Clone)]
pub struct PlannedGroup {
    /// Name.
    pub name: String,
    /// Members, in join order.
    pub members: Vec<u32>,
}

/// The scenario expanded: every device, join, window and action, concrete.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed used.
    pub seed: u64,
    /// Devices, by index.
    pub devices: Vec<PlannedDevice>,
    /// Groups.
    pub groups: Vec<PlannedGroup>,
    /// Joins, sorted by time.
    pub joins: Vec<PlannedJoin>,
    /// Partitions.
    pub partitions: Vec<PlannedPartition>,
    /// Actions.
    pub actions: Vec<PlannedAction>,
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text)
    }

    /// Parses a scenario from TOML text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        if self.groups.is_empty() {
            return Err(ScenarioError::Invalid(
                "at least one [[groups]] is needed".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.network.loss) {
            return Err(ScenarioError::Invalid(
                "network.loss must be in [0, 1]".into(),
            ));
        }
        let check_user = |u: &UserSection, what: &str| {
            let sum = u.accept + u.reject + u.ignore;
            if [u.accept, u.reject, u.ignore].iter().any(|p| *p < 0.0) || (sum - 1.0).abs() > 1e-9 {
                return Err(ScenarioError::Invalid(format!(
                    "{what}: accept + reject + ignore must be 1"
                )));
            }
            Ok(())
        };
        check_user(&self.users, "[users]")?;
        for d in &self.devices {
            check_user(&d.user.apply(&self.users), &format!("device {:?}", d.name))?;
        }
        for g in &self.groups {
            let size = g.size.unwrap_or(g.names.len() as u32);
            if size == 0 {
                return Err(ScenarioError::Invalid(format!(
                    "group {:?} is empty",
                    g.name
                )));
            }
            if !g.names.is_empty() && g.count != 1 {
                return Err(ScenarioError::Invalid(format!(
                    "group {:?}: names need count = 1",
                    g.name
                )));
            }
            if g.strategy == Strategy::Explicit && g.joins.is_empty() {
                return Err(ScenarioError::Invalid(format!(
                    "group {:?}: strategy \"explicit\" needs [[groups.joins]]",
                    g.name
                )));
            }
        }
        Ok(())
    }

    /// The same scenario with its first group resized to `size` members and one group
    /// only (for the sweeps behind the plots). Explicit joins and names are dropped.
    pub fn resized(&self, size: u32) -> Scenario {
        let mut s = self.clone();
        let mut g = s.groups[0].clone();
        g.count = 1;
        g.size = Some(size);
        if g.names.len() != size as usize {
            g.names.clear();
        }
        if g.strategy == Strategy::Explicit {
            g.strategy = Strategy::Hub;
            g.joins.clear();
        }
        s.groups = vec![g];
        s.sweep = None;
        s.expect = None;
        let known: BTreeSet<String> = (0..size).map(|m| member_name(&s.groups[0], 0, m)).collect();
        s.devices.retain(|d| known.contains(&d.name));
        for rule in &mut s.offline {
            rule.select.devices.retain(|n| known.contains(n));
        }
        s.partitions
            .retain(|p| p.sides.iter().flatten().all(|n| known.contains(n)));
        s.actions.retain(|a| {
            known.contains(&a.device)
                && [&a.remove, &a.block]
                    .iter()
                    .all(|o| o.as_ref().is_none_or(|n| known.contains(n)))
        });
        s
    }

    /// Expands the scenario with `seed` into a concrete [`Plan`].
    pub fn plan(&self, seed: u64) -> Result<Plan, ScenarioError> {
        let mut rng = derive_rng(seed, Stream::Plan, 0);
        let base_config = self.protocol.config();
        let mut devices: Vec<PlannedDevice> = Vec::new();
        let mut groups = Vec::new();
        let mut joins = Vec::new();
        let mut by_name: BTreeMap<String, u32> = BTreeMap::new();

        for g in &self.groups {
            let size = g.size.unwrap_or(g.names.len() as u32);
            for copy in 0..g.count {
                let group_index = groups.len() as u32;
                let mut members = Vec::with_capacity(size as usize);
                for m in 0..size {
                    let name = member_name(g, copy, m);
                    let idx = devices.len() as u32;
                    if by_name.insert(name.clone(), idx).is_some() {
                        return Err(ScenarioError::DuplicateName(name));
                    }
                    devices.push(PlannedDevice {
                        name,
                        group: group_index,
                        member: m,
                        skew_ms: 0,
                        config: base_config.clone(),
                        user: self.users.clone(),
                        offline: Vec::new(),
                    });
                    members.push(idx);
                }
                let start = g.start.ms()
                    + if g.start_spread.ms() > 0 {
                        rng.gen_range(0..g.start_spread.ms())
                    } else {
                        0
                    };
                let mut t = start;
                let mut group_joins = Vec::new();
                if g.strategy == Strategy::Explicit {
                    // Explicit joins reorder the members: the founder is whoever is never
                    // a joining device; the join order follows the list.
                    for (k, j) in g.joins.iter().enumerate() {
                        let at =
                            j.at.map(|a| a.ms())
                                .unwrap_or(start + k as u64 * g.join_every.ms());
                        let dev = *by_name
                            .get(&j.device)
                            .ok_or_else(|| ScenarioError::UnknownDevice(j.device.clone()))?;
                        let voucher = *by_name
                            .get(&j.pair_with)
                            .ok_or_else(|| ScenarioError::UnknownDevice(j.pair_with.clone()))?;
                        let targets = match &j.targets {
                            Some(names) => Some(
                                names
                                    .iter()
                                    .map(|n| {
                                        by_name
                                            .get(n)
                                            .copied()
                                            .ok_or_else(|| ScenarioError::UnknownDevice(n.clone()))
                                    })
                                    .collect::<Result<Vec<_>, _>>()?,
                            ),
                            None => None,
                        };
                        group_joins.push(PlannedJoin {
                            at,
                            device: dev,
                            voucher,
                            vouch: g.vouch,
                            targets,
                        });
                    }
                    let joined: BTreeSet<u32> = group_joins.iter().map(|j| j.device).collect();
                    let founders: Vec<u32> = members
                        .iter()
                        .copied()
                        .filter(|m| !joined.contains(m))
                        .collect();
                    if founders.len() != 1 {
                        return Err(ScenarioError::Invalid(format!(
                            "group {:?}: explicit joins must leave exactly one founder, found {}",
                            g.name,
                            founders.len()
                        )));
                    }
                    let mut order = founders;
                    let mut sorted = group_joins.clone();
                    sorted.sort_by_key(|j| j.at);
                    order.extend(sorted.iter().map(|j| j.device));
                    for (pos, d) in order.iter().enumerate() {
                        devices[*d as usize].member = pos as u32;
                    }
                    members = order;
                } else {
                    for m in 1..size as usize {
                        if m > 1 {
                            t += g.join_every.ms();
                        }
                        let jitter = if g.join_jitter.ms() > 0 {
                            rng.gen_range(0..=g.join_jitter.ms())
                        } else {
                            0
                        };
                        let voucher = match g.strategy {
                            Strategy::Hub | Strategy::Explicit => members[0],
                            Strategy::Chain => members[m - 1],
                            Strategy::Random => members[rng.gen_range(0..m)],
                        };
                        group_joins.push(PlannedJoin {
                            at: t + jitter,
                            device: members[m],
                            voucher,
                            vouch: g.vouch,
                            targets: None,
                        });
                    }
                }
                joins.extend(group_joins);
                groups.push(PlannedGroup {
                    name: if g.count == 1 {
                        g.name.clone()
                    } else {
                        format!("{}{}", g.name, copy)
                    },
                    members,
                });
            }
        }

        for d in &self.devices {
            let idx = *by_name
                .get(&d.name)
                .ok_or_else(|| ScenarioError::UnknownDevice(d.name.clone()))?;
            let pd = &mut devices[idx as usize];
            pd.skew_ms = d.skew.0;
            if let Some(v) = d.auto_accept_vouched {
                pd.config.auto_accept_vouched = v;
            }
            pd.user = d.user.apply(&self.users);
            for w in &d.offline {
                pd.offline.push((w.from.ms(), w.from.ms() + w.length.ms()));
            }
        }

        let end = self.duration.ms();
        for rule in &self.offline {
            let chosen = select(&rule.select, &devices, &by_name, &groups, &mut rng)?;
            for idx in chosen {
                let shift = if rule.jitter.ms() > 0 {
                    rng.gen_range(0..=rule.jitter.ms())
                } else {
                    0
                };
                let mut from = rule.from.ms() + shift;
                loop {
                    devices[idx as usize]
                        .offline
                        .push((from, from + rule.length.ms()));
                    match rule.every {
                        Some(p) if p.ms() > 0 && from + p.ms() < end => from += p.ms(),
                        _ => break,
                    }
                }
            }
        }
        for d in &mut devices {
            d.offline = merge_windows(std::mem::take(&mut d.offline));
        }

        let mut partitions = Vec::new();
        for p in &self.partitions {
            if p.heal <= p.at {
                return Err(ScenarioError::Invalid(
                    "a partition must heal after it starts".into(),
                ));
            }
            let mut side_of = BTreeMap::new();
            for (s, names) in p.sides.iter().enumerate() {
                for n in names {
                    let idx = *by_name
                        .get(n)
                        .ok_or_else(|| ScenarioError::UnknownDevice(n.clone()))?;
                    side_of.insert(idx, s as u16 + 1);
                }
            }
            for (s, members) in p.member_sides.iter().enumerate() {
                for g in &groups {
                    for m in members {
                        if let Some(idx) = g
                            .members
                            .iter()
                            .find(|d| devices[**d as usize].member == *m)
                        {
                            side_of.insert(*idx, s as u16 + 1);
                        }
                    }
                }
            }
            partitions.push(PlannedPartition {
                at: p.at.ms(),
                heal: p.heal.ms(),
                side_of,
            });
        }
        partitions.sort_by_key(|p| p.at);
        for w in partitions.windows(2) {
            if w[1].at < w[0].heal {
                return Err(ScenarioError::Invalid("partitions must not overlap".into()));
            }
        }

        let mut actions = Vec::new();
        for a in &self.actions {
            let device = *by_name
                .get(&a.device)
                .ok_or_else(|| ScenarioError::UnknownDevice(a.device.clone()))?;
            let (name, kind) = match (&a.remove, &a.block) {
                (Some(n), None) => (n, PlannedActionKind::Remove),
                (None, Some(n)) => (n, PlannedActionKind::Block),
                _ => {
                    return Err(ScenarioError::Invalid(
                        "an action needs exactly one of remove or block".into(),
                    ))
                }
            };
            let peer = *by_name
                .get(name)
                .ok_or_else(|| ScenarioError::UnknownDevice(name.clone()))?;
            actions.push(PlannedAction {
                at: a.at.ms(),
                device,
                peer,
                kind,
            });
        }

        joins.sort_by_key(|j| (j.at, j.device));
        Ok(Plan {
            scenario: self.clone(),
            seed,
            devices,
            groups,
            joins,
            partitions,
            actions,
        })
    }
}

/// The name of member `m` of copy `copy` of group `g`.
fn member_name(g: &GroupSection, copy: u32, m: u32) -> String {
    match g.names.get(m as usize) {
        Some(n) if g.count == 1 => n.clone(),
        _ if g.count == 1 => format!("{}-{}", g.name, m),
        _ => format!("{}{}-{}", g.name, copy, m),
    }
}

fn select(
    sel: &Selector,
    devices: &[PlannedDevice],
    by_name: &BTreeMap<String, u32>,
    groups: &[PlannedGroup],
    rng: &mut impl Rng,
) -> Result<BTreeSet<u32>, ScenarioError> {
    let mut out = BTreeSet::new();
    if sel.all {
        out.extend(0..devices.len() as u32);
    }
    for n in &sel.devices {
        out.insert(
            *by_name
                .get(n)
                .ok_or_else(|| ScenarioError::UnknownDevice(n.clone()))?,
        );
    }
    for g in groups {
        for m in &sel.members {
            if let Some(d) = g
                .members
                .iter()
                .find(|d| devices[**d as usize].member == *m)
            {
                out.insert(*d);
            }
        }
    }
    if let Some(f) = sel.fraction {
        if !(0.0..=1.0).contains(&f) {
            return Err(ScenarioError::Invalid("fraction must be in [0, 1]".into()));
        }
        let mut all: Vec<u32> = (0..devices.len() as u32).collect();
        all.shuffle(rng);
        let n = (f * devices.len() as f64).round() as usize;
        out.extend(all.into_iter().take(n));
    }
    Ok(out)
}

/// Sorts and merges overlapping `[from, to)` windows.
fn merge_windows(mut w: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    w.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(w.len());
    for (a, b) in w {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Pairs of a full mesh of `n` devices: what pairing every pair directly costs.
pub fn full_mesh_pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}
