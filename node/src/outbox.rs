//! Ordered delivery of outgoing messages, one in flight per device.
//!
//! The pairing machine relies on its messages arriving in protocol order ("the node sends
//! the next message of a transaction only after the previous one was acknowledged"). Two
//! libp2p requests on separate streams can overtake each other, so each device gets a
//! queue here: a message goes out only when the previous one to that device was
//! acknowledged. When a delivery fails, everything still queued for that device fails with
//! it (sending later messages of a broken exchange would only produce refusals).
//!
//! The outbox is plain data: the event loop performs the sends it returns, which keeps the
//! ordering rule testable without a swarm.

use libp2p::request_response::OutboundRequestId;
use std::collections::{HashMap, VecDeque};
use vouchnet_protocol::{DeviceId, Message};

/// A message waiting for delivery, with `T` telling the event loop what to do when it is
/// acknowledged or fails (a reply channel, for instance).
#[derive(Debug)]
pub struct Outgoing<T> {
    /// The message.
    pub msg: Message,
    /// The caller's completion token.
    pub token: T,
}

#[derive(Debug)]
struct Queue<T> {
    in_flight: Option<(OutboundRequestId, Outgoing<T>)>,
    waiting: VecDeque<Outgoing<T>>,
}

/// Per-device ordered queues.
#[derive(Debug)]
pub struct Outbox<T> {
    queues: HashMap<DeviceId, Queue<T>>,
    by_request: HashMap<OutboundRequestId, DeviceId>,
    /// Most messages waiting for one device; beyond it a push fails.
    max_waiting: usize,
}

/// The outcome of an acknowledged or failed delivery.
#[derive(Debug)]
pub struct Settled<T> {
    /// The device.
    pub device: DeviceId,
    /// The message whose delivery settled.
    pub done: Outgoing<T>,
    /// Messages to the same device dropped because this one failed (empty on success).
    pub dropped: Vec<Outgoing<T>>,
}

impl<T> Outbox<T> {
    /// An empty outbox holding at most `max_waiting` messages per device.
    pub fn new(max_waiting: usize) -> Self {
        Outbox {
            queues: HashMap::new(),
            by_request: HashMap::new(),
            max_waiting,
        }
    }

    /// Queues `out` for `device`. Returns it back if it must be sent now (nothing in
    /// flight to that device); the caller sends it and reports the request id with
    /// [`Outbox::sent`]. Fails (returning the message, boxed: a refusal is rare and the
    /// message is large) if the device's queue is full.
    pub fn push(
        &mut self,
        device: DeviceId,
        out: Outgoing<T>,
    ) -> Result<Option<Outgoing<T>>, Box<Outgoing<T>>> {
        let q = self.queues.entry(device).or_insert_with(|| Queue {
            in_flight: None,
            waiting: VecDeque::new(),
        });
        if q.in_flight.is_none() && q.waiting.is_empty() {
            return Ok(Some(out));
        }
        if q.waiting.len() >= self.max_waiting {
            return Err(Box::new(out));
        }
        q.waiting.push_back(out);
        Ok(None)
    }

    /// `out` was handed to the swarm as request `id`.
    pub fn sent(&mut self, device: DeviceId, id: OutboundRequestId, out: Outgoing<T>) {
        let q = self.queues.entry(device).or_insert_with(|| Queue {
            in_flight: None,
            waiting: VecDeque::new(),
        });
        debug_assert!(q.in_flight.is_none(), "one request in flight per device");
        q.in_flight = Some((id, out));
        self.by_request.insert(id, device);
    }

    /// Request `id` was acknowledged. Returns what settled and the next message to send to
    /// that device, if any.
    pub fn acked(&mut self, id: OutboundRequestId) -> Option<(Settled<T>, Option<Outgoing<T>>)> {
        let device = self.by_request.remove(&id)?;
        let q = self.queues.get_mut(&device)?;
        let (_, done) = q.in_flight.take()?;
        let next = q.waiting.pop_front();
        if next.is_none() {
            self.queues.remove(&device);
        }
        Some((
            Settled {
                device,
                done,
                dropped: Vec::new(),
            },
            next,
        ))
    }

    /// Request `id` failed: it and everything waiting behind it to the same device settle
    /// as failed.
    pub fn failed(&mut self, id: OutboundRequestId) -> Option<Settled<T>> {
        let device = self.by_request.remove(&id)?;
        let mut q = self.queues.remove(&device)?;
        let (_, done) = q.in_flight.take()?;
        Some(Settled {
            device,
            done,
            dropped: q.waiting.into_iter().collect(),
        })
    }

