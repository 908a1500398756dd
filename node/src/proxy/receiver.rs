//! The receiving device (target): deciding on a vouch.
//!
//! [`Receiver::receive`] runs the design's checks (voucher trusted and directly paired,
//! signature, freshness, replay, target, vouchee, trust level, sealed key) and returns a
//! [`Verdict`]. The node persists the verdict's commit **atomically before** it replies
//! (`Store::accept_vouch` / `reject_vouch` / `remember_nonce`, each one transaction), so a
//! crash never leaves a device accepted without its nonce and decision recorded, or an
//! answer sent that was not stored. The reply (the signed `ProxyPairingResponse`, or a
//! `ProxyPairingPending` when the user is asked) is the response to the voucher's request:
//! one round trip, and an answer lost on the way is a failed request the voucher delivers
//! again. A decision the user makes later goes to the voucher as a request of its own.
//!
//! Without `auto_accept_vouched` the user is asked: a `ProxyPairingConfirmationRequired`
//! event, `proxy requests`, and `proxy accept|reject <ID>` (or `network.pair.confirmProxy`)
//! before the deadline; at the deadline [`Receiver::expire_prompt`] refuses it
//! (`prompt_expired`).
//!
//! An open prompt is stored (`Store::put_prompt`) before the voucher hears that the user
//! is asked, and leaves the store in the transaction of the decision that answers it. So a
//! restart shows it again, with its id and deadline (`ProxyState::load`). Its nonces join
//! the replay cache with that decision (so `accept_vouch` records the nonce with the
//! device, as for an automatic acceptance); while it is open, a replay is refused from the
//! prompt itself. An answer the user gave while the voucher was unreachable is stored, and
//! given again when the voucher delivers the vouch again (signed afresh).

use super::{path, OpenPrompt};
use crate::error::NodeError;
use crate::event_loop::{error_reply, EventLoop, Token};
use crate::events::{NodeEvent, ResourceKind};
use crate::network::codec::WireFrame;
use crate::sessions::rejection_name;
use crate::views::{ConfirmProxyOutcome, ProxyRequestView};
use vouchnet_protocol::messages::{
    Decision, ErrorCode, ProxyPairingRequest, SignedVouch, VouchRejection,
};
use vouchnet_protocol::vouch::{
    sign_response, Outcome, PendingPrompt, ReceiveError, Receiver, SeenNonce, Verdict,
};
use vouchnet_protocol::{DeviceId, Frame, Timestamp};
use vouchnet_storage::{
    AcceptOutcome, AcceptVouch, DeviceRecord, RejectOutcome, RejectVouch, StoreError,
};

/// A verdict once applied: what became of it, and the answer to give the voucher (none when
/// nothing could be stored).
#[derive(Debug)]
pub(crate) struct Settled {
    /// What became of it.
    pub(crate) applied: Applied,
    /// The answer (`ProxyPairingResponse` or `ProxyPairingPending`).
    pub(crate) answer: Option<vouchnet_protocol::Message>,
}

impl Settled {
    fn not_stored() -> Settled {
        Settled {
            applied: Applied::NotStored,
            answer: None,
        }
    }
}

/// What became of a verdict once applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The vouchee was added.
    Accepted,
    /// The user is asked.
    Prompted,
    /// Refused, for this reason.
    Rejected(VouchRejection),
    /// Answered as before.
    Repeated,
    /// The store failed; nothing was stored or sent (logged).
    NotStored,
}

