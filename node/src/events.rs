//! The node's event stream, as a UI sees it.
//!
//! Following the design's UI model, the UI holds *resources* (devices, pairing sessions,
//! vouching sessions) and is told when one changes ([`NodeEvent::ResourceChanged`], with
//! the resource's new JSON view) or goes away ([`NodeEvent::ResourceDeleted`]), plus the
//! *prompts* that need a person ([`NodeEvent::PairingConfirmationRequired`],
//! [`NodeEvent::ProxyPairingVouchingReady`], [`NodeEvent::ProxyPairingConfirmationRequired`],
//! [`NodeEvent::DeviceReviewRequired`]).
//!
//! Every event gets a sequence number, increasing by one, so a subscriber can tell whether
//! it missed something and resume with `since`. The [`EventHub`] keeps the last
//! [`HISTORY`] events for that; publishing and subscribing take the same lock, so a
//! subscriber sees every event after its `since` exactly once, in order.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for late subscribers.
pub const HISTORY: usize = 1024;

/// The kinds of resource a UI holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A paired device (id: device id).
    Device,
    /// A direct pairing in progress (id: the peer's device id).
    PairingSession,
    /// A vouching session (id: session id).
    VouchingSession,
    /// A vouch waiting for this device's user (id: the prompt id of `proxy requests`).
    ProxyRequest,
    /// A blocked device, paired or not, as `blocked` lists it (id: device id).
    Block,
}

/// Something the UI should know about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum NodeEvent {
    /// A resource was created or changed; `data` is its current view.
    ResourceChanged {
        /// Which kind.
        resource: ResourceKind,
        /// Its id.
        id: String,
        /// Its view, as the query API returns it.
        data: serde_json::Value,
    },
    /// A resource is gone.
    ResourceDeleted {
        /// Which kind.
        resource: ResourceKind,
        /// Its id.
        id: String,
    },
    /// Show the code and ask the user whether the other device shows the same.
    PairingConfirmationRequired {
        /// The other device.
        device_id: String,
        /// Its name.
        name: String,
        /// The 6-digit code.
        code: String,
        /// `inbound` (it asked) or `outbound` (this device asked).
        direction: String,
        /// The user must answer before this (ms since the epoch).
        deadline: u64,
    },
    /// A pairing ended without a pairing; nothing was stored.
    PairingFailed {
        /// The other device.
        device_id: String,
        /// Why, as a stable identifier (`user_rejected`, `code_mismatch`, `timeout`, ...).
        reason: String,
    },
    /// A paired device connected but did not prove it holds the pairing key.
    KeyProofFailed {
        /// The device.
        device_id: String,
        /// Why (`bad_mac`, `wrong_challenge`, `timeout`, ...).
        reason: String,
    },
    /// A device was paired directly and can now be vouched for to this device's other
    /// devices: choose the targets with `vouch` (skipped with `auto_vouch_to_all`).
    ProxyPairingVouchingReady {
        /// The vouching session (32 hex digits).
        session_id: String,
        /// The device to vouch for.
        vouchee: String,
        /// Its name.
        vouchee_name: String,
    },
    /// A trusted device vouches for a new device and asks this device's user to accept it
    /// (`proxy accept|reject <ID>` before `deadline`).
    ProxyPairingConfirmationRequired {
        /// The prompt id.
        id: String,
        /// The device that vouches.
        voucher: String,
        /// Its name, as this device knows it.
        voucher_name: String,
        /// The device vouched for.
        vouchee: String,
        /// Its name, as the voucher gave it.
        vouchee_name: String,
        /// The user must answer before this (ms since the epoch).
        deadline: u64,
    },
    /// A proxy-pairing message was refused; nothing was stored for it.
    ProxyMessageRefused {
        /// The sender, as the connection authenticated it.
        from: String,
        /// Which message (`ProxyPairingRequest`, `ProxyPairingResponse`, ...).
        message: String,
        /// Why, as a stable identifier (`not_from_voucher`, `not_a_target`, `wrong_nonce`,
        /// `bad_signature`, ...).
        reason: String,
    },
    /// The device that vouched for `device_id` was unpaired and `on_voucher_removed` is
    /// `review`: keep or remove it with `review keep|remove <DEVICE_ID>`.
    DeviceReviewRequired {
        /// The device to review.
        device_id: String,
        /// The removed voucher.
        voucher: String,
    },
    /// The node stopped on its own. The only reason so far: `store_failed`, a write that
    /// could not be made durable (the disk is full, or failed). Start it again once the
    /// disk has room, or works; it then reads what the disk holds.
    NodeStopped {
        /// Why, as a stable identifier (`store_failed`).
        reason: String,
        /// The error, for people.
        detail: String,
        /// The disk was full (`ENOSPC`), so room cures it; otherwise the disk failed.
        disk_full: bool,
    },
    /// A sealed text message arrived from a paired device.
    MessageReceived {
        /// The sender, as the connection authenticated it.
        from: String,
        /// The sender's name, as this device paired it.
        from_name: String,
        /// The text.
        text: String,
        /// When it arrived (ms since the epoch).
        received_at: u64,
    },
}

