//! The vouchee: learning who accepted it, and replacing each proxied key by a rekey.
//!
//! A `ProxyPairingComplete` is accepted only from the voucher of its session, over that
//! voucher's own connection (the sender is the connection's device, never a field), and
//! only if every entry carries the target's own signed acceptance of this device
//! ([`accept_complete`]; one bad entry refuses the whole message and nothing is stored).
//! The voucher of a session is the device that first completed it successfully here; a
//! completion of that session from anyone else is `not_from_voucher`.
//!
//! Each accepted target is stored as a proxied device with the key derived from the
//! voucher–vouchee pairing key. The voucher can compute that key too, so as soon as the
//! target is online (it proved the proxied key) the vouchee starts a rekey
//! ([`vouchnet_protocol::rekey`]): the new key comes from a fresh X25519 exchange that the
//! voucher never sees. The previous key is kept (in memory) until a key proof shows which
//! key the peer holds: the initiator proves the new key right after its confirmation was
//! acknowledged, and goes back to the previous key if the peer never switched.

use crate::event_loop::{ack, error_reply, EventLoop, Token};
use crate::network::codec::WireFrame;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use rand_core::OsRng;
use vouchnet_protocol::messages::{AddrHint, ErrorCode, Message, ProxyPairingComplete};
use vouchnet_protocol::model::PairingType;
use vouchnet_protocol::rekey::{RekeyError, RekeyOutput};
use vouchnet_protocol::vouchee::{accept_complete, CompleteRejection};
use vouchnet_protocol::{DeviceId, SymmetricKey, Timestamp};
use vouchnet_storage::{DeviceProof, DeviceRecord, ProxiedDevice, ProxiedOutcome};

/// The address `hint` names, if it is one this node dials for `device`: `/ip4` or `/ip6`,
/// then `/tcp` (or, in a build with the `quic` transport, `/udp/…/quic-v1`), then nothing
/// or `device`'s own `/p2p` (which is removed).
///
/// Anything else is dropped: a hint comes from the voucher, unsigned, so it must not make
/// this node look a name up, go through a relay, or dial another peer. A plain IP address
/// on a transport this node has costs at most one failed dial, and Noise (or QUIC's TLS)
/// checks who answers.
fn dialable_hint(device: DeviceId, hint: &AddrHint) -> Option<Multiaddr> {
    let mut addr = Multiaddr::try_from(hint.0.clone()).ok()?;
    if let Some(Protocol::P2p(peer)) = addr.iter().last() {
        if peer != crate::peer::peer_of(&device) {
            return None;
        }
        addr.pop();
    }
    let parts: Vec<Protocol> = addr.iter().collect();
    match parts.as_slice() {
        [Protocol::Ip4(_) | Protocol::Ip6(_), Protocol::Tcp(_)] => Some(addr),
        #[cfg(feature = "quic")]
        [Protocol::Ip4(_) | Protocol::Ip6(_), Protocol::Udp(_), Protocol::QuicV1] => Some(addr),
        _ => None,
    }
}

/// The stable name of a refused completion.
pub fn complete_rejection_name(e: &CompleteRejection) -> &'static str {
    match e {
        CompleteRejection::NotFromVoucher => "not_from_voucher",
        CompleteRejection::VoucherNotTrusted => "voucher_not_trusted",
        CompleteRejection::TooManyEntries { .. } => "too_many_entries",
        CompleteRejection::DuplicateEntry(_) => "duplicate_entry",
        CompleteRejection::AddressHints(_) => "address_hints",
        CompleteRejection::InvalidTarget(_) => "invalid_target",
        CompleteRejection::KeyMismatch(_) => "key_mismatch",
        CompleteRejection::BadSignature(_) => "bad_signature",
        CompleteRejection::MalformedResponse { .. } => "malformed_response",
        CompleteRejection::UnsupportedResponseVersion(_) => "unsupported_response_version",
        CompleteRejection::WrongResponder(_) => "wrong_responder",
        CompleteRejection::WrongVouchee(_) => "wrong_vouchee",
        CompleteRejection::WrongVoucher(_) => "wrong_voucher",
        CompleteRejection::WrongSession(_) => "wrong_session",
        CompleteRejection::NotAccepted(_) => "not_accepted",
        _ => "other",
    }
}

