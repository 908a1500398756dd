//! Presence: which paired devices are online, and when to redial the others.
//!
//! A device is *connected* while at least one connection to it is open: connections are
//! counted per device, the first one opening makes it connected and only the last one
//! closing makes it disconnected (two devices that dial each other at once have two
//! connections, and either may be closed first). A connected paired device becomes
//! *online* only once it proved it holds the pairing key (see `keyproof` in the protocol
//! crate); it goes offline when its last connection closes.
//!
//! [`Redial`] keeps paired devices connected: when one is not, it is dialled at its known
//! addresses with exponential backoff, reset by a successful connection.
//!
//! Both are plain data driven with explicit `now` values, so their rules are unit-tested
//! without a network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use vouchnet_protocol::DeviceId;

/// What a connection change did to a device's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing visible changed (another connection opened or closed).
    None,
    /// The first connection opened.
    Connected,
    /// The last connection closed; `was_online` says whether it had proved its key.
    Disconnected {
        /// It was online (verified) until now.
        was_online: bool,
    },
}

/// Connection counts, verified devices, and why a device's last key proof failed.
#[derive(Debug, Default)]
pub struct Presence {
    connections: HashMap<DeviceId, usize>,
    online: HashSet<DeviceId>,
    /// Devices whose last key proof failed, with the reason, until one succeeds: what the
    /// user needs to see to tell "switched off" from "does not know this device any more".
    failed_proofs: HashMap<DeviceId, String>,
}

impl Presence {
    /// A connection to `device` opened.
    pub fn opened(&mut self, device: DeviceId) -> Transition {
        let n = self.connections.entry(device).or_insert(0);
        *n += 1;
        if *n == 1 {
            Transition::Connected
        } else {
            Transition::None
        }
    }

    /// A connection to `device` closed.
    pub fn closed(&mut self, device: DeviceId) -> Transition {
        let Some(n) = self.connections.get_mut(&device) else {
            return Transition::None;
        };
        *n -= 1;
        if *n > 0 {
            return Transition::None;
        }
        self.connections.remove(&device);
        Transition::Disconnected {
            was_online: self.online.remove(&device),
        }
    }

    /// `device` proved its key. Returns true if it became online now (it is connected and
    /// was not online yet).
    pub fn verified(&mut self, device: DeviceId) -> bool {
        self.failed_proofs.remove(&device);
        self.connections.contains_key(&device) && self.online.insert(device)
    }

    /// `device` failed to prove its key, for `reason`; kept until a proof succeeds or the
    /// pairing is replaced.
    pub fn proof_failed(&mut self, device: DeviceId, reason: &str) {
        self.failed_proofs.insert(device, reason.to_owned());
    }

    /// Why `device`'s last key proof failed, if it did and none succeeded since.
    pub fn failed_proof(&self, device: &DeviceId) -> Option<&str> {
        self.failed_proofs.get(device).map(String::as_str)
    }

    /// Forgets a failed proof: the pairing with `device` was replaced or removed.
    pub fn forget_failed_proof(&mut self, device: &DeviceId) {
        self.failed_proofs.remove(device);
    }

    /// `device` is no longer trusted online (unpaired, blocked, or its proof failed) though
    /// it may stay connected. Returns true if it was online.
    pub fn unverify(&mut self, device: &DeviceId) -> bool {
        self.online.remove(device)
    }

    /// At least one connection is open.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.connections.contains_key(device)
    }

    /// Connected and proved its key.
    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.online.contains(device)
    }

    /// Open connections to `device`.
    pub fn connection_count(&self, device: &DeviceId) -> usize {
        self.connections.get(device).copied().unwrap_or(0)
    }

    /// Every connected device, ordered.
    pub fn connected(&self) -> Vec<DeviceId> {
        let mut v: Vec<DeviceId> = self.connections.keys().copied().collect();
        v.sort();
        v
    }
}

/// Redial schedule of paired devices that are not connected.
#[derive(Debug)]
pub struct Redial {
    base: Duration,
    max: Duration,
    entries: BTreeMap<DeviceId, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    due: Instant,
    delay: Duration,
}

