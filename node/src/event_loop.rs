//! The event loop: the one task that owns the swarm, the protocol machines and the store.
//!
//! It waits on three things, and handles one at a time:
//! - **swarm events**: connections opening and closing (presence), frames arriving (decoded
//!   here, attributed to the *connection's* device id, and handed to the machine whose
//!   message it is), acknowledgements of frames sent;
//! - **commands** from [`crate::client::Client`]s (the control API, the demo, tests);
//! - **timers**: the earliest deadline any machine asked for, and the redial schedule.
//!
//! It makes no protocol decision. The pairing machine decides what to send, what to show
//! and when a pairing is complete; the key-proof machine decides whether a device proved
//! its key; the vouching, receiving, vouchee and rekey machines decide proxy pairing (their
//! drivers are in [`crate::proxy`], as further `impl EventLoop` blocks); the store decides
//! what a durable change is. This loop carries frames in and applies outputs: sends through
//! the [`Outbox`]es (one per request-response protocol), prompts and resource changes
//! through the [`EventHub`], records through the [`Store`] — always the records first.
//!
//! A frame is answered (`Ack`, or `ErrorReply` when it never reached a machine: rate
//! limited, undecodable, wrong version, not paired) as soon as it was handled, and any
//! protocol answer goes out as a new request, so no stream stays open while a person
//! decides.

use crate::addrbook::AddressBook;
use crate::client::{Command, Reply};
use crate::clock::{self, Clock};
use crate::config::OnVoucherRemoved;
use crate::error::NodeError;
use crate::events::{EventHub, NodeEvent, ResourceKind};
use crate::network::codec::WireFrame;
use crate::network::presence::{Presence, Redial, Transition};
use crate::network::ratelimit::RateLimiter;
use crate::network::{Behaviour, BehaviourEvent};
use crate::outbox::{Outbox, Outgoing, Settled};
use crate::peer::{device_of, peer_of};
use crate::proxy::ProxyState;
use crate::views::{
    direction_name, AcceptOutcome, AuditEntryView, AuditVerifyView, DeviceView, InboxMessage,
    NodeInfo, PairRequestOutcome, PairingRequestView, PeerView,
};
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, mdns, Multiaddr, PeerId, Swarm};
use rand_core::OsRng;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vouchnet_protocol::keyproof::{KeyProofError, KeyProofManager};
use vouchnet_protocol::keys::{open_text, seal_text, KeyOpError};
use vouchnet_protocol::messages::{
    Ack, CancelReason, ErrorCode, ErrorReply, KeyProofChallenge, KeyProofResponse, PairingCancel,
    Ping, SealedText,
};
use vouchnet_protocol::model::QueueEntry;
use vouchnet_protocol::model::TrustLevel;
use vouchnet_protocol::pairing::{
    Direction, PairingCompleted, PairingFailure, PairingManager, PairingOutput, PairingStage,
};
use vouchnet_protocol::SessionId;
use vouchnet_protocol::{
    DecodeError, DeviceId, DeviceKeypair, Frame, Limits, Message, ProtocolConfig, PROTOCOL_VERSION,
};
use vouchnet_storage::{
    AuditEvent, DeviceRecord, DirectPairing, InboxRecord, QueueRef, Store, StoreFailure,
};

/// Texts kept in the inbox (stored; the oldest is dropped first).
pub const INBOX_CAPACITY: NonZeroU64 = NonZeroU64::new(256).unwrap();
/// Most messages waiting behind the one in flight to one device.
const OUTBOX_PER_DEVICE: usize = 32;
/// Longest the loop sleeps without a deadline, so nothing can wedge it forever.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Most swarm events handled in one go after the one the loop woke for (see
/// [`EventLoop::run`]).
const DRAIN_MAX: usize = 64;

/// Peers whose rate-limit state is kept.
const RATE_LIMIT_PEERS: usize = 4096;

/// Which request-response protocol a frame came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Pair,
    ProxyPair,
}

impl Proto {
    /// The protocol a message travels on: proxy pairing and rekey on
    /// `/vouchnet/proxy-pair/1` (so that a node without it answers "unsupported"), the rest
    /// on `/vouchnet/pair/1`.
    pub(crate) fn of(msg: &Message) -> Proto {
        match msg {
            Message::ProxyPairingRequest(_)
            | Message::ProxyPairingPending(_)
            | Message::ProxyPairingResponse(_)
            | Message::ProxyPairingComplete(_)
            | Message::RekeyInit(_)
            | Message::RekeyAccept(_)
            | Message::RekeyConfirm(_) => Proto::ProxyPair,
            _ => Proto::Pair,
        }
    }
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// The device answered with an `ErrorReply`.
    Refused(ErrorCode),
    /// The device does not speak the message's protocol (a node without proxy pairing).
    Unsupported,
    /// It could not be reached, the stream failed, or the answer made no sense.
    Failed(String),
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undelivered::Refused(code) => write!(f, "refused: {code:?}"),
            Undelivered::Unsupported => f.write_str("protocol not supported by the device"),
            Undelivered::Failed(why) => f.write_str(why),
        }
    }
}

/// What to do when a message is acknowledged or fails.
#[derive(Debug)]
pub(crate) enum Token {
    /// Nothing beyond the message's own kind.
    None,
    /// Answer a command.
    Reply(Reply<()>),
    /// Answer a ping with the time from when the ping went out to its `Ack`.
    Ping {
        reply: Reply<Duration>,
        /// When it was handed to the swarm (set at dispatch).
        sent: Option<tokio::time::Instant>,
    },
    /// A vouch to `target`; `queued` is the queue entry it was delivered from, if any (it
    /// was removed from the queue when the target became Waiting, and comes back with one
    /// more attempt counted if the delivery fails).
    Vouch {
        session: SessionId,
        target: DeviceId,
        queued: Option<QueueEntry>,
    },
    /// A notification to the vouchee listing `told`; `queued` is the queue entry it was
    /// delivered from, if any (removed once acknowledged).
    Notify {
        session: SessionId,
        told: Vec<DeviceId>,
        queued: Option<QueueRef>,
    },
    /// The rekey confirmation to `peer`: once it is acknowledged, prove the new key.
    RekeyConfirm { peer: DeviceId },
}

/// How the event loop is set up.
#[derive(Debug)]
pub struct LoopOptions {
    /// This device's key: vouches and vouch responses are signed with it.
    pub keypair: DeviceKeypair,
    /// The wall clock the machines read.
    pub clock: Clock,
    /// Offer and use proxy pairing (`proxy_pairing`).
    pub proxy_pairing: bool,
    /// What to do with the devices a removed voucher vouched for.
    pub on_voucher_removed: OnVoucherRemoved,
    /// Deliver what the offline queue holds for a device the moment it comes online (as
    /// well as at each poll). Only tests turn it off, to watch the poll alone.
    pub wake_queue_on_presence: bool,
    /// This device's display name.
    pub name: vouchnet_protocol::messages::DisplayName,
    /// The machines' parameters.
    pub protocol: ProtocolConfig,
    /// How long a paired device has to answer a key-proof challenge.
    pub key_proof_timeout: Duration,
    /// Multiaddresses to dial at start.
    pub peers: Vec<Multiaddr>,
    /// First redial delay, and the longest.
    pub redial: (Duration, Duration),
    /// Per-peer limits: frames (burst, per second) and pairing requests (burst, per second).
    pub rate_limits: RateLimits,
}

/// Per-peer rate limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Frames any one device may send in a burst.
    pub frame_burst: u32,
    /// Frames any one device may send per second, on average.
    pub frames_per_second: f64,
    /// Pairing requests any one device may send in a burst.
    pub pairing_burst: u32,
    /// Pairing requests any one device may send per second, on average.
    pub pairings_per_second: f64,
}

