//! Helpers for multi-node tests: real nodes on loopback TCP, each with its own temporary
//! data directory, and bare swarms that speak vouchnet's wire protocol for hostile peers.
//! Every wait has a timeout and waits for an event or a condition, never for a duration.
#![allow(dead_code)]

use futures::StreamExt;
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol, Swarm};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use vouchnet_node::events::{Envelope, NodeEvent, Subscription};
use vouchnet_node::network::codec::{FrameCodec, WireFrame, PAIR_PROTOCOL};
use vouchnet_node::views::{DeviceView, PairingRequestView};
use vouchnet_node::{DataDir, NodeConfig, NodeOptions, RunningNode};
use vouchnet_protocol::{DeviceId, Frame, Limits, Message};

#[path = "../../../storage/tests/support/preload.rs"]
pub mod preload;
#[path = "../../../storage/tests/support/tmpfs.rs"]
pub mod tmpfs;

/// Long enough for any step on a loaded 2-core machine; a test that needs it has failed.
pub const STEP: Duration = Duration::from_secs(20);

/// A node with its data directory.
pub struct TestNode {
    pub node: Option<RunningNode>,
    pub dir: TempDir,
    pub name: String,
    pub config: NodeConfig,
}

pub fn config(name: &str) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        ..NodeConfig::default()
    }
}

impl TestNode {
    pub async fn start(name: &str) -> TestNode {
        Self::start_with(config(name)).await
    }

    pub async fn start_with(config: NodeConfig) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let node = vouchnet_node::start(NodeOptions {
            data_dir: DataDir::at(dir.path()),
            config: config.clone(),
        })
        .await
        .expect("node starts");
        TestNode {
            node: Some(node),
            dir,
            name: config.name.clone(),
            config,
        }
    }

    /// Starts the node again on the same data directory (after [`Self::stop`]).
    pub async fn restart(&mut self) {
        assert!(self.node.is_none(), "stop the node first");
        let node = vouchnet_node::start(NodeOptions {
            data_dir: DataDir::at(self.dir.path()),
            config: self.config.clone(),
        })
        .await
        .expect("node restarts");
        self.node = Some(node);
    }

    pub async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    /// Drops the node without a goodbye, as a crash or a pulled cable would.
    pub async fn kill(&mut self) {
        if let Some(n) = self.node.take() {
            n.abort().await;
        }
    }

    pub fn n(&self) -> &RunningNode {
        self.node.as_ref().expect("node is running")
    }

    pub fn id(&self) -> DeviceId {
        self.n().device_id
    }

    pub fn addr(&self) -> Multiaddr {
        self.n().dial_addr().expect("listening")
    }

    pub fn subscribe(&self) -> Subscription {
        self.n().client.events().subscribe(Some(0))
    }

    pub async fn devices(&self) -> Vec<DeviceView> {
        self.n().client.devices().await.unwrap()
    }

    pub async fn pairings(&self) -> Vec<PairingRequestView> {
        self.n().client.pair_requests().await.unwrap()
    }

    /// The code this node shows for `peer`, once it has one.
    pub async fn code_for(&self, peer: DeviceId) -> String {
        let peer = peer.to_string();
        eventually(|| async {
            self.pairings()
                .await
                .into_iter()
                .find(|p| p.device_id == peer)
                .and_then(|p| p.code)
        })
        .await
    }

    pub async fn audit_len(&self) -> usize {
        self.n().client.audit().await.unwrap().len()
    }
}

/// Polls `f` until it returns `Some`, for at most [`STEP`]. Yields between polls (these
/// are reads of another task's state, which changes only through events).
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached in time")
}

/// The next event of `sub` matching `pred`, within [`STEP`].
pub async fn next_event(
    sub: &mut Subscription,
    pred: impl Fn(&NodeEvent) -> bool,
) -> Arc<Envelope> {
    while let Some(env) = (!sub.backlog.is_empty()).then(|| sub.backlog.remove(0)) {
        if pred(&env.event) {
            return env;
        }
    }
    tokio::time::timeout(STEP, async {
        loop {
            let env = sub.live.recv().await.expect("event stream open");
            if pred(&env.event) {
                return env;
            }
        }
    })
    .await
    .expect("event not seen in time")
}

pub fn pairing_failed(device: DeviceId) -> impl Fn(&NodeEvent) -> bool {
    let id = device.to_string();
    move |e| matches!(e, NodeEvent::PairingFailed { device_id, .. } if *device_id == id)
}

pub fn device_changed(device: DeviceId, online: bool) -> impl Fn(&NodeEvent) -> bool {
    let id = device.to_string();
    move |e| match e {
        NodeEvent::ResourceChanged {
            resource: vouchnet_node::events::ResourceKind::Device,
            id: i,
            data,
        } => *i == id && data["online"] == online,
        _ => false,
    }
}

