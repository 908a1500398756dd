//! What one simulated device has stored, in memory, and the protocol's view traits over it.
//!
//! The node keeps these in sled (`vouchnet_storage`); the simulator keeps the same records
//! in ordered maps so that a run is deterministic and 10,000 devices fit in memory. The
//! protocol machines read this state only through their view traits ([`ReceiverView`],
//! [`VoucherView`], [`VoucheeView`]), exactly as they read the node's store.

use crate::audit::AuditLog;
use crate::net::SimNetwork;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::ids::{SessionId, VouchNonce};
use vouchnet_protocol::messages::{Decision, DisplayName};
use vouchnet_protocol::model::{
    KnownDevice, PairingType, QueueEntry, QueueKind, TrustLevel, VouchProof, VouchingSession,
};
use vouchnet_protocol::session::VoucherView;
use vouchnet_protocol::vouch::{PendingPrompt, PromptKey, ReceiverView};
use vouchnet_protocol::vouchee::VoucheeView;
use vouchnet_protocol::{SymmetricKey, Timestamp};

/// How a proxied device was justified.
#[derive(Debug, Clone)]
pub enum Proof {
    /// Directly paired: no proof beyond the pairing itself.
    Direct,
    /// Target side: the voucher's certificate and this device's acceptance.
    Target(Box<VouchProof>),
    /// Vouchee side: the target's signed acceptance.
    Vouchee(Box<vouchnet_protocol::messages::SignedResponse>),
}

/// One paired device, as this device stores it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Key, pairing type and trust.
    pub known: KnownDevice,
    /// Display name.
    pub name: DisplayName,
    /// Pairing key (direct) or proxied key.
    pub key: SymmetricKey,
    /// The voucher, for proxied devices.
    pub vouched_by: Option<DeviceId>,
    /// The evidence.
    pub proof: Proof,
    /// When it was added (virtual time).
    pub added_at: u64,
}

/// The offline-queue key: one entry per (session, recipient, kind).
pub type QueueKey = (SessionId, DeviceId, u8);

/// The queue key of an entry.
pub fn queue_key(session: SessionId, recipient: DeviceId, kind: QueueKind) -> QueueKey {
    (
        session,
        recipient,
        match kind {
            QueueKind::Vouch => 0,
            QueueKind::NotifyVouchee => 1,
        },
    )
}

/// A queue entry and whether a delivery of it is in flight.
#[derive(Debug, Clone)]
pub struct QueueSlot {
    /// The persisted entry.
    pub entry: QueueEntry,
    /// A delivery was sent and is not yet acknowledged or failed.
    pub in_flight: bool,
}

/// Everything one device stores.
#[derive(Debug, Default)]
pub struct DeviceStore {
    /// Paired devices.
    pub devices: BTreeMap<DeviceId, Record>,
    /// Removed or blocked devices.
    pub tombstones: BTreeSet<DeviceId>,
    /// Replay cache: nonce → forget after.
    pub replay: BTreeMap<VouchNonce, Timestamp>,
    /// Decisions given: (session, voucher, vouchee) → decision, forget after.
    pub decisions: BTreeMap<(SessionId, DeviceId, DeviceId), (Decision, Timestamp)>,
    /// Open vouch prompts.
    pub prompts: BTreeMap<PromptKey, PendingPrompt>,
    /// Vouching sessions (voucher side).
    pub sessions: BTreeMap<SessionId, VouchingSession>,
    /// The offline queue.
    pub queue: BTreeMap<QueueKey, QueueSlot>,
    /// The audit trail.
    pub audit: AuditLog,
}

impl DeviceStore {
    /// Devices this one paired with directly and trusts, except `except`, in id order.
    pub fn direct_trusted(&self, except: &DeviceId) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|(id, r)| {
                *id != except
                    && r.known.pairing_type == PairingType::Direct
                    && r.known.trust_level == TrustLevel::Trusted
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// True when `id` is stored and not blocked.
    pub fn trusts(&self, id: &DeviceId) -> bool {
        matches!(self.devices.get(id), Some(r) if r.known.trust_level != TrustLevel::Blocked)
    }

    /// Forgets replay-cache nonces and decisions whose time has passed.
    pub fn prune(&mut self, now: Timestamp) {
        self.replay.retain(|_, exp| *exp >= now);
        self.decisions.retain(|_, (_, exp)| *exp >= now);
    }
}

/// A device's store seen through the protocol's view traits, with the network for
/// presence.
#[derive(Debug)]
pub struct View<'a> {
    /// The store.
    pub store: &'a DeviceStore,
    /// The network, for `is_online`.
    pub net: &'a SimNetwork,
    /// Device id → index.
    pub ids: &'a HashMap<DeviceId, u32>,
    /// This device's index.
    pub me: u32,
    /// Open pairing transactions (they count as prompts).
    pub pairing_prompts: usize,
}

impl VoucherView for View<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.store.devices.get(id).map(|r| r.known.clone())
    }
    fn display_name(&self, id: &DeviceId) -> Option<DisplayName> {
        self.store.devices.get(id).map(|r| r.name.clone())
    }
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.store
            .devices
            .get(id)
            .filter(|r| r.known.pairing_type == PairingType::Direct)
            .map(|r| r.key.clone())
    }
    fn is_online(&self, id: &DeviceId) -> bool {
        self.ids
            .get(id)
            .is_some_and(|&i| self.net.reachable(self.me, i))
    }
}

impl ReceiverView for View<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        VoucherView::device(self, id)
    }
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        VoucherView::pairing_key(self, id)
    }
    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.store.tombstones.contains(id)
    }
    fn nonce_seen(&self, nonce: &VouchNonce) -> bool {
        self.store.replay.contains_key(nonce)
    }
    fn prior_decision(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Decision> {
        self.store
            .decisions
            .get(&(*session, *voucher, *vouchee))
            .map(|(d, _)| d.clone())
    }
    fn vouched_acceptance(&self, vouchee: &DeviceId) -> Option<(DeviceId, Decision)> {
        let r = self.store.devices.get(vouchee)?;
        match (r.vouched_by, &r.proof) {
            (Some(voucher), Proof::Target(proof)) => Some((voucher, proof.acceptance()?)),
            _ => None,
        }
    }
    fn open_prompt(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Timestamp> {
        self.store
            .prompts
            .get(&PromptKey {
                session_id: *session,
                voucher: *voucher,
                vouchee: *vouchee,
            })
            .map(|p| p.deadline)
    }
    fn pending_prompts(&self) -> usize {
        self.store.prompts.len() + self.pairing_prompts
    }
}

impl VoucheeView for View<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        VoucherView::device(self, id)
    }
    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.store.tombstones.contains(id)
    }
}