/// Why the event loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopExit {
    /// It was asked to stop ([`crate::client::Client::shutdown`]), or every client handle
    /// was dropped.
    Stopped,
    /// The store could not make a write durable (the disk is full, or failed) and refuses
    /// every read and write from then on; opening it again, at the next start, reads what
    /// the disk holds. The error of the failed write, and whether the disk was full.
    StoreFailed(StoreFailure),
    /// The loop's task panicked or was cancelled.
    Crashed(String),
}

/// What to do about a store that failed: a full disk needs room; any other failure (an I/O
/// error: a failing disk) needs the disk looked at.
pub fn store_failure_advice(failure: &StoreFailure) -> &'static str {
    if failure.disk_full {
        "start it again once the disk has room"
    } else {
        "check the disk, and start it again once it works"
    }
}

/// The event loop. Build with [`EventLoop::new`], then `tokio::spawn(event_loop.run())`.
///
/// The proxy-pairing flows (`crate::proxy`) are further `impl EventLoop` blocks, hence the
/// crate-visible fields.
pub struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) hub: EventHub,
    pub(crate) store: Store,
    pub(crate) me: DeviceId,
    pub(crate) keypair: DeviceKeypair,
    pub(crate) clock: Clock,
    pub(crate) name: vouchnet_protocol::messages::DisplayName,
    pub(crate) protocol: ProtocolConfig,
    pub(crate) limits: Limits,
    pub(crate) pairing: PairingManager,
    pub(crate) keyproof: KeyProofManager,
    pub(crate) presence: Presence,
    pub(crate) redial: Redial,
    pub(crate) addrbook: AddressBook,
    /// Messages on `/vouchnet/pair/1`, one in flight per device.
    pub(crate) outbox: Outbox<Token>,
    /// Messages on `/vouchnet/proxy-pair/1`, ordered apart: a device that does not speak
    /// it fails those messages without taking the pairing messages down with them.
    pub(crate) proxy_outbox: Outbox<Token>,
    /// Proxy pairing's in-memory state (prompts, deadlines, rekeys).
    pub(crate) proxy: ProxyState,
    /// Targets' answers handled but not yet stored (see [`EventLoop::run`]).
    pub(crate) answers: crate::proxy::voucher::AnswerBatch,
    pub(crate) proxy_enabled: bool,
    pub(crate) on_voucher_removed: OnVoucherRemoved,
    pub(crate) wake_queue_on_presence: bool,
    /// When the offline queue is polled next.
    pub(crate) next_queue_poll: Instant,
    pub(crate) frame_limiter: RateLimiter,
    pub(crate) pair_limiter: RateLimiter,
    pub(crate) nearby: BTreeMap<PeerId, BTreeSet<Multiaddr>>,
    pub(crate) dialed: BTreeMap<DeviceId, Multiaddr>,
    /// Listen addresses connected devices announced (identify), kept until they disconnect
    /// so that a device paired on this connection can be redialled there later.
    pub(crate) announced: BTreeMap<DeviceId, Vec<Multiaddr>>,
    pub(crate) listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pub(crate) startup_peers: Vec<Multiaddr>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

pub(crate) fn ack() -> WireFrame {
    WireFrame::encode(&Frame::new(Message::Ack(Ack {})))
}

pub(crate) fn error_reply(code: ErrorCode) -> WireFrame {
    WireFrame::encode(&Frame::new(Message::Error(ErrorReply { code })))
}

/// A stable identifier for a pairing failure, for events and the CLI.
pub fn failure_name(f: PairingFailure) -> String {
    match f {
        PairingFailure::UserRejected => "user_rejected".into(),
        PairingFailure::CodeMismatch => "code_mismatch".into(),
        PairingFailure::CommitmentMismatch => "commitment_mismatch".into(),
        PairingFailure::KeyConfirmationFailed => "key_confirmation_failed".into(),
        PairingFailure::InvalidKeyExchange => "invalid_key_exchange".into(),
        PairingFailure::Timeout => "timeout".into(),
        PairingFailure::ConnectionLost => "connection_lost".into(),
        PairingFailure::Aborted => "aborted".into(),
        PairingFailure::CancelledByPeer(r) => {
            format!("cancelled_by_peer:{}", cancel_reason_name(r))
        }
        other => format!("{other:?}"),
    }
}

fn cancel_reason_name(r: CancelReason) -> &'static str {
    match r {
        CancelReason::UserRejected => "user_rejected",
        CancelReason::CommitmentMismatch => "commitment_mismatch",
        CancelReason::KeyConfirmationFailed => "key_confirmation_failed",
        CancelReason::Timeout => "timeout",
        CancelReason::AlreadyInProgress => "already_in_progress",
        CancelReason::RateLimited => "rate_limited",
        CancelReason::UnexpectedMessage => "unexpected_message",
        CancelReason::UnsupportedMethod => "unsupported_method",
        CancelReason::InvalidKeyExchange => "invalid_key_exchange",
        CancelReason::Aborted => "aborted",
        _ => "other",
    }
}

fn key_proof_error_name(e: &KeyProofError) -> &'static str {
    match e {
        KeyProofError::BadMac => "bad_mac",
        KeyProofError::WrongChallenge => "wrong_challenge",
        KeyProofError::Expired { .. } => "timeout",
        KeyProofError::NoOutstandingChallenge { .. } => "unsolicited",
        KeyProofError::SelfChallenge => "self",
        _ => "other",
    }
}

fn is_pairing_message(msg: &Message) -> bool {
    matches!(
        msg,
        Message::PairingRequest(_)
            | Message::PairingKey(_)
            | Message::PairingReveal(_)
            | Message::PairingConfirm(_)
            | Message::PairingCancel(_)
    )
}

/// `addr` without a trailing `/p2p/<id>`.
fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

