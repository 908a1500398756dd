//! Helpers for the proxy-pairing tests: nodes started with a tuned clock, vouching and
//! waiting for sessions and devices, and raw libp2p peers that speak vouchnet's wire
//! protocol with a key the test controls (for forged, replayed, stale and misaddressed
//! messages). Every wait is for an event or a condition, with a timeout.
#![allow(dead_code)]

use crate::common::*;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::network::codec::{FrameCodec, WireFrame, PAIR_PROTOCOL, PROXY_PAIR_PROTOCOL};
use vouchnet_node::sessions::SessionView;
use vouchnet_node::views::DeviceView;
use vouchnet_node::{DataDir, NodeConfig, NodeOptions, Tuning};
use vouchnet_protocol::keys::key_proof_mac;
use vouchnet_protocol::messages::{
    AcceptedHow, Ack, Decision, DisplayName, KeyProofResponse, SignedResponse, VouchResponse,
};
use vouchnet_protocol::signing::Signed;
use vouchnet_protocol::vouch::RESPONSE_VERSION;
use vouchnet_protocol::{
    DeviceId, DeviceKeypair, Frame, Limits, Message, SessionId, SymmetricKey, Timestamp, TxId,
    VouchNonce,
};
use vouchnet_storage::{DirectPairing, Store};

/// A test configuration with a short queue poll and response timeout.
pub fn fast(name: &str) -> NodeConfig {
    NodeConfig {
        queue_poll_interval: 1,
        queue_backoff_base: 1,
        ..config(name)
    }
}

/// Starts a node on a fresh data directory with `tuning`.
pub async fn start_tuned(config: NodeConfig, tuning: Tuning) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, config, tuning).await
}

/// Starts a node on the data directory `dir` (which may hold a prepared store).
pub async fn start_in(dir: tempfile::TempDir, config: NodeConfig, tuning: Tuning) -> TestNode {
    let node = vouchnet_node::start_tuned(
        NodeOptions {
            data_dir: DataDir::at(dir.path()),
            config: config.clone(),
        },
        tuning,
    )
    .await
    .expect("node starts");
    TestNode {
        node: Some(node),
        dir,
        name: config.name.clone(),
        config,
    }
}

/// Vouches for `vouchee` from `voucher` to `targets`; returns the session id.
pub async fn vouch(voucher: &TestNode, vouchee: &TestNode, targets: &[&TestNode]) -> SessionId {
    let out = voucher
        .n()
        .client
        .vouch(
            vouchee.id(),
            targets.iter().map(|t| t.id()).collect(),
            false,
        )
        .await
        .expect("vouch");
    SessionId::from_hex(&out.session_id).unwrap()
}

/// `node`'s view of session `id`.
pub async fn session(node: &TestNode, id: SessionId) -> SessionView {
    vouchnet_node::sessions::view(&node.n().client.session(id).await.unwrap())
}

/// Waits until `node`'s session `id` satisfies `pred`.
pub async fn wait_session(
    node: &TestNode,
    id: SessionId,
    pred: impl Fn(&SessionView) -> bool,
) -> SessionView {
    eventually(|| async {
        let s = session(node, id).await;
        pred(&s).then_some(s)
    })
    .await
}

/// The status and reason of `target` in a session view.
pub fn status_of(s: &SessionView, target: DeviceId) -> (String, Option<String>) {
    let v = s
        .vouches
        .iter()
        .find(|v| v.device_id == target.to_string())
        .unwrap_or_else(|| panic!("{target} is not a target of {s:?}"));
    (v.status.clone(), v.reason.clone())
}

/// Waits until the session is final and returns the status of `target`.
pub async fn final_status(
    node: &TestNode,
    id: SessionId,
    target: DeviceId,
) -> (String, Option<String>) {
    let s = wait_session(node, id, |s| s.state == "completed").await;
    status_of(&s, target)
}

/// `node`'s record of `device`, once it has one.
pub async fn wait_device(node: &TestNode, device: DeviceId) -> DeviceView {
    let id = device.to_string();
    eventually(|| async { node.devices().await.into_iter().find(|d| d.device_id == id) }).await
}

/// Whether `node` lists `device`.
pub async fn has_device(node: &TestNode, device: DeviceId) -> bool {
    let id = device.to_string();
    node.devices().await.iter().any(|d| d.device_id == id)
}

/// The event predicate "vouching session `id` changed to `state`".
pub fn session_state(id: SessionId, state: &'static str) -> impl Fn(&NodeEvent) -> bool {
    let hex = id.to_hex();
    move |e| match e {
        NodeEvent::ResourceChanged {
            resource: ResourceKind::VouchingSession,
            id,
            data,
        } => *id == hex && data["state"] == state,
        _ => false,
    }
}

/// The event predicate "a proxy message from `from` was refused for `reason`".
pub fn refused(from: DeviceId, reason: &'static str) -> impl Fn(&NodeEvent) -> bool {
    let from = from.to_string();
    move |e| matches!(e, NodeEvent::ProxyMessageRefused { from: f, reason: r, .. } if *f == from && r == reason)
}

