//! The handle the rest of the node (API, demo, tests) uses to talk to the event loop.
//!
//! As in rust-libp2p's file-sharing example: [`Client`] is cheap to clone, each method sends
//! one [`Command`] over a channel with a oneshot for the answer, and the event loop, which
//! owns the swarm, the protocol machines and the store, answers it. Nothing here touches
//! the network or the disk.

use crate::error::NodeError;
use crate::events::EventHub;
use crate::views::{
    AcceptOutcome, AuditEntryView, AuditVerifyView, DeviceView, InboxMessage, NodeInfo,
    PairRequestOutcome, PairingRequestView, PeerView,
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
    /// Forget a device.
    Unpair(DeviceId, Reply<()>),
    /// Send a sealed text to a paired device.
    SendText(DeviceId, String, Reply<()>),
    /// Texts received.
    Inbox(Reply<Vec<InboxMessage>>),
    /// The audit trail.
    Audit(Reply<Vec<AuditEntryView>>),
    /// Verify the audit trail.
    AuditVerify(Reply<AuditVerifyView>),
    /// Vouching sessions.
    Sessions(Reply<Vec<VouchingSession>>),
    /// One vouching session.
    Session(SessionId, Reply<VouchingSession>),
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

    /// Forgets `device`.
    pub async fn unpair(&self, device: DeviceId) -> Result<(), NodeError> {
        self.ask(|r| Command::Unpair(device, r)).await
    }

    /// Sends `text`, sealed, to `device`; returns once it was acknowledged.
    pub async fn send_text(&self, device: DeviceId, text: String) -> Result<(), NodeError> {
        self.ask(|r| Command::SendText(device, text, r)).await
    }

    /// Texts received.
    pub async fn inbox(&self) -> Result<Vec<InboxMessage>, NodeError> {
        self.ask(Command::Inbox).await
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

    /// Stops the event loop and waits until it stopped.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
