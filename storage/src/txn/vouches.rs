//! Receiving vouches (target side), the replay cache and decisions, and the vouchee's
//! side of a completed vouch.

use super::*;

/// Target side: a vouch the protocol decided to accept.
#[derive(Clone, Debug)]
pub struct AcceptVouch {
    /// The vouching session.
    pub session_id: SessionId,
    /// The voucher (the authenticated sender).
    pub voucher: DeviceId,
    /// The vouchee.
    pub vouchee: DeviceId,
    /// Its key.
    pub vouchee_key: DevicePublicKey,
    /// Its name.
    pub vouchee_name: DisplayName,
    /// The vouch's nonce, kept in the replay cache.
    pub nonce: VouchNonce,
    /// Until when the nonce must be remembered.
    pub nonce_expires_at: Timestamp,
    /// The certificate and our signed acceptance.
    pub proof: VouchProof,
    /// Automatically or by the user.
    pub how: AcceptedHow,
    /// The target–vouchee key.
    pub session_key: SymmetricKey,
    /// When.
    pub at: Timestamp,
}

/// What [`Txn::accept_vouch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The vouchee was added; the device record as stored.
    Accepted(Box<DeviceRecord>),
    /// This (session, vouchee) was decided before: here is that decision; nothing written.
    AlreadyDecided(Box<DecisionRecord>),
    /// The store refused (a check failed at commit time); nothing written. The caller
    /// answers with a signed rejection for this reason instead.
    Refused(VouchRejection),
}

/// Target side: a vouch the protocol decided to reject.
#[derive(Clone, Debug)]
pub struct RejectVouch {
    /// The vouching session.
    pub session_id: SessionId,
    /// The voucher.
    pub voucher: DeviceId,
    /// The vouchee.
    pub vouchee: DeviceId,
    /// The vouch's nonce, kept in the replay cache.
    pub nonce: VouchNonce,
    /// Until when the nonce must be remembered.
    pub nonce_expires_at: Timestamp,
    /// Why.
    pub reason: VouchRejection,
    /// The certificate, when it verified.
    pub vouch: Option<SignedVouch>,
    /// Our signed refusal, when one is sent.
    pub response: Option<SignedResponse>,
    /// Remember the decision, so a re-delivery of this session gets the same answer.
    /// False for transient reasons (rate limits) that a later delivery may not meet.
    pub record_decision: bool,
    /// When.
    pub at: Timestamp,
}

/// What [`Txn::reject_vouch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectOutcome {
    /// The rejection was recorded (audit, nonce, and the decision if asked).
    Recorded,
    /// This (session, vouchee) was decided before: here is that decision; nothing written.
    AlreadyDecided(Box<DecisionRecord>),
}

/// Vouchee side: a target that accepted us, as the voucher relayed it.
#[derive(Clone, Debug)]
pub struct ProxiedDevice {
    /// The vouching session.
    pub session_id: SessionId,
    /// Our voucher (the authenticated sender of the completion).
    pub voucher: DeviceId,
    /// The target that accepted us.
    pub device_id: DeviceId,
    /// Its key.
    pub public_key: DevicePublicKey,
    /// Its name.
    pub name: DisplayName,
    /// Its signed acceptance.
    pub acceptance: SignedResponse,
    /// The key shared with it.
    pub session_key: SymmetricKey,
    /// When.
    pub at: Timestamp,
}

/// What [`Txn::add_proxied_device`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxiedOutcome {
    /// Added.
    Added(DeviceRecord),
    /// Already paired; the existing record is unchanged.
    AlreadyPaired(DeviceRecord),
    /// Refused; nothing written.
    Refused(VouchRejection),
}

impl Txn {
    // ---------------------------------------------------------------- replay cache & decisions

    /// True if the nonce is in the replay cache (even past its expiry, until pruned).
    pub fn nonce_seen(&self, nonce: &VouchNonce) -> Result<bool, TxError> {
        Ok(self
            .t(REPLAY)
            .get(layout::nonce_key(*nonce))
            .eng()?
            .is_some())
    }