impl EventLoop {
    /// A `ProxyPairingRequest` from `device`: the decision (or "my user is asked") is the
    /// response, once it is stored.
    pub(crate) fn on_vouch_request(
        &mut self,
        device: DeviceId,
        request: ProxyPairingRequest,
    ) -> WireFrame {
        path::step(path::VOUCH_RECEIVED);
        let now = self.clock.now();
        let verdict = {
            let view = self.view();
            Receiver::new(&self.keypair, &self.protocol).receive(&view, &device, &request, now)
        };
        match verdict {
            Ok(verdict) => {
                match self
                    .apply_verdict(device, &request.vouch, verdict, &[], now)
                    .answer
                {
                    Some(answer) => {
                        let frame = WireFrame::encode(&Frame::new(answer));
                        path::step(path::ANSWER_READY);
                        frame
                    }
                    // Nothing was stored: the voucher delivers the vouch again later.
                    None => error_reply(ErrorCode::Unavailable),
                }
            }
            Err(e) => {
                let reason = match e {
                    ReceiveError::UnsupportedCertificateVersion(_) => "unsupported_version",
                    _ => "malformed",
                };
                self.refused(device, "ProxyPairingRequest", reason);
                error_reply(ErrorCode::Malformed)
            }
        }
    }

    /// Persists a verdict's commit and tells the UI; returns the answer for the voucher,
    /// which the caller sends (as the response to the vouch, or as a request when the user
    /// answered later). `prompt_nonces` are the nonces an answered prompt held, to be
    /// remembered with the decision.
    pub(crate) fn apply_verdict(
        &mut self,
        voucher: DeviceId,
        vouch: &SignedVouch,
        verdict: Verdict,
        prompt_nonces: &[SeenNonce],
        now: Timestamp,
    ) -> Settled {
        let Verdict {
            outcome,
            reply: answer,
            commit,
        } = verdict;
        // A prompt this verdict answers leaves the store in the same transaction as the
        // decision, and memory once that is stored.
        let closing = commit.close_prompt;
        let close_stored = |tx: &vouchnet_storage::Txn| match &closing {
            Some(k) => tx
                .remove_prompt(&k.session_id, &k.vouchee, &k.voucher)
                .map(|_| ()),
            None => Ok(()),
        };
        let cert = match vouch.decode_unverified() {
            Ok(c) => c,
            // The machine decoded it already; this cannot fail for a verdict it returned.
            Err(_) => return Settled::not_stored(),
        };
        let digest = vouch.body_digest();
        let nonce_expiry = |nonce| {
            commit
                .seen_nonce
                .filter(|s| s.nonce == nonce)
                .or_else(|| prompt_nonces.iter().copied().find(|s| s.nonce == nonce))
                .map(|s| s.expires_at)
                .unwrap_or_else(|| {
                    cert.issued_at
                        .saturating_add(self.protocol.vouch_signature_max_age)
                        .saturating_add(self.protocol.clock_skew_allowance)
                })
        };
        let others: Vec<SeenNonce> = prompt_nonces
            .iter()
            .copied()
            .filter(|s| s.nonce != cert.nonce)
            .collect();
        let remember_others = |tx: &vouchnet_storage::Txn| {
            for s in &others {
                tx.remember_nonce(&s.nonce, s.expires_at)?;
            }
            Ok::<(), vouchnet_storage::TxError>(())
        };
        // What is finally answered, if it differs from the machine's reply (a race the
        // store caught at commit time, or an earlier decision).
        let mut answer_with: Option<Decision> = None;
        let applied = match outcome {
            Outcome::Accepted(how) => {
                let Some(device) = commit.device else {
                    return Settled::not_stored();
                };
                let a = AcceptVouch {
                    session_id: cert.session_id,
                    voucher: device.vouched_by,
                    vouchee: device.device_id,
                    vouchee_key: device.public_key,
                    vouchee_name: device.name.clone(),
                    nonce: cert.nonce,
                    nonce_expires_at: nonce_expiry(cert.nonce),
                    proof: device.proof.clone(),
                    how,
                    session_key: device.proxied_key.clone(),
                    at: now,
                };
                path::step(path::VOUCH_CHECKED);
                let result = self.store.write(|tx| {
                    let out = tx.accept_vouch(&a)?;
                    remember_others(tx)?;
                    close_stored(tx)?;
                    Ok(out)
                });
                path::step(path::DECISION_STORED);
                match result {
                    Ok(AcceptOutcome::Accepted(rec)) => {
                        tracing::info!(
                            "accepted {} ({}) on the vouch of {voucher}",
                            rec.name.as_str(),
                            rec.device_id
                        );
                        self.proxied_device_added(&rec);
                        Applied::Accepted
                    }
                    Ok(AcceptOutcome::AlreadyDecided(prior)) => {
                        answer_with = Some(prior.decision.clone());
                        Applied::Repeated
                    }
                    Ok(AcceptOutcome::Refused(reason)) => {
                        self.record_rejection(voucher, vouch, &cert, digest, &reason, now);
                        answer_with = Some(Decision::Rejected {
                            reason: reason.clone(),
                        });
                        Applied::Rejected(reason)
                    }
                    Err(e) => {
                        tracing::error!("cannot store the accepted vouch: {e}");
                        return Settled::not_stored();
                    }
                }
            }
            Outcome::Rejected(reason) => {
                self.refused(voucher, "ProxyPairingRequest", rejection_name(&reason));
                if commit.seen_nonce.is_some() || commit.decision.is_some() || closing.is_some() {
                    let r = RejectVouch {
                        session_id: cert.session_id,
                        voucher: cert.voucher,
                        vouchee: cert.vouchee,
                        nonce: cert.nonce,
                        nonce_expires_at: nonce_expiry(cert.nonce),
                        reason: reason.clone(),
                        vouch: Some(vouch.clone()),
                        response: answer.response().cloned(),
                        record_decision: commit.decision.is_some(),
                        at: now,
                    };
                    let result = self.store.write(|tx| {
                        let out = tx.reject_vouch(&r)?;
                        remember_others(tx)?;
                        close_stored(tx)?;
                        Ok(out)
                    });
                    match result {
                        Ok(RejectOutcome::Recorded) => {}
                        Ok(RejectOutcome::AlreadyDecided(prior)) => {
                            answer_with = Some(prior.decision.clone());
                        }
                        Err(e) => {
                            tracing::error!("cannot store the refused vouch: {e}");
                            return Settled::not_stored();
                        }
                    }
                }
                Applied::Rejected(reason)
            }
            Outcome::Prompted => {
                let Some(prompt) = commit.open_prompt else {
                    return Settled::not_stored();
                };
                if !self.open_prompt(prompt, commit.seen_nonce) {
                    return Settled::not_stored();
                }
                Applied::Prompted
            }
            Outcome::Repeated(_) => {
                if commit.seen_nonce.is_some() || closing.is_some() {
                    let result = self.store.write(|tx| {
                        if let Some(s) = commit.seen_nonce {
                            tx.remember_nonce(&s.nonce, s.expires_at)?;
                        }
                        close_stored(tx)
                    });
                    if let Err(e) = result {
                        tracing::error!("cannot store the vouch nonce: {e}");
                        return Settled::not_stored();
                    }
                }
                Applied::Repeated
            }
        };
        if let Some(key) = &closing {
            if let Some(open) = self.proxy.prompts.remove(key) {
                self.hub.publish(NodeEvent::ResourceDeleted {
                    resource: ResourceKind::ProxyRequest,
                    id: open.id,
                });
            }
        }
        let answer = match answer_with {
            Some(decision) => vouchnet_protocol::Message::ProxyPairingResponse(
                vouchnet_protocol::messages::ProxyPairingResponse {
                    response: sign_response(&self.keypair, &cert, digest, decision, now),
                },
            ),
            None => answer.into_message(),
        };
        Settled {
            applied,
            answer: Some(answer),
        }
    }

