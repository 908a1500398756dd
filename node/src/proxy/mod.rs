//! Proxy pairing in the node: the voucher, the receiving device (target) and the vouchee,
//! the offline queue worker, the rekey that locks the voucher out, what happens when a
//! voucher is removed, and the per-device trust chains of the audit trail.
//!
//! Every decision is made by the protocol crate's machines ([`vouchnet_protocol::session`],
//! [`vouchnet_protocol::vouch`], [`vouchnet_protocol::vouchee`], [`vouchnet_protocol::queue`],
//! [`vouchnet_protocol::rekey`]). The modules here are further `impl EventLoop` blocks that
//! feed them frames, user answers and the clock, and apply what comes out in the order the
//! design requires: **persist first** (one [`vouchnet_storage::Store::write`], so a vouch to
//! many targets costs one flush), **then send**, then tell the UI.
//!
//! - [`voucher`]: sessions after a direct pairing, `vouch`, responses, timeouts, telling the
//!   vouchee;
//! - [`receiver`]: deciding on a vouch, prompts, `proxy accept|reject`, prompt expiry;
//! - [`vouchee`]: `ProxyPairingComplete`, and the rekey with each accepted device;
//! - [`queue_worker`]: the offline queue, polled and woken by presence, and retention;
//! - [`removal`]: `on_voucher_removed` and the review list;
//! - [`chains`]: `vouchnet audit`'s trust chain per device.
//!
//! What lives only in memory is kept here, in [`ProxyState`], and is either rebuilt from the
//! store at start (deadlines, review flags, completed rekeys) or safe to lose (see
//! [`receiver`] for open prompts).

pub mod chains;
pub mod path;
pub mod queue_worker;
pub mod receiver;
pub mod removal;
pub mod view;
pub mod vouchee;
pub mod voucher;

use crate::error::NodeError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;
use vouchnet_protocol::model::{SessionState, VouchingSession};
use vouchnet_protocol::rekey::RekeyManager;
use vouchnet_protocol::vouch::{PendingPrompt, PromptKey, SeenNonce};
use vouchnet_protocol::{DeviceId, SessionId, SymmetricKey, Timestamp, VouchNonce};
use vouchnet_storage::{
    AuditEvent, DeviceProof, PromptNonce, PromptRecord, QueueRef, Store, StoreError,
    VoucherRemovalPolicy,
};

/// How long a rekey exchange may take.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(30);

/// A vouch waiting for this device's user. It is also on disk ([`PromptRecord`], written
/// before the voucher hears that a person is asked), so a restart does not lose it.
#[derive(Debug, Clone)]
pub struct OpenPrompt {
    /// What the receiver machine needs to decide later.
    pub prompt: PendingPrompt,
    /// The id shown to the user (`proxy requests`).
    pub id: String,
    /// Every vouch nonce this prompt was opened or re-opened with, so a replay of one is
    /// refused while the prompt is open (they reach the persistent replay cache when the
    /// prompt is answered).
    pub nonces: Vec<SeenNonce>,
}

impl OpenPrompt {
    /// The record that keeps this prompt across restarts.
    pub(crate) fn record(&self) -> PromptRecord {
        let key = self.prompt.key();
        PromptRecord {
            session_id: key.session_id,
            voucher: key.voucher,
            vouchee: key.vouchee,
            id: self.id.clone(),
            vouch: self.prompt.vouch.clone(),
            proxied_key: self.prompt.proxied_key.clone(),
            deadline: self.prompt.deadline,
            nonces: self
                .nonces
                .iter()
                .map(|s| PromptNonce {
                    nonce: s.nonce,
                    expires_at: s.expires_at,
                })
                .collect(),
        }
    }