/// The stable name of a refused rekey message.
pub fn rekey_error_name(e: &RekeyError) -> &'static str {
    match e {
        RekeyError::NotARekeyMessage => "not_a_rekey_message",
        RekeyError::SelfRekey => "self_rekey",
        RekeyError::AlreadyInProgress { .. } => "already_in_progress",
        RekeyError::SimultaneousRekey { .. } => "simultaneous_rekey",
        RekeyError::UnknownRekey { .. } => "unknown_rekey",
        RekeyError::WrongPeer { .. } => "wrong_peer",
        RekeyError::UnexpectedMessage { .. } => "unexpected_message",
        RekeyError::BadMac => "bad_mac",
        RekeyError::InvalidKeyExchange => "invalid_key_exchange",
        RekeyError::Expired { .. } => "expired",
        _ => "other",
    }
}

impl EventLoop {
    /// A `ProxyPairingComplete` from `device`.
    pub(crate) fn on_complete(&mut self, device: DeviceId, msg: ProxyPairingComplete) -> WireFrame {
        const WHAT: &str = "ProxyPairingComplete";
        let now = self.clock.now();
        let expected = self
            .proxy
            .expected_voucher(&msg.session_id)
            .unwrap_or(device);
        // The pairing key with the sender; a sender that is not a direct device is refused
        // (`voucher_not_trusted`) before the key is used, so any key does then.
        let key = self
            .paired_record(&device)
            .filter(|r| r.pairing_type == PairingType::Direct)
            .map(|r| r.session_key)
            .unwrap_or_else(|| SymmetricKey::from_bytes([0; 32]));
        let peers = {
            let view = self.view();
            accept_complete(&self.me, &device, &expected, &view, &key, &msg, now)
        };
        let peers = match peers {
            Ok(p) => p,
            Err(e) => {
                self.refused(device, WHAT, complete_rejection_name(&e));
                return ack();
            }
        };
        self.proxy.completion_from(msg.session_id, device);
        if peers.is_empty() {
            return ack();
        }
        let records: Vec<ProxiedDevice> = peers
            .into_iter()
            .map(|p| ProxiedDevice {
                session_id: msg.session_id,
                voucher: device,
                device_id: p.device_id,
                public_key: p.public_key,
                name: p.name,
                acceptance: p.proof,
                session_key: p.proxied_key,
                at: now,
            })
            .collect();
        let outcomes = self.store.write(|tx| {
            records
                .iter()
                .map(|r| tx.add_proxied_device(r))
                .collect::<Result<Vec<_>, _>>()
        });
        match outcomes {
            Ok(outcomes) => {
                let mut addresses_changed = false;
                for o in outcomes {
                    match o {
                        ProxiedOutcome::Added(rec) => {
                            tracing::info!(
                                "{} ({}) accepted this device on the vouch of {device}",
                                rec.name.as_str(),
                                rec.device_id
                            );
                            if let Some(entry) =
                                msg.accepted.iter().find(|e| e.device_id == rec.device_id)
                            {
                                addresses_changed |=
                                    self.note_address_hints(rec.device_id, &entry.addrs);
                            }
                            self.proxied_device_added(&rec);
                        }
                        ProxiedOutcome::AlreadyPaired(_) => {}
                        ProxiedOutcome::Refused(reason) => {
                            tracing::info!(%device, "proxied device refused: {reason:?}")
                        }
                    }
                }
                if addresses_changed {
                    self.save_addrbook();
                }
                ack()
            }
            Err(e) => {
                tracing::error!("cannot store the proxied devices: {e}");
                error_reply(ErrorCode::Malformed)
            }
        }
    }

    /// Notes the addresses the voucher passed on for `device`, so it is dialled without
    /// discovery; returns whether the address book changed (the caller saves it). Only
    /// plain TCP addresses (`/ip4|ip6/…/tcp/…`, optionally ending in `/p2p/` with
    /// `device`'s own id) are kept: they are what a node listens on, and this keeps a
    /// voucher from steering the dial anywhere else (name lookups, relays). Who answers is
    /// still checked by the Noise handshake.
    fn note_address_hints(&mut self, device: DeviceId, hints: &[AddrHint]) -> bool {
        let mut changed = false;
        for hint in hints.iter().rev() {
            match dialable_hint(device, hint) {
                Some(addr) => changed |= self.note_address(device, addr),
                None => tracing::debug!(%device, "address hint dropped"),
            }
        }
        changed
    }

