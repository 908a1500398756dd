//! What a run measured.

use crate::time::VTime;
use std::collections::BTreeMap;

/// Count and bytes of one kind of message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent.
    pub count: u64,
    /// Bytes sent (encoded frames).
    pub bytes: u64,
}

/// One point of the queue-depth series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSample {
    /// When.
    pub at: VTime,
    /// Entries queued at that moment, over all devices.
    pub depth: u64,
    /// The most entries queued at once since the previous sample.
    pub peak: u64,
}

/// Everything a run counts.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Frames by message kind (acknowledgements under `Ack`).
    pub traffic: BTreeMap<&'static str, Traffic>,
    /// Frames lost in the network.
    pub frames_lost: u64,
    /// Acknowledgements lost.
    pub acks_lost: u64,
    /// Sends refused because the peer was unreachable.
    pub unreachable_sends: u64,
    /// Direct pairing attempts started.
    pub pairing_attempts: u64,
    /// Pairs that completed a direct pairing (counted once per pair).
    pub direct_pairings: u64,
    /// Pairing failures by reason (each side counts its own).
    pub pairing_failures: BTreeMap<String, u64>,
    /// Vouching sessions created.
    pub sessions: u64,
    /// Signed vouches sent (first sends and queued redeliveries).
    pub vouches_sent: u64,
    /// Vouches (targets) that became Accepted, voucher's view.
    pub vouches_accepted: u64,
    /// Vouches that became Rejected, by reason, voucher's view.
    pub vouches_rejected: BTreeMap<String, u64>,
    /// Queued vouches dropped (expiry or retries).
    pub vouches_expired: u64,
    /// Receiver-side outcomes by kind.
    pub receiver_outcomes: BTreeMap<String, u64>,
    /// Prompts opened, answered yes, answered no, expired.
    pub prompts: [u64; 4],
    /// `ProxyPairingComplete` messages the vouchee refused.
    pub completes_refused: u64,
    /// Trust records added by vouch (target side + vouchee side).
    pub proxied_records: u64,
    /// Queue entries now, and the most ever.
    pub queue_now: u64,
    /// The most queue entries at once.
    pub queue_peak: u64,
    /// Peak since the last sample.
    pub queue_peak_window: u64,
    /// Queue depth over time.
    pub queue_series: Vec<QueueSample>,
    /// Notifications to vouchees dropped from the queue undelivered.
    pub notifications_expired: u64,
    /// Per join: time from the first pairing attempt until the new device is mutually
    /// trusted with every earlier member of its group.
    pub join_latencies: Vec<u64>,
    /// Edges of the target trust graph (pairs within a group).
    pub target_edges: u64,
    /// Target edges with mutual trust now.
    pub satisfied_edges: u64,
    /// When the target graph was first complete.
    pub converged_at: Option<VTime>,
    /// When the first join started.
    pub first_join_at: Option<VTime>,
    /// When the last join started.
    pub last_join_at: Option<VTime>,
    /// When trust last changed.
    pub last_trust_change: VTime,
    /// Events processed.
    pub events: u64,
    /// Incremental invariant checks made.
    pub invariant_checks: u64,
}

impl Metrics {
    /// Records a frame.
    pub fn frame(&mut self, kind: &'static str, bytes: usize) {
        let t = self.traffic.entry(kind).or_default();
        t.count += 1;
        t.bytes += bytes as u64;
    }

    /// Total frames and bytes.
    pub fn total_traffic(&self) -> Traffic {
        self.traffic
            .values()
            .fold(Traffic::default(), |a, t| Traffic {
                count: a.count + t.count,
                bytes: a.bytes + t.bytes,
            })
    }

    /// Vouches rejected, any reason.
    pub fn rejected_total(&self) -> u64 {
        self.vouches_rejected.values().sum()
    }

    /// A queue entry was added (`+1`) or removed (`-1`).
    pub fn queue_delta(&mut self, added: bool) {
        if added {
            self.queue_now += 1;
            self.queue_peak = self.queue_peak.max(self.queue_now);
            self.queue_peak_window = self.queue_peak_window.max(self.queue_now);
        } else {
            self.queue_now = self.queue_now.saturating_sub(1);
        }
    }

    /// Takes a queue-depth sample.
    pub fn sample(&mut self, at: VTime) {
        self.queue_series.push(QueueSample {
            at,
            depth: self.queue_now,
            peak: self.queue_peak_window.max(self.queue_now),
        });
        self.queue_peak_window = self.queue_now;
    }

    /// Percentile `p` (0–100) of the join latencies.
    pub fn join_latency(&self, p: f64) -> Option<u64> {
        if self.join_latencies.is_empty() {
            return None;
        }
        let mut v = self.join_latencies.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }
}
