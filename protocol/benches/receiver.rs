//! What the receiver's checks cost on top of the signature check they cannot avoid.
//!
//! One criterion group, measured in the same run:
//! - `bare_verify_strict`: ed25519-dalek `verify_strict` of a 64-byte message, nothing else;
//! - `signed_verify_vouch`: [`Signed::verify`] of a vouch certificate (domain tag, strict
//!   verification, bounded decode);
//! - `receive_auto_accept`: the full verify-and-decide path of [`Receiver::receive`] with an
//!   in-memory, HashMap-backed [`ReceiverView`], ending in an automatic acceptance — which
//!   includes *signing* the response;
//! - `receive_prompt`: the same path when the user is asked (no response to sign).
//!
//! The goal is `bare_verify_strict / receive_auto_accept >= 0.7`.
//!
//! Run: `cargo bench -p vouchnet-protocol --bench receiver`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet};
use vouchnet_protocol::identity::{DeviceId, DeviceKeypair};
use vouchnet_protocol::ids::{SessionId, VouchNonce};
use vouchnet_protocol::keys::{derive_proxied_key, seal_proxied_key};
use vouchnet_protocol::messages::{Decision, DisplayName, ProxyPairingRequest, VouchCertificate};
use vouchnet_protocol::model::{KnownDevice, PairingType, TrustLevel};
use vouchnet_protocol::signing::Signed;
use vouchnet_protocol::vouch::{Outcome, Receiver, ReceiverView, CERTIFICATE_VERSION};
use vouchnet_protocol::{ProtocolConfig, SymmetricKey, Timestamp};

#[derive(Default)]
struct MemView {
    devices: HashMap<DeviceId, KnownDevice>,
    keys: HashMap<DeviceId, SymmetricKey>,
    tombstones: HashSet<DeviceId>,
    nonces: HashSet<VouchNonce>,
    decisions: HashMap<(SessionId, DeviceId, DeviceId), Decision>,
    prompts: HashMap<(SessionId, DeviceId, DeviceId), Timestamp>,
}

impl ReceiverView for MemView {
    fn device(&self, id: &DeviceId) -> Option<KnownDevice> {
        self.devices.get(id).cloned()
    }
    fn pairing_key(&self, id: &DeviceId) -> Option<SymmetricKey> {
        self.keys.get(id).cloned()
    }
    fn is_tombstoned(&self, id: &DeviceId) -> bool {
        self.tombstones.contains(id)
    }
    fn nonce_seen(&self, nonce: &VouchNonce) -> bool {
        self.nonces.contains(nonce)
    }
    fn prior_decision(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Decision> {
        self.decisions.get(&(*session, *voucher, *vouchee)).cloned()
    }
    fn open_prompt(
        &self,
        session: &SessionId,
        voucher: &DeviceId,
        vouchee: &DeviceId,
    ) -> Option<Timestamp> {
        self.prompts.get(&(*session, *voucher, *vouchee)).copied()
    }
    fn pending_prompts(&self) -> usize {
        self.prompts.len()
    }
}

fn bench_receiver(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let now = Timestamp::from_secs(1_700_000_000);

    // (a) the floor: one strict verification, straight from ed25519-dalek.
    let sk = SigningKey::generate(&mut rng);
    let vk = sk.verifying_key();
    let msg = [0x5au8; 64];
    let sig = sk.sign(&msg);

    // A realistic vouch from V to T about E, and T's view of the world (with some other
    // devices, so the maps are not trivially small).
    let t = DeviceKeypair::generate(&mut rng);
    let v = DeviceKeypair::generate(&mut rng);
    let e = DeviceKeypair::generate(&mut rng);
    let k_vt = SymmetricKey::from_bytes([0x11; 32]);
    let k_ve = SymmetricKey::from_bytes([0x22; 32]);
    let mut view = MemView::default();
    view.devices.insert(
        v.device_id(),
        KnownDevice {
            public_key: v.public(),
            pairing_type: PairingType::Direct,
            trust_level: TrustLevel::Trusted,
        },
    );
    view.keys.insert(v.device_id(), k_vt.clone());
    for _ in 0..64 {
        let other = DeviceKeypair::generate(&mut rng);
        view.devices.insert(
            other.device_id(),
            KnownDevice {
                public_key: other.public(),
                pairing_type: PairingType::Direct,
                trust_level: TrustLevel::Trusted,
            },
        );
        view.nonces.insert(VouchNonce::random(&mut rng));
    }
    let cert = VouchCertificate {
        v: CERTIFICATE_VERSION,
        session_id: SessionId::random(&mut rng),
        voucher: v.device_id(),
        vouchee: e.device_id(),
        vouchee_key: e.public(),
        vouchee_name: DisplayName::new("new phone").unwrap(),
        target: t.device_id(),
        issued_at: now,
        nonce: VouchNonce::random(&mut rng),
    };
    let proxied = derive_proxied_key(
        &k_ve,
        &cert.session_id,
        &cert.voucher,
        &cert.target,
        &cert.vouchee,
    );
    let sealed_key = seal_proxied_key(
        &k_vt,
        &proxied,
        &cert.session_id,
        &cert.voucher,
        &cert.target,
        &cert.vouchee,
        &mut rng,
    );
    let request = ProxyPairingRequest {
        vouch: Signed::sign(&v, &cert),
        sealed_key,
    };

    let auto = ProtocolConfig::default();
    let ask = ProtocolConfig {
        auto_accept_vouched: false,
        ..ProtocolConfig::default()
    };
    let receiver = Receiver::new(&t, &auto);
    let prompting = Receiver::new(&t, &ask);
    let sender = v.device_id();
    assert_eq!(
        receiver
            .receive(&view, &sender, &request, now)
            .unwrap()
            .outcome,
        Outcome::Accepted(vouchnet_protocol::messages::AcceptedHow::Automatic)
    );
    assert_eq!(
        prompting
            .receive(&view, &sender, &request, now)
            .unwrap()
            .outcome,
        Outcome::Prompted
    );

    let mut g = c.benchmark_group("receiver");
    g.bench_function("bare_verify_strict", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg), black_box(&sig)).is_ok())
    });
    // Every iteration checks a request decoded afresh from its bytes, as one arriving from
    // the network is: a `Signed` value remembers a successful check, so reusing one value
    // would measure that memory, not the verification.
    let wire = vouchnet_protocol::codec::encode(&request);
    let arrived = || -> ProxyPairingRequest {
        vouchnet_protocol::codec::decode(&wire, &vouchnet_protocol::Limits::default())
            .expect("request decodes")
    };
    g.bench_function("signed_verify_vouch", |b| {
        b.iter_batched(
            arrived,
            |r| r.vouch.verify(black_box(&v.public())).is_ok(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("receive_auto_accept", |b| {
        b.iter_batched(
            arrived,
            |r| receiver.receive(black_box(&view), black_box(&sender), &r, now),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("receive_prompt", |b| {
        b.iter_batched(
            arrived,
            |r| prompting.receive(black_box(&view), black_box(&sender), &r, now),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_receiver);
criterion_main!(benches);
