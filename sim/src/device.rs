//! One simulated device: the real protocol machines, an in-memory store, its own clock,
//! and its user.
//!
//! Memory is kept small for 10,000 devices: no thread per device, and the
//! [`PairingManager`] exists only while a pairing is in flight. A [`Receiver`] or a
//! [`VoucherCtx`](vouchnet_protocol::session::VoucherCtx) is built on the stack for each
//! call; they are views over the keypair and config, not state.
//!
//! [`Receiver`]: vouchnet_protocol::vouch::Receiver

use crate::rng::{derive_rng, Stream};
use crate::scenario::{PlannedDevice, UserSection};
use crate::store::DeviceStore;
use crate::time::{Span, VTime, EPOCH_BASE_MS};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair};
use vouchnet_protocol::messages::DisplayName;
use vouchnet_protocol::pairing::PairingManager;
use vouchnet_protocol::{ProtocolConfig, Timestamp};

/// What a user does with a vouch prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptAnswer {
    /// Says yes.
    Accept,
    /// Says no.
    Reject,
    /// Never answers.
    Ignore,
}

/// A simulated user: answers with the scenario's probabilities and delays, drawn from the
/// device's own seeded stream.
#[derive(Debug)]
pub struct SimUser {
    /// The behaviour.
    pub policy: UserSection,
    rng: ChaCha20Rng,
}

impl SimUser {
    /// A user for device `index` of a run seeded with `seed`.
    pub fn new(policy: UserSection, seed: u64, index: u64) -> Self {
        SimUser {
            policy,
            rng: derive_rng(seed, Stream::User, index),
        }
    }

    /// How the user answers the next vouch prompt, and after how long.
    pub fn answer_prompt(&mut self) -> (PromptAnswer, u64) {
        let x: f64 = self.rng.gen();
        let answer = if x < self.policy.accept {
            PromptAnswer::Accept
        } else if x < self.policy.accept + self.policy.reject {
            PromptAnswer::Reject
        } else {
            PromptAnswer::Ignore
        };
        let delay = self.delay(self.policy.answer_delay);
        (answer, delay)
    }

    /// How long the user takes to compare pairing codes.
    pub fn confirm_delay(&mut self) -> u64 {
        self.delay(self.policy.confirm_delay)
    }

    /// How long the user takes to choose vouch targets.
    pub fn select_delay(&mut self) -> u64 {
        self.delay(self.policy.select_delay)
    }

    fn delay(&mut self, [lo, hi]: [Span; 2]) -> u64 {
        let (lo, hi) = (lo.ms().min(hi.ms()), lo.ms().max(hi.ms()));
        if hi == lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }
}

/// One simulated device.
#[derive(Debug)]
pub struct SimDevice {
    /// Index in the simulation.
    pub idx: u32,
    /// Name (scenario).
    pub name: String,
    /// Group index.
    pub group: u32,
    /// Position in the group's join order.
    pub member: u32,
    /// Long-term key.
    pub keypair: DeviceKeypair,
    /// Its id.
    pub id: DeviceId,
    /// Display name told to peers.
    pub display: DisplayName,
    /// Protocol parameters.
    pub config: ProtocolConfig,
    /// Clock offset, ms.
    pub skew_ms: i64,
    /// Protocol randomness.
    pub rng: ChaCha20Rng,
    /// The user.
    pub user: SimUser,
    /// The pairing machine, while a pairing is in flight.
    pub pairing: Option<Box<PairingManager>>,
    /// The stored state.
    pub store: DeviceStore,
    /// Offline windows `[from, to)`.
    pub offline: Vec<(u64, u64)>,
    /// Phase of the queue worker's poll grid, ms.
    pub poll_phase: u64,
    /// When the queue worker is next scheduled.
    pub queue_wake: Option<VTime>,
}

impl SimDevice {
    /// Builds device `idx` from its plan, with keys and streams derived from `seed`.
    pub fn new(idx: u32, plan: &PlannedDevice, seed: u64) -> Self {
        let keypair = DeviceKeypair::generate(&mut derive_rng(seed, Stream::DeviceKey, idx as u64));
        let id = keypair.device_id();
        let mut rng = derive_rng(seed, Stream::Protocol, idx as u64);
        let poll = crate::time::SECOND.max(plan.config.queue.poll_interval.as_millis() as u64);
        let poll_phase = rng.gen_range(0..poll);
        let display = DisplayName::new(truncate_name(&plan.name))
            .unwrap_or_else(|_| DisplayName::new(format!("device {idx}")).expect("plain name"));
        SimDevice {
            idx,
            name: plan.name.clone(),
            group: plan.group,
            member: plan.member,
            keypair,
            id,
            display,
            config: plan.config.clone(),
            skew_ms: plan.skew_ms,
            rng,
            user: SimUser::new(plan.user.clone(), seed, idx as u64),
            pairing: None,
            store: DeviceStore::default(),
            offline: plan.offline.clone(),
            poll_phase,
            queue_wake: None,
        }
    }

    /// This device's protocol time at virtual time `v`: `EPOCH_BASE + v + skew`.
    pub fn now(&self, v: VTime) -> Timestamp {
        Timestamp::from_millis((EPOCH_BASE_MS + v).saturating_add_signed(self.skew_ms))
    }

    /// The virtual time at which this device's clock shows `t` (never before `not_before`).
    pub fn virtual_of(&self, t: Timestamp, not_before: VTime) -> VTime {
        let v = t
            .as_millis()
            .saturating_add_signed(-self.skew_ms)
            .saturating_sub(EPOCH_BASE_MS);
        v.max(not_before)
    }

    /// Runs `f` on the pairing machine (created on first use) with this device's RNG.
    pub fn with_pairing<T>(
        &mut self,
        f: impl FnOnce(&mut PairingManager, &mut ChaCha20Rng) -> T,
    ) -> T {
        let SimDevice {
            pairing,
            rng,
            id,
            display,
            config,
            ..
        } = self;
        let m = pairing.get_or_insert_with(|| {
            Box::new(PairingManager::new(*id, display.clone(), config.clone()))
        });
        f(m, rng)
    }

    /// Drops the pairing machine when it holds no transaction.
    pub fn release_pairing(&mut self) {
        if self
            .pairing
            .as_ref()
            .is_some_and(|p| p.poll_timeout().is_none())
        {
            self.pairing = None;
        }
    }

    /// Open pairing transactions (they count against the prompt limit).
    pub fn pairing_count(&self) -> usize {
        self.pairing.as_ref().map_or(0, |p| p.pending().len())
    }

    /// The first time at or after `t` on this device's queue-poll grid.
    pub fn next_poll(&self, t: VTime) -> VTime {
        let p = (self.config.queue.poll_interval.as_millis() as u64).max(1);
        let phase = self.poll_phase % p;
        if t <= phase {
            return phase;
        }
        let k = (t - phase).div_ceil(p);
        phase + k * p
    }
}

fn truncate_name(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if s.len() + c.len_utf8() > vouchnet_protocol::messages::MAX_NAME_LEN {
            break;
        }
        s.push(c);
    }
    s
}