    /// Adds a nonce to the replay cache until `expires_at` (kept at the later expiry if it
    /// is already there).
    pub fn remember_nonce(&self, nonce: &VouchNonce, expires_at: Timestamp) -> Result<(), TxError> {
        let key = layout::nonce_key(*nonce);
        if let Some(old) = self.t(REPLAY).get(key).eng()? {
            let old_at = Timestamp::from_millis(
                layout::be_u64(&old)
                    .ok_or_else(|| StoreError::undecodable("replay expiry", "not 8 bytes"))?,
            );
            if old_at >= expires_at {
                return Ok(());
            }
            self.del(
                EXPIRY,
                &layout::expiry_key(ExpiryKind::Replay, old_at, &key),
            )?;
        }
        self.put(REPLAY, &key, &expires_at.as_millis().to_be_bytes())?;
        self.put(
            EXPIRY,
            &layout::expiry_key(ExpiryKind::Replay, expires_at, &key),
            &[],
        )
    }

    /// The decision recorded for (session, vouchee).
    pub fn decision(
        &self,
        session: &SessionId,
        vouchee: &DeviceId,
    ) -> Result<Option<DecisionRecord>, TxError> {
        self.get_decoded(
            DECISIONS,
            "decision record",
            &layout::decision_key(*session, *vouchee),
        )
    }

    pub(super) fn put_decision(&self, d: &DecisionRecord) -> Result<(), TxError> {
        let key = layout::decision_key(d.session_id, d.vouchee);
        self.put(DECISIONS, &key, &codec::encode(d))?;
        self.put(
            EXPIRY,
            &layout::expiry_key(ExpiryKind::Decision, d.decided_at, &key),
            &[],
        )
    }

    /// Target side: accepts a vouch. In one transaction: the vouchee becomes a proxied,
    /// trusted device with its proof, the nonce enters the replay cache, the decision is
    /// recorded, and the acceptance is audited.
    ///
    /// Idempotent: a second call for the same (session, vouchee) returns the first decision
    /// and writes nothing. The checks that can race with other writes are repeated here,
    /// at commit time: the voucher must still be a directly paired, trusted device, the
    /// vouchee must not be tombstoned or already paired (so two vouchers vouching for the
    /// same device leave exactly one record), and the nonce must be new.
    pub fn accept_vouch(&self, a: &AcceptVouch) -> Result<AcceptOutcome, TxError> {
        if let Some(prior) = self.decision(&a.session_id, &a.vouchee)? {
            return Ok(AcceptOutcome::AlreadyDecided(Box::new(prior)));
        }
        match self.device(&a.voucher)? {
            None => return Ok(AcceptOutcome::Refused(VouchRejection::VoucherNotPaired)),
            Some(v) if v.pairing_type != PairingType::Direct => {
                return Ok(AcceptOutcome::Refused(VouchRejection::VoucherNotDirect))
            }
            Some(v) if v.trust_level != TrustLevel::Trusted => {
                return Ok(AcceptOutcome::Refused(VouchRejection::VoucherNotTrusted))
            }
            Some(_) => {}
        }
        if a.vouchee == a.voucher {
            return Ok(AcceptOutcome::Refused(VouchRejection::VoucheeIsVoucher));
        }
        if a.vouchee_key.device_id() != a.vouchee {
            return Ok(AcceptOutcome::Refused(VouchRejection::VoucheeKeyMismatch));
        }
        if self.tombstone(&a.vouchee)?.is_some() {
            return Ok(AcceptOutcome::Refused(VouchRejection::VoucheeBlocked));
        }
        if self.nonce_seen(&a.nonce)? {
            return Ok(AcceptOutcome::Refused(VouchRejection::Replay));
        }
        if self.device(&a.vouchee)?.is_some() {
            return Ok(AcceptOutcome::Refused(VouchRejection::AlreadyPaired));
        }
        let record = DeviceRecord {
            device_id: a.vouchee,
            public_key: a.vouchee_key,
            name: a.vouchee_name.clone(),
            pairing_type: PairingType::Proxied,
            trust_level: TrustLevel::Trusted,
            paired_at: a.at,
            last_seen: None,
            vouched_by: Some(a.voucher),
            proof: Some(DeviceProof::Vouch(a.proof.clone())),
            session_key: a.session_key.clone(),
            previous_key: None,
        };
        self.record_event(
            a.at,
            AuditEvent::VouchAccepted {
                session: a.session_id,
                voucher: a.voucher,
                vouchee: a.vouchee,
                vouchee_key: a.vouchee_key,
                how: a.how,
                proof: a.proof.clone(),
            },
        )?;
        self.put_device(&record)?;
        self.remember_nonce(&a.nonce, a.nonce_expires_at)?;
        self.put_decision(&DecisionRecord {
            session_id: a.session_id,
            voucher: a.voucher,
            vouchee: a.vouchee,
            nonce: a.nonce,
            decision: Decision::Accepted { how: a.how },
            response: Some(a.proof.response.clone()),
            decided_at: a.at,
        })?;
        Ok(AcceptOutcome::Accepted(Box::new(record)))
    }

