//! The simulated network: who can reach whom, and how long a frame takes.
//!
//! A frame travels as real bytes (`Frame::encode`), so message and byte counts are those
//! the node would send. Each frame is a request that the receiver acknowledges (as the
//! node's libp2p request-response does); a frame or its acknowledgement can be lost, and
//! a sender that hears nothing within the request timeout treats the delivery as failed.
//!
//! Reachability: two devices reach each other when both are online (their offline
//! schedules) and no active partition puts them on different sides. Frames on one directed
//! link arrive in the order they were sent (the node's outbox sends one message at a time
//! per device), with latency `latency + uniform[0, jitter]` drawn from the network's
//! seeded stream.

use crate::rng::{derive_rng, Stream};
use crate::scenario::NetworkSection;
use crate::time::VTime;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;

/// What happens to one frame put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transit {
    /// It arrives at this time.
    Arrives(VTime),
    /// It is lost.
    Lost,
}

/// The network between simulated devices.
#[derive(Debug)]
pub struct SimNetwork {
    latency: u64,
    jitter: u64,
    loss: f64,
    /// How long a sender waits for an acknowledgement.
    pub request_timeout: u64,
    rng: ChaCha20Rng,
    online: Vec<bool>,
    /// Side of each device in the active partition (0 = none).
    side: Vec<u16>,
    partitioned: bool,
    /// Last arrival time per directed link, for in-order delivery.
    last_arrival: HashMap<(u32, u32), VTime>,
}

impl SimNetwork {
    /// A network for `devices` devices, all online, seeded from the run's seed.
    pub fn new(cfg: &NetworkSection, devices: usize, seed: u64) -> Self {
        SimNetwork {
            latency: cfg.latency.ms(),
            jitter: cfg.jitter.ms(),
            loss: cfg.loss,
            request_timeout: cfg.request_timeout.ms(),
            rng: derive_rng(seed, Stream::Network, 0),
            online: vec![true; devices],
            side: vec![0; devices],
            partitioned: false,
            last_arrival: HashMap::new(),
        }
    }

    /// True when `a` and `b` can exchange frames now.
    pub fn reachable(&self, a: u32, b: u32) -> bool {
        if !self.online[a as usize] || !self.online[b as usize] {
            return false;
        }
        if !self.partitioned {
            return true;
        }
        let (sa, sb) = (self.side[a as usize], self.side[b as usize]);
        sa == 0 || sb == 0 || sa == sb
    }

    /// True when `d` is online.
    pub fn is_online(&self, d: u32) -> bool {
        self.online[d as usize]
    }

    /// Sets `d` online or offline.
    pub fn set_online(&mut self, d: u32, online: bool) {
        self.online[d as usize] = online;
    }

    /// Starts a partition (`side_of` maps devices to sides; others reach everyone).
    pub fn partition(&mut self, side_of: impl IntoIterator<Item = (u32, u16)>) {
        self.side.iter_mut().for_each(|s| *s = 0);
        for (d, s) in side_of {
            self.side[d as usize] = s;
        }
        self.partitioned = true;
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    /// One-way transit of a frame from `from` to `to` sent at `now`: lost, or its arrival
    /// time (never before an earlier frame on the same directed link).
    pub fn transit(&mut self, from: u32, to: u32, now: VTime) -> Transit {
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            return Transit::Lost;
        }
        let at = now + self.delay();
        let last = self.last_arrival.entry((from, to)).or_insert(0);
        let at = at.max(*last);
        *last = at;
        Transit::Arrives(at)
    }

    /// One-way transit of an acknowledgement (not ordered with frames).
    pub fn ack_transit(&mut self, now: VTime) -> Transit {
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            return Transit::Lost;
        }
        Transit::Arrives(now + self.delay())
    }

    fn delay(&mut self) -> u64 {
        self.latency
            + if self.jitter > 0 {
                self.rng.gen_range(0..=self.jitter)
            } else {
                0
            }
    }
}