/// Pairs `a` (initiator) and `b`: request, read both codes, each side types the other's.
pub async fn pair(a: &TestNode, b: &TestNode) {
    confirm_pairing(a, b).await;
    wait_listed(a, b.id()).await;
    wait_listed(b, a.id()).await;
}

/// Waits until `me` lists `device` among its devices.
pub async fn wait_listed(me: &TestNode, device: DeviceId) {
    let id = device.to_string();
    eventually(|| async {
        me.devices()
            .await
            .iter()
            .any(|d| d.device_id == id)
            .then_some(())
    })
    .await;
}

/// `a` asks `b` to pair; both codes are read, checked equal, and each user types the other
/// screen's code. Returns once both answers are given (the pairing may still be finishing).
pub async fn confirm_pairing(a: &TestNode, b: &TestNode) {
    a.n()
        .client
        .pair_request(b.id(), Some(b.addr()))
        .await
        .unwrap();
    let code_a = a.code_for(b.id()).await;
    let code_b = b.code_for(a.id()).await;
    assert_eq!(code_a, code_b);
    a.n()
        .client
        .pair_accept(b.id(), Some(code_b))
        .await
        .unwrap();
    // "paired" or "waiting": the first confirmation may still be on its way.
    b.n()
        .client
        .pair_accept(a.id(), Some(code_a))
        .await
        .unwrap();
}

/// Waits until `a` lists `b` with the given online state.
pub async fn wait_online(a: &TestNode, b: DeviceId, online: bool) {
    let id = b.to_string();
    eventually(|| async {
        a.devices()
            .await
            .iter()
            .any(|d| d.device_id == id && d.online == online)
            .then_some(())
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// Bare swarms for hostile or foreign peers.

#[derive(NetworkBehaviour)]
pub struct RawBehaviour {
    pub rr: request_response::Behaviour<FrameCodec>,
}

/// A swarm with a fresh key that speaks request-response on `protocol` with the node's
/// codec, and nothing else.
pub fn raw_swarm(protocol: StreamProtocol) -> Swarm<RawBehaviour> {
    raw_swarm_with_frame_limit(protocol, Limits::default().max_frame * 4)
}

pub fn raw_swarm_with_frame_limit(
    protocol: StreamProtocol,
    max_frame: usize,
) -> Swarm<RawBehaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| RawBehaviour {
            rr: request_response::Behaviour::with_codec(
                FrameCodec::new(max_frame),
                [(protocol, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(STEP),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// What came back for a raw request.
#[derive(Debug)]
pub enum RawOutcome {
    Response(Frame),
    /// The stream ended without a decodable frame (the node dropped it).
    NoFrame(vouchnet_protocol::DecodeError),
    Failure(OutboundFailure),
}

/// Sends `frames` from `swarm` to the node at `addr` (all at once) and collects the
/// outcome of each, in the order sent.
pub async fn raw_send(
    swarm: &mut Swarm<RawBehaviour>,
    addr: &Multiaddr,
    frames: Vec<WireFrame>,
) -> Vec<RawOutcome> {
    let peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("address without /p2p"),
    };
    swarm.add_peer_address(peer, addr.clone());
    let ids: Vec<_> = frames
        .into_iter()
        .map(|f| swarm.behaviour_mut().rr.send_request(&peer, f))
        .collect();
    let mut results: Vec<Option<RawOutcome>> = ids.iter().map(|_| None).collect();
    tokio::time::timeout(STEP, async {
        while results.iter().any(Option::is_none) {
            if let SwarmEvent::Behaviour(RawBehaviourEvent::Rr(ev)) = swarm.select_next_some().await
            {
                let (id, outcome) = match ev {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } => match response.decode(&Limits::default()) {
                        Ok(frame) => (request_id, RawOutcome::Response(frame)),
                        Err(e) => (request_id, RawOutcome::NoFrame(e)),
                    },
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } => (request_id, RawOutcome::Failure(error)),
                    _ => continue,
                };
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    results[i] = Some(outcome);
                }
            }
        }
    })
    .await
    .expect("raw requests settled in time");
    results.into_iter().map(Option::unwrap).collect()
}

pub fn frame(msg: Message) -> WireFrame {
    WireFrame::encode(&Frame::new(msg))
}

pub fn is_ack(o: &RawOutcome) -> bool {
    matches!(
        o,
        RawOutcome::Response(Frame {
            msg: Message::Ack(_),
            ..
        })
    )
}

pub const PAIR: StreamProtocol = PAIR_PROTOCOL;