    /// Sends the answer to a prompt the user (or its deadline) settled: the vouch's request
    /// was answered long ago, so this one travels as a request of its own.
    fn send_later_answer(&mut self, voucher: DeviceId, settled: &mut Settled) {
        if let Some(answer) = settled.answer.take() {
            self.send(voucher, answer, Token::None);
        }
    }

    /// Records a refusal the store decided at commit time (the vouch raced with another
    /// change), with the signed refusal that is sent.
    fn record_rejection(
        &mut self,
        voucher: DeviceId,
        vouch: &SignedVouch,
        cert: &vouchnet_protocol::messages::VouchCertificate,
        digest: [u8; 32],
        reason: &VouchRejection,
        now: Timestamp,
    ) {
        let response = sign_response(
            &self.keypair,
            cert,
            digest,
            Decision::Rejected {
                reason: reason.clone(),
            },
            now,
        );
        let r = RejectVouch {
            session_id: cert.session_id,
            voucher,
            vouchee: cert.vouchee,
            nonce: cert.nonce,
            nonce_expires_at: cert
                .issued_at
                .saturating_add(self.protocol.vouch_signature_max_age)
                .saturating_add(self.protocol.clock_skew_allowance),
            reason: reason.clone(),
            vouch: Some(vouch.clone()),
            response: Some(response),
            record_decision: *reason != VouchRejection::Replay,
            at: now,
        };
        if let Err(e) = self.store.reject_vouch(&r) {
            tracing::error!("cannot store the refused vouch: {e}");
        }
        self.refused(voucher, "ProxyPairingRequest", rejection_name(reason));
    }

