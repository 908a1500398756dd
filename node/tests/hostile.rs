//! Hostile and foreign peers against a real node: floods, rate limits, frames the node must
//! refuse, and the protocol a node without proxy pairing does not offer.

mod common;

use common::*;
use libp2p::request_response::OutboundFailure;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use vouchnet_node::network::codec::{WireFrame, PROXY_PAIR_PROTOCOL};
use vouchnet_protocol::messages::{
    Ack, CancelReason, DisplayName, ErrorCode, ErrorReply, KeyProofChallenge, PairingCancel,
    PairingConfirm, PairingRequest, PairingReveal, Ping, PAIRING_METHOD,
};
use vouchnet_protocol::{Frame, Limits, Message, TxId};

fn pairing_request(rng: &mut impl RngCore) -> WireFrame {
    let mut tx = [0u8; 16];
    rng.fill_bytes(&mut tx);
    let mut commitment = [0u8; 32];
    rng.fill_bytes(&mut commitment);
    frame(Message::PairingRequest(PairingRequest {
        tx_id: TxId(tx),
        method: PAIRING_METHOD.to_owned(),
        commitment,
        name: DisplayName::new("flood").unwrap(),
    }))
}

fn error_code(o: &RawOutcome) -> Option<&ErrorCode> {
    match o {
        RawOutcome::Response(Frame {
            msg: Message::Error(ErrorReply { code }),
            ..
        }) => Some(code),
        _ => None,
    }
}

