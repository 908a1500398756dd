//! The libp2p side of the node: transports, behaviours, codec, presence.
//!
//! Transports are TCP with Noise (authentication: the connection's PeerId is the remote
//! device id) and Yamux (multiplexing), plus QUIC when built with the `quic` feature.
//! Nothing in this module decides anything about pairing or trust; it moves frames.

pub mod behaviour;
pub mod codec;
pub mod keep_alive;
pub mod presence;
pub mod ratelimit;

pub use behaviour::{Behaviour, BehaviourEvent, BehaviourOptions};

use libp2p::{noise, tcp, yamux, Swarm};
use std::time::Duration;

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The transport could not be set up.
    #[error("transport: {0}")]
    Transport(String),
}

/// Builds the swarm with `key` as its identity.
///
/// `idle_connection_timeout` applies to connections no behaviour needs: those to devices
/// that are not paired (paired ones are kept open by `keep_alive`).
pub fn build_swarm(
    key: libp2p::identity::Keypair,
    opts: &BehaviourOptions,
    idle_connection_timeout: Duration,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let swarm = builder
        .with_behaviour(|key| Behaviour::new(key, opts))
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_connection_timeout))
        .build();
    Ok(swarm)
}