/// Audit entries of `node` whose one-line description contains `needle`.
pub async fn audit_count(node: &TestNode, needle: &str) -> usize {
    node.n()
        .client
        .audit()
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event.contains(needle))
        .count()
}

/// Waits until each of `nodes` audited one rekey: the proxied key it shares with the
/// other was replaced by one the voucher never saw.
pub async fn wait_rekeyed(nodes: &[&TestNode]) {
    for n in nodes {
        eventually(|| async { (audit_count(n, "replaced by a rekey").await == 1).then_some(()) })
            .await;
    }
}

/// `from` sends `to` a sealed text, acknowledged; it is then the last message in `to`'s
/// inbox, from `from`.
pub async fn send_sealed(from: &TestNode, to: &TestNode, text: &str) {
    from.n()
        .client
        .send_text(to.id(), text.to_owned())
        .await
        .unwrap();
    let inbox = to.n().client.inbox().await.unwrap();
    let last = inbox.last().expect("a message arrived");
    assert_eq!(
        (last.from.as_str(), last.text.as_str()),
        (from.id().to_string().as_str(), text)
    );
}

/// Pairs `a` and `b` and waits until each sees the other online.
pub async fn pair_online(a: &TestNode, b: &TestNode) {
    pair(a, b).await;
    wait_online(a, b.id(), true).await;
    wait_online(b, a.id(), true).await;
}

// ------------------------------------------------------------------------------------------
// Raw peers: a libp2p swarm with a key the test holds, registered in a node's store as a
// directly paired device before the node starts.

/// A device key for a raw peer, from a seed.
pub fn keypair(seed: u64) -> DeviceKeypair {
    DeviceKeypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed))
}

/// A fresh random key.
pub fn random_key(seed: u64) -> SymmetricKey {
    let mut b = [0u8; 32];
    rand_chacha::ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut b);
    SymmetricKey::from_bytes(b)
}

/// A data directory whose node already lists each `(peer, key, name)` as a directly
/// paired, trusted device. Returns the directory and the node's device id.
pub fn prepared_dir(
    peers: &[(&DeviceKeypair, &SymmetricKey, &str)],
) -> (tempfile::TempDir, DeviceId) {
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = DataDir::at(dir.path()).load_or_create_identity().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (i, (kp, key, name)) in peers.iter().enumerate() {
        store
            .pair_direct(&DirectPairing {
                device_id: kp.device_id(),
                public_key: kp.public(),
                name: DisplayName::new(*name).unwrap(),
                tx_id: TxId([i as u8 + 1; 16]),
                session_key: (*key).clone(),
                our_mac: [1; 32],
                their_mac: [2; 32],
                at: vouchnet_node::clock::now(),
            })
            .unwrap();
    }
    (dir, me.device_id())
}

#[derive(NetworkBehaviour)]
pub struct RawPeerBehaviour {
    pub pair: request_response::Behaviour<FrameCodec>,
    pub proxy: request_response::Behaviour<FrameCodec>,
}

enum RawCmd {
    Send {
        to: PeerId,
        addr: Option<Multiaddr>,
        frame: WireFrame,
        reply: oneshot::Sender<RawOutcome>,
    },
}

/// A raw peer running in its own task: it acknowledges every request, answers key-proof
/// challenges from the nodes it holds a key for, and hands every other inbound frame
/// (challenges it holds no key for among them) to the test.
pub struct RawPeer {
    pub keypair: DeviceKeypair,
    pub id: DeviceId,
    cmd: mpsc::UnboundedSender<RawCmd>,
    pub inbound: mpsc::UnboundedReceiver<(DeviceId, Frame)>,
}