/// Requests from many fresh PeerIds that never continue past the first message must not
/// lock out a legitimate pairing, and the node's state stays within its caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pairing_requests_from_fresh_peers_does_not_stop_a_legitimate_pairing() {
    let cap = 4;
    let b = TestNode::start_with(vouchnet_node::NodeConfig {
        max_pending_prompts: cap,
        ..config("phone")
    })
    .await;
    let a = TestNode::start("laptop").await;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
    let flooders = 24;
    let mut swarms: Vec<_> = (0..flooders).map(|_| raw_swarm(PAIR)).collect();
    for s in swarms.iter_mut() {
        let outcomes = raw_send(s, &b.addr(), vec![pairing_request(&mut rng)]).await;
        assert!(is_ack(&outcomes[0]), "{outcomes:?}");
        assert!(
            b.pairings().await.len() <= cap,
            "pending pairings stay within the cap"
        );
    }
    assert_eq!(
        b.pairings().await.len(),
        cap,
        "the cap is full of stalled requests"
    );

    pair(&a, &b).await;
    wait_online(&a, b.id(), true).await;
    wait_online(&b, a.id(), true).await;
    assert!(b.pairings().await.len() <= cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_over_its_rate_limit_is_refused() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    // Unsolicited key-proof challenges from a stranger: each is answered NotPaired until
    // the peer exceeds its rate, then RateLimited.
    let frames = (0..64u8)
        .map(|i| {
            frame(Message::KeyProofChallenge(KeyProofChallenge {
                challenge: [i; 32],
            }))
        })
        .collect();
    let outcomes = raw_send(&mut s, &b.addr(), frames).await;
    let not_paired = outcomes
        .iter()
        .filter(|o| error_code(o) == Some(&ErrorCode::NotPaired))
        .count();
    let limited = outcomes
        .iter()
        .filter(|o| error_code(o) == Some(&ErrorCode::RateLimited))
        .count();
    assert!(not_paired >= 32, "the burst is served: {not_paired}");
    assert!(
        limited >= 1,
        "beyond the burst the peer is limited: {outcomes:?}"
    );
    assert_eq!(not_paired + limited, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_an_unknown_version_gets_an_unsupported_version_answer() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let future = Frame {
        v: 2,
        msg: Message::Ack(Ack {}),
    };
    let outcomes = raw_send(&mut s, &b.addr(), vec![WireFrame::raw(future.encode())]).await;
    assert_eq!(
        error_code(&outcomes[0]),
        Some(&ErrorCode::UnsupportedVersion { supported: vec![1] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_misplaced_messages_are_refused_as_malformed() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let outcomes = raw_send(
        &mut s,
        &b.addr(),
        vec![
            WireFrame::raw(vec![0xff, 0x00, 0x13]),
            WireFrame::raw(Vec::new()),
            // A response kind sent as a request.
            frame(Message::Ack(Ack {})),
        ],
    )
    .await;
    for o in &outcomes {
        assert_eq!(error_code(o), Some(&ErrorCode::Malformed), "{o:?}");
    }
}

/// A `Ping` from any connected peer, paired or not, gets an `Ack` and changes nothing; on
/// the proxy-pairing protocol it is misplaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_from_a_stranger_is_acknowledged_and_changes_nothing() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let outcomes = raw_send(&mut s, &b.addr(), vec![frame(Message::Ping(Ping {}))]).await;
    assert!(
        matches!(
            &outcomes[0],
            RawOutcome::Response(Frame {
                msg: Message::Ack(_),
                ..
            })
        ),
        "{:?}",
        outcomes[0]
    );
    assert!(b.devices().await.is_empty());
    assert!(b.pairings().await.is_empty());
    let mut p = raw_swarm(PROXY_PAIR_PROTOCOL);
    let outcomes = raw_send(&mut p, &b.addr(), vec![frame(Message::Ping(Ping {}))]).await;
    assert_eq!(error_code(&outcomes[0]), Some(&ErrorCode::Malformed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_fails_its_stream_and_the_node_carries_on() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let max = Limits::default().max_frame;
    let outcomes = raw_send(&mut s, &b.addr(), vec![WireFrame::raw(vec![0u8; max + 1])]).await;
    // The node reads at most max + 1 bytes, then drops the stream: no answer comes back.
    assert!(
        matches!(
            outcomes[0],
            RawOutcome::Failure(_) | RawOutcome::NoFrame(vouchnet_protocol::DecodeError::Empty)
        ),
        "{:?}",
        outcomes[0]
    );
    let outcomes = raw_send(
        &mut s,
        &b.addr(),
        vec![frame(Message::KeyProofChallenge(KeyProofChallenge {
            challenge: [1; 32],
        }))],
    )
    .await;
    assert_eq!(error_code(&outcomes[0]), Some(&ErrorCode::NotPaired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_proxy_pairing_does_not_offer_its_protocol() {
    let b = TestNode::start_with(vouchnet_node::NodeConfig {
        proxy_pairing: false,
        ..config("phone")
    })
    .await;
    let mut s = raw_swarm(PROXY_PAIR_PROTOCOL);
    let outcomes = raw_send(&mut s, &b.addr(), vec![frame(Message::Ack(Ack {}))]).await;
    assert!(
        matches!(
            outcomes[0],
            RawOutcome::Failure(OutboundFailure::UnsupportedProtocols)
        ),
        "{:?}",
        outcomes[0]
    );
}

/// The process's resident memory, from /proc (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Truncated frames, 10,000 nested arrays and a declared length of 2^64 are each refused as
/// malformed over the network, the connection keeps serving, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_deeply_nested_frames_are_refused_and_the_node_carries_on() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let valid = pairing_request(&mut rng);
    let bytes = valid.as_bytes().to_vec();
    let mut nested = vec![0x81u8; 10_000];
    nested.push(0x00);
    let mut huge = vec![0xa2, 0x61, b'v', 0x01, 0x63, b'm', b's', b'g'];
    huge.extend_from_slice(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let outcomes = raw_send(
        &mut s,
        &b.addr(),
        vec![
            WireFrame::raw(bytes[..bytes.len() / 2].to_vec()),
            WireFrame::raw(bytes[..1].to_vec()),
            WireFrame::raw(nested),
            WireFrame::raw(huge),
        ],
    )
    .await;
    for o in &outcomes {
        assert_eq!(error_code(o), Some(&ErrorCode::Malformed), "{o:?}");
    }
    assert!(b.pairings().await.is_empty());
    assert!(b.devices().await.is_empty());
    // The same connection is still served.
    let outcomes = raw_send(&mut s, &b.addr(), vec![valid]).await;
    assert!(is_ack(&outcomes[0]), "{outcomes:?}");
    assert_eq!(b.pairings().await.len(), 1);
}

/// Pairing messages out of order (a reveal or a confirmation with no pairing, a cancel for
/// a transaction nobody started) are acknowledged at the transport but change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_pairing_messages_change_nothing() {
    let b = TestNode::start("phone").await;
    let mut s = raw_swarm(PAIR);
    let tx = TxId([9; 16]);
    let outcomes = raw_send(
        &mut s,
        &b.addr(),
        vec![
            frame(Message::PairingReveal(PairingReveal {
                tx_id: tx,
                ephemeral: [3; 32],
                nonce: [4; 32],
            })),
            frame(Message::PairingConfirm(PairingConfirm {
                tx_id: tx,
                mac: [5; 32],
            })),
            frame(Message::PairingCancel(PairingCancel {
                tx_id: tx,
                reason: CancelReason::UserRejected,
            })),
        ],
    )
    .await;
    assert_eq!(outcomes.len(), 3);
    // The transport acknowledges each frame (it reached the pairing machine, which
    // refused it without a state change: UnknownTransaction); no error reply leaks state.
    for o in &outcomes {
        assert!(is_ack(o), "{o:?}");
    }
    assert!(b.pairings().await.is_empty());
    assert!(b.devices().await.is_empty());
    // An honest pairing still works afterwards.
    let a = TestNode::start("laptop").await;
    pair(&a, &b).await;
    wait_online(&b, a.id(), true).await;
}

/// 2,000 pairing requests from 100 fresh PeerIds leave memory bounded: the node keeps at
/// most its cap of pending pairings, and its resident memory grows by a bounded amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_flood_keeps_state_and_memory_bounded() {
    let cap = 8;
    let b = TestNode::start_with(vouchnet_node::NodeConfig {
        max_pending_prompts: cap,
        ..config("phone")
    })
    .await;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    // Warm up, so allocator growth of the first connections is not counted.
    let mut warm = raw_swarm(PAIR);
    raw_send(&mut warm, &b.addr(), vec![pairing_request(&mut rng)]).await;
    let before = rss_kib();
    for _ in 0..100 {
        let mut s = raw_swarm(PAIR);
        let frames = (0..20).map(|_| pairing_request(&mut rng)).collect();
        let outcomes = raw_send(&mut s, &b.addr(), frames).await;
        assert_eq!(outcomes.len(), 20);
        assert!(b.pairings().await.len() <= cap);
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(b.pairings().await.len() <= cap);
    // Each flooder's swarm lives in this test process too; the bound is loose on purpose
    // but catches state that grows with every request (2,000 requests).
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}
