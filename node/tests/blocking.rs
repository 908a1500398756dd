//! Blocking a device that was never paired (or was removed): its pairing requests are
//! refused, a pairing in flight with it ends, the user cannot start one, no vouch adds it,
//! and lifting the block undoes exactly that. A paired device is blocked through its trust.

mod common;
mod proxy_support;

use common::*;
use proxy_support::*;
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::views::BlockView;
use vouchnet_node::NodeError;

/// Waits for `node`'s pairing with `peer` to fail, and returns the reason.
async fn failure_reason(
    events: &mut vouchnet_node::events::Subscription,
    peer: vouchnet_protocol::DeviceId,
) -> String {
    let failed = next_event(events, pairing_failed(peer)).await;
    let NodeEvent::PairingFailed { reason, .. } = &failed.event else {
        unreachable!()
    };
    reason.clone()
}

/// `from` asks `to` to pair; returns `from`'s events from just before it asked.
async fn ask_to_pair(from: &TestNode, to: &TestNode) -> vouchnet_node::events::Subscription {
    let events = from.subscribe();
    from.n()
        .client
        .pair_request(to.id(), Some(to.addr()))
        .await
        .unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_never_paired_can_be_blocked_and_then_cannot_pair_until_unblocked() {
    let laptop = TestNode::start("laptop").await;
    let phone = TestNode::start("phone").await;
    let before = laptop.audit_len().await;
    let mut laptop_events = laptop.subscribe();

    let block = laptop.n().client.block(phone.id()).await.unwrap();
    let phone_id = phone.id().to_string();
    let changed = next_event(&mut laptop_events, |e| {
        matches!(
            e,
            NodeEvent::ResourceChanged {
                resource: ResourceKind::Block,
                ..
            }
        )
    })
    .await;
    let NodeEvent::ResourceChanged { id, data, .. } = &changed.event else {
        unreachable!()
    };
    assert_eq!(id, &phone_id);
    assert_eq!(data, &serde_json::to_value(&block).unwrap());
    assert_eq!(
        (block.paired, block.blocked, block.name.as_deref()),
        (false, true, None)
    );
    assert!(block.since.is_some());
    assert_eq!(
        laptop.n().client.blocked().await.unwrap(),
        vec![block.clone()]
    );
    // Blocking again changes nothing.
    assert_eq!(laptop.n().client.block(phone.id()).await.unwrap(), block);
    assert_eq!(laptop.audit_len().await, before + 1);

    // The phone asks, and is refused; the laptop never shows a code.
    let mut phone_events = ask_to_pair(&phone, &laptop).await;
    assert_eq!(
        failure_reason(&mut phone_events, laptop.id()).await,
        "cancelled_by_peer:aborted"
    );
    assert!(laptop.pairings().await.is_empty());
    assert!(laptop.devices().await.is_empty());

    // The laptop's user cannot start one either.
    let err = laptop
        .n()
        .client
        .pair_request(phone.id(), Some(phone.addr()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Conflict(m) if m.contains("is blocked")),
        "{err:?}"
    );

    let lifted = laptop.n().client.unblock(phone.id()).await.unwrap();
    assert_eq!(
        (lifted.paired, lifted.blocked, lifted.since),
        (false, false, None)
    );
    // The next block event is the block lifted: blocking twice changed nothing.
    let next = next_event(&mut laptop_events, |e| {
        matches!(
            e,
            NodeEvent::ResourceChanged {
                resource: ResourceKind::Block,
                ..
            } | NodeEvent::ResourceDeleted {
                resource: ResourceKind::Block,
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(&next.event, NodeEvent::ResourceDeleted { id, .. } if *id == phone_id),
        "{next:?}"
    );
    assert!(laptop.n().client.blocked().await.unwrap().is_empty());
    let again = laptop.n().client.unblock(phone.id()).await.unwrap_err();
    assert!(
        matches!(&again, NodeError::NotFound(m) if m.contains("is not blocked")),
        "{again:?}"
    );
    pair(&phone, &laptop).await;
    let verify = laptop.n().client.audit_verify().await.unwrap();
    assert!(verify.ok, "{verify:?}");
    assert_eq!(
        laptop.audit_len().await,
        before + 3,
        "blocked, unblocked, paired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_device_ends_its_pairing_in_flight() {
    let laptop = TestNode::start("laptop").await;
    let phone = TestNode::start("phone").await;
    let mut phone_events = ask_to_pair(&phone, &laptop).await;
    // The laptop shows the request (and its code) to its user, who blocks the phone instead.
    laptop.code_for(phone.id()).await;
    laptop.n().client.block(phone.id()).await.unwrap();
    assert_eq!(
        failure_reason(&mut phone_events, laptop.id()).await,
        "cancelled_by_peer:aborted"
    );
    assert!(laptop.pairings().await.is_empty());
    assert!(laptop.devices().await.is_empty());
    assert!(phone.devices().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vouch_does_not_add_a_device_blocked_before_it_was_ever_paired() {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    t.n().client.block(e.id()).await.unwrap();
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;

    let id = vouch(&v, &e, &[&t]).await;
    let s = wait_session(&v, id, |s| s.state == "completed").await;
    assert_eq!(
        status_of(&s, t.id()),
        ("rejected".to_owned(), Some("vouchee_blocked".to_owned()))
    );
    assert!(!has_device(&t, e.id()).await);
    // Still blocked, and still not paired.
    let blocked: Vec<BlockView> = t.n().client.blocked().await.unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].device_id, e.id().to_string());
    assert!(!blocked[0].paired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_and_unblock_set_a_paired_devices_trust() {
    let laptop = TestNode::start("laptop").await;
    let phone = TestNode::start("phone").await;
    pair(&phone, &laptop).await;
    let block = laptop.n().client.block(phone.id()).await.unwrap();
    assert_eq!(
        (block.paired, block.blocked, block.name.as_deref()),
        (true, true, Some("phone"))
    );
    assert_eq!(laptop.devices().await[0].trust_level, "blocked");
    let lifted = laptop.n().client.unblock(phone.id()).await.unwrap();
    assert_eq!((lifted.paired, lifted.blocked), (true, false));
    assert_eq!(laptop.devices().await[0].trust_level, "trusted");
    let err = laptop.n().client.block(laptop.id()).await.unwrap_err();
    assert!(matches!(err, NodeError::InvalidArgument(_)), "{err:?}");
}
