//! Presence and the key proof between real nodes: paired devices reconnect by themselves
//! and prove their keys; a device that cannot prove its key is never online, and the
//! failure is audited and shown.

mod common;
mod proxy_support;

use common::*;
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_protocol::SymmetricKey;
use vouchnet_storage::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_device_goes_offline_with_its_last_connection_and_is_redialled_after_a_restart() {
    let a = TestNode::start("laptop").await;
    let mut b = TestNode::start("phone").await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    wait_online(&b, a.id(), true).await;

    let mut a_events = a.subscribe();
    let b_id = b.id();
    b.stop().await;
    next_event(&mut a_events, device_changed(b_id, false)).await;
    wait_online(&a, b_id, false).await;

    // The phone comes back on a new port: it redials the laptop at the address the laptop
    // announced, and both prove their keys again.
    b.restart().await;
    next_event(&mut a_events, device_changed(b_id, true)).await;
    wait_online(&b, a.id(), true).await;
    let peers = a.n().client.peers().await.unwrap();
    let p = peers
        .iter()
        .find(|p| p.device_id == b_id.to_string())
        .expect("b is connected");
    assert!(p.connected && p.paired && p.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_cannot_prove_the_pairing_key_is_not_online_and_the_failure_is_audited() {
    let a = TestNode::start("laptop").await;
    let mut b = TestNode::start("phone").await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    let b_id = b.id();
    b.stop().await;
    wait_online(&a, b_id, false).await;

    // The phone comes back holding a different key for the laptop (as an impostor with the
    // phone's identity key but not the pairing key would).
    {
        let store = Store::open(b.dir.path()).unwrap();
        store
            .set_session_key(
                &a.id(),
                &SymmetricKey::from_bytes([7; 32]),
                vouchnet_node::clock::now(),
            )
            .unwrap();
    }
    let mut a_events = a.subscribe();
    let audit_before = a.audit_len().await;
    b.restart().await;

    let failed = next_event(&mut a_events, |e| {
        matches!(e, NodeEvent::KeyProofFailed { .. })
    })
    .await;
    let NodeEvent::KeyProofFailed { device_id, reason } = &failed.event else {
        unreachable!()
    };
    assert_eq!(device_id, &b_id.to_string());
    assert_eq!(reason, "bad_mac");
    let audit = a.n().client.audit().await.unwrap();
    assert_eq!(audit.len(), audit_before + 1);
    assert!(
        audit.last().unwrap().event.contains("failed to prove"),
        "{:?}",
        audit.last()
    );
    let devices = a.devices().await;
    assert!(!devices[0].online, "connected but not proven: not online");
    let peers = a.n().client.peers().await.unwrap();
    assert!(peers
        .iter()
        .any(|p| p.device_id == b_id.to_string() && p.connected && !p.online));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_device_takes_it_offline_and_unblocking_brings_it_back() {
    let a = TestNode::start("laptop").await;
    let b = TestNode::start("phone").await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    let view = a
        .n()
        .client
        .set_trust(b.id(), vouchnet_protocol::model::TrustLevel::Blocked)
        .await
        .unwrap();
    assert_eq!(view.trust_level, "blocked");
    assert!(!view.online);
    let view = a
        .n()
        .client
        .set_trust(b.id(), vouchnet_protocol::model::TrustLevel::Trusted)
        .await
        .unwrap();
    assert_eq!(view.trust_level, "trusted");
    wait_online(&a, b.id(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_forgot_this_one_is_reported_at_once() {
    let mut a = TestNode::start("laptop").await;
    let b = TestNode::start("phone").await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    b.n().client.unpair(a.id()).await.unwrap();
    a.stop().await;
    a.restart().await;
    // The laptop redials the phone, challenges it, and the phone says it is not paired.
    let mut a_events = a.subscribe();
    let mut a_devices = a.subscribe();
    let failed = next_event(&mut a_events, |e| {
        matches!(e, NodeEvent::KeyProofFailed { .. })
    })
    .await;
    assert!(
        matches!(&failed.event, NodeEvent::KeyProofFailed { reason, .. } if reason == "not_paired_on_peer"),
        "{failed:?}"
    );
    // The device list, and the device resource on the event stream, say why the phone
    // stays offline, not only that it does.
    let phone_id = b.id().to_string();
    next_event(&mut a_devices, |e| {
        matches!(e, NodeEvent::ResourceChanged { resource: ResourceKind::Device, id, data }
            if *id == phone_id && data["key_proof_failed"] == "not_paired_on_peer")
    })
    .await;
    let phone = &a.devices().await[0];
    assert!(!phone.online);
    assert_eq!(
        phone.key_proof_failed.as_deref(),
        Some("not_paired_on_peer")
    );

    // The users pair again: the new pairing replaces the old one and the reason is gone.
    pair(&b, &a).await;
    wait_online(&a, b.id(), true).await;
    let phone = &a.devices().await[0];
    assert_eq!(phone.key_proof_failed, None);
}

/// Idle connections close after `idle_connection_timeout`, except those to paired devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_devices_stay_connected_while_idle_connections_to_strangers_close() {
    let quick = |name| vouchnet_node::NodeConfig {
        idle_connection_timeout: 1,
        ..config(name)
    };
    let a = TestNode::start_with(quick("laptop")).await;
    let b = TestNode::start_with(quick("phone")).await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    // A stranger connects after the pair went quiet, so its connection is idle for less
    // time than theirs: once it is closed, theirs would have been too without keep-alive.
    let mut a_events = a.n().client.events().subscribe(None);
    let c = TestNode::start_with(quick("stranger")).await;
    c.n().client.dial(a.addr()).await.unwrap();
    let c_id = c.id().to_string();
    let connected = |node: &TestNode, id: String| {
        let client = node.n().client.clone();
        async move {
            client
                .peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.device_id == id && p.connected)
        }
    };
    eventually(|| async { connected(&a, c_id.clone()).await.then_some(()) }).await;
    eventually(|| async { (!connected(&a, c_id.clone()).await).then_some(()) }).await;
    assert!(
        connected(&a, b.id().to_string()).await,
        "the paired device is still connected"
    );
    assert!(a.devices().await[0].online);
    // ... and never dropped meanwhile (a redial would have hidden a drop).
    let went_offline = device_changed(b.id(), false);
    while let Ok(env) = a_events.live.try_recv() {
        assert!(
            !went_offline(&env.event),
            "the paired device went offline: {env:?}"
        );
    }
}

/// A paired device that never answers the challenge is reported (`timeout`) and its
/// connection is closed, so that it is challenged again on a fresh connection instead of
/// staying connected and offline for as long as that connection lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_does_not_answer_the_challenge_in_time_is_disconnected() {
    let silent = proxy_support::keypair(41);
    let key = proxy_support::random_key(41);
    let (dir, node_id) = proxy_support::prepared_dir(&[(&silent, &key, "silent")]);
    let config = vouchnet_node::NodeConfig {
        key_proof_timeout: 1,
        ..proxy_support::fast("laptop")
    };
    let a = proxy_support::start_in(dir, config, vouchnet_node::Tuning::default()).await;
    assert_eq!(a.id(), node_id);
    let mut events = a.subscribe();
    // Holding no key, the raw peer acknowledges the challenge but never answers it.
    let raw = proxy_support::RawPeer::spawn(silent, Vec::new());
    let hello = vouchnet_protocol::Message::Ack(vouchnet_protocol::messages::Ack {});
    let _ = raw.send(&a.addr(), hello).await;

    let failed = next_event(
        &mut events,
        |e| matches!(e, NodeEvent::KeyProofFailed { reason, .. } if reason == "timeout"),
    )
    .await;
    let NodeEvent::KeyProofFailed { device_id, .. } = &failed.event else {
        unreachable!()
    };
    assert_eq!(device_id, &raw.id.to_string());
    let raw_id = raw.id.to_string();
    eventually(|| async {
        let peers = a.n().client.peers().await.ok()?;
        (!peers.iter().any(|p| p.device_id == raw_id && p.connected)).then_some(())
    })
    .await;
    assert!(!a.devices().await[0].online);
}

/// A rekey switched this device's key, and the other device never took the new one up (its
/// confirmation was lost). This device then restarts before any key proof settled which
/// key the other holds. The key from before the rekey is kept on disk, so after the restart
/// the other device's proof with it still succeeds: this device goes back to that key and
/// both come online, instead of each holding a key the other can never prove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_a_rekey_and_its_key_proof_does_not_strand_the_pairing() {
    let mut a = TestNode::start("laptop").await;
    let b = TestNode::start("phone").await;
    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    let (a_id, b_id) = (a.id(), b.id());
    a.config.listen = vec![a.n().listen_addrs[0].to_string()];
    a.stop().await;
    wait_online(&b, a_id, false).await;
    let shared = {
        let store = Store::open(a.dir.path()).unwrap();
        let shared = store.device(&b_id).unwrap().unwrap().session_key;
        // The laptop started a rekey and switched to the new key; the phone did not.
        store
            .switch_session_key(
                &b_id,
                &SymmetricKey::from_bytes([9; 32]),
                true,
                vouchnet_node::clock::now(),
            )
            .unwrap();
        shared
    };

    a.restart().await;
    wait_online(&a, b_id, true).await;
    wait_online(&b, a_id, true).await;
    a.stop().await;
    let rec = Store::open(a.dir.path())
        .unwrap()
        .device(&b_id)
        .unwrap()
        .unwrap();
    assert_eq!(rec.session_key, shared, "back to the key the phone holds");
    assert_eq!(rec.previous_key, None);
}

/// A device that comes online on a LAN is dialed by every paired device that sees it (or,
/// once vouched for, by every target that accepted it), all at once. Handshakes in progress
/// cannot be told apart before they end, so none may be refused below the configured
/// `max_incoming_connections`: 64 peers dialing at the same moment all get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_devices_dialing_at_once_all_get_through() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;

    const DIALERS: usize = 64;
    let node = TestNode::start("laptop").await;
    let addr = node.addr();
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(DIALERS));
    let dials = (0..DIALERS).map(|_| {
        let (go, addr) = (go.clone(), addr.clone());
        tokio::spawn(async move {
            let mut swarm = raw_swarm(vouchnet_node::network::codec::PAIR_PROTOCOL);
            go.wait().await;
            swarm.dial(addr).expect("dial");
            loop {
                match tokio::time::timeout(STEP, swarm.select_next_some())
                    .await
                    .expect("the dial ends before the deadline")
                {
                    SwarmEvent::ConnectionEstablished { .. } => return Ok(()),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(error.to_string())
                    }
                    _ => {}
                }
            }
        })
    });
    let refused: Vec<String> = futures::future::join_all(dials)
        .await
        .into_iter()
        .filter_map(|r| r.expect("dialer task").err())
        .collect();
    assert_eq!(refused, Vec::<String>::new());
}