    /// A prompt an earlier run stored. Its vouch was verified when it arrived; a record
    /// whose vouch no longer decodes, or names other devices than its key, is corrupt.
    pub(crate) fn from_record(r: PromptRecord) -> Result<OpenPrompt, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { detail };
        let cert = r
            .vouch
            .decode_unverified()
            .map_err(|e| corrupt(format!("a stored prompt's vouch does not decode: {e}")))?;
        if (cert.session_id, cert.voucher, cert.vouchee) != (r.session_id, r.voucher, r.vouchee) {
            return Err(corrupt(
                "a stored prompt's vouch is not the one its key names".into(),
            ));
        }
        Ok(OpenPrompt {
            prompt: PendingPrompt {
                cert,
                digest: r.vouch.body_digest(),
                vouch: r.vouch,
                proxied_key: r.proxied_key,
                deadline: r.deadline,
            },
            id: r.id,
            nonces: r
                .nonces
                .iter()
                .map(|n| SeenNonce {
                    nonce: n.nonce,
                    expires_at: n.expires_at,
                })
                .collect(),
        })
    }
}

/// The in-memory side of proxy pairing. See the module docs.
#[derive(Debug)]
pub struct ProxyState {
    /// Receiver: open prompts.
    pub prompts: BTreeMap<PromptKey, OpenPrompt>,
    /// Voucher: the next deadline of each session with vouches in flight.
    session_deadlines: BTreeMap<SessionId, Timestamp>,
    /// Voucher: the newest Pending session of each vouchee (the one `vouch` starts), so a
    /// vouch does not decode every stored session to find it.
    pending_sessions: BTreeMap<DeviceId, (Timestamp, SessionId)>,
    /// Vouchee: the voucher each session's completions come from (the first to send one,
    /// rebuilt from the proofs of the devices stored).
    complete_sessions: BTreeMap<SessionId, DeviceId>,
    /// Rekey exchanges in flight.
    pub rekey: RekeyManager,
    /// The key a device shared with this one before a rekey, until a key proof shows
    /// which of the two the device holds; with whether this device started the rekey.
    fallback: BTreeMap<DeviceId, (SymmetricKey, bool)>,
    /// Devices whose proxied key was replaced by a rekey (rebuilt from the audit trail).
    rekeyed: BTreeSet<DeviceId>,
    /// Devices flagged for review, with the removed voucher that vouched for them.
    flagged: BTreeMap<DeviceId, DeviceId>,
    /// Queue entries being delivered now (so a poll does not send them twice).
    pub in_flight: HashSet<QueueRef>,
    /// Voucher: sessions with a notification on its way to their (online) vouchee, and
    /// whether there is news since it was written. See [`ProxyState::coalesce_notification`].
    notifying: HashMap<SessionId, bool>,
}

impl ProxyState {
    /// The state of a node whose store is `store`: deadlines of the sessions in progress,
    /// the voucher of each session this device was told about, the rekeys done and the
    /// review flags, all from what the store holds.
    pub fn load(me: DeviceId, store: &Store) -> Result<ProxyState, NodeError> {
        let mut state = ProxyState {
            prompts: BTreeMap::new(),
            session_deadlines: BTreeMap::new(),
            pending_sessions: BTreeMap::new(),
            complete_sessions: BTreeMap::new(),
            rekey: RekeyManager::new(me, REKEY_TIMEOUT),
            fallback: BTreeMap::new(),
            rekeyed: BTreeSet::new(),
            flagged: BTreeMap::new(),
            in_flight: HashSet::new(),
            notifying: HashMap::new(),
        };
        for s in store.sessions()? {
            state.track_session(&s);
        }
        // Prompts still waiting for the user: shown again, with their ids and deadlines.
        for r in store.prompts()? {
            let open = OpenPrompt::from_record(r)?;
            state.prompts.insert(open.prompt.key(), open);
        }
        let devices = store.devices()?;
        for d in &devices {
            // A rekey that no key proof has settled yet, from before a restart.
            if let Some(previous) = &d.previous_key {
                state
                    .fallback
                    .insert(d.device_id, (previous.key.clone(), previous.initiated));
            }
            if let Some(DeviceProof::Acceptance(r)) = &d.proof {
                if let (Ok(resp), Some(voucher)) = (r.decode_unverified(), d.vouched_by) {
                    state.complete_sessions.insert(resp.session_id, voucher);
                }
            }
        }
        for e in store.audit_entries(0, usize::MAX)? {
            match e.event {
                AuditEvent::Rekeyed { device } => {
                    state.rekeyed.insert(device);
                }
                AuditEvent::VoucherRemoved {
                    voucher,
                    policy: VoucherRemovalPolicy::Review,
                    vouched,
                    ..
                } => {
                    for d in vouched {
                        state.flagged.insert(d, voucher);
                    }
                }
                AuditEvent::ReviewResolved { device, .. }
                | AuditEvent::Unpaired { device }
                | AuditEvent::Revoked { device, .. }
                | AuditEvent::PairedDirect { device, .. } => {
                    state.flagged.remove(&device);
                    state.rekeyed.remove(&device);
                }
                _ => {}
            }
        }
        state
            .flagged
            .retain(|d, _| devices.iter().any(|r| r.device_id == *d));
        Ok(state)
    }

