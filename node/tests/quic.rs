//! The whole story over QUIC alone (a build with the `quic` feature, every node listening
//! only on `/udp/0/quic-v1`): direct pairing with the code confirmed on both sides, a
//! vouch, the vouchee reaching the target through the addresses its voucher passes on,
//! the key proof and rekey, and sealed messages both ways. The same flows run over TCP in
//! `proxy.rs`; this file proves the transport the feature adds carries them unchanged.
#![cfg(feature = "quic")]

mod common;
mod proxy_support;

use common::*;
use proxy_support::*;
use vouchnet_node::NodeConfig;

const QUIC_LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// A fast test node that listens on QUIC only, so no step can fall back to TCP.
fn quic_only(name: &str) -> NodeConfig {
    NodeConfig {
        listen: vec![QUIC_LOOPBACK.to_owned()],
        ..fast(name)
    }
}

fn is_quic(addr: &str) -> bool {
    addr.contains("/udp/") && addr.contains("/quic-v1")
}

/// `dialer` sees `listener` online, at QUIC addresses only.
async fn assert_reached_over_quic(dialer: &TestNode, listener: &TestNode) {
    let peers = dialer.n().client.peers().await.unwrap();
    let seen = peers
        .iter()
        .find(|p| p.device_id == listener.id().to_string())
        .unwrap_or_else(|| panic!("{} sees {}", dialer.name, listener.name));
    assert!(
        seen.online,
        "{} is online at {}",
        listener.name, dialer.name
    );
    assert!(
        !seen.addrs.is_empty() && seen.addrs.iter().all(|a| is_quic(a)),
        "{} reached {} over QUIC only: {:?}",
        dialer.name,
        listener.name,
        seen.addrs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_vouching_rekey_and_sealed_messages_work_over_quic_alone() {
    let v = TestNode::start_with(quic_only("voucher")).await;
    let t = TestNode::start_with(quic_only("target")).await;
    let e = TestNode::start_with(quic_only("newcomer")).await;
    for node in [&v, &t, &e] {
        let addr = node.addr().to_string();
        assert!(is_quic(&addr), "{} listens on {addr}", node.name);
    }

    // Direct pairings, each code confirmed on both screens, over QUIC connections.
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    // Each dialer lists the address it reached the other at: a QUIC one.
    for (dialer, listener) in [(&v, &t), (&e, &v)] {
        assert_reached_over_quic(dialer, listener).await;
    }

    // The vouch, accepted by the target on its own.
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(
        final_status(&v, id, t.id()).await,
        ("accepted".to_owned(), None)
    );

    // The newcomer never met the target: it dials the QUIC address the voucher passed on,
    // both prove the proxied key, and the newcomer replaces it by a rekey.
    wait_online(&e, t.id(), true).await;
    wait_online(&t, e.id(), true).await;
    assert_reached_over_quic(&e, &t).await;
    wait_rekeyed(&[&e, &t]).await;

    // Sealed messages both ways, under the key the voucher never saw.
    send_sealed(&e, &t, "hello over quic").await;
    send_sealed(&t, &e, "welcome").await;

    // Every trail verifies.
    for node in [&v, &t, &e] {
        let report = node.n().client.audit_verify().await.unwrap();
        assert!(report.ok, "{}: {:?}", node.name, report.error);
    }
}