impl Redial {
    /// First retry after `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Redial {
            base,
            max,
            entries: BTreeMap::new(),
        }
    }

    /// `device` should be connected but is not: dial it now if it has no schedule yet.
    pub fn want(&mut self, device: DeviceId, now: Instant) {
        self.entries.entry(device).or_insert(Entry {
            due: now,
            delay: self.base,
        });
    }

    /// A dial of `device` failed: try again after the current delay, which then doubles.
    pub fn failed(&mut self, device: DeviceId, now: Instant) {
        let base = self.base;
        let max = self.max;
        let e = self.entries.entry(device).or_insert(Entry {
            due: now,
            delay: base,
        });
        e.due = now + e.delay;
        e.delay = (e.delay * 2).min(max);
    }

    /// `device` is connected: no dialling until it disconnects again.
    pub fn connected(&mut self, device: &DeviceId) {
        self.entries.remove(device);
    }

    /// `device` is no longer paired: never redial it.
    pub fn forget(&mut self, device: &DeviceId) {
        self.entries.remove(device);
    }

    /// Devices due for a dial at `now`. Each is pushed back by its current delay, so a dial
    /// that neither connects nor reports a failure is retried, not forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<DeviceId> {
        let mut out = Vec::new();
        for (device, e) in self.entries.iter_mut() {
            if e.due <= now {
                out.push(*device);
                e.due = now + e.delay;
            }
        }
        out
    }

    /// When [`Self::due`] next returns something.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.due).min()
    }

    /// Current delay for `device`, if scheduled.
    pub fn delay(&self, device: &DeviceId) -> Option<Duration> {
        self.entries.get(device).map(|e| e.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use vouchnet_protocol::DeviceKeypair;

    fn device(seed: u64) -> DeviceId {
        DeviceKeypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed)).device_id()
    }

    #[test]
    fn online_from_the_first_proof_until_the_last_connection_closes() {
        let mut p = Presence::default();
        let d = device(1);
        assert_eq!(p.opened(d), Transition::Connected);
        assert!(!p.is_online(&d));
        assert!(p.verified(d));
        assert!(!p.verified(d), "already online");
        assert_eq!(p.opened(d), Transition::None);
        assert_eq!(p.connection_count(&d), 2);
        assert_eq!(p.closed(d), Transition::None);
        assert!(p.is_online(&d), "one connection is still open");
        assert_eq!(p.closed(d), Transition::Disconnected { was_online: true });
        assert!(!p.is_connected(&d));
        assert!(!p.is_online(&d));
    }

    #[test]
    fn a_device_that_never_proved_its_key_was_not_online() {
        let mut p = Presence::default();
        let d = device(2);
        p.opened(d);
        assert_eq!(p.closed(d), Transition::Disconnected { was_online: false });
        assert_eq!(
            p.closed(d),
            Transition::None,
            "a stray close changes nothing"
        );
    }

    #[test]
    fn a_proof_without_a_connection_does_not_make_a_device_online() {
        let mut p = Presence::default();
        assert!(!p.verified(device(3)));
    }

    #[test]
    fn redial_backs_off_exponentially_up_to_the_maximum_and_resets_on_connect() {
        let t0 = Instant::now();
        let mut r = Redial::new(Duration::from_secs(1), Duration::from_secs(4));
        let d = device(4);
        r.want(d, t0);
        assert_eq!(r.due(t0), vec![d]);
        r.failed(d, t0);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(r.due(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(r.due(t0 + Duration::from_secs(1)), vec![d]);
        r.failed(d, t0 + Duration::from_secs(1));
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(3)));
        r.failed(d, t0 + Duration::from_secs(3));
        r.failed(d, t0 + Duration::from_secs(3));
        assert_eq!(
            r.delay(&d),
            Some(Duration::from_secs(4)),
            "capped at the maximum"
        );
        r.connected(&d);
        assert_eq!(r.next_due(), None);
        r.want(d, t0 + Duration::from_secs(10));
        assert_eq!(
            r.delay(&d),
            Some(Duration::from_secs(1)),
            "reset after a connection"
        );
    }

    #[test]
    fn want_does_not_reset_a_running_backoff() {
        let t0 = Instant::now();
        let mut r = Redial::new(Duration::from_secs(1), Duration::from_secs(60));
        let d = device(5);
        r.want(d, t0);
        r.failed(d, t0);
        r.failed(d, t0);
        r.want(d, t0);
        assert_eq!(r.delay(&d), Some(Duration::from_secs(4)));
        r.forget(&d);
        assert!(r.due(t0 + Duration::from_secs(100)).is_empty());
    }
}
