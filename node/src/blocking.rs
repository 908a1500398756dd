//! Blocking a device, paired or not (`vouchnet block|unblock|blocked`).
//!
//! A paired device is blocked through its trust level, exactly as `trust <ID> blocked`
//! does. A device this one holds no record of can be blocked too: one never paired (a lost
//! or stolen device of the user's, which the user's other devices might still vouch for), or
//! one already removed. Its block is a tombstone of its own (`Store::block_unpaired`), and
//! it means that:
//! - no vouch adds it: the receiver's vouchee check refuses it (`vouchee_blocked`), and a
//!   vouchee leaves it out of what its voucher reports;
//! - its pairing requests are refused (`PairingCancel{Aborted}`), a pairing in flight with
//!   it is cancelled, and the user cannot start one with it before lifting the block.
//!
//! A block, paired or not, reaches the event stream as a `block` resource: changed when the
//! device is blocked, deleted when the block is lifted.
//!
//! Lifting the block of a device that was removed before it was blocked leaves it removed:
//! only a direct pairing brings it back.

use crate::error::NodeError;
use crate::event_loop::EventLoop;
use crate::events::{NodeEvent, ResourceKind};
use crate::peer::peer_of;
use crate::views::BlockView;
use vouchnet_protocol::model::TrustLevel;
use vouchnet_protocol::DeviceId;
use vouchnet_storage::{RecordKind, StoreError, Tombstone};

impl EventLoop {
    /// Blocks `device`, paired or not. Blocking a blocked device changes nothing.
    pub(crate) fn block(&mut self, device: DeviceId) -> Result<BlockView, NodeError> {
        if device == self.me {
            return Err(NodeError::InvalidArgument(
                "a device cannot block itself".into(),
            ));
        }
        let was_blocked = self.block_view(device)?.blocked;
        if self.store.device(&device)?.is_some() {
            self.set_trust(device, TrustLevel::Blocked)?;
        } else if self.store.block_unpaired(&device, self.clock.now())? {
            tracing::info!(%device, "blocked a device that is not paired");
            match self.pairing.abort(device, self.clock.now()) {
                // Its pairing in flight ends with `PairingCancel{Aborted}`; the connection,
                // which nothing keeps alive now, closes once that is out and it is idle.
                Ok(outputs) => {
                    self.apply_pairing(outputs);
                }
                Err(_) => {
                    let _ = self.swarm.disconnect_peer_id(peer_of(&device));
                }
            }
        }
        let view = self.block_view(device)?;
        if !was_blocked {
            self.hub.publish(NodeEvent::ResourceChanged {
                resource: ResourceKind::Block,
                id: device.to_string(),
                data: serde_json::to_value(&view).expect("views serialize"),
            });
        }
        Ok(view)
    }

    /// Lifts the block on `device`: a paired device becomes trusted again (as with
    /// `trust <ID> trusted`); an unpaired one gets back the tombstone it had before, if any.
    pub(crate) fn unblock(&mut self, device: DeviceId) -> Result<BlockView, NodeError> {
        let not_blocked = || NodeError::NotFound(format!("{device} is not blocked"));
        match self.store.device(&device)? {
            Some(rec) if rec.trust_level == TrustLevel::Blocked => {
                self.set_trust(device, TrustLevel::Trusted)?;
            }
            Some(_) => return Err(not_blocked()),
            None => match self.store.unblock_unpaired(&device, self.clock.now()) {
                Ok(_) => {
                    tracing::info!(%device, "lifted the block on a device that is not paired")
                }
                Err(StoreError::NotFound(RecordKind::Tombstone)) => return Err(not_blocked()),
                Err(e) => return Err(e.into()),
            },
        }
        self.hub.publish(NodeEvent::ResourceDeleted {
            resource: ResourceKind::Block,
            id: device.to_string(),
        });
        self.block_view(device)
    }

    /// Every blocked device, paired or not, in id order.
    pub(crate) fn blocked(&self) -> Result<Vec<BlockView>, NodeError> {
        self.store
            .tombstones()?
            .into_iter()
            .filter(Tombstone::is_block)
            .map(|t| self.block_view(t.device_id))
            .collect()
    }

    fn block_view(&self, device: DeviceId) -> Result<BlockView, NodeError> {
        let record = self.store.device(&device)?;
        let block = self.store.tombstone(&device)?.filter(Tombstone::is_block);
        let blocked = match &record {
            Some(rec) => rec.trust_level == TrustLevel::Blocked,
            None => block.is_some(),
        };
        Ok(BlockView {
            device_id: device.to_string(),
            name: record.as_ref().map(|r| r.name.as_str().to_owned()),
            paired: record.is_some(),
            blocked,
            since: block.filter(|_| blocked).map(|t| t.at.as_millis()),
        })
    }
}
