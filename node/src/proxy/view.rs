//! The node's state as the protocol machines read it: one [`NodeView`] implements the
//! receiver's, the voucher's and the vouchee's view traits over the store, presence and
//! the open prompts.
//!
//! The machines only read through it, so a view is built for one call and dropped before
//! anything is written. A store read that fails is logged and reads as "nothing there":
//! every such answer makes a check fail (an unknown voucher, a missing key), never pass.

use super::ProxyState;
use crate::addrbook::AddressBook;
use crate::network::presence::Presence;
use vouchnet_protocol::messages::{AddrHint, Decision, DisplayName};
use vouchnet_protocol::model::{KnownDevice, PairingType};
use vouchnet_protocol::session::VoucherView;
use vouchnet_protocol::vouch::ReceiverView;
use vouchnet_protocol::vouchee::VoucheeView;
use vouchnet_protocol::{DeviceId, SessionId, SymmetricKey, Timestamp, VouchNonce};
use vouchnet_storage::{DeviceRecord, Store};

/// A read-only view of the node for one machine call.
#[derive(Debug)]
pub struct NodeView<'a> {
    /// The store.
    pub store: &'a Store,
    /// Who is online.
    pub presence: &'a Presence,
    /// Open prompts and other in-memory state.
    pub proxy: &'a ProxyState,
    /// Direct pairings waiting for their user, which count against the prompt limit.
    pub pairing_prompts: usize,
    /// Where paired devices were last reached (passed on to a vouchee as hints).
    pub addrbook: &'a AddressBook,
}

impl NodeView<'_> {
    fn record(&self, id: &DeviceId) -> Option<DeviceRecord> {
        match self.store.device(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(device = %id, "cannot read device record: {e}");
                None
            }
        }
    }

    fn tombstoned(&self, id: &DeviceId) -> bool {
        match self.store.tombstone(id) {
            Ok(t) => t.is_some(),
            Err(e) => {
                // Unreadable: treat as sent away, which refuses the vouch.
                tracing::error!(device = %id, "cannot read tombstone: {e}");
                true
            }
        }
    }

    fn direct_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.record(id)
            .filter(|r| r.pairing_type == PairingType::Direct)
            .map(|r| r.session_key)
    }
}

impl ReceiverView for NodeView<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.record(id).map(|r| r.known())
    }

    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.direct_key(id)
    }

    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.tombstoned(id)
    }

    fn nonce_seen(&self, nonce: &VouchNonce) -> bool {
        if self.proxy.prompt_nonce(nonce) {
            return true;
        }
        match self.store.nonce_seen(nonce) {
            Ok(seen) => seen,
            Err(e) => {
                // Unreadable: treat as seen, which refuses the vouch.
                tracing::error!("cannot read the replay cache: {e}");
                true
            }
        }
    }

    fn prior_decision(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Decision> {
        match self.store.decision(session, vouchee) {
            Ok(Some(d)) if d.voucher == *voucher => Some(d.decision),
            Ok(_) => None,
            Err(e) => {
                tracing::error!("cannot read a recorded decision: {e}");
                None
            }
        }
    }

    fn vouched_acceptance(&self, vouchee: &DeviceId) -> Option<(DeviceId, Decision)> {
        let rec = self.record(vouchee)?;
        match (rec.vouched_by, rec.proof) {
            (Some(voucher), Some(vouchnet_storage::DeviceProof::Vouch(proof))) => {
                Some((voucher, proof.acceptance()?))
            }
            _ => None,
        }
    }

    fn open_prompt(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Timestamp> {
        let key = vouchnet_protocol::vouch::PromptKey {
            session_id: *session,
            voucher: *voucher,
            vouchee: *vouchee,
        };
        self.proxy.prompts.get(&key).map(|p| p.prompt.deadline)
    }

    fn pending_prompts(&self) -> usize {
        self.proxy.prompts.len() + self.pairing_prompts
    }
}

impl VoucherView for NodeView<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.record(id).map(|r| r.known())
    }

    fn display_name(&self, id: &DeviceId) -> Option<DisplayName> {
        self.record(id).map(|r| r.name)
    }

    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.direct_key(id)
    }

    fn is_online(&self, id: &DeviceId) -> bool {
        self.presence.is_online(id)
    }

    fn address_hints(&self, id: &DeviceId) -> Vec<AddrHint> {
        self.addrbook
            .get(id)
            .iter()
            .map(|a| AddrHint(a.to_vec()))
            .collect()
    }
}

impl VoucheeView for NodeView<'_> {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.record(id).map(|r| r.known())
    }

    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.tombstoned(id)
    }
}
