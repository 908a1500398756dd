//! Trust rules between real nodes: an unreliable voucher is refused; a vouchee the user
//! removed or blocked is not brought back by a vouch; and what becomes of the devices a
//! voucher vouched for when the user unpairs that voucher (`on_voucher_removed` = keep,
//! review, revoke), with the vouching sessions about a removed device dropped.

mod common;
mod proxy_support;

use common::*;
use config::OnVoucherRemoved;
use proxy_support::*;
use vouchnet_node::config;
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::NodeConfig;
use vouchnet_protocol::model::TrustLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_voucher_is_refused() {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    t.n()
        .client
        .set_trust(v.id(), TrustLevel::Unreliable)
        .await
        .unwrap();
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(
        final_status(&v, id, t.id()).await,
        (
            "rejected".to_owned(),
            Some("voucher_not_trusted".to_owned())
        )
    );
    assert!(!has_device(&t, e.id()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vouchee_the_user_removed_or_blocked_is_not_brought_back_by_a_vouch() {
    let v = TestNode::start_with(fast("voucher")).await;
    let removed_it = TestNode::start_with(fast("removed-it")).await;
    let blocked_it = TestNode::start_with(fast("blocked-it")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&e, &removed_it).await;
    pair_online(&e, &blocked_it).await;
    removed_it.n().client.unpair(e.id()).await.unwrap();
    blocked_it
        .n()
        .client
        .set_trust(e.id(), TrustLevel::Blocked)
        .await
        .unwrap();
    pair_online(&v, &removed_it).await;
    pair_online(&v, &blocked_it).await;
    pair_online(&e, &v).await;

    let id = vouch(&v, &e, &[&removed_it, &blocked_it]).await;
    let s = wait_session(&v, id, |s| s.state == "completed").await;
    for t in [&removed_it, &blocked_it] {
        assert_eq!(
            status_of(&s, t.id()),
            ("rejected".to_owned(), Some("vouchee_blocked".to_owned())),
            "{}",
            t.name
        );
    }
    assert!(!has_device(&removed_it, e.id()).await);
    let still_blocked = wait_device(&blocked_it, e.id()).await;
    assert_eq!(still_blocked.trust_level, "blocked");
    assert_eq!(still_blocked.pairing_type, "direct");
}

/// V vouches for E (and E2) to T, which accepts; then T's user unpairs V.
async fn vouched_then_voucher_removed(
    mode: OnVoucherRemoved,
) -> (TestNode, TestNode, TestNode, TestNode) {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(NodeConfig {
        on_voucher_removed: mode,
        ..fast("target")
    })
    .await;
    let e = TestNode::start_with(fast("newcomer")).await;
    let e2 = TestNode::start_with(fast("second")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    pair_online(&e2, &v).await;
    for vouchee in [&e, &e2] {
        let id = vouch(&v, vouchee, &[&t]).await;
        assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
        wait_device(&t, vouchee.id()).await;
    }
    t.n().client.unpair(v.id()).await.unwrap();
    (v, t, e, e2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_voucher_removed_keep_leaves_the_devices_it_vouched_for() {
    let (v, t, e, e2) = vouched_then_voucher_removed(OnVoucherRemoved::Keep).await;
    assert!(!has_device(&t, v.id()).await);
    for d in [&e, &e2] {
        let rec = wait_device(&t, d.id()).await;
        assert_eq!(rec.trust_level, "trusted");
        assert!(!rec.review);
    }
    assert!(t.n().client.review().await.unwrap().is_empty());
    let chains = t.n().client.audit_chains().await.unwrap();
    let removed = chains
        .iter()
        .find(|c| c.device_id == v.id().to_string())
        .unwrap();
    assert_eq!(removed.pairing_type, "removed");
    assert!(
        removed
            .steps
            .iter()
            .any(|s| s.what.contains("the 2 device(s) it vouched for were kept")),
        "{removed:?}"
    );
    assert!(t.n().client.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_voucher_removed_review_flags_the_devices_and_the_user_keeps_or_removes_each() {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    let e2 = TestNode::start_with(fast("second")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    pair_online(&e2, &v).await;
    for vouchee in [&e, &e2] {
        let id = vouch(&v, vouchee, &[&t]).await;
        assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
        wait_device(&t, vouchee.id()).await;
    }
    let mut t_events = t.subscribe();
    t.n().client.unpair(v.id()).await.unwrap();

    // Review is the default: both are flagged, announced and listed.
    let voucher = v.id().to_string();
    let mut announced = Vec::new();
    for _ in 0..2 {
        let ev = next_event(
            &mut t_events,
            |ev| matches!(ev, NodeEvent::DeviceReviewRequired { voucher: w, .. } if *w == voucher),
        )
        .await;
        if let NodeEvent::DeviceReviewRequired { device_id, .. } = &ev.event {
            announced.push(device_id.clone());
        }
    }
    announced.sort();
    for d in [&e, &e2] {
        assert!(wait_device(&t, d.id()).await.review);
    }
    let mut listed: Vec<String> = t
        .n()
        .client
        .review()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.device_id)
        .collect();
    listed.sort();
    let mut expected = vec![e.id().to_string(), e2.id().to_string()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(announced, expected);

    let kept = t.n().client.review_decide(e.id(), true).await.unwrap();
    assert_eq!(kept.decision, "kept");
    assert!(!wait_device(&t, e.id()).await.review);
    let removed = t.n().client.review_decide(e2.id(), false).await.unwrap();
    assert_eq!(removed.decision, "removed");
    let e2_id = e2.id().to_string();
    next_event(&mut t_events, move |ev| {
        matches!(ev, NodeEvent::ResourceDeleted { resource: ResourceKind::Device, id } if *id == e2_id)
    })
    .await;
    assert!(!has_device(&t, e2.id()).await);
    assert!(t.n().client.review().await.unwrap().is_empty());
    assert_eq!(audit_count(&t, "revoked").await, 1);
    assert!(t.n().client.audit_verify().await.unwrap().ok);

    // The flags are rebuilt from the audit trail: none after a restart.
    let mut t = t;
    t.stop().await;
    t.restart().await;
    assert!(t.n().client.review().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_flags_survive_a_restart() {
    let (_v, mut t, e, _e2) = vouched_then_voucher_removed(OnVoucherRemoved::Review).await;
    eventually(|| async { (t.n().client.review().await.unwrap().len() == 2).then_some(()) }).await;
    t.stop().await;
    t.restart().await;
    assert_eq!(t.n().client.review().await.unwrap().len(), 2);
    assert!(wait_device(&t, e.id()).await.review);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_voucher_removed_revoke_removes_the_devices_it_vouched_for() {
    let (v, t, e, e2) = vouched_then_voucher_removed(OnVoucherRemoved::Revoke).await;
    assert!(!has_device(&t, v.id()).await);
    assert!(!has_device(&t, e.id()).await);
    assert!(!has_device(&t, e2.id()).await);
    assert!(t.n().client.review().await.unwrap().is_empty());
    assert_eq!(audit_count(&t, "revoked").await, 2);
    assert!(t.n().client.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_drops_the_vouching_sessions_about_it() {
    let v = TestNode::start_with(fast("voucher")).await;
    let mut t = TestNode::start_with(fast("target")).await;
    let mut t2 = TestNode::start_with(fast("other-target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    let e2 = TestNode::start_with(fast("second")).await;
    pair_online(&v, &t).await;
    pair_online(&v, &t2).await;
    pair_online(&e, &v).await;
    pair_online(&e2, &v).await;
    let (t_id, t2_id) = (t.id(), t2.id());
    t.stop().await;
    t2.stop().await;
    wait_online(&v, t_id, false).await;
    wait_online(&v, t2_id, false).await;
    // Two queued vouches: one for E (to T), one for E2 (to T and T2).
    let for_e = v.n().client.vouch(e.id(), vec![t_id], false).await.unwrap();
    let for_e = vouchnet_protocol::SessionId::from_hex(&for_e.session_id).unwrap();
    let for_e2 = v
        .n()
        .client
        .vouch(e2.id(), vec![t_id, t2_id], false)
        .await
        .unwrap();
    let for_e2 = vouchnet_protocol::SessionId::from_hex(&for_e2.session_id).unwrap();

    // Unpairing the vouchee E cancels its session; unpairing the target T2 expires the
    // vouch queued to it.
    v.n().client.unpair(e.id()).await.unwrap();
    assert_eq!(session(&v, for_e).await.state, "cancelled");
    v.n().client.unpair(t2_id).await.unwrap();
    let s = session(&v, for_e2).await;
    assert_eq!(status_of(&s, t2_id).0, "expired");
    assert_eq!(status_of(&s, t_id).0, "queued");
    assert_eq!(audit_count(&v, "expired undelivered").await, 1);

    // T comes back: it gets E2's vouch, and nothing about E.
    t.restart().await;
    assert_eq!(final_status(&v, for_e2, t_id).await.0, "accepted");
    wait_device(&t, e2.id()).await;
    assert!(!has_device(&t, e.id()).await);
    assert_eq!(session(&v, for_e).await.state, "cancelled");
    let _ = &mut t2;
    let chains = v.n().client.audit_chains().await.unwrap();
    let e_chain = chains
        .iter()
        .find(|c| c.device_id == e.id().to_string())
        .unwrap();
    assert!(
        e_chain
            .steps
            .iter()
            .any(|s| s.what.contains("1 vouching session(s) about it dropped")),
        "{e_chain:?}"
    );
    assert!(v.n().client.audit_verify().await.unwrap().ok);
}