    /// Target side: records a rejection (audit, nonce, and the decision if asked for).
    /// Idempotent like [`Txn::accept_vouch`].
    pub fn reject_vouch(&self, r: &RejectVouch) -> Result<RejectOutcome, TxError> {
        if let Some(prior) = self.decision(&r.session_id, &r.vouchee)? {
            return Ok(RejectOutcome::AlreadyDecided(Box::new(prior)));
        }
        self.record_event(
            r.at,
            AuditEvent::VouchRejected {
                session: r.session_id,
                voucher: r.voucher,
                vouchee: r.vouchee,
                reason: r.reason.clone(),
                vouch: r.vouch.clone(),
                response: r.response.clone(),
            },
        )?;
        self.remember_nonce(&r.nonce, r.nonce_expires_at)?;
        if r.record_decision {
            self.put_decision(&DecisionRecord {
                session_id: r.session_id,
                voucher: r.voucher,
                vouchee: r.vouchee,
                nonce: r.nonce,
                decision: Decision::Rejected {
                    reason: r.reason.clone(),
                },
                response: r.response.clone(),
                decided_at: r.at,
            })?;
        }
        Ok(RejectOutcome::Recorded)
    }

    /// Vouchee side: adds a target that accepted us, with its signed acceptance as proof.
    /// The voucher must be a directly paired, trusted device; a tombstoned target is
    /// refused; an already paired one is left as it is.
    pub fn add_proxied_device(&self, p: &ProxiedDevice) -> Result<ProxiedOutcome, TxError> {
        if p.public_key.device_id() != p.device_id {
            return Err(StoreError::KeyMismatch(KeyError::Mismatch).into());
        }
        if let Some(existing) = self.device(&p.device_id)? {
            return Ok(ProxiedOutcome::AlreadyPaired(existing));
        }
        match self.device(&p.voucher)? {
            None => return Ok(ProxiedOutcome::Refused(VouchRejection::VoucherNotPaired)),
            Some(v) if v.pairing_type != PairingType::Direct => {
                return Ok(ProxiedOutcome::Refused(VouchRejection::VoucherNotDirect))
            }
            Some(v) if v.trust_level != TrustLevel::Trusted => {
                return Ok(ProxiedOutcome::Refused(VouchRejection::VoucherNotTrusted))
            }
            Some(_) => {}
        }
        if self.tombstone(&p.device_id)?.is_some() {
            return Ok(ProxiedOutcome::Refused(VouchRejection::VoucheeBlocked));
        }
        let record = DeviceRecord {
            device_id: p.device_id,
            public_key: p.public_key,
            name: p.name.clone(),
            pairing_type: PairingType::Proxied,
            trust_level: TrustLevel::Trusted,
            paired_at: p.at,
            last_seen: None,
            vouched_by: Some(p.voucher),
            proof: Some(DeviceProof::Acceptance(p.acceptance.clone())),
            session_key: p.session_key.clone(),
            previous_key: None,
        };
        self.record_event(
            p.at,
            AuditEvent::ProxiedDeviceAdded {
                session: p.session_id,
                voucher: p.voucher,
                device: p.device_id,
                key: p.public_key,
                name: p.name.clone(),
                acceptance: p.acceptance.clone(),
            },
        )?;
        self.put_device(&record)?;
        Ok(ProxiedOutcome::Added(record))
    }

    /// Target side: stores (or replaces, after a redelivery) a prompt waiting for the user.
    pub fn put_prompt(&self, p: &PromptRecord) -> Result<(), TxError> {
        let key = layout::prompt_key(p.session_id, p.vouchee, p.voucher);
        self.put(PROMPTS, &key, &codec::encode_secret(p))
    }

    /// Target side: removes the prompt for (session, vouchee, voucher), once it is answered
    /// or expired. Returns whether there was one.
    pub fn remove_prompt(
        &self,
        session: &SessionId,
        vouchee: &DeviceId,
        voucher: &DeviceId,
    ) -> Result<bool, TxError> {
        self.del(PROMPTS, &layout::prompt_key(*session, *vouchee, *voucher))
    }
}