/// An event with its sequence number, as sent to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// Position in the stream, from 1.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: NodeEvent,
}

#[derive(Debug)]
struct Inner {
    next_seq: u64,
    history: VecDeque<Arc<Envelope>>,
}

/// Fan-out of events to any number of subscribers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Arc<Envelope>>,
}

/// A subscription: the backlog after `since`, then live events.
#[derive(Debug)]
pub struct Subscription {
    /// Events already published after `since`, oldest first.
    pub backlog: Vec<Arc<Envelope>>,
    /// Live events from here on.
    pub live: broadcast::Receiver<Arc<Envelope>>,
    /// The last sequence number published when the subscription was made; live events up
    /// to it are already covered by the backlog (or were not asked for).
    pub last_seq: u64,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// An empty hub.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(HISTORY);
        EventHub {
            inner: Arc::new(Mutex::new(Inner {
                next_seq: 1,
                history: VecDeque::new(),
            })),
            tx,
        }
    }

    /// Publishes an event; returns its sequence number.
    pub fn publish(&self, event: NodeEvent) -> u64 {
        let mut inner = self.inner.lock().expect("event hub lock");
        let env = Arc::new(Envelope {
            seq: inner.next_seq,
            event,
        });
        inner.next_seq += 1;
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(env.clone());
        // No subscriber is not an error: the history still has it.
        let _ = self.tx.send(env.clone());
        env.seq
    }

    /// The sequence number of the last event published (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().expect("event hub lock").next_seq - 1
    }

    /// Subscribes to events after `since` (`None`: only events published from now on).
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let inner = self.inner.lock().expect("event hub lock");
        let live = self.tx.subscribe();
        let backlog = match since {
            Some(s) => inner
                .history
                .iter()
                .filter(|e| e.seq > s)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Subscription {
            backlog,
            live,
            last_seq: inner.next_seq - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(id: &str) -> NodeEvent {
        NodeEvent::ResourceDeleted {
            resource: ResourceKind::Device,
            id: id.into(),
        }
    }

    #[test]
    fn sequence_numbers_increase_by_one() {
        let hub = EventHub::new();
        assert_eq!(hub.last_seq(), 0);
        assert_eq!(hub.publish(deleted("a")), 1);
        assert_eq!(hub.publish(deleted("b")), 2);
        assert_eq!(hub.last_seq(), 2);
    }

    #[test]
    fn a_subscriber_gets_the_backlog_then_live_events_without_gaps_or_repeats() {
        let hub = EventHub::new();
        hub.publish(deleted("a"));
        hub.publish(deleted("b"));
        let mut sub = hub.subscribe(Some(1));
        hub.publish(deleted("c"));
        let backlog: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(backlog, vec![2]);
        assert_eq!(sub.live.try_recv().unwrap().seq, 3);
        assert!(sub.live.try_recv().is_err());
    }

    #[test]
    fn history_is_bounded() {
        let hub = EventHub::new();
        for i in 0..(HISTORY + 10) {
            hub.publish(deleted(&i.to_string()));
        }
        let sub = hub.subscribe(Some(0));
        assert_eq!(sub.backlog.len(), HISTORY);
        assert_eq!(sub.backlog[0].seq, 11);
    }

    #[test]
    fn events_serialize_with_a_type_tag_and_the_sequence_number() {
        let env = Envelope {
            seq: 7,
            event: NodeEvent::ResourceChanged {
                resource: ResourceKind::PairingSession,
                id: "x".into(),
                data: serde_json::json!({"stage": "awaiting_user"}),
            },
        };
        assert_eq!(
            serde_json::to_value(&env).unwrap(),
            serde_json::json!({
                "seq": 7,
                "type": "ResourceChanged",
                "resource": "pairing_session",
                "id": "x",
                "data": {"stage": "awaiting_user"}
            })
        );
    }
}
