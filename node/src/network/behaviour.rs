//! The swarm's behaviours, composed.
//!
//! - `limits`: connection limits (total incoming, pending, per peer); paired devices bypass
//!   them, so a flood of strangers cannot cut a device off from its own devices;
//! - `keep_alive`: keeps connections to paired devices open (see [`super::keep_alive`]);
//! - `pair`: request-response on `/vouchnet/pair/1` (pairing, key proof, sealed text);
//! - `proxy_pair`: request-response on `/vouchnet/proxy-pair/1` (proxy pairing, rekey),
//!   present only on a node that implements proxy pairing, so that one that does not
//!   answers "unsupported protocol" at negotiation;
//! - `identify`: learns the addresses paired devices listen on, for redialling;
//! - `ping`: notices dead connections;
//! - `mdns`: LAN discovery (optional; it ignores loopback interfaces).

use super::codec::{FrameCodec, PAIR_PROTOCOL, PROXY_PAIR_PROTOCOL};
use super::keep_alive;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, mdns, ping, request_response, PeerId};
use std::time::Duration;

/// Protocol version string of identify.
pub const IDENTIFY_PROTOCOL: &str = "/vouchnet/id/1";
/// Most connections to one peer (two cover a simultaneous dial by both sides).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// All behaviours of a vouchnet node. (No `Debug`: libp2p's behaviours do not implement it.)
#[allow(missing_debug_implementations)]
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection limits.
    pub limits: connection_limits::Behaviour,
    /// Keep-alive of paired devices' connections.
    pub keep_alive: keep_alive::Behaviour,
    /// `/vouchnet/pair/1`.
    pub pair: request_response::Behaviour<FrameCodec>,
    /// `/vouchnet/proxy-pair/1`, when proxy pairing is enabled.
    pub proxy_pair: Toggle<request_response::Behaviour<FrameCodec>>,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
    /// mDNS, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What the behaviours are built with.
#[derive(Debug, Clone)]
pub struct BehaviourOptions {
    /// Run mDNS discovery.
    pub mdns: bool,
    /// Offer `/vouchnet/proxy-pair/1`.
    pub proxy_pairing: bool,
    /// Most established incoming connections from devices that are not paired, and most
    /// incoming connections being set up at once. A handshake in progress has no
    /// authenticated peer yet, so paired devices cannot be exempt from the second bound: a
    /// device that comes online on a LAN is dialed by every paired device that sees it (or,
    /// once vouched for, by every target that accepted it), so the bound must be at least
    /// as large as the number of devices a user pairs; a smaller one refuses the excess
    /// with "Broken pipe" and leaves them to back off for up to a minute.
    pub max_incoming: u32,
    /// Largest frame, bytes.
    pub max_frame: usize,
    /// How long a request waits for its response (an `Ack`, sent at once by an honest
    /// peer: no step waits for a person while a request is open).
    pub request_timeout: Duration,
}

impl Behaviour {
    /// Builds the behaviours for the node with key `key`.
    pub fn new(key: &libp2p::identity::Keypair, opts: &BehaviourOptions) -> Behaviour {
        let local = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(opts.max_incoming))
            .with_max_pending_incoming(Some(opts.max_incoming))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
        let rr_config =
            request_response::Config::default().with_request_timeout(opts.request_timeout);
        let codec = FrameCodec::new(opts.max_frame);
        let pair = request_response::Behaviour::with_codec(
            codec,
            [(PAIR_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr_config.clone(),
        );
        let proxy_pair = opts.proxy_pairing.then(|| {
            request_response::Behaviour::with_codec(
                codec,
                [(PROXY_PAIR_PROTOCOL, request_response::ProtocolSupport::Full)],
                rr_config,
            )
        });
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("vouchnet/{}", env!("CARGO_PKG_VERSION"))),
        );
        let mdns = if opts.mdns {
            match mdns::tokio::Behaviour::new(mdns::Config::default(), local) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!("mDNS unavailable, LAN discovery is off: {e}");
                    None
                }
            }
        } else {
            None
        };
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            keep_alive: keep_alive::Behaviour::default(),
            pair,
            proxy_pair: Toggle::from(proxy_pair),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
        }
    }

    /// Marks `peer` as a paired device (kept connected, exempt from connection limits) or
    /// not.
    pub fn set_paired(&mut self, peer: PeerId, paired: bool) {
        self.keep_alive.set_keep_alive(peer, paired);
        if paired {
            self.limits.bypass_peer_id(&peer);
        } else {
            self.limits.remove_peer_id(&peer);
        }
    }
}
