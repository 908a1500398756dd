//! Per-peer rate limits on inbound frames, with bounded memory.
//!
//! A token bucket per peer: `burst` frames at once, refilled at `per_second`. Over the limit
//! a frame is answered with `ErrorReply{RateLimited}` and never reaches a protocol machine.
//! This bounds what one PeerId can make the node do; what many fresh PeerIds can do is
//! bounded by the connection limits and the pairing machine's cap on live transactions.
//!
//! The table itself is bounded: past `max_peers` entries, the buckets that have refilled
//! completely (they hold no information) are dropped, then the least recently used ones.

use libp2p::PeerId;
use std::collections::HashMap;
use std::time::Instant;

/// A token-bucket limiter keyed by peer.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    max_peers: usize,
    buckets: HashMap<PeerId, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `burst` frames at once, `per_second` sustained, state for at most `max_peers` peers.
    pub fn new(burst: u32, per_second: f64, max_peers: usize) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_second,
            max_peers: max_peers.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `peer` at `now`; false if the peer is over its limit.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.max_peers {
            self.shrink(now);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let b = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Peers with state.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn shrink(&mut self, now: Instant) {
        let (burst, rate) = (self.burst, self.per_second);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        while self.buckets.len() >= self.max_peers {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(p, _)| *p);
            match oldest {
                Some(p) => self.buckets.remove(&p),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(3, 1.0, 16);
        let p = PeerId::random();
        assert!(r.allow(p, t0));
        assert!(r.allow(p, t0));
        assert!(r.allow(p, t0));
        assert!(!r.allow(p, t0));
        assert!(!r.allow(p, t0 + Duration::from_millis(999)));
        assert!(r.allow(p, t0 + Duration::from_millis(1999)));
    }

    #[test]
    fn peers_are_limited_separately() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 0.1, 16);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(r.allow(a, t0));
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_fresh_peers() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(2, 0.01, 64);
        for _ in 0..10_000 {
            r.allow(PeerId::random(), t0);
        }
        assert!(r.tracked() <= 64, "tracked {}", r.tracked());
    }
}
