//! Devices, trust, tombstones, reliability and pairings in flight.

use super::*;

/// A direct pairing to store: both key confirmations verified and the user confirmed the
/// code.
#[derive(Clone, Debug)]
pub struct DirectPairing {
    /// The peer the connection authenticated.
    pub device_id: DeviceId,
    /// Its key (must be the one embedded in `device_id`).
    pub public_key: DevicePublicKey,
    /// Its name.
    pub name: DisplayName,
    /// The pairing transaction.
    pub tx_id: TxId,
    /// The pairing key.
    pub session_key: SymmetricKey,
    /// Our key-confirmation MAC (audited).
    pub our_mac: [u8; 32],
    /// The peer's key-confirmation MAC, which verified (audited).
    pub their_mac: [u8; 32],
    /// When.
    pub at: Timestamp,
}

impl Txn {
    /// A device record.
    pub fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, TxError> {
        self.get_decoded(DEVICES, "device record", &id.to_bytes())
    }

    pub(super) fn put_device(&self, record: &DeviceRecord) -> Result<(), TxError> {
        let bytes = codec::encode_secret(record);
        self.put(DEVICES, &record.device_id.to_bytes(), &bytes)
    }

    pub(super) fn require_device(&self, id: &DeviceId) -> Result<DeviceRecord, TxError> {
        Ok(self
            .device(id)?
            .ok_or(StoreError::NotFound(RecordKind::Device))?)
    }

    /// A device's tombstone.
    pub fn tombstone(&self, id: &DeviceId) -> Result<Option<Tombstone>, TxError> {
        self.get_decoded(TOMBSTONES, "tombstone", &id.to_bytes())
    }

    pub(super) fn put_tombstone(
        &self,
        device_id: DeviceId,
        reason: TombstoneReason,
        at: Timestamp,
    ) -> Result<(), TxError> {
        let t = Tombstone {
            device_id,
            reason,
            at,
            blocked_over: None,
        };
        self.put(TOMBSTONES, &device_id.to_bytes(), &codec::encode(&t))
    }

    /// Stores a completed direct pairing: the device (Direct, Trusted), the audit entry, and
    /// the end of the pairing transaction in flight. A direct pairing is the one thing that
    /// brings back a tombstoned device, so its tombstone is cleared. Pairing again with a
    /// device already stored replaces its record, after an `Unpaired` entry for the old one.
    pub fn pair_direct(&self, p: &DirectPairing) -> Result<DeviceRecord, TxError> {
        if p.public_key.device_id() != p.device_id {
            return Err(StoreError::KeyMismatch(KeyError::Mismatch).into());
        }
        let held = self.device(&p.device_id)?.is_some();
        if !held && self.tombstone(&p.device_id)?.is_some_and(|t| t.is_block()) {
            // The node refuses such a pairing and cancels one in flight when the user
            // blocks; this is the last line should the two ever cross.
            return Err(StoreError::InvalidTransition {
                detail: "the user blocked this device; unblock it before pairing",
            }
            .into());
        }
        if held {
            // A re-pairing (the other device had lost its side): the trail shows the old
            // pairing ending before the new one, so no device is ever added twice.
            self.record_event(
                p.at,
                AuditEvent::Unpaired {
                    device: p.device_id,
                },
            )?;
        }
        let record = DeviceRecord {
            device_id: p.device_id,
            public_key: p.public_key,
            name: p.name.clone(),
            pairing_type: PairingType::Direct,
            trust_level: TrustLevel::Trusted,
            paired_at: p.at,
            last_seen: Some(p.at),
            vouched_by: None,
            proof: None,
            session_key: p.session_key.clone(),
            previous_key: None,
        };
        self.put_device(&record)?;
        self.del(TOMBSTONES, &p.device_id.to_bytes())?;
        self.remove_pairing(&p.device_id)?;
        self.record_event(
            p.at,
            AuditEvent::PairedDirect {
                device: p.device_id,
                key: p.public_key,
                name: p.name.clone(),
                tx_id: p.tx_id,
                confirmed_by_user: true,
                our_mac: p.our_mac,
                their_mac: p.their_mac,
            },
        )?;
        Ok(record)
    }

