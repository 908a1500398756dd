//! Identity rules: one Ed25519 key is both the libp2p identity and the signing key, and
//! weak or malformed keys from the network are refused.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair, DevicePublicKey, KeyError};

#[test]
fn same_seed_gives_same_key_in_libp2p_and_dalek() {
    for seed_byte in [0u8, 1, 7, 0xff] {
        let seed = [seed_byte; 32];
        let kp = DeviceKeypair::from_seed(&seed);
        let lp = kp.to_libp2p();
        let lp_ed = lp.public().try_into_ed25519().expect("ed25519 key");
        assert_eq!(lp_ed.to_bytes(), kp.public().to_bytes());
        assert_eq!(lp.public().to_peer_id(), kp.device_id().peer_id());
    }
}

#[test]
fn device_id_round_trips_and_yields_its_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let kp = DeviceKeypair::generate(&mut rng);
    let id = kp.device_id();
    assert_eq!(DeviceId::from_bytes(&id.to_bytes()), Ok(id));
    assert_eq!(id.to_string().parse::<DeviceId>(), Ok(id));
    assert_eq!(id.public_key(), Ok(kp.public()));
}

#[test]
fn device_id_that_is_not_ed25519_is_refused() {
    // A sha2-256 multihash PeerId (as RSA keys use) embeds no key.
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(&[7u8; 32]);
    assert_eq!(DeviceId::from_bytes(&bytes), Err(KeyError::NotEd25519));
    assert_eq!(
        DeviceId::from_bytes(&[1, 2, 3]),
        Err(KeyError::InvalidDeviceId)
    );
    assert_eq!(DeviceId::from_bytes(&[]), Err(KeyError::InvalidDeviceId));
}

#[test]
fn small_order_public_keys_are_refused() {
    // The identity point and a point of order 8 (from the CCTV / Wycheproof corpora).
    let identity_point = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    assert_eq!(
        DevicePublicKey::from_bytes(&identity_point),
        Err(KeyError::WeakKey)
    );
    let order8 =
        hex::decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa").unwrap();
    assert_eq!(DevicePublicKey::from_bytes(&order8), Err(KeyError::WeakKey));
    // All zeros is a small-order point too (y = 0).
    assert_eq!(
        DevicePublicKey::from_bytes(&[0u8; 32]),
        Err(KeyError::WeakKey)
    );
}

#[test]
fn wrong_length_and_non_canonical_keys_are_refused() {
    assert_eq!(
        DevicePublicKey::from_bytes(&[9u8; 31]),
        Err(KeyError::WrongLength(31))
    );
    assert_eq!(
        DevicePublicKey::from_bytes(&[9u8; 33]),
        Err(KeyError::WrongLength(33))
    );
    // y = p (2^255 - 19) is a non-canonical encoding of y = 0.
    let non_canonical =
        hex::decode("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f").unwrap();
    assert!(matches!(
        DevicePublicKey::from_bytes(&non_canonical),
        Err(KeyError::InvalidPoint) | Err(KeyError::WeakKey)
    ));
}

#[test]
fn keypair_debug_never_shows_the_secret() {
    let kp = DeviceKeypair::from_seed(&[0x42; 32]);
    let shown = format!("{kp:?}");
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains("42, 42"));
    assert!(!shown.to_lowercase().contains("4242"));
}

#[test]
fn identity_multihash_of_another_key_type_is_refused() {
    // identity multihash (0x00, len 37) of a secp256k1 protobuf key (KeyType = 2).
    let mut bytes = vec![0x00, 37, 0x08, 0x02, 0x12, 0x21];
    bytes.extend_from_slice(&[0x02; 33]);
    assert_eq!(DeviceId::from_bytes(&bytes), Err(KeyError::NotEd25519));
}

#[test]
fn device_id_embedding_a_weak_key_parses_but_yields_no_key() {
    // Ids are checked for layout when parsed; the point is validated when the key is used.
    let mut bytes = vec![0x00, 36, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(&[0u8; 32]);
    let id = DeviceId::from_bytes(&bytes).expect("layout is valid");
    assert_eq!(id.public_key(), Err(KeyError::WeakKey));
}
