//! The handle the rest of the node (API, demo, tests) uses to talk to the event loop.
//!
//! As in rust-libp2p's file-sharing example: [`Client`] is cheap to clone, each method sends
//! one [`Command`] over a channel with a oneshot for the answer, and the event loop, which
//! owns the swarm, the protocol machines and the store, answers it. Nothing here touches
//! the network or the disk.

use crate::error::NodeError;
use crate::events::EventHub;
use crate::views::{
    AcceptOutcome, AuditEntryView, AuditVerifyView, BlockView, ConfirmProxyOutcome, DeviceView,
    InboxMessage, NodeInfo, PairRequestOutcome, PairingRequestView, PeerView, ProxyRequestView,
    ReviewOutcome, ReviewView, TrustChainView, VouchOutcome,
};
use libp2p::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use vouchnet_protocol::model::{TrustLevel, VouchingSession};
use vouchnet_protocol::{DeviceId, SessionId};

/// A reply channel.
pub type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// Everything the event loop can be asked. Each carries the channel for its answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// This device.
    Info(Reply<NodeInfo>),
    /// Nearby and connected devices.
    Peers(Reply<Vec<PeerView>>),
    /// Dial an address.
    Dial(Multiaddr, Reply<()>),
    /// Ask `device` to pair (optionally at `addr`).
    PairRequest {
        /// The device.
        device: DeviceId,
        /// Where to reach it, if not discovered.
        addr: Option<Multiaddr>,
        /// Answer.
        reply: Reply<PairRequestOutcome>,
    },
    /// The user confirms the code shown (or typed `code`, read from the other screen).
    PairAccept {
        /// The device.
        device: DeviceId,
        /// The code typed, if any.
        code: Option<String>,
        /// Answer.
        reply: Reply<AcceptOutcome>,
    },
    /// The user declines.
    PairReject(DeviceId, Reply<()>),
    /// Pairings in progress.
    PairRequests(Reply<Vec<PairingRequestView>>),
    /// Paired devices.
    Devices(Reply<Vec<DeviceView>>),
    /// Set a device's trust level.
    SetTrust(DeviceId, TrustLevel, Reply<DeviceView>),
    /// Block a device, paired or not.
    Block(DeviceId, Reply<BlockView>),
    /// Lift a device's block.
    Unblock(DeviceId, Reply<BlockView>),
    /// Every blocked device.
    Blocked(Reply<Vec<BlockView>>),
    /// Forget a device.
    Unpair(DeviceId, Reply<()>),
    /// Send a sealed text to a paired device.
    SendText(DeviceId, String, Reply<()>),
    /// One round trip to a paired device; the time it took.
    Ping(DeviceId, Reply<std::time::Duration>),
    /// Texts received.
    Inbox(Reply<Vec<InboxMessage>>),
    /// Delete every received text; how many there were.
    ClearInbox(Reply<u64>),
    /// The audit trail.
    Audit(Reply<Vec<AuditEntryView>>),
    /// Verify the audit trail.
    AuditVerify(Reply<AuditVerifyView>),
    /// Vouching sessions.
    Sessions(Reply<Vec<VouchingSession>>),
    /// One vouching session.
    Session(SessionId, Reply<VouchingSession>),
    /// Vouch for `vouchee` (directly paired) to `to`, or to every directly paired device.
    Vouch {
        /// The device vouched for.
        vouchee: DeviceId,
        /// The targets chosen (ignored with `all`).
        to: Vec<DeviceId>,
        /// Vouch to every other directly paired device.
        all: bool,
        /// Answer.
        reply: Reply<VouchOutcome>,
    },
    /// Vouches waiting for this device's user.
    ProxyRequests(Reply<Vec<ProxyRequestView>>),
    /// The user's answer to a vouch prompt.
    ConfirmProxy {
        /// The prompt id.
        id: String,
        /// Accept (true) or reject.
        accept: bool,
        /// Answer.
        reply: Reply<ConfirmProxyOutcome>,
    },
    /// Devices flagged for review after their voucher was unpaired.
    Review(Reply<Vec<ReviewView>>),
    /// The user keeps or removes a device flagged for review.
    ReviewDecide {
        /// The device.
        device: DeviceId,
        /// Keep (true) or remove it.
        keep: bool,
        /// Answer.
        reply: Reply<ReviewOutcome>,
    },
    /// Each device's trust chain, from the audit trail.
    AuditChains(Reply<Vec<TrustChainView>>),
    /// Stop the event loop.
    Shutdown(oneshot::Sender<()>),
}

/// A handle to a running node.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    events: EventHub,
    device_id: DeviceId,
}

impl Client {
    pub(crate) fn new(tx: mpsc::Sender<Command>, events: EventHub, device_id: DeviceId) -> Self {
        Client {
            tx,
            events,
            device_id,
        }
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The node's event stream.
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// This device.
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        self.ask(Command::Info).await
    }

    /// Nearby and connected devices.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Dials `addr`.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Asks `device` to pair.
    pub async fn pair_request(
        &self,
        device: DeviceId,
        addr: Option<Multiaddr>,
    ) -> Result<PairRequestOutcome, NodeError> {
        self.ask(|reply| Command::PairRequest {
            device,
            addr,
            reply,
        })
        .await
    }