    /// A device came online: if this device is its vouchee and the key they share is still
    /// the one the voucher derived, replace it.
    pub(crate) fn maybe_start_rekey(&mut self, rec: &DeviceRecord) {
        let device = rec.device_id;
        let is_vouchee_side = rec.pairing_type == PairingType::Proxied
            && matches!(rec.proof, Some(DeviceProof::Acceptance(_)));
        if !is_vouchee_side
            || self.proxy.is_rekeyed(&device)
            || self.proxy.rekey.in_flight(&device).is_some()
        {
            return;
        }
        let now = self.clock.now();
        match self.proxy.rekey.start(device, now, &mut OsRng) {
            Ok(outputs) => {
                tracing::info!(%device, "replacing the proxied key (rekey)");
                self.apply_rekey(outputs);
            }
            Err(e) => tracing::debug!(%device, "rekey not started: {}", rekey_error_name(&e)),
        }
    }

    /// A rekey message from `device`.
    pub(crate) fn on_rekey_message(&mut self, device: DeviceId, msg: Message) -> WireFrame {
        let Some(rec) = self.usable_record(&device) else {
            return error_reply(ErrorCode::NotPaired);
        };
        let now = self.clock.now();
        let kind = match &msg {
            Message::RekeyInit(_) => "RekeyInit",
            Message::RekeyAccept(_) => "RekeyAccept",
            _ => "RekeyConfirm",
        };
        match self
            .proxy
            .rekey
            .handle_message(device, &msg, &rec.session_key, now, &mut OsRng)
        {
            Ok(outputs) => self.apply_rekey(outputs),
            Err(e) => self.refused(device, kind, rekey_error_name(&e)),
        }
        ack()
    }

    /// Applies the rekey machine's outputs: a new key is stored before anything is sent.
    pub(crate) fn apply_rekey(&mut self, outputs: Vec<RekeyOutput>) {
        let (keys, rest): (Vec<_>, Vec<_>) = outputs
            .into_iter()
            .partition(|o| matches!(o, RekeyOutput::NewKey { .. }));
        // The initiator's new key comes with its confirmation to send.
        let initiated = rest.iter().any(|o| {
            matches!(
                o,
                RekeyOutput::Send {
                    msg: Message::RekeyConfirm(_),
                    ..
                }
            )
        });
        let now = self.clock.now();
        for out in keys.into_iter().chain(rest) {
            match out {
                RekeyOutput::NewKey { peer, key, .. } => {
                    let Some(rec) = self.paired_record(&peer) else {
                        continue;
                    };
                    match self.store.switch_session_key(&peer, &key, initiated, now) {
                        Ok(()) => {
                            tracing::info!(%peer, "key replaced by a rekey");
                            self.proxy.rekeyed(peer, rec.session_key, initiated);
                        }
                        Err(e) => tracing::error!(%peer, "cannot store the new key: {e}"),
                    }
                }
                RekeyOutput::Send { to, msg } => {
                    let token = if matches!(msg, Message::RekeyConfirm(_)) {
                        Token::RekeyConfirm { peer: to }
                    } else {
                        Token::None
                    };
                    self.send(to, msg, token);
                }
                RekeyOutput::Failed { peer, failure, .. } => {
                    tracing::info!(%peer, "rekey ended without a new key: {failure:?}");
                }
            }
        }
    }

    /// A key proof with the current key succeeded: a previous key is no longer needed.
    pub(crate) fn rekey_confirmed(&mut self, device: DeviceId) {
        if self.proxy.fallback_key(&device).is_none() {
            return;
        }
        if let Err(e) = self.store.forget_previous_key(&device) {
            // Harmless: the key stays on disk, and the next key proof drops it.
            tracing::warn!(%device, "cannot drop the previous key: {e}");
        }
        self.proxy.key_confirmed(&device);
    }