impl RawPeer {
    /// A raw peer with key `keypair`, holding `keys` (pairing keys by node).
    pub fn spawn(keypair: DeviceKeypair, keys: Vec<(DeviceId, SymmetricKey)>) -> RawPeer {
        let id = keypair.device_id();
        let proto = |p| {
            request_response::Behaviour::with_codec(
                FrameCodec::default(),
                [(p, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(STEP),
            )
        };
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| RawPeerBehaviour {
                pair: proto(PAIR_PROTOCOL),
                proxy: proto(PROXY_PAIR_PROTOCOL),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let keys: HashMap<DeviceId, SymmetricKey> = keys.into_iter().collect();
        tokio::spawn(run_raw(swarm, id, keys, cmd_rx, in_tx));
        RawPeer {
            keypair,
            id,
            cmd: cmd_tx,
            inbound: in_rx,
        }
    }

    /// Sends `msg` to the node at `addr` (on the message's protocol); returns the answer.
    pub async fn send(&self, addr: &Multiaddr, msg: Message) -> RawOutcome {
        let to = match addr.iter().last() {
            Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
            _ => panic!("address without /p2p"),
        };
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(RawCmd::Send {
                to,
                addr: Some(addr.clone()),
                frame: WireFrame::encode(&Frame::new(msg)),
                reply: tx,
            })
            .unwrap();
        tokio::time::timeout(STEP, rx)
            .await
            .expect("raw send settled in time")
            .unwrap()
    }

    /// The next inbound frame matching `pred`, within [`STEP`].
    pub async fn next(&mut self, pred: impl Fn(&Message) -> bool) -> (DeviceId, Message) {
        tokio::time::timeout(STEP, async {
            loop {
                let (from, frame) = self.inbound.recv().await.expect("raw peer running");
                if pred(&frame.msg) {
                    return (from, frame.msg);
                }
            }
        })
        .await
        .expect("frame not received in time")
    }

    /// The signed response that arrives next, decoded.
    pub async fn next_response(&mut self) -> (SignedResponse, VouchResponse) {
        let (_, msg) = self
            .next(|m| matches!(m, Message::ProxyPairingResponse(_)))
            .await;
        let Message::ProxyPairingResponse(r) = msg else {
            unreachable!()
        };
        let decoded = r.response.decode_unverified().unwrap();
        (r.response, decoded)
    }
}

fn is_proxy(msg: &Message) -> bool {
    !matches!(
        msg,
        Message::PairingRequest(_)
            | Message::PairingKey(_)
            | Message::PairingReveal(_)
            | Message::PairingConfirm(_)
            | Message::PairingCancel(_)
            | Message::KeyProofChallenge(_)
            | Message::KeyProofResponse(_)
            | Message::SealedText(_)
            | Message::Ping(_)
            | Message::Ack(_)
            | Message::Error(_)
    )
}

async fn run_raw(
    mut swarm: Swarm<RawPeerBehaviour>,
    me: DeviceId,
    keys: HashMap<DeviceId, SymmetricKey>,
    mut cmds: mpsc::UnboundedReceiver<RawCmd>,
    inbound: mpsc::UnboundedSender<(DeviceId, Frame)>,
) {
    let mut pending: HashMap<
        (bool, request_response::OutboundRequestId),
        oneshot::Sender<RawOutcome>,
    > = HashMap::new();
    let ack = || WireFrame::encode(&Frame::new(Message::Ack(Ack {})));
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(RawCmd::Send { to, addr, frame, reply }) => {
                    if let Some(a) = addr {
                        swarm.add_peer_address(to, a);
                    }
                    let proxy = frame
                        .decode(&Limits::default())
                        .map(|f| is_proxy(&f.msg))
                        .unwrap_or(true);
                    let id = if proxy {
                        swarm.behaviour_mut().proxy.send_request(&to, frame)
                    } else {
                        swarm.behaviour_mut().pair.send_request(&to, frame)
                    };
                    pending.insert((proxy, id), reply);
                }
            },
            ev = swarm.select_next_some() => {
                let (proxy, ev) = match ev {
                    SwarmEvent::Behaviour(RawPeerBehaviourEvent::Pair(e)) => (false, e),
                    SwarmEvent::Behaviour(RawPeerBehaviourEvent::Proxy(e)) => (true, e),
                    _ => continue,
                };
                match ev {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            let beh = if proxy { &mut swarm.behaviour_mut().proxy } else { &mut swarm.behaviour_mut().pair };
                            let _ = beh.send_response(channel, ack());
                            let Ok(frame) = request.decode(&Limits::default()) else { continue };
                            let Ok(from) = DeviceId::from_peer_id(peer) else { continue };
                            if let Message::KeyProofChallenge(c) = &frame.msg {
                                if let Some(key) = keys.get(&from) {
                                    let mac = key_proof_mac(key, &c.challenge, &me, &from);
                                    let answer = Message::KeyProofResponse(KeyProofResponse { challenge: c.challenge, mac });
                                    swarm.behaviour_mut().pair.send_request(&peer, WireFrame::encode(&Frame::new(answer)));
                                    continue;
                                }
                                // Held for the test, which answers it when it chooses.
                            }
                            let _ = inbound.send((from, frame));
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(r) = pending.remove(&(proxy, request_id)) {
                                let outcome = match response.decode(&Limits::default()) {
                                    Ok(f) => RawOutcome::Response(f),
                                    Err(e) => RawOutcome::NoFrame(e),
                                };
                                let _ = r.send(outcome);
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { request_id, error, .. } => {
                        if let Some(r) = pending.remove(&(proxy, request_id)) {
                            let _ = r.send(RawOutcome::Failure(error));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A response signed by `keypair` as responder `responder`, answering a vouch.
#[allow(clippy::too_many_arguments)]
pub fn signed_response(
    keypair: &DeviceKeypair,
    responder: DeviceId,
    session_id: SessionId,
    vouch_nonce: VouchNonce,
    vouch_digest: [u8; 32],
    voucher: DeviceId,
    vouchee: DeviceId,
    decision: Decision,
) -> SignedResponse {
    Signed::sign(
        keypair,
        &VouchResponse {
            v: RESPONSE_VERSION,
            session_id,
            vouch_nonce,
            vouch_digest,
            responder,
            voucher,
            vouchee,
            decision,
            decided_at: Timestamp::from_millis(vouchnet_node::clock::now().as_millis()),
        },
    )
}

/// An automatic acceptance.
pub fn accepted() -> Decision {
    Decision::Accepted {
        how: AcceptedHow::Automatic,
    }
}