impl EventLoop {
    /// Wires a loop around a built swarm (already listening) and an open store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        hub: EventHub,
        store: Store,
        addrbook: AddressBook,
        listen_addrs: watch::Sender<Vec<Multiaddr>>,
        opts: LoopOptions,
    ) -> Result<EventLoop, NodeError> {
        let me = device_of(swarm.local_peer_id()).expect("the swarm's identity is the device key");
        debug_assert_eq!(me, opts.keypair.device_id());
        let pairing = PairingManager::new(me, opts.name.clone(), opts.protocol.clone());
        let proxy = ProxyState::load(me, &store)?;
        let next_queue_poll = Instant::now() + opts.protocol.queue.poll_interval;
        let mut el = EventLoop {
            swarm,
            commands,
            hub,
            store,
            me,
            keypair: opts.keypair,
            clock: opts.clock,
            proxy,
            answers: Default::default(),
            proxy_outbox: Outbox::new(OUTBOX_PER_DEVICE),
            proxy_enabled: opts.proxy_pairing,
            on_voucher_removed: opts.on_voucher_removed,
            wake_queue_on_presence: opts.wake_queue_on_presence,
            next_queue_poll,
            name: opts.name,
            limits: Limits::default(),
            pairing,
            keyproof: KeyProofManager::new(me, opts.key_proof_timeout),
            presence: Presence::default(),
            redial: Redial::new(opts.redial.0, opts.redial.1),
            addrbook,
            outbox: Outbox::new(OUTBOX_PER_DEVICE),
            frame_limiter: RateLimiter::new(
                opts.rate_limits.frame_burst,
                opts.rate_limits.frames_per_second,
                RATE_LIMIT_PEERS,
            ),
            pair_limiter: RateLimiter::new(
                opts.rate_limits.pairing_burst,
                opts.rate_limits.pairings_per_second,
                RATE_LIMIT_PEERS,
            ),
            nearby: BTreeMap::new(),
            dialed: BTreeMap::new(),
            announced: BTreeMap::new(),
            listen_addrs,
            protocol: opts.protocol,
            startup_peers: opts.peers,
        };
        el.load_paired_devices()?;
        el.requeue_after_restart()?;
        Ok(el)
    }

    /// Marks every stored device as paired in the swarm and schedules a dial of those not
    /// blocked.
    fn load_paired_devices(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        for rec in self.store.devices()? {
            if rec.trust_level == TrustLevel::Blocked {
                continue;
            }
            let peer = peer_of(&rec.device_id);
            self.swarm.behaviour_mut().set_paired(peer, true);
            for addr in self.addrbook.get(&rec.device_id).to_vec() {
                self.swarm.add_peer_address(peer, addr);
            }
            self.redial.want(rec.device_id, now);
        }
        Ok(())
    }

    /// Runs until shut down (or until every client handle is dropped).
    ///
    /// After the swarm event it woke for, the loop handles every other swarm event that is
    /// already there (up to `DRAIN_MAX`) before it waits again. Targets' answers to a
    /// vouch that arrive together are then stored in one transaction, with one flush
    /// (group commit), and only then acknowledged and acted on; any other input first
    /// stores the answers handled before it, so nothing reads a session behind them.
    ///
    /// It also ends on its own when the store fails (a write that could not be made
    /// durable, see [`vouchnet_storage::StoreError::Failed`]): the store then refuses every
    /// read and write, and a node that cannot remember must not go on talking to peers. The
    /// command or message that hit the failure is answered with the error first.
    pub async fn run(mut self) -> LoopExit {
        let exit = self.serve().await;
        // Whoever waits for the loop to end (shutdown, a restart) finds the address book's
        // last version on disk.
        self.addrbook.close().await;
        exit
    }

    async fn serve(&mut self) -> LoopExit {
        for addr in std::mem::take(&mut self.startup_peers) {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!("cannot dial {addr}: {e}");
            }
        }
        loop {
            let wake = self.next_wake();
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    for _ in 0..DRAIN_MAX {
                        match self.swarm.next().now_or_never() {
                            Some(Some(event)) => self.on_swarm_event(event),
                            _ => break,
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        tracing::info!("shutting down");
                        let _ = done.send(());
                        return LoopExit::Stopped;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => return LoopExit::Stopped,
                },
                _ = tokio::time::sleep_until(wake) => self.on_timers(),
            }
            self.flush_answers();
            if let Some(failure) = self.store.failure() {
                return self.stop_on_store_failure(failure.clone());
            }
        }
    }

    /// Ends the loop because the store failed: says so in the log and on the event stream.
    fn stop_on_store_failure(&self, failure: StoreFailure) -> LoopExit {
        tracing::error!(
            "stopping: the store could not make a write durable ({}); {}",
            failure.cause,
            store_failure_advice(&failure)
        );
        self.hub.publish(NodeEvent::NodeStopped {
            reason: "store_failed".to_owned(),
            detail: failure.cause.clone(),
            disk_full: failure.disk_full,
        });
        LoopExit::StoreFailed(failure)
    }

    // ----------------------------------------------------------------------------------
    // Timers

    fn next_wake(&self) -> Instant {
        let now_mono = Instant::now();
        let now_wall = self.clock.now();
        let mut wake = now_mono + MAX_SLEEP;
        let deadlines = [
            self.pairing.poll_timeout(),
            self.keyproof.poll_timeout(),
            self.proxy.poll_timeout(),
        ];
        for at in deadlines.into_iter().flatten() {
            wake = wake.min(clock::instant_of(at, now_wall, now_mono));
        }
        if let Some(due) = self.redial.next_due() {
            wake = wake.min(due);
        }
        if self.proxy_enabled {
            wake = wake.min(self.next_queue_poll);
        }
        wake
    }

    /// Closes the connections to `device`, which is redialled (with the redial's backoff)
    /// and proves its key again, both ways, on a fresh connection.
    pub(crate) fn disconnect_to_prove_again(&mut self, device: DeviceId) {
        let _ = self.swarm.disconnect_peer_id(peer_of(&device));
    }

    fn on_timers(&mut self) {
        self.flush_answers();
        let now = self.clock.now();
        let outputs = self.pairing.handle_timeout(now);
        self.apply_pairing(outputs);
        for device in self.keyproof.handle_timeout(now) {
            self.key_proof_failed(device, "timeout");
            // A device that did not answer in time may be slow rather than false. Left
            // connected it would stay offline until the connection happened to drop; closed,
            // it is redialled and challenged again on a fresh connection, with the redial's
            // backoff between attempts.
            self.disconnect_to_prove_again(device);
        }
        for device in self.redial.due(Instant::now()) {
            self.dial_paired(device);
        }
        if self.proxy_enabled {
            self.proxy_timers(now);
            if Instant::now() >= self.next_queue_poll {
                self.next_queue_poll = Instant::now() + self.protocol.queue.poll_interval;
                self.queue_tick();
            }
        }
    }

    pub(crate) fn dial_paired(&mut self, device: DeviceId) {
        let peer = peer_of(&device);
        if self.swarm.is_connected(&peer) {
            self.redial.connected(&device);
            return;
        }
        let mut addrs: Vec<Multiaddr> = self.addrbook.get(&device).to_vec();
        addrs.extend(self.nearby.get(&peer).into_iter().flatten().cloned());
        if addrs.is_empty() {
            self.redial.failed(device, Instant::now());
            return;
        }
        tracing::debug!(%device, "dialling paired device");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%device, "dial not started: {e}");
        }
    }

    // ----------------------------------------------------------------------------------
    // Swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        // Proxy-pairing requests and responses may carry targets' answers, which join the
        // batch; their handlers store the batch first when they are something else.
        let proxy_message = matches!(
            event,
            SwarmEvent::Behaviour(BehaviourEvent::ProxyPair(
                request_response::Event::Message { .. }
            ))
        );
        if !proxy_message {
            self.flush_answers();
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!("listening on {full}");
                self.listen_addrs.send_modify(|v| v.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs
                    .send_modify(|v| v.retain(|a| a != &address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => self.on_connection_opened(peer_id, &endpoint),
            SwarmEvent::ConnectionClosed { peer_id, .. } => self.on_connection_closed(peer_id),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if let Ok(device) = device_of(&peer) {
                    if self.redial.delay(&device).is_some() {
                        tracing::debug!(%device, "redial failed: {error}");
                        self.redial.failed(device, Instant::now());
                        let _ = self
                            .store
                            .record_connection(&device, self.clock.now(), false);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Pair(ev)) => {
                self.on_request_response(Proto::Pair, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::ProxyPair(ev)) => {
                self.on_request_response(Proto::ProxyPair, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info.listen_addrs),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(ev)) => self.on_mdns(ev),
            _ => {}
        }
    }

    pub(crate) fn paired_record(&self, device: &DeviceId) -> Option<DeviceRecord> {
        match self.store.device(device) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!(%device, "cannot read device record: {e}");
                None
            }
        }
    }

    /// A paired device whose trust is not Blocked.
    pub(crate) fn usable_record(&self, device: &DeviceId) -> Option<DeviceRecord> {
        self.paired_record(device)
            .filter(|r| r.trust_level != TrustLevel::Blocked)
    }

    fn on_connection_opened(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let Ok(device) = device_of(&peer) else {
            tracing::debug!(%peer, "not a vouchnet device (no Ed25519 key); closing");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        if let ConnectedPoint::Dialer { address, .. } = endpoint {
            self.dialed.insert(device, strip_p2p(address.clone()));
        }
        if self.presence.opened(device) != Transition::Connected {
            return;
        }
        self.redial.connected(&device);
        if self.usable_record(&device).is_some() {
            tracing::debug!(%device, "paired device connected; proving keys");
            self.remember_addresses(device, &[]);
            self.challenge(device);
        }
    }

    fn on_connection_closed(&mut self, peer: PeerId) {
        let Ok(device) = device_of(&peer) else { return };
        let Transition::Disconnected { was_online } = self.presence.closed(device) else {
            return;
        };
        self.dialed.remove(&device);
        self.announced.remove(&device);
        self.keyproof.connection_lost(device);
        self.proxy_connection_lost(device);
        let outputs = self.pairing.connection_lost(device);
        self.apply_pairing(outputs);
        if let Some(rec) = self.usable_record(&device) {
            if was_online {
                self.presence_changed(&rec, false);
            }
            self.redial.want(device, Instant::now());
        }
    }

    fn on_identified(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let Ok(device) = device_of(&peer) else { return };
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .take(crate::addrbook::MAX_ADDRS)
            .map(strip_p2p)
            .collect();
        if self.usable_record(&device).is_some() {
            self.remember_addresses(device, &addrs);
        }
        self.announced.insert(device, addrs);
    }

    /// Records where `device` can be dialled: the addresses it announced, and the one this
    /// device dialled it at (most reliable, so recorded last, which puts it first).
    pub(crate) fn remember_addresses(&mut self, device: DeviceId, announced: &[Multiaddr]) {
        let mut changed = false;
        for addr in announced.iter().rev() {
            changed |= self.note_address(device, addr.clone());
        }
        if let Some(addr) = self.dialed.get(&device).cloned() {
            changed |= self.note_address(device, addr);
        }
        if changed {
            self.save_addrbook();
        }
    }

    /// Puts `addr` first among `device`'s addresses, in the book and in the swarm. Returns
    /// whether the book changed; the caller saves it once for a batch
    /// ([`EventLoop::save_addrbook`]), as each save writes the whole book.
    pub(crate) fn note_address(&mut self, device: DeviceId, addr: Multiaddr) -> bool {
        if !self.addrbook.add(device, addr.clone()) {
            return false;
        }
        self.swarm.add_peer_address(peer_of(&device), addr);
        true
    }

    /// Writes the address book to disk (a cache: a failure is logged, not fatal).
    pub(crate) fn save_addrbook(&self) {
        if let Err(e) = self.addrbook.save() {
            tracing::warn!("cannot save the address book: {e}");
        }
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(list) => {
                let now = Instant::now();
                for (peer, addr) in list {
                    self.nearby.entry(peer).or_default().insert(addr);
                    if let Ok(device) = device_of(&peer) {
                        if !self.presence.is_connected(&device)
                            && self.usable_record(&device).is_some()
                        {
                            self.redial.want(device, now);
                        }
                    }
                }
            }
            mdns::Event::Expired(list) => {
                for (peer, addr) in list {
                    if let Some(set) = self.nearby.get_mut(&peer) {
                        set.remove(&addr);
                        if set.is_empty() {
                            self.nearby.remove(&peer);
                        }
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Frames

    fn on_request_response(
        &mut self,
        proto: Proto,
        event: request_response::Event<WireFrame, WireFrame>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(proto, peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(proto, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, ?proto, "delivery failed: {error}");
                let why = match error {
                    OutboundFailure::UnsupportedProtocols => Undelivered::Unsupported,
                    other => Undelivered::Failed(other.to_string()),
                };
                if let Some(settled) = self.outbox_of(proto).failed(request_id) {
                    self.delivery_failed(settled, why);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound frame failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(crate) fn respond(
        &mut self,
        proto: Proto,
        channel: ResponseChannel<WireFrame>,
        frame: WireFrame,
    ) {
        let result = match proto {
            Proto::Pair => self
                .swarm
                .behaviour_mut()
                .pair
                .send_response(channel, frame),
            Proto::ProxyPair => match self.swarm.behaviour_mut().proxy_pair.as_mut() {
                Some(b) => b.send_response(channel, frame),
                None => Ok(()),
            },
        };
        if result.is_err() {
            tracing::debug!("response not sent: the stream is gone");
        }
    }

    fn on_request(
        &mut self,
        proto: Proto,
        peer: PeerId,
        wire: WireFrame,
        channel: ResponseChannel<WireFrame>,
    ) {
        let Ok(device) = device_of(&peer) else {
            return self.respond(proto, channel, error_reply(ErrorCode::Malformed));
        };
        if !self.frame_limiter.allow(peer, Instant::now().into_std()) {
            tracing::debug!(%device, "rate limited");
            return self.respond(proto, channel, error_reply(ErrorCode::RateLimited));
        }
        let frame = match wire.decode(&self.limits) {
            Ok(frame) => frame,
            Err(DecodeError::UnsupportedVersion(v)) => {
                tracing::debug!(%device, "frame of unsupported version {v}");
                let code = ErrorCode::UnsupportedVersion {
                    supported: vec![PROTOCOL_VERSION],
                };
                return self.respond(proto, channel, error_reply(code));
            }
            Err(e) => {
                tracing::debug!(%device, "undecodable frame: {e}");
                return self.respond(proto, channel, error_reply(ErrorCode::Malformed));
            }
        };
        let msg = match (proto, frame.msg) {
            // Answers are stored in groups; the acknowledgement follows the write.
            (Proto::ProxyPair, Message::ProxyPairingResponse(r)) => {
                return self.on_vouch_response(device, r, Some(channel));
            }
            (_, msg) => msg,
        };
        self.flush_answers();
        let reply = match (proto, msg) {
            (Proto::Pair, msg) if is_pairing_message(&msg) => {
                self.on_pairing_message(device, msg);
                ack()
            }
            (Proto::Pair, Message::KeyProofChallenge(c)) => self.on_challenge(device, c),
            (Proto::Pair, Message::KeyProofResponse(r)) => self.on_proof(device, r),
            (Proto::Pair, Message::SealedText(s)) => self.on_sealed_text(device, s),
            // Nothing to act on: the round trip is the point.
            (Proto::Pair, Message::Ping(_)) => ack(),
            (Proto::ProxyPair, Message::ProxyPairingRequest(r)) => self.on_vouch_request(device, r),
            (Proto::ProxyPair, Message::ProxyPairingPending(p)) => self.on_vouch_pending(device, p),
            (Proto::ProxyPair, Message::ProxyPairingComplete(c)) => self.on_complete(device, c),
            (
                Proto::ProxyPair,
                msg @ (Message::RekeyInit(_) | Message::RekeyAccept(_) | Message::RekeyConfirm(_)),
            ) => self.on_rekey_message(device, msg),
            (proto, msg) => {
                // A message on the wrong protocol, a response kind sent as a request, or a
                // proxy-pairing message this build has no machine for.
                tracing::debug!(%device, ?proto, "unexpected {:?}", std::mem::discriminant(&msg));
                error_reply(ErrorCode::Malformed)
            }
        };
        self.respond(proto, channel, reply);
    }

    fn outbox_of(&mut self, proto: Proto) -> &mut Outbox<Token> {
        match proto {
            Proto::Pair => &mut self.outbox,
            Proto::ProxyPair => &mut self.proxy_outbox,
        }
    }

    fn on_response(&mut self, proto: Proto, request_id: OutboundRequestId, response: WireFrame) {
        let outcome = match response.decode(&self.limits) {
            Ok(Frame {
                msg: Message::Ack(_),
                ..
            }) => Ok(None),
            // A target's answer to a vouch comes as the vouch's response.
            Ok(Frame {
                msg: answer @ (Message::ProxyPairingResponse(_) | Message::ProxyPairingPending(_)),
                ..
            }) if proto == Proto::ProxyPair => Ok(Some(answer)),
            Ok(Frame {
                msg: Message::Error(e),
                ..
            }) => Err(Undelivered::Refused(e.code)),
            Ok(_) => Err(Undelivered::Failed("unexpected response".to_owned())),
            Err(e) => Err(Undelivered::Failed(format!("undecodable response: {e}"))),
        };
        if !matches!(outcome, Ok(Some(_))) {
            // Not an answer: whatever it settles may read a session, so the answers
            // handled before it are stored first.
            self.flush_answers();
        }
        let settled = match outcome {
            Ok(answer) => self
                .outbox_of(proto)
                .acked(request_id)
                .map(|(settled, next)| (settled, next, answer)),
            Err(why) => {
                if let Some(settled) = self.outbox_of(proto).failed(request_id) {
                    self.delivery_failed(settled, why);
                }
                return;
            }
        };
        let Some((settled, next, answer)) = settled else {
            return;
        };
        let device = settled.device;
        let asked = matches!(settled.done.token, Token::Vouch { .. });
        match answer {
            // Only a vouch asks for an answer; the response came over the connection to
            // the device the vouch went to, which is who answers.
            Some(answer) if asked => {
                self.proxy_delivered(device, settled.done.token);
                self.on_vouch_answer(device, answer);
            }
            Some(_) => {
                let why = Undelivered::Failed("unexpected response".to_owned());
                self.delivery_failed(settled, why);
            }
            None => match settled.done.token {
                Token::Reply(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Token::Ping { reply, sent } => {
                    let rtt = sent.map(|t| t.elapsed()).unwrap_or_default();
                    let _ = reply.send(Ok(rtt));
                }
                Token::None => {}
                token => self.proxy_delivered(device, token),
            },
        }
        if let Some(next) = next {
            self.dispatch(device, next);
        }
    }

    /// Queues `msg` for `device`; it goes out when the previous message on the same
    /// protocol to that device was acknowledged.
    pub(crate) fn send(&mut self, device: DeviceId, msg: Message, token: Token) {
        let proto = Proto::of(&msg);
        match self.outbox_of(proto).push(device, Outgoing { msg, token }) {
            Ok(Some(now)) => self.dispatch(device, now),
            Ok(None) => {}
            Err(refused) => {
                let settled = Settled {
                    device,
                    done: *refused,
                    dropped: Vec::new(),
                };
                let why = Undelivered::Failed("too many messages waiting".to_owned());
                self.delivery_failed(settled, why);
            }
        }
    }

    fn dispatch(&mut self, device: DeviceId, mut out: Outgoing<Token>) {
        let frame = WireFrame::encode(&Frame::new(out.msg.clone()));
        if let Token::Ping { sent, .. } = &mut out.token {
            // Timed from here, not from the command: a ping waits in the outbox behind the
            // message in flight to the same device, which is not the round trip.
            *sent = Some(tokio::time::Instant::now());
        }
        let peer = peer_of(&device);
        match Proto::of(&out.msg) {
            Proto::Pair => {
                let id = self.swarm.behaviour_mut().pair.send_request(&peer, frame);
                self.outbox.sent(device, id, out);
            }
            Proto::ProxyPair => match self.swarm.behaviour_mut().proxy_pair.as_mut() {
                Some(b) => {
                    let id = b.send_request(&peer, frame);
                    self.proxy_outbox.sent(device, id, out);
                }
                None => {
                    // This node does not speak proxy pairing: the message fails here, as
                    // a peer without it would make it fail.
                    self.proxy_outbox.clear(&device);
                    let settled = Settled {
                        device,
                        done: out,
                        dropped: Vec::new(),
                    };
                    self.delivery_failed(settled, Undelivered::Unsupported);
                }
            },
        }
    }

    fn delivery_failed(&mut self, settled: Settled<Token>, why: Undelivered) {
        let device = settled.device;
        let mut pairing_broken = false;
        if matches!(settled.done.msg, Message::KeyProofChallenge(_))
            && why == Undelivered::Refused(ErrorCode::NotPaired)
        {
            // The device does not know this one any more (it unpaired it, or lost its
            // data): it cannot prove a key it does not have. Reported now, not at the
            // challenge's timeout.
            self.keyproof.connection_lost(device);
            if self.awaiting_first_contact(&device) {
                // A device accepted on a vouch, never seen online: it has not yet heard
                // from its voucher that this device accepted it. Not a failure; it proves
                // its key when it challenges this device, which then challenges back.
                tracing::info!(%device, "vouched device does not know of this pairing yet");
            } else {
                self.key_proof_failed(device, "not_paired_on_peer");
            }
        }
        for out in std::iter::once(settled.done).chain(settled.dropped) {
            if is_pairing_message(&out.msg) && !matches!(out.msg, Message::PairingCancel(_)) {
                pairing_broken = true;
            }
            match out.token {
                Token::Reply(reply) => {
                    let _ = reply.send(Err(NodeError::Network(format!("{device}: {why}"))));
                }
                Token::Ping { reply, .. } => {
                    let _ = reply.send(Err(NodeError::Network(format!("{device}: {why}"))));
                }
                Token::None => {}
                token => self.proxy_undelivered(device, token, &why),
            }
        }
        if pairing_broken {
            // A pairing whose next message cannot be delivered cannot finish; end it the
            // way the machine ends one whose connection is gone.
            tracing::info!(%device, "pairing message not delivered ({why})");
            let outputs = self.pairing.connection_lost(device);
            self.apply_pairing(outputs);
        }
    }

    // ----------------------------------------------------------------------------------
    // Pairing

    fn on_pairing_message(&mut self, device: DeviceId, msg: Message) {
        let now = self.clock.now();
        if let Message::PairingRequest(req) = &msg {
            if let Some(reason) = self.refuse_pairing_request(device) {
                tracing::info!(%device, "pairing request refused ({})", cancel_reason_name(reason));
                let cancel = Message::PairingCancel(PairingCancel {
                    tx_id: req.tx_id,
                    reason,
                });
                return self.send(device, cancel, Token::None);
            }
        }
        match self.pairing.handle_message(device, &msg, now, &mut OsRng) {
            Ok(outputs) => {
                self.apply_pairing(outputs);
            }
            Err(e) => tracing::debug!(%device, "pairing message refused: {e}"),
        }
    }

    /// Node-side checks before a `PairingRequest` reaches the machine: the machine keeps no
    /// records, so the node refuses a peer the user blocked, and keeps a flood from crowding
    /// out honest requests.
    ///
    /// A request from a device this one still holds (and does not block) is a re-pairing:
    /// that device lost its side of the pairing (a reset, lost data, or a final
    /// confirmation that never reached this side before it gave up). Both users confirm the
    /// code again, and the new pairing replaces the old record; refusing it would leave trust
    /// one-sided for good, since the side that still holds the record cannot ask.
    fn refuse_pairing_request(&mut self, device: DeviceId) -> Option<CancelReason> {
        if let Some(rec) = self.paired_record(&device) {
            if rec.trust_level == TrustLevel::Blocked {
                return Some(CancelReason::Aborted);
            }
            tracing::info!(%device, "{} asks to pair again", rec.name.as_str());
        } else if self.store.is_blocked_unpaired(&device).unwrap_or(true) {
            // Blocked before it was ever paired (or after it was removed); a store that
            // cannot say refuses rather than risk it.
            return Some(CancelReason::Aborted);
        }
        if self.pairing.view(&device).is_some() {
            // The machine answers a second request itself (AlreadyInProgress, or the
            // simultaneous-start rule).
            return None;
        }
        if !self
            .pair_limiter
            .allow(peer_of(&device), Instant::now().into_std())
        {
            return Some(CancelReason::RateLimited);
        }
        self.make_room_for_inbound_request();
        None
    }

    /// At the cap on live pairings, ends the oldest inbound pairing still waiting for the
    /// initiator's reveal. An honest initiator reveals one round trip after the request, so
    /// a transaction stuck there is almost certainly a flood; without this, requests from
    /// fresh PeerIds that never continue would hold every slot for the whole pairing
    /// timeout and lock out a legitimate pairing.
    fn make_room_for_inbound_request(&mut self) {
        let pending = self.pairing.pending();
        if pending.len() < self.protocol.max_pending_prompts {
            return;
        }
        let stalled = pending
            .iter()
            .filter(|v| {
                v.direction == Direction::Inbound && v.stage == PairingStage::AwaitingReveal
            })
            .min_by_key(|v| v.deadline)
            .map(|v| v.peer);
        if let Some(peer) = stalled {
            tracing::debug!(%peer, "evicting a stalled inbound pairing to make room");
            if let Ok(outputs) = self.pairing.abort(peer, self.clock.now()) {
                self.apply_pairing(outputs);
            }
        }
    }

    /// Applies the pairing machine's outputs, in order. Returns whether a pairing was stored.
    pub(crate) fn apply_pairing(&mut self, outputs: Vec<PairingOutput>) -> bool {
        let mut stored = false;
        for out in outputs {
            match out {
                PairingOutput::Send { to, msg } => self.send(to, msg, Token::None),
                PairingOutput::ConfirmationRequired(p) => {
                    tracing::info!(
                        "pairing with {} ({}): code {} — confirm if the other device shows the same",
                        p.peer_name.as_str(),
                        p.peer,
                        p.code
                    );
                    self.hub.publish(NodeEvent::PairingConfirmationRequired {
                        device_id: p.peer.to_string(),
                        name: p.peer_name.as_str().to_owned(),
                        code: p.code,
                        direction: direction_name(p.direction).to_owned(),
                        deadline: p.deadline.as_millis(),
                    });
                }
                PairingOutput::Changed(view) => {
                    let data = serde_json::to_value(PairingRequestView::from(&view))
                        .expect("views serialize");
                    self.hub.publish(NodeEvent::ResourceChanged {
                        resource: ResourceKind::PairingSession,
                        id: view.peer.to_string(),
                        data,
                    });
                }
                PairingOutput::Paired(done) => stored |= self.on_paired(*done),
                PairingOutput::Failed { peer, failure, .. } => {
                    tracing::info!(%peer, "pairing failed: {}", failure_name(failure));
                    self.hub.publish(NodeEvent::ResourceDeleted {
                        resource: ResourceKind::PairingSession,
                        id: peer.to_string(),
                    });
                    self.hub.publish(NodeEvent::PairingFailed {
                        device_id: peer.to_string(),
                        reason: failure_name(failure),
                    });
                }
            }
        }
        stored
    }

    fn on_paired(&mut self, done: PairingCompleted) -> bool {
        let record = DirectPairing {
            device_id: done.peer,
            public_key: done.peer_public_key,
            name: done.peer_name.clone(),
            tx_id: done.tx_id,
            session_key: done.pairing_key.clone(),
            our_mac: done.our_mac,
            their_mac: done.their_mac,
            at: self.clock.now(),
        };
        self.hub.publish(NodeEvent::ResourceDeleted {
            resource: ResourceKind::PairingSession,
            id: done.peer.to_string(),
        });
        match self.store.pair_direct(&record) {
            Ok(rec) => {
                tracing::info!("paired with {} ({})", rec.name.as_str(), rec.device_id);
                // A re-pairing replaces the pairing an earlier proof failed on.
                self.presence.forget_failed_proof(&rec.device_id);
                let peer = peer_of(&rec.device_id);
                self.swarm.behaviour_mut().set_paired(peer, true);
                let announced = self
                    .announced
                    .get(&rec.device_id)
                    .cloned()
                    .unwrap_or_default();
                self.remember_addresses(rec.device_id, &announced);
                self.publish_device(&rec);
                if self.presence.is_connected(&rec.device_id) {
                    self.challenge(rec.device_id);
                }
                if self.proxy_enabled {
                    self.vouching_ready(&rec);
                }
                true
            }
            Err(e) => {
                tracing::error!(device = %done.peer, "pairing completed but could not be stored: {e}");
                self.hub.publish(NodeEvent::PairingFailed {
                    device_id: done.peer.to_string(),
                    reason: "storage".to_owned(),
                });
                false
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Key proof and presence

    pub(crate) fn challenge(&mut self, device: DeviceId) {
        match self
            .keyproof
            .challenge(device, self.clock.now(), &mut OsRng)
        {
            Ok(msg) => self.send(device, msg, Token::None),
            Err(e) => tracing::warn!(%device, "cannot challenge: {e}"),
        }
    }

    fn on_challenge(&mut self, device: DeviceId, challenge: KeyProofChallenge) -> WireFrame {
        let Some(rec) = self.usable_record(&device) else {
            return error_reply(ErrorCode::NotPaired);
        };
        let answer = self.keyproof.respond(&device, &challenge, &rec.session_key);
        self.send(device, answer, Token::None);
        // Proof is mutual: a device not yet proven here (for instance a vouched device that
        // only now learned of this one) is challenged back.
        if !self.presence.is_online(&device) && !self.keyproof.is_outstanding(&device) {
            self.challenge(device);
        }
        ack()
    }

    /// A proxied device that has never proved its key here: the pairing may be news to it.
    fn awaiting_first_contact(&self, device: &DeviceId) -> bool {
        self.paired_record(device).is_some_and(|rec| {
            rec.pairing_type == vouchnet_protocol::model::PairingType::Proxied
                && rec.last_seen.is_none()
        })
    }

    fn on_proof(&mut self, device: DeviceId, response: KeyProofResponse) -> WireFrame {
        let Some(rec) = self.usable_record(&device) else {
            return error_reply(ErrorCode::NotPaired);
        };
        let now = self.clock.now();
        let mut result = self
            .keyproof
            .handle_response(device, &response, &rec.session_key, now);
        match &result {
            Ok(()) => self.rekey_confirmed(device),
            Err(KeyProofError::BadMac) => {
                // Right after a rekey the peer may still hold the previous key (it never
                // saw the confirmation): try that one, and go back to it if it proves.
                if let Some(previous) = self.proxy.fallback_key(&device) {
                    result = self
                        .keyproof
                        .handle_response(device, &response, &previous, now);
                    if result.is_ok() {
                        self.rekey_reverted(device, previous);
                    }
                }
            }
            Err(_) => {}
        }
        match result {
            Ok(()) => {
                if self.presence.verified(device) {
                    if let Err(e) = self.store.touch_last_seen(&device, now) {
                        tracing::warn!(%device, "cannot record last seen: {e}");
                    }
                    let _ = self.store.record_connection(&device, now, true);
                    let rec = self.paired_record(&device).unwrap_or(rec);
                    self.presence_changed(&rec, true);
                }
            }
            Err(KeyProofError::NoOutstandingChallenge { .. }) => {
                tracing::debug!(%device, "key proof nobody asked for; ignored");
            }
            Err(e) => self.key_proof_failed(device, key_proof_error_name(&e)),
        }
        ack()
    }

    fn key_proof_failed(&mut self, device: DeviceId, reason: &str) {
        tracing::warn!(%device, "paired device failed to prove it holds the pairing key ({reason})");
        if let Err(e) = self
            .store
            .record_event(self.clock.now(), AuditEvent::KeyProofFailed { device })
        {
            tracing::error!(%device, "cannot audit the failed key proof: {e}");
        }
        self.presence.proof_failed(device, reason);
        if let Some(rec) = self.paired_record(&device) {
            if self.presence.unverify(&device) {
                self.presence_changed(&rec, false);
            } else {
                self.publish_device(&rec);
            }
        }
        self.hub.publish(NodeEvent::KeyProofFailed {
            device_id: device.to_string(),
            reason: reason.to_owned(),
        });
    }

    /// A paired device came online (it proved its key on a connection) or went offline
    /// (its last connection closed, or it stopped being trusted online). Every presence
    /// change goes through here: the UI gets the device resource, and this is where the
    /// offline queue flushes what waits for a device that came online.
    fn presence_changed(&mut self, rec: &DeviceRecord, online: bool) {
        let state = if online { "online" } else { "offline" };
        tracing::info!("{} ({}) is {state}", rec.name.as_str(), rec.device_id);
        self.publish_device(rec);
        if online && self.proxy_enabled {
            if self.wake_queue_on_presence {
                self.deliver_queued_for(rec.device_id);
            }
            self.maybe_start_rekey(rec);
        }
    }

    pub(crate) fn publish_device(&self, rec: &DeviceRecord) {
        let view = self.device_view(rec);
        self.hub.publish(NodeEvent::ResourceChanged {
            resource: ResourceKind::Device,
            id: rec.device_id.to_string(),
            data: serde_json::to_value(view).expect("views serialize"),
        });
    }

    // ----------------------------------------------------------------------------------
    // Sealed text

    fn on_sealed_text(&mut self, device: DeviceId, sealed: SealedText) -> WireFrame {
        let Some(rec) = self.usable_record(&device) else {
            return error_reply(ErrorCode::NotPaired);
        };
        // Around a rekey the sender may still seal with the previous key.
        let opened =
            open_text(&rec.session_key, &device, &self.me, &sealed).or_else(|e| {
                match self.proxy.fallback_key(&device) {
                    Some(previous) => open_text(&previous, &device, &self.me, &sealed),
                    None => Err(e),
                }
            });
        match opened {
            Ok(text) => {
                let message = InboxRecord {
                    from: device,
                    text,
                    received_at: self.clock.now(),
                };
                // Stored before the acknowledgement: a sender told "delivered" must not
                // lose its message to a restart of this device.
                if let Err(e) = self.store.push_inbox(&message, INBOX_CAPACITY) {
                    tracing::error!(%device, "cannot store a received message: {e}");
                    return error_reply(ErrorCode::Unavailable);
                }
                tracing::info!("message from {} ({device})", rec.name.as_str());
                self.hub.publish(NodeEvent::MessageReceived {
                    from: device.to_string(),
                    from_name: rec.name.as_str().to_owned(),
                    text: message.text,
                    received_at: message.received_at.as_millis(),
                });
                ack()
            }
            Err(e) => {
                tracing::warn!(%device, "sealed text did not open: {e}");
                error_reply(ErrorCode::Malformed)
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Commands

    fn on_command(&mut self, cmd: Command) {
        self.flush_answers();
        match cmd {
            Command::Info(r) => {
                let _ = r.send(Ok(self.info()));
            }
            Command::Peers(r) => {
                let _ = r.send(Ok(self.peers()));
            }
            Command::Dial(addr, r) => {
                let _ = r.send(
                    self.swarm
                        .dial(addr)
                        .map_err(|e| NodeError::Network(e.to_string())),
                );
            }
            Command::PairRequest {
                device,
                addr,
                reply,
            } => {
                let _ = reply.send(self.pair_request(device, addr));
            }
            Command::PairAccept {
                device,
                code,
                reply,
            } => {
                let _ = reply.send(self.pair_accept(device, code));
            }
            Command::PairReject(device, r) => {
                let result = self
                    .pairing
                    .user_reject(device, self.clock.now())
                    .map(|outputs| {
                        self.apply_pairing(outputs);
                    });
                let _ = r.send(result.map_err(NodeError::from));
            }
            Command::PairRequests(r) => {
                let views = self
                    .pairing
                    .pending()
                    .iter()
                    .map(PairingRequestView::from)
                    .collect();
                let _ = r.send(Ok(views));
            }
            Command::Devices(r) => {
                let _ = r.send(self.devices());
            }
            Command::SetTrust(device, level, r) => {
                let _ = r.send(self.set_trust(device, level));
            }
            Command::Block(device, r) => {
                let _ = r.send(self.block(device));
            }
            Command::Unblock(device, r) => {
                let _ = r.send(self.unblock(device));
            }
            Command::Blocked(r) => {
                let _ = r.send(self.blocked());
            }
            Command::Unpair(device, r) => {
                let _ = r.send(self.unpair(device));
            }
            Command::SendText(device, text, r) => self.send_text(device, text, r),
            Command::Ping(device, r) => self.ping(device, r),
            Command::ClearInbox(r) => {
                let cleared = self.store.clear_inbox().map_err(NodeError::from);
                if let Ok(n) = cleared {
                    tracing::info!("inbox cleared ({n} texts deleted)");
                }
                let _ = r.send(cleared);
            }
            Command::Inbox(r) => {
                let _ = r.send(self.inbox());
            }
            Command::Audit(r) => {
                let _ = r.send(self.audit());
            }
            Command::AuditVerify(r) => {
                let view = match self.store.verify_audit() {
                    Ok(report) => AuditVerifyView {
                        ok: true,
                        entries: report.entries,
                        error: None,
                    },
                    Err(e) => AuditVerifyView {
                        ok: false,
                        entries: 0,
                        error: Some(e.to_string()),
                    },
                };
                let _ = r.send(Ok(view));
            }
            Command::Sessions(r) => {
                let _ = r.send(self.store.sessions().map_err(NodeError::from));
            }
            Command::Session(id, r) => {
                let result = match self.store.session(&id) {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err(NodeError::NotFound(format!("no vouching session {id}"))),
                    Err(e) => Err(e.into()),
                };
                let _ = r.send(result);
            }
            Command::Vouch {
                vouchee,
                to,
                all,
                reply,
            } => {
                let _ = reply.send(self.vouch(vouchee, to, all));
            }
            Command::ProxyRequests(r) => {
                let _ = r.send(Ok(self.proxy_requests()));
            }
            Command::ConfirmProxy { id, accept, reply } => {
                let _ = reply.send(self.confirm_proxy(&id, accept));
            }
            Command::Review(r) => {
                let _ = r.send(self.review_list());
            }
            Command::ReviewDecide {
                device,
                keep,
                reply,
            } => {
                let _ = reply.send(self.review_decide(device, keep));
            }
            Command::AuditChains(r) => {
                let _ = r.send(self.trust_chains());
            }
            Command::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }

    fn info(&self) -> NodeInfo {
        let me = *self.swarm.local_peer_id();
        NodeInfo {
            device_id: self.me.to_string(),
            name: self.name.as_str().to_owned(),
            listen_addrs: self
                .listen_addrs
                .borrow()
                .iter()
                .map(|a| a.clone().with(Protocol::P2p(me)).to_string())
                .collect(),
            fingerprint: self
                .me
                .public_key()
                .map(|k| k.fingerprint())
                .unwrap_or_default(),
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let mut ids: BTreeSet<PeerId> = self.nearby.keys().copied().collect();
        ids.extend(self.presence.connected().iter().map(peer_of));
        ids.into_iter()
            .filter_map(|peer| {
                let device = device_of(&peer).ok()?;
                let mut addrs: BTreeSet<String> = self
                    .nearby
                    .get(&peer)
                    .into_iter()
                    .flatten()
                    .map(|a| a.to_string())
                    .collect();
                if let Some(a) = self.dialed.get(&device) {
                    addrs.insert(a.to_string());
                }
                Some(PeerView {
                    device_id: device.to_string(),
                    addrs: addrs.into_iter().collect(),
                    nearby: self.nearby.contains_key(&peer),
                    connected: self.presence.is_connected(&device),
                    paired: self.paired_record(&device).is_some(),
                    online: self.presence.is_online(&device),
                })
            })
            .collect()
    }

    fn pair_request(
        &mut self,
        device: DeviceId,
        addr: Option<Multiaddr>,
    ) -> Result<PairRequestOutcome, NodeError> {
        if device == self.me {
            return Err(NodeError::InvalidArgument(
                "a device cannot pair with itself".into(),
            ));
        }
        if let Some(rec) = self.paired_record(&device) {
            return Err(NodeError::Conflict(format!(
                "{device} is already paired ({}); unpair it first to pair again",
                crate::views::trust_level_name(rec.trust_level)
            )));
        }
        if self.store.is_blocked_unpaired(&device)? {
            return Err(NodeError::Conflict(format!(
                "{device} is blocked; `vouchnet unblock {device}` first to pair with it"
            )));
        }
        let peer = peer_of(&device);
        if let Some(addr) = addr {
            if let Some(Protocol::P2p(id)) = addr.iter().last() {
                if id != peer {
                    return Err(NodeError::InvalidArgument(format!(
                        "the address names device {id}, not {device}"
                    )));
                }
            }
            self.swarm.add_peer_address(peer, strip_p2p(addr));
        }
        let outputs = self.pairing.start(device, self.clock.now(), &mut OsRng)?;
        self.apply_pairing(outputs);
        let view = self
            .pairing
            .view(&device)
            .ok_or_else(|| NodeError::Network(format!("{device} could not be reached")))?;
        Ok(PairRequestOutcome {
            device_id: device.to_string(),
            pairing: PairingRequestView::from(&view),
        })
    }

    fn pair_accept(
        &mut self,
        device: DeviceId,
        code: Option<String>,
    ) -> Result<AcceptOutcome, NodeError> {
        let now = self.clock.now();
        let outputs = match &code {
            Some(code) => self.pairing.user_confirm_code(device, code.trim(), now)?,
            None => self.pairing.user_confirm(device, now)?,
        };
        let mismatch = outputs.iter().any(|o| {
            matches!(
                o,
                PairingOutput::Failed {
                    failure: PairingFailure::CodeMismatch,
                    ..
                }
            )
        });
        let paired = self.apply_pairing(outputs);
        if mismatch {
            return Err(NodeError::CodeMismatch);
        }
        let state = if paired { "paired" } else { "waiting" };
        Ok(AcceptOutcome {
            device_id: device.to_string(),
            state: state.to_owned(),
        })
    }

    fn devices(&self) -> Result<Vec<DeviceView>, NodeError> {
        Ok(self
            .store
            .devices()?
            .iter()
            .map(|r| self.device_view(r))
            .collect())
    }

    /// A device as the API shows it: presence and review flag included.
    pub(crate) fn device_view(&self, rec: &DeviceRecord) -> DeviceView {
        DeviceView::flagged(
            rec,
            self.presence.is_online(&rec.device_id),
            self.proxy.is_flagged(&rec.device_id),
            self.presence.failed_proof(&rec.device_id),
        )
    }

    pub(crate) fn require_device(&self, device: &DeviceId) -> Result<DeviceRecord, NodeError> {
        self.store
            .device(device)?
            .ok_or_else(|| NodeError::NotFound(format!("{device} is not a paired device")))
    }

    pub(crate) fn set_trust(
        &mut self,
        device: DeviceId,
        level: TrustLevel,
    ) -> Result<DeviceView, NodeError> {
        self.require_device(&device)?;
        let previous = self.store.set_trust(&device, level, self.clock.now())?;
        let peer = peer_of(&device);
        if level == TrustLevel::Blocked && previous != TrustLevel::Blocked {
            self.swarm.behaviour_mut().set_paired(peer, false);
            self.presence.unverify(&device);
            self.redial.forget(&device);
            self.keyproof.connection_lost(device);
            let _ = self.swarm.disconnect_peer_id(peer);
        } else if previous == TrustLevel::Blocked && level != TrustLevel::Blocked {
            self.swarm.behaviour_mut().set_paired(peer, true);
            if self.presence.is_connected(&device) {
                self.challenge(device);
            } else {
                self.redial.want(device, Instant::now());
            }
        }
        let rec = self.require_device(&device)?;
        self.publish_device(&rec);
        Ok(self.device_view(&rec))
    }

    fn unpair(&mut self, device: DeviceId) -> Result<(), NodeError> {
        match self.store.device(&device)? {
            Some(_) => {}
            None => {
                return Err(NodeError::NotFound(format!(
                    "{device} is not a paired device"
                )))
            }
        }
        // The unpairing, what becomes of the devices it vouched for and of the vouching
        // sessions about it, and the audit of why: one transaction (see proxy::removal).
        let removed = self.remove_device_and_its_vouches(device)?;
        tracing::info!(%device, "unpaired");
        self.forget_device(device);
        for other in removed {
            self.forget_device(other);
        }
        Ok(())
    }

    /// Lets go of a device that is no longer paired: not kept connected, not redialled,
    /// no longer online, and gone from the UI.
    pub(crate) fn forget_device(&mut self, device: DeviceId) {
        self.swarm
            .behaviour_mut()
            .set_paired(peer_of(&device), false);
        self.presence.unverify(&device);
        self.presence.forget_failed_proof(&device);
        self.redial.forget(&device);
        self.keyproof.connection_lost(device);
        self.proxy.device_forgotten(&device);
        if self.addrbook.remove(&device) {
            let _ = self.addrbook.save();
        }
        self.hub.publish(NodeEvent::ResourceDeleted {
            resource: ResourceKind::Device,
            id: device.to_string(),
        });
    }

    /// A paired device this one may talk to: not blocked.
    fn reachable_device(&self, device: &DeviceId) -> Result<DeviceRecord, NodeError> {
        let rec = self.require_device(device)?;
        if rec.trust_level == TrustLevel::Blocked {
            return Err(NodeError::Conflict(format!("{device} is blocked")));
        }
        Ok(rec)
    }

    fn ping(&mut self, device: DeviceId, reply: Reply<Duration>) {
        match self.reachable_device(&device) {
            Ok(_) => self.send(
                device,
                Message::Ping(Ping {}),
                Token::Ping { reply, sent: None },
            ),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn send_text(&mut self, device: DeviceId, text: String, reply: Reply<()>) {
        let rec = match self.reachable_device(&device) {
            Ok(rec) => rec,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let key = self.proxy.sealing_key(&device, rec.session_key.clone());
        match seal_text(&key, &self.me, &device, &text, &mut OsRng) {
            Ok(sealed) => self.send(device, Message::SealedText(sealed), Token::Reply(reply)),
            Err(KeyOpError::TooLarge) => {
                let _ = reply.send(Err(NodeError::InvalidArgument(
                    "the text is too long".into(),
                )));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::InvalidArgument(e.to_string())));
            }
        }
    }

    /// The stored texts, oldest first, each with its sender's name while it is paired.
    fn inbox(&self) -> Result<Vec<InboxMessage>, NodeError> {
        let mut names: BTreeMap<DeviceId, Option<String>> = BTreeMap::new();
        let mut list = Vec::new();
        for m in self.store.inbox()? {
            let name = match names.get(&m.from) {
                Some(n) => n.clone(),
                None => {
                    let n = self
                        .store
                        .device(&m.from)?
                        .map(|d| d.name.as_str().to_owned());
                    names.insert(m.from, n.clone());
                    n
                }
            };
            list.push(InboxMessage::of(m, name));
        }
        Ok(list)
    }

    fn audit(&self) -> Result<Vec<AuditEntryView>, NodeError> {
        let entries = self.store.audit_entries(0, usize::MAX)?;
        Ok(entries
            .iter()
            .map(|e| AuditEntryView {
                seq: e.seq,
                at: e.at.as_millis(),
                event: crate::audit::summary(&e.event),
            })
            .collect())
    }
}
