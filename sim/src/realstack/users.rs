//! The people at the devices: one task per running node reads its event stream as a UI
//! would, answers vouch prompts through the node's [`Client`] (`proxy accept|reject`), and
//! ticks the runner's wake-up signal on every event so that waits re-check their condition
//! exactly when something happened, never on a timer.
//!
//! Answers follow the scenario's probabilities (`accept`, `reject`, `ignore`) with a
//! per-device generator derived from the seed ([`crate::rng::Stream::User`]). The delays
//! (`answer_delay`) are compressed to nothing: a user answers as soon as the prompt shows.

use crate::rng::{derive_rng, Stream};
use crate::scenario::UserSection;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use vouchnet_node::events::NodeEvent;
use vouchnet_node::Client;

/// What a user did with a vouch prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `proxy accept`.
    Accept,
    /// `proxy reject`.
    Reject,
    /// Nothing: the prompt expires.
    Ignore,
}

/// One device's user.
#[derive(Debug)]
struct User {
    rng: ChaCha20Rng,
    accept: f64,
    reject: f64,
}

impl User {
    fn answer(&mut self) -> Answer {
        let x: f64 = self.rng.gen();
        if x < self.accept {
            Answer::Accept
        } else if x < self.accept + self.reject {
            Answer::Reject
        } else {
            Answer::Ignore
        }
    }
}

/// State the runner and the user tasks share.
#[derive(Debug)]
pub struct Shared {
    ticks: watch::Sender<u64>,
    users: Mutex<Vec<User>>,
    /// (target device index, vouchee device id) → what the target's user answered.
    answers: Mutex<BTreeMap<(u32, String), Answer>>,
    /// `KeyProofFailed` events seen, by reason.
    key_proof_failures: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    /// Users for devices with these behaviours, seeded from `seed`.
    pub fn new(seed: u64, users: &[UserSection]) -> Arc<Shared> {
        let (ticks, _) = watch::channel(0);
        Arc::new(Shared {
            ticks,
            users: Mutex::new(
                users
                    .iter()
                    .enumerate()
                    .map(|(i, u)| User {
                        rng: derive_rng(seed, Stream::User, i as u64),
                        accept: u.accept,
                        reject: u.reject,
                    })
                    .collect(),
            ),
            answers: Mutex::new(BTreeMap::new()),
            key_proof_failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// Wakes every wait: something changed.
    pub fn tick(&self) {
        self.ticks.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver for [`Shared::tick`]; its first `changed()` is the next tick.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// What `target`'s user answered to the prompt about `vouchee`, if it was asked.
    pub fn answer_of(&self, target: u32, vouchee: &str) -> Option<Answer> {
        self.answers
            .lock()
            .expect("answers lock")
            .get(&(target, vouchee.to_owned()))
            .copied()
    }

    /// How many prompts were answered each way.
    pub fn answer_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for a in self.answers.lock().expect("answers lock").values() {
            let name = match a {
                Answer::Accept => "accept",
                Answer::Reject => "reject",
                Answer::Ignore => "ignore",
            };
            *out.entry(name).or_insert(0) += 1;
        }
        out
    }

    /// `KeyProofFailed` events seen on every node, by reason.
    pub fn key_proof_failures(&self) -> BTreeMap<String, u64> {
        self.key_proof_failures
            .lock()
            .expect("key proof failures lock")
            .clone()
    }

    fn decide(&self, target: u32, vouchee: &str) -> Answer {
        let answer = self.users.lock().expect("users lock")[target as usize].answer();
        self.answers
            .lock()
            .expect("answers lock")
            .insert((target, vouchee.to_owned()), answer);
        answer
    }
}

/// The user of device `index`, at the node `client` drives. Runs until the node's event
/// stream closes or the task is aborted (when the node is shut down).
pub async fn user_loop(index: u32, client: Client, shared: Arc<Shared>) {
    let mut sub = client.events().subscribe(Some(0));
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for env in std::mem::take(&mut sub.backlog) {
        on_event(index, &client, &shared, &mut answered, &env.event).await;
    }
    loop {
        match sub.live.recv().await {
            Ok(env) => on_event(index, &client, &shared, &mut answered, &env.event).await,
            Err(RecvError::Lagged(_)) => {
                // Events were dropped: the prompts still open are listed by the node.
                if let Ok(list) = client.proxy_requests().await {
                    for p in list {
                        prompt(index, &client, &shared, &mut answered, p.id, &p.vouchee).await;
                    }
                }
                shared.tick();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn on_event(
    index: u32,
    client: &Client,
    shared: &Shared,
    answered: &mut BTreeSet<String>,
    event: &NodeEvent,
) {
    match event {
        NodeEvent::ProxyPairingConfirmationRequired { id, vouchee, .. } => {
            prompt(index, client, shared, answered, id.clone(), vouchee).await;
        }
        NodeEvent::KeyProofFailed { device_id, reason } => {
            debug_note(&format!(
                "device {index}: key proof of {device_id} failed: {reason}"
            ));
            *shared
                .key_proof_failures
                .lock()
                .expect("key proof failures lock")
                .entry(reason.clone())
                .or_insert(0) += 1;
        }
        _ => {}
    }
    shared.tick();
}

async fn prompt(
    index: u32,
    client: &Client,
    shared: &Shared,
    answered: &mut BTreeSet<String>,
    id: String,
    vouchee: &str,
) {
    if !answered.insert(id.clone()) {
        return;
    }
    let accept = match shared.decide(index, vouchee) {
        Answer::Accept => true,
        Answer::Reject => false,
        Answer::Ignore => return,
    };
    if let Err(e) = client.confirm_proxy(id, accept).await {
        // The prompt may have expired or been withdrawn meanwhile; the session shows it.
        debug_note(&format!("confirm_proxy failed: {e}"));
    }
}

/// Notes go to stderr only when asked (`VOUCHNET_SIM_DEBUG`), so a run's output stays the
/// report.
pub fn debug_note(msg: &str) {
    if std::env::var_os("VOUCHNET_SIM_DEBUG").is_some() {
        eprintln!("realstack: {msg}");
    }
}