    /// The user's trust decision. Blocking tombstones the device (so no vouch re-adds it);
    /// lifting a block removes that tombstone. Returns the previous level; setting the
    /// current level again writes nothing.
    pub fn set_trust(
        &self,
        id: &DeviceId,
        to: TrustLevel,
        at: Timestamp,
    ) -> Result<TrustLevel, TxError> {
        let mut record = self.require_device(id)?;
        let from = record.trust_level;
        if from == to {
            return Ok(from);
        }
        record.trust_level = to;
        self.put_device(&record)?;
        if to == TrustLevel::Blocked {
            self.put_tombstone(*id, TombstoneReason::Blocked, at)?;
        } else if from == TrustLevel::Blocked {
            if let Some(t) = self.tombstone(id)? {
                if t.is_block() {
                    self.del(TOMBSTONES, &id.to_bytes())?;
                }
            }
        }
        self.record_event(
            at,
            AuditEvent::TrustChanged {
                device: *id,
                from,
                to,
            },
        )?;
        Ok(from)
    }

    fn forget_device(
        &self,
        id: &DeviceId,
        reason: TombstoneReason,
        at: Timestamp,
    ) -> Result<DeviceRecord, TxError> {
        let record = self.require_device(id)?;
        self.del(DEVICES, &id.to_bytes())?;
        self.del(RELIABILITY, &id.to_bytes())?;
        self.put_tombstone(*id, reason, at)?;
        Ok(record)
    }

    /// The user unpairs a device: the record goes, a tombstone stays, and the audit trail
    /// keeps every earlier entry about it.
    pub fn unpair(&self, id: &DeviceId, at: Timestamp) -> Result<DeviceRecord, TxError> {
        let record = self.forget_device(id, TombstoneReason::Removed, at)?;
        self.record_event(at, AuditEvent::Unpaired { device: *id })?;
        Ok(record)
    }

    /// Revokes a device: like [`Txn::unpair`], with the reason audited.
    pub fn revoke(
        &self,
        id: &DeviceId,
        reason: RevokeReason,
        at: Timestamp,
    ) -> Result<DeviceRecord, TxError> {
        let record = self.forget_device(id, TombstoneReason::Revoked, at)?;
        self.record_event(
            at,
            AuditEvent::Revoked {
                device: *id,
                reason,
            },
        )?;
        Ok(record)
    }

    /// Removes a tombstone of a removed or revoked device at the user's request, so vouches
    /// for it are considered again. A block is lifted with [`Txn::set_trust`] instead.
    pub fn clear_tombstone(&self, id: &DeviceId, at: Timestamp) -> Result<Tombstone, TxError> {
        let t = self
            .tombstone(id)?
            .ok_or(StoreError::NotFound(RecordKind::Tombstone))?;
        if t.is_block() && self.device(id)?.is_some() {
            return Err(StoreError::InvalidTransition {
                detail: "a blocked device is unblocked by changing its trust level",
            }
            .into());
        }
        self.del(TOMBSTONES, &id.to_bytes())?;
        self.record_event(at, AuditEvent::TombstoneCleared { device: *id })?;
        Ok(t)
    }

    /// The user blocks a device this one holds no record of: one never paired (a lost or
    /// stolen device of theirs that others might vouch for), or one already removed. A
    /// `Blocked` tombstone means no vouch adds it and the node refuses its pairing
    /// requests. A tombstone it had (removed or revoked) is kept inside the block and comes
    /// back when the block is lifted. Audited as `Blocked`. Returns false, writing nothing,
    /// if it was already blocked. A paired device is blocked with [`Txn::set_trust`].
    pub fn block_unpaired(&self, id: &DeviceId, at: Timestamp) -> Result<bool, TxError> {
        if self.device(id)?.is_some() {
            return Err(StoreError::InvalidTransition {
                detail: "a paired device is blocked by changing its trust level",
            }
            .into());
        }
        let blocked_over = match self.tombstone(id)? {
            Some(t) if t.is_block() => return Ok(false),
            Some(t) => Some(t.reason),
            None => None,
        };
        let t = Tombstone {
            device_id: *id,
            reason: TombstoneReason::Blocked,
            at,
            blocked_over,
        };
        self.put(TOMBSTONES, &id.to_bytes(), &codec::encode(&t))?;
        self.record_event(at, AuditEvent::Blocked { device: *id })?;
        Ok(true)
    }

    /// Lifts a block made with [`Txn::block_unpaired`]: the tombstone the device had before
    /// comes back (a removed device stays out of reach of vouches), or none. Audited as
    /// `Unblocked`. Returns the block that was lifted.
    pub fn unblock_unpaired(&self, id: &DeviceId, at: Timestamp) -> Result<Tombstone, TxError> {
        if self.device(id)?.is_some() {
            return Err(StoreError::InvalidTransition {
                detail: "a paired device is unblocked by changing its trust level",
            }
            .into());
        }
        let block = self
            .tombstone(id)?
            .filter(Tombstone::is_block)
            .ok_or(StoreError::NotFound(RecordKind::Tombstone))?;
        match block.blocked_over {
            Some(reason) => self.put_tombstone(*id, reason, at)?,
            None => {
                self.del(TOMBSTONES, &id.to_bytes())?;
            }
        }
        self.record_event(at, AuditEvent::Unblocked { device: *id })?;
        Ok(block)
    }