    /// Forgets `device`'s queue if nothing is in flight or waiting in it (a message handed
    /// back by [`Outbox::push`] that the caller could not send leaves such a queue).
    pub fn clear(&mut self, device: &DeviceId) {
        if self
            .queues
            .get(device)
            .is_some_and(|q| q.in_flight.is_none() && q.waiting.is_empty())
        {
            self.queues.remove(device);
        }
    }

    /// Messages queued or in flight to `device`.
    pub fn len(&self, device: &DeviceId) -> usize {
        self.queues
            .get(device)
            .map_or(0, |q| q.waiting.len() + usize::from(q.in_flight.is_some()))
    }

    /// Whether nothing is queued for any device.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use vouchnet_protocol::messages::{KeyProofChallenge, Message};
    use vouchnet_protocol::DeviceKeypair;

    fn device(seed: u64) -> DeviceId {
        DeviceKeypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed)).device_id()
    }

    fn msg(n: u8) -> Outgoing<u8> {
        Outgoing {
            msg: Message::KeyProofChallenge(KeyProofChallenge { challenge: [n; 32] }),
            token: n,
        }
    }

    /// Request ids can only be made by a request-response behaviour; make a few.
    fn request_ids(n: usize) -> Vec<OutboundRequestId> {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut rr = libp2p::request_response::Behaviour::<crate::network::codec::FrameCodec>::new(
            [(
                crate::network::codec::PAIR_PROTOCOL,
                libp2p::request_response::ProtocolSupport::Full,
            )],
            Default::default(),
        );
        let peer = key.public().to_peer_id();
        (0..n)
            .map(|_| rr.send_request(&peer, crate::network::codec::WireFrame::raw(vec![0])))
            .collect()
    }

    #[test]
    fn one_message_in_flight_per_device_in_order() {
        let ids = request_ids(3);
        let mut ob = Outbox::new(8);
        let d = device(1);
        let first = ob
            .push(d, msg(1))
            .unwrap()
            .expect("nothing in flight: send now");
        ob.sent(d, ids[0], first);
        assert!(
            ob.push(d, msg(2)).unwrap().is_none(),
            "waits behind the first"
        );
        assert!(ob.push(d, msg(3)).unwrap().is_none());
        assert_eq!(ob.len(&d), 3);
        let (settled, next) = ob.acked(ids[0]).unwrap();
        assert_eq!(settled.done.token, 1);
        let next = next.unwrap();
        assert_eq!(next.token, 2);
        ob.sent(d, ids[1], next);
        let (_, next) = ob.acked(ids[1]).unwrap();
        let next = next.unwrap();
        assert_eq!(next.token, 3);
        ob.sent(d, ids[2], next);
        let (_, next) = ob.acked(ids[2]).unwrap();
        assert!(next.is_none());
        assert!(ob.is_empty());
    }

    #[test]
    fn devices_do_not_wait_for_each_other() {
        let mut ob = Outbox::new(8);
        let ids = request_ids(1);
        let first = ob.push(device(1), msg(1)).unwrap().unwrap();
        ob.sent(device(1), ids[0], first);
        assert!(ob.push(device(2), msg(2)).unwrap().is_some());
    }

    #[test]
    fn a_failure_drops_what_waits_behind_it() {
        let ids = request_ids(1);
        let mut ob = Outbox::new(8);
        let d = device(1);
        let first = ob.push(d, msg(1)).unwrap().unwrap();
        ob.sent(d, ids[0], first);
        ob.push(d, msg(2)).unwrap();
        ob.push(d, msg(3)).unwrap();
        let settled = ob.failed(ids[0]).unwrap();
        assert_eq!(settled.done.token, 1);
        assert_eq!(
            settled.dropped.iter().map(|o| o.token).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(ob.len(&d), 0);
        assert!(ob.acked(ids[0]).is_none(), "a settled request settles once");
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let ids = request_ids(1);
        let mut ob = Outbox::new(1);
        let d = device(1);
        let first = ob.push(d, msg(1)).unwrap().unwrap();
        ob.sent(d, ids[0], first);
        ob.push(d, msg(2)).unwrap();
        assert_eq!(ob.push(d, msg(3)).unwrap_err().token, 3);
    }
}