    /// Confirms the code shown for `device`, or the typed `code`.
    pub async fn pair_accept(
        &self,
        device: DeviceId,
        code: Option<String>,
    ) -> Result<AcceptOutcome, NodeError> {
        self.ask(|reply| Command::PairAccept {
            device,
            code,
            reply,
        })
        .await
    }

    /// Declines the pairing with `device`.
    pub async fn pair_reject(&self, device: DeviceId) -> Result<(), NodeError> {
        self.ask(|r| Command::PairReject(device, r)).await
    }

    /// Pairings in progress.
    pub async fn pair_requests(&self) -> Result<Vec<PairingRequestView>, NodeError> {
        self.ask(Command::PairRequests).await
    }

    /// Paired devices.
    pub async fn devices(&self) -> Result<Vec<DeviceView>, NodeError> {
        self.ask(Command::Devices).await
    }

    /// Sets `device`'s trust level.
    pub async fn set_trust(
        &self,
        device: DeviceId,
        level: TrustLevel,
    ) -> Result<DeviceView, NodeError> {
        self.ask(|r| Command::SetTrust(device, level, r)).await
    }

    /// Blocks `device`, paired or not (see `vouchnet block`).
    pub async fn block(&self, device: DeviceId) -> Result<BlockView, NodeError> {
        self.ask(|r| Command::Block(device, r)).await
    }

    /// Lifts `device`'s block.
    pub async fn unblock(&self, device: DeviceId) -> Result<BlockView, NodeError> {
        self.ask(|r| Command::Unblock(device, r)).await
    }

    /// Every blocked device, paired or not.
    pub async fn blocked(&self) -> Result<Vec<BlockView>, NodeError> {
        self.ask(Command::Blocked).await
    }

    /// Forgets `device`.
    pub async fn unpair(&self, device: DeviceId) -> Result<(), NodeError> {
        self.ask(|r| Command::Unpair(device, r)).await
    }

    /// Sends `text`, sealed, to `device`; returns once it was acknowledged.
    pub async fn send_text(&self, device: DeviceId, text: String) -> Result<(), NodeError> {
        self.ask(|r| Command::SendText(device, text, r)).await
    }

    /// One `Ping` to `device` over its connection (dialled if need be); returns the time
    /// from handing it to the network to its `Ack`.
    pub async fn ping(&self, device: DeviceId) -> Result<std::time::Duration, NodeError> {
        self.ask(|r| Command::Ping(device, r)).await
    }

    /// Texts received.
    pub async fn inbox(&self) -> Result<Vec<InboxMessage>, NodeError> {
        self.ask(Command::Inbox).await
    }

    /// Deletes every received text from this device's store; returns how many there were.
    pub async fn clear_inbox(&self) -> Result<u64, NodeError> {
        self.ask(Command::ClearInbox).await
    }

    /// The audit trail.
    pub async fn audit(&self) -> Result<Vec<AuditEntryView>, NodeError> {
        self.ask(Command::Audit).await
    }

    /// Verifies the audit trail.
    pub async fn audit_verify(&self) -> Result<AuditVerifyView, NodeError> {
        self.ask(Command::AuditVerify).await
    }

    /// Vouching sessions.
    pub async fn sessions(&self) -> Result<Vec<VouchingSession>, NodeError> {
        self.ask(Command::Sessions).await
    }

    /// One vouching session.
    pub async fn session(&self, id: SessionId) -> Result<VouchingSession, NodeError> {
        self.ask(|r| Command::Session(id, r)).await
    }

    /// Vouches for `vouchee` to `to` (or to every directly paired device with `all`);
    /// returns once the vouches are sent or durably queued.
    pub async fn vouch(
        &self,
        vouchee: DeviceId,
        to: Vec<DeviceId>,
        all: bool,
    ) -> Result<VouchOutcome, NodeError> {
        self.ask(|reply| Command::Vouch {
            vouchee,
            to,
            all,
            reply,
        })
        .await
    }

    /// Vouches waiting for this device's user.
    pub async fn proxy_requests(&self) -> Result<Vec<ProxyRequestView>, NodeError> {
        self.ask(Command::ProxyRequests).await
    }

    /// Accepts or rejects the vouch prompt `id`.
    pub async fn confirm_proxy(
        &self,
        id: String,
        accept: bool,
    ) -> Result<ConfirmProxyOutcome, NodeError> {
        self.ask(|reply| Command::ConfirmProxy { id, accept, reply })
            .await
    }

    /// Devices flagged for review.
    pub async fn review(&self) -> Result<Vec<ReviewView>, NodeError> {
        self.ask(Command::Review).await
    }

    /// Keeps or removes a device flagged for review.
    pub async fn review_decide(
        &self,
        device: DeviceId,
        keep: bool,
    ) -> Result<ReviewOutcome, NodeError> {
        self.ask(|reply| Command::ReviewDecide {
            device,
            keep,
            reply,
        })
        .await
    }

    /// Each device's trust chain.
    pub async fn audit_chains(&self) -> Result<Vec<TrustChainView>, NodeError> {
        self.ask(Command::AuditChains).await
    }

    /// Stops the event loop and waits until it stopped.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