    /// Records that a connection from the device was authenticated.
    pub fn touch_last_seen(&self, id: &DeviceId, at: Timestamp) -> Result<(), TxError> {
        let mut record = self.require_device(id)?;
        if record.last_seen.is_some_and(|seen| seen >= at) {
            return Ok(());
        }
        record.last_seen = Some(at);
        self.put_device(&record)
    }

    /// Replaces the key shared with a device (audited, without the key), and forgets any
    /// previous key kept from a rekey.
    pub fn set_session_key(
        &self,
        id: &DeviceId,
        key: &SymmetricKey,
        at: Timestamp,
    ) -> Result<(), TxError> {
        let mut record = self.require_device(id)?;
        record.session_key = key.clone();
        record.previous_key = None;
        self.put_device(&record)?;
        self.record_event(at, AuditEvent::Rekeyed { device: *id })?;
        Ok(())
    }

    /// A rekey switched to `key`: the key it replaces is kept as the previous key until
    /// [`Txn::forget_previous_key`] (a key proof with the new key succeeded) or
    /// [`Txn::set_session_key`] (the device proved the previous one; it becomes current).
    pub fn switch_session_key(
        &self,
        id: &DeviceId,
        key: &SymmetricKey,
        initiated: bool,
        at: Timestamp,
    ) -> Result<(), TxError> {
        let mut record = self.require_device(id)?;
        let previous = std::mem::replace(&mut record.session_key, key.clone());
        record.previous_key = Some(PreviousKey {
            key: previous,
            initiated,
        });
        self.put_device(&record)?;
        self.record_event(at, AuditEvent::Rekeyed { device: *id })?;
        Ok(())
    }

    /// The device proved the current key: the previous one is no longer needed. Returns
    /// whether there was one.
    pub fn forget_previous_key(&self, id: &DeviceId) -> Result<bool, TxError> {
        let mut record = self.require_device(id)?;
        if record.previous_key.take().is_none() {
            return Ok(false);
        }
        self.put_device(&record)?;
        Ok(true)
    }

    /// Counts a connection success or failure. This never touches the trust level.
    pub fn record_connection(
        &self,
        id: &DeviceId,
        at: Timestamp,
        ok: bool,
    ) -> Result<Reliability, TxError> {
        self.require_device(id)?;
        let mut r: Reliability = self
            .get_decoded(RELIABILITY, "reliability record", &id.to_bytes())?
            .unwrap_or_default();
        if ok {
            r.successes += 1;
            r.consecutive_failures = 0;
            r.last_success = Some(at);
        } else {
            r.failures += 1;
            r.consecutive_failures = r.consecutive_failures.saturating_add(1);
            r.last_failure = Some(at);
        }
        self.put(RELIABILITY, &id.to_bytes(), &codec::encode(&r))?;
        Ok(r)
    }

    // ---------------------------------------------------------------- pairings in flight

    /// A pairing in flight with `peer`.
    pub fn pairing(&self, peer: &DeviceId) -> Result<Option<PairingRecord>, TxError> {
        self.get_decoded(PAIRINGS, "pairing record", &peer.to_bytes())
    }

    /// Stores (or replaces) the pairing in flight with `record.peer`.
    pub fn put_pairing(&self, record: &PairingRecord) -> Result<(), TxError> {
        let key = record.peer.to_bytes();
        if let Some(old) = self.pairing(&record.peer)? {
            self.del(
                EXPIRY,
                &layout::expiry_key(ExpiryKind::Pairing, old.expires_at, &key),
            )?;
        }
        self.put(PAIRINGS, &key, &codec::encode_secret(record))?;
        self.put(
            EXPIRY,
            &layout::expiry_key(ExpiryKind::Pairing, record.expires_at, &key),
            &[],
        )
    }

    /// Ends the pairing in flight with `peer`, returning it.
    pub fn remove_pairing(&self, peer: &DeviceId) -> Result<Option<PairingRecord>, TxError> {
        let key = peer.to_bytes();
        let old = self.pairing(peer)?;
        if let Some(old) = &old {
            self.del(PAIRINGS, &key)?;
            self.del(
                EXPIRY,
                &layout::expiry_key(ExpiryKind::Pairing, old.expires_at, &key),
            )?;
        }
        Ok(old)
    }
}