    /// The peer proved the key from before the last rekey: it never switched, so this
    /// device goes back to that key.
    pub(crate) fn rekey_reverted(&mut self, device: DeviceId, previous: SymmetricKey) {
        tracing::info!(%device, "the peer kept the previous key; going back to it");
        if let Err(e) = self
            .store
            .set_session_key(&device, &previous, self.clock.now())
        {
            tracing::error!(%device, "cannot restore the previous key: {e}");
        }
        self.proxy.key_reverted(&device);
        // The device may have challenged this one while it still answered with the new
        // key, and refused the answer. A fresh connection has both prove the key they now
        // share, instead of leaving the device refusing this one until the connection drops.
        self.disconnect_to_prove_again(device);
    }

    /// The connection to `device` closed: a rekey with it ends.
    pub(crate) fn proxy_connection_lost(&mut self, device: DeviceId) {
        let outputs = self.proxy.rekey.connection_lost(device);
        self.apply_rekey(outputs);
    }

    /// Deadlines of sessions, prompts and rekeys.
    pub(crate) fn proxy_timers(&mut self, now: Timestamp) {
        self.session_timeouts(now);
        self.expire_prompts(now);
        let outputs = self.proxy.rekey.handle_timeout(now);
        self.apply_rekey(outputs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchnet_protocol::identity::DeviceKeypair;

    fn device(seed: u8) -> DeviceId {
        DeviceKeypair::from_seed(&[seed; 32]).device_id()
    }

    fn hint(addr: &str) -> AddrHint {
        AddrHint(addr.parse::<Multiaddr>().unwrap().to_vec())
    }

    #[test]
    fn only_plain_tcp_addresses_of_the_device_itself_are_dialled() {
        let d = device(1);
        let own = crate::peer::peer_of(&d);
        let other = crate::peer::peer_of(&device(2));
        let tcp4: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let tcp6: Multiaddr = "/ip6/2001:db8::7/tcp/4001".parse().unwrap();
        assert_eq!(
            dialable_hint(d, &hint("/ip4/192.0.2.7/tcp/4001")),
            Some(tcp4.clone())
        );
        assert_eq!(
            dialable_hint(d, &hint("/ip6/2001:db8::7/tcp/4001")),
            Some(tcp6)
        );
        assert_eq!(
            dialable_hint(d, &hint(&format!("/ip4/192.0.2.7/tcp/4001/p2p/{own}"))),
            Some(tcp4)
        );
        let mut refused = vec![
            format!("/ip4/192.0.2.7/tcp/4001/p2p/{other}"),
            "/dns4/example.org/tcp/4001".to_owned(),
            "/ip4/192.0.2.7".to_owned(),
            "/ip4/192.0.2.7/tcp/4001/ws".to_owned(),
            "/ip4/192.0.2.7/udp/4001".to_owned(),
            "/ip4/192.0.2.7/udp/4001/quic".to_owned(),
            format!("/ip4/192.0.2.7/udp/4001/quic-v1/p2p/{other}"),
            "/dns4/example.org/udp/4001/quic-v1".to_owned(),
        ];
        // A build without QUIC cannot dial it, so it drops the hint.
        if cfg!(not(feature = "quic")) {
            refused.push("/ip4/192.0.2.7/udp/4001/quic-v1".to_owned());
        }
        for refused in refused {
            assert_eq!(dialable_hint(d, &hint(&refused)), None, "{refused}");
        }
        assert_eq!(dialable_hint(d, &AddrHint(vec![0xff, 0x00, 0x13])), None);
        assert_eq!(dialable_hint(d, &AddrHint(Vec::new())), None);
    }

    #[cfg(feature = "quic")]
    #[test]
    fn a_quic_build_dials_plain_quic_addresses_of_the_device_itself() {
        let d = device(1);
        let own = crate::peer::peer_of(&d);
        let quic4: Multiaddr = "/ip4/192.0.2.7/udp/4001/quic-v1".parse().unwrap();
        let quic6: Multiaddr = "/ip6/2001:db8::7/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(
            dialable_hint(d, &hint("/ip4/192.0.2.7/udp/4001/quic-v1")),
            Some(quic4.clone())
        );
        assert_eq!(
            dialable_hint(d, &hint("/ip6/2001:db8::7/udp/4001/quic-v1")),
            Some(quic6)
        );
        assert_eq!(
            dialable_hint(
                d,
                &hint(&format!("/ip4/192.0.2.7/udp/4001/quic-v1/p2p/{own}"))
            ),
            Some(quic4)
        );
    }
}