    /// A device was added by proxy (target side, or vouchee side): treat it as paired from
    /// now on, and prove keys with it as soon as it is connected.
    pub(crate) fn proxied_device_added(&mut self, rec: &DeviceRecord) {
        let device = rec.device_id;
        self.swarm
            .behaviour_mut()
            .set_paired(crate::peer::peer_of(&device), true);
        let announced = self.announced.get(&device).cloned().unwrap_or_default();
        self.remember_addresses(device, &announced);
        self.publish_device(rec);
        if self.presence.is_connected(&device) {
            self.challenge(device);
        } else {
            self.redial.want(device, tokio::time::Instant::now());
        }
    }

    /// Opens a prompt for the user, or brings an open one up to date with a redelivered
    /// vouch. It is stored first, so the user is never shown (and the voucher never told
    /// of) a prompt a restart would lose; returns false, changing nothing, if it could not
    /// be stored.
    fn open_prompt(&mut self, prompt: PendingPrompt, seen: Option<SeenNonce>) -> bool {
        let key = prompt.key();
        let voucher_name = self
            .paired_record(&key.voucher)
            .map(|r| r.name.as_str().to_owned())
            .unwrap_or_default();
        let (open, is_new) = match self.proxy.prompts.get(&key) {
            Some(open) => {
                // A redelivery: the same prompt, with the newer vouch.
                let mut open = open.clone();
                open.prompt = prompt.clone();
                open.nonces.extend(seen);
                (open, false)
            }
            None => {
                let base = key.session_id.to_hex();
                let mut id = base.clone();
                let mut n = 1;
                while self.proxy.prompt_by_id(&id).is_some() {
                    n += 1;
                    id = format!("{base}-{n}");
                }
                let open = OpenPrompt {
                    prompt: prompt.clone(),
                    id,
                    nonces: seen.into_iter().collect(),
                };
                (open, true)
            }
        };
        if let Err(e) = self.store.put_prompt(&open.record()) {
            tracing::error!("cannot store the prompt: {e}");
            return false;
        }
        let id = open.id.clone();
        self.proxy.prompts.insert(key, open);
        let view = ProxyRequestView {
            id: id.clone(),
            voucher: key.voucher.to_string(),
            voucher_name: voucher_name.clone(),
            vouchee: key.vouchee.to_string(),
            vouchee_name: prompt.cert.vouchee_name.as_str().to_owned(),
            deadline: prompt.deadline.as_millis(),
        };
        if is_new {
            tracing::info!(
                "{} vouches for {} ({}): accept with `vouchnet proxy accept {id}`",
                voucher_name,
                view.vouchee_name,
                view.vouchee
            );
            self.hub
                .publish(NodeEvent::ProxyPairingConfirmationRequired {
                    id: id.clone(),
                    voucher: view.voucher.clone(),
                    voucher_name,
                    vouchee: view.vouchee.clone(),
                    vouchee_name: view.vouchee_name.clone(),
                    deadline: view.deadline,
                });
        }
        self.hub.publish(NodeEvent::ResourceChanged {
            resource: ResourceKind::ProxyRequest,
            id,
            data: serde_json::to_value(view).expect("views serialize"),
        });
        true
    }

