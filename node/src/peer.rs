//! The one place where a libp2p `PeerId` becomes a vouchnet [`DeviceId`] and back.
//!
//! The protocol crate and the swarm share one version of `libp2p-identity`, so these are
//! thin wrappers; they exist so the rule below has one obvious home.
//!
//! Every inbound frame is attributed with [`device_of`] applied to the *connection's* peer:
//! a device id is never taken from a message body.

use libp2p::PeerId;
use vouchnet_protocol::{DeviceId, DeviceKeypair, KeyError};

/// The device id of a connection's authenticated peer. Fails for a peer whose id does not
/// embed an Ed25519 key (not a vouchnet device).
pub fn device_of(peer: &PeerId) -> Result<DeviceId, KeyError> {
    DeviceId::from_peer_id(*peer)
}

/// The swarm's `PeerId` for a device.
pub fn peer_of(device: &DeviceId) -> PeerId {
    device.peer_id()
}

/// The device's key as the swarm's identity (same seed, same public key).
pub fn swarm_identity(keypair: &DeviceKeypair) -> libp2p::identity::Keypair {
    keypair.to_libp2p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn swarm_identity_has_the_device_id_as_peer_id() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let kp = DeviceKeypair::generate(&mut rng);
        let peer = swarm_identity(&kp).public().to_peer_id();
        assert_eq!(device_of(&peer).unwrap(), kp.device_id());
        assert_eq!(peer_of(&kp.device_id()), peer);
    }

    #[test]
    fn a_peer_id_without_an_ed25519_key_is_not_a_device() {
        // A random (hashed) PeerId: valid, but no public key inside it.
        let peer = PeerId::random();
        assert_eq!(device_of(&peer), Err(KeyError::NotEd25519));
    }
}