    /// The earliest deadline of a session, a prompt or a rekey.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let sessions = self.session_deadlines.values().copied().min();
        let prompts = self.prompts.values().map(|p| p.prompt.deadline).min();
        [sessions, prompts, self.rekey.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Records when `session` next needs [`VouchingSession::handle_timeout`].
    pub fn track_session(&mut self, session: &VouchingSession) {
        match session.poll_timeout() {
            Some(at) => self.session_deadlines.insert(session.id, at),
            None => self.session_deadlines.remove(&session.id),
        };
        if session.state == SessionState::Pending {
            let newest = self
                .pending_sessions
                .get(&session.vouchee)
                .is_none_or(|(created, _)| *created <= session.created_at);
            if newest {
                self.pending_sessions
                    .insert(session.vouchee, (session.created_at, session.id));
            }
        } else if self
            .pending_sessions
            .get(&session.vouchee)
            .is_some_and(|(_, id)| *id == session.id)
        {
            self.pending_sessions.remove(&session.vouchee);
        }
    }

    /// The newest Pending session for `vouchee`, if any.
    pub fn pending_session(&self, vouchee: &DeviceId) -> Option<SessionId> {
        self.pending_sessions.get(vouchee).map(|(_, id)| *id)
    }

    /// Sessions whose deadline has come.
    pub fn due_sessions(&self, now: Timestamp) -> Vec<SessionId> {
        self.session_deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets a session (removed by retention).
    pub fn forget_session(&mut self, id: &SessionId) {
        self.session_deadlines.remove(id);
        self.pending_sessions
            .retain(|_, (_, pending)| pending != id);
    }

    /// Whether a notification to the vouchee of `session` must wait: one is on its way
    /// already. Each acceptance makes the session machine tell the vouchee; a vouch to a
    /// hundred targets would otherwise send it a hundred messages one after another, each
    /// acknowledged and recorded in turn. Since the vouchee's notification is always "every
    /// acceptance not yet acknowledged", a newer one can wait for the one in flight and then
    /// be sent once, with everything that came meanwhile.
    ///
    /// Returns true (and notes the news) if one is in flight; otherwise marks one in flight
    /// and returns false, and the caller sends it.
    pub fn coalesce_notification(&mut self, session: SessionId) -> bool {
        match self.notifying.get_mut(&session) {
            Some(news) => {
                *news = true;
                true
            }
            None => {
                self.notifying.insert(session, false);
                false
            }
        }
    }

    /// The notification in flight for `session` settled (acknowledged or failed). Returns
    /// whether there was news while it was on its way.
    pub fn notification_settled(&mut self, session: &SessionId) -> bool {
        self.notifying.remove(session).unwrap_or(false)
    }

    /// Whether `nonce` belongs to a vouch held by an open prompt.
    pub fn prompt_nonce(&self, nonce: &VouchNonce) -> bool {
        self.prompts
            .values()
            .any(|p| p.nonces.iter().any(|n| n.nonce == *nonce))
    }

    /// The prompt shown as `id`.
    pub fn prompt_by_id(&self, id: &str) -> Option<PromptKey> {
        self.prompts
            .iter()
            .find(|(_, p)| p.id == id)
            .map(|(k, _)| *k)
    }

    /// Vouchee: the voucher this device expects completions of `session` from.
    pub fn expected_voucher(&self, session: &SessionId) -> Option<DeviceId> {
        self.complete_sessions.get(session).copied()
    }

    /// Vouchee: `voucher` sent a completion of `session` that was accepted.
    pub fn completion_from(&mut self, session: SessionId, voucher: DeviceId) {
        self.complete_sessions.entry(session).or_insert(voucher);
    }

    /// The key `device` shared with this one before the last rekey, while unconfirmed.
    pub fn fallback_key(&self, device: &DeviceId) -> Option<SymmetricKey> {
        self.fallback.get(device).map(|(k, _)| k.clone())
    }

    /// The key to seal for `device` with, given the `current` (stored) one. The initiator
    /// of a rekey switches before the responder has seen its confirmation, so until a key
    /// proof with the new key succeeds it keeps sealing with the previous key, which the
    /// responder holds either way (as its current key, or as its fallback once switched).
    pub fn sealing_key(&self, device: &DeviceId, current: SymmetricKey) -> SymmetricKey {
        match self.fallback.get(device) {
            Some((previous, true)) => previous.clone(),
            _ => current,
        }
    }

    /// A rekey with `device` switched keys; `previous` is kept until a key proof decides.
    /// `initiated`: this device started the exchange.
    pub fn rekeyed(&mut self, device: DeviceId, previous: SymmetricKey, initiated: bool) {
        self.fallback.insert(device, (previous, initiated));
        self.rekeyed.insert(device);
    }

    /// A key proof with the current key succeeded: the previous one is dropped.
    pub fn key_confirmed(&mut self, device: &DeviceId) {
        self.fallback.remove(device);
    }

    /// The peer kept the previous key: it is the current one again, and a later
    /// connection may try the rekey anew.
    pub fn key_reverted(&mut self, device: &DeviceId) {
        self.fallback.remove(device);
        self.rekeyed.remove(device);
    }

    /// Whether the key shared with `device` was already replaced by a rekey.
    pub fn is_rekeyed(&self, device: &DeviceId) -> bool {
        self.rekeyed.contains(device)
    }

    /// Whether `device` is flagged for review.
    pub fn is_flagged(&self, device: &DeviceId) -> bool {
        self.flagged.contains_key(device)
    }

    /// Flags `device`, vouched for by the removed `voucher`.
    pub fn flag(&mut self, device: DeviceId, voucher: DeviceId) {
        self.flagged.insert(device, voucher);
    }

    /// The removed voucher of a device flagged for review.
    pub fn flagged_by(&self, device: &DeviceId) -> Option<DeviceId> {
        self.flagged.get(device).copied()
    }

    /// Clears a review flag.
    pub fn unflag(&mut self, device: &DeviceId) {
        self.flagged.remove(device);
    }

    /// Devices flagged for review, with their removed voucher.
    pub fn flagged(&self) -> impl Iterator<Item = (&DeviceId, &DeviceId)> {
        self.flagged.iter()
    }

    /// `device` is no longer paired: nothing about it is kept.
    pub fn device_forgotten(&mut self, device: &DeviceId) {
        self.flagged.remove(device);
        self.fallback.remove(device);
        self.rekeyed.remove(device);
        self.rekey.connection_lost(*device);
    }
}