    /// `proxy requests`.
    pub(crate) fn proxy_requests(&self) -> Vec<ProxyRequestView> {
        self.proxy
            .prompts
            .values()
            .map(|open| {
                let p = &open.prompt;
                ProxyRequestView {
                    id: open.id.clone(),
                    voucher: p.cert.voucher.to_string(),
                    voucher_name: self
                        .paired_record(&p.cert.voucher)
                        .map(|r| r.name.as_str().to_owned())
                        .unwrap_or_default(),
                    vouchee: p.cert.vouchee.to_string(),
                    vouchee_name: p.cert.vouchee_name.as_str().to_owned(),
                    deadline: p.deadline.as_millis(),
                }
            })
            .collect()
    }

    /// `proxy accept|reject <ID>`.
    pub(crate) fn confirm_proxy(
        &mut self,
        id: &str,
        accept: bool,
    ) -> Result<ConfirmProxyOutcome, NodeError> {
        let key = self
            .proxy
            .prompt_by_id(id)
            .ok_or_else(|| NodeError::NotFound(format!("no vouch waiting with id {id:?}")))?;
        let (prompt, nonces) = {
            let open = &self.proxy.prompts[&key];
            (open.prompt.clone(), open.nonces.clone())
        };
        let now = self.clock.now();
        let verdict = {
            let view = self.view();
            Receiver::new(&self.keypair, &self.protocol).answer_prompt(&view, &prompt, accept, now)
        };
        let mut settled = self.apply_verdict(key.voucher, &prompt.vouch, verdict, &nonces, now);
        self.send_later_answer(key.voucher, &mut settled);
        let (decision, reason) = match &settled.applied {
            Applied::Accepted => ("accepted", None),
            Applied::Rejected(r) => ("rejected", Some(rejection_name(r).to_owned())),
            Applied::Prompted | Applied::Repeated => ("repeated", None),
            Applied::NotStored => {
                return Err(NodeError::Conflict(
                    "the answer could not be stored; nothing was sent (see the node's log)".into(),
                ))
            }
        };
        Ok(ConfirmProxyOutcome {
            id: id.to_owned(),
            vouchee: key.vouchee.to_string(),
            decision: decision.to_owned(),
            reason,
        })
    }

    /// Prompts whose deadline came are refused (`prompt_expired`).
    pub(crate) fn expire_prompts(&mut self, now: Timestamp) {
        let due: Vec<_> = self
            .proxy
            .prompts
            .iter()
            .filter(|(_, p)| p.prompt.deadline <= now)
            .map(|(k, p)| (*k, p.prompt.clone(), p.nonces.clone()))
            .collect();
        for (key, prompt, nonces) in due {
            let verdict = Receiver::new(&self.keypair, &self.protocol).expire_prompt(&prompt, now);
            let mut settled = self.apply_verdict(key.voucher, &prompt.vouch, verdict, &nonces, now);
            self.send_later_answer(key.voucher, &mut settled);
        }
    }

    /// Closes every open prompt from `voucher` (which was just unpaired): the re-check
    /// refuses it (`voucher_not_paired`), and nothing is sent to the removed device.
    pub(crate) fn close_prompts_from(&mut self, voucher: DeviceId) -> Result<(), StoreError> {
        let now = self.clock.now();
        let from: Vec<_> = self
            .proxy
            .prompts
            .iter()
            .filter(|(k, _)| k.voucher == voucher)
            .map(|(k, p)| (*k, p.prompt.clone(), p.nonces.clone()))
            .collect();
        for (key, prompt, nonces) in from {
            let verdict = {
                let view = self.view();
                Receiver::new(&self.keypair, &self.protocol)
                    .answer_prompt(&view, &prompt, true, now)
            };
            // Nothing is sent to the removed device.
            self.apply_verdict(key.voucher, &prompt.vouch, verdict, &nonces, now);
        }
        Ok(())
    }
}
