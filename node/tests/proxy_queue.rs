//! The offline queue between real nodes: a vouch to an offline target waits on disk
//! (Queued) and is delivered, signed afresh, the moment the target comes online, or at the
//! next poll; it survives a restart of the voucher; it expires after seven days (an
//! injected clock stands in for the week); a vouchee that is offline hears of its
//! acceptances when it comes back.

mod common;
mod proxy_support;

use common::*;
use proxy_support::*;
use std::time::{Duration, Instant};
use vouchnet_node::clock::Clock;
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::{NodeConfig, Tuning};
use vouchnet_protocol::{DeviceId, SessionId};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The voucher's address without `/p2p`, to restart it on the same port.
fn listen_addr(n: &TestNode) -> String {
    n.n().listen_addrs[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_target_gets_its_queued_vouch_the_moment_it_comes_online() {
    // A poll interval of an hour: only presence can deliver within this test.
    let v = TestNode::start_with(NodeConfig {
        queue_poll_interval: 3600,
        ..fast("voucher")
    })
    .await;
    let mut t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let t_id = t.id();
    t.stop().await;
    wait_online(&v, t_id, false).await;

    let id = v.n().client.vouch(e.id(), vec![t_id], false).await.unwrap();
    let id = vouchnet_protocol::SessionId::from_hex(&id.session_id).unwrap();
    // Queued as soon as the command returns (it was on disk before the answer).
    let s = session(&v, id).await;
    assert_eq!(s.state, "in_progress");
    assert_eq!(status_of(&s, t_id).0, "queued");

    let mut v_events = v.subscribe();
    t.restart().await;
    next_event(&mut v_events, device_changed(t_id, true)).await;
    assert_eq!(final_status(&v, id, t_id).await.0, "accepted");
    wait_device(&t, e.id()).await;
    wait_device(&e, t_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_presence_wake_the_poll_delivers_within_one_interval() {
    let v = start_tuned(
        fast("voucher"),
        Tuning {
            wake_queue_on_presence: false,
            ..Tuning::default()
        },
    )
    .await;
    let mut t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let t_id = t.id();
    t.stop().await;
    wait_online(&v, t_id, false).await;
    let id = v.n().client.vouch(e.id(), vec![t_id], false).await.unwrap();
    let id = vouchnet_protocol::SessionId::from_hex(&id.session_id).unwrap();
    assert_eq!(status_of(&session(&v, id).await, t_id).0, "queued");

    let mut v_events = v.subscribe();
    t.restart().await;
    next_event(&mut v_events, device_changed(t_id, true)).await;
    let online_at = Instant::now();
    assert_eq!(final_status(&v, id, t_id).await.0, "accepted");
    // One poll interval (1 s), with room for a loaded machine to answer.
    assert!(
        online_at.elapsed() < Duration::from_secs(1) + STEP / 4,
        "{:?}",
        online_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_vouches_survive_a_restart_of_the_voucher() {
    let mut v = TestNode::start_with(fast("voucher")).await;
    let mut t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let t_id = t.id();
    t.stop().await;
    wait_online(&v, t_id, false).await;
    let id = v.n().client.vouch(e.id(), vec![t_id], false).await.unwrap();
    let id = vouchnet_protocol::SessionId::from_hex(&id.session_id).unwrap();
    assert_eq!(status_of(&session(&v, id).await, t_id).0, "queued");

    // The voucher goes down abruptly (nothing but what is on disk survives) and comes back
    // on the same address; then the target comes back and dials it.
    v.config.listen = vec![listen_addr(&v)];
    v.kill().await;
    v.restart().await;
    assert_eq!(status_of(&session(&v, id).await, t_id).0, "queued");
    t.restart().await;
    assert_eq!(final_status(&v, id, t_id).await.0, "accepted");
    wait_device(&t, e.id()).await;
    wait_device(&e, t_id).await;
    assert!(v.n().client.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_vouch_expires_after_seven_days_and_the_session_is_removed_an_hour_later() {
    let clock = Clock::system();
    let v = start_tuned(
        fast("voucher"),
        Tuning {
            clock: clock.clone(),
            ..Tuning::default()
        },
    )
    .await;
    let mut early = TestNode::start_with(fast("early")).await;
    let mut late = TestNode::start_with(fast("late")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &early).await;
    pair_online(&v, &late).await;
    pair_online(&e, &v).await;
    let (early_id, late_id) = (early.id(), late.id());
    early.stop().await;
    late.stop().await;
    wait_online(&v, early_id, false).await;
    wait_online(&v, late_id, false).await;

    // One vouch queued now, another a day later (on the voucher's clock).
    let first = v
        .n()
        .client
        .vouch(e.id(), vec![early_id], false)
        .await
        .unwrap();
    let first = vouchnet_protocol::SessionId::from_hex(&first.session_id).unwrap();
    clock.advance(Duration::from_secs(24 * 3600));
    let second = v
        .n()
        .client
        .vouch(e.id(), vec![late_id], false)
        .await
        .unwrap();
    let second = vouchnet_protocol::SessionId::from_hex(&second.session_id).unwrap();
    assert_ne!(first, second);

    // Seven days after the first was queued: it expires at the next poll, the second (six
    // days old) does not.
    let mut v_events = v.subscribe();
    clock.advance(WEEK - Duration::from_secs(24 * 3600));
    next_event(&mut v_events, session_state(first, "completed")).await;
    assert_eq!(
        status_of(&session(&v, first).await, early_id),
        ("expired".to_owned(), None)
    );
    assert_eq!(status_of(&session(&v, second).await, late_id).0, "queued");
    assert_eq!(audit_count(&v, "expired undelivered").await, 1);

    // A day later the second expires too, and the first, finished a day ago (retention is
    // an hour), is removed.
    clock.advance(Duration::from_secs(24 * 3600));
    let deleted = |id: vouchnet_protocol::SessionId| {
        let hex = id.to_hex();
        move |e: &NodeEvent| matches!(e, NodeEvent::ResourceDeleted { resource: ResourceKind::VouchingSession, id } if *id == hex)
    };
    next_event(&mut v_events, deleted(first)).await;
    next_event(&mut v_events, session_state(second, "completed")).await;
    assert_eq!(status_of(&session(&v, second).await, late_id).0, "expired");

    // An hour after its completion the second is removed too.
    clock.advance(Duration::from_secs(3600));
    next_event(&mut v_events, deleted(second)).await;
    let err = v.n().client.session(first).await.unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert!(v.n().client.audit_verify().await.unwrap().ok);
}

/// V (voucher), T (target) and E (newcomer): E paired with V and went offline, V vouched
/// for it to T, and T accepted. Returns them with E's id and the session id.
async fn accepted_while_the_vouchee_is_offline(
) -> (TestNode, TestNode, TestNode, DeviceId, SessionId) {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let mut e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let e_id = e.id();
    e.stop().await;
    wait_online(&v, e_id, false).await;
    let id = v.n().client.vouch(e_id, vec![t.id()], false).await.unwrap();
    let id = SessionId::from_hex(&id.session_id).unwrap();
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&t, e_id).await;
    (v, t, e, e_id, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_vouchee_hears_of_its_acceptances_when_it_comes_back() {
    let (v, t, mut e, _, _) = accepted_while_the_vouchee_is_offline().await;

    e.restart().await;
    let d = wait_device(&e, t.id()).await;
    assert_eq!(d.pairing_type, "proxied");
    assert_eq!(d.vouched_by, Some(v.id().to_string()));
}

/// A notification on its way to the vouchee lives only in memory until the vouchee
/// acknowledges it. If the voucher stops in between, the acceptances it carried are still
/// unacknowledged in the session, and the restarted voucher queues them for the vouchee.
/// The stop in mid-flight is staged by removing the vouchee's queue entry from the stopped
/// voucher's store, which leaves exactly what such a stop leaves: an accepted target the
/// vouchee was never told of, and nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptances_not_acknowledged_when_the_voucher_stopped_reach_the_vouchee_after_its_restart()
{
    let (mut v, t, mut e, e_id, id) = accepted_while_the_vouchee_is_offline().await;

    v.config.listen = vec![listen_addr(&v)];
    v.stop().await;
    {
        let store = vouchnet_storage::Store::open(v.dir.path()).unwrap();
        let notification = vouchnet_storage::QueueRef {
            session_id: id,
            recipient: e_id,
            kind: vouchnet_protocol::model::QueueKind::NotifyVouchee,
        };
        assert!(store.remove_queue_entry(notification).unwrap().is_some());
        let session = store.session(&id).unwrap().unwrap();
        assert_eq!(session.unnotified_acceptances(), 1);
        assert!(store.queue_entries().unwrap().is_empty());
    }

    v.restart().await;
    e.restart().await;
    let d = wait_device(&e, t.id()).await;
    assert_eq!(d.pairing_type, "proxied");
    assert_eq!(d.vouched_by, Some(v.id().to_string()));
    let told = eventually(|| async {
        let s = v.n().client.session(id).await.ok()?;
        (s.unnotified_acceptances() == 0).then_some(s.vouchee_notified)
    })
    .await;
    assert_eq!(told, vec![t.id()]);
}

/// The voucher stops while its vouch is in flight, after the target accepted and before
/// the answer arrived. After the restart the vouch is delivered again, and the target
/// answers with the acceptance it stored: the session ends Accepted, not Rejected(Timeout)
/// with the target trusting the vouchee. The stop is staged by putting the target back to
/// Waiting in the stopped voucher's store, with a deadline two seconds away (without the
/// re-queue at start, that deadline would record a timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vouch_in_flight_when_the_voucher_stopped_is_delivered_again_after_its_restart() {
    use vouchnet_protocol::model::{SessionState, VouchStatus};
    let mut v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&t, e.id()).await;

    v.config.listen = vec![listen_addr(&v)];
    v.stop().await;
    {
        let store = vouchnet_storage::Store::open(v.dir.path()).unwrap();
        let mut s = store.session(&id).unwrap().unwrap();
        s.state = SessionState::InProgress;
        s.finished_at = None;
        s.targets.insert(
            t.id(),
            VouchStatus::Waiting {
                nonce: vouchnet_protocol::VouchNonce([9; 16]),
                digest: [9; 32],
                deadline: vouchnet_node::clock::now().saturating_add(Duration::from_secs(2)),
                user_prompted: false,
            },
        );
        store.put_session(&s).unwrap();
    }

    v.restart().await;
    let done = wait_session(&v, id, |s| s.state == "completed").await;
    assert_eq!(status_of(&done, t.id()), ("accepted".to_owned(), None));
    assert!(v.n().client.audit_verify().await.unwrap().ok);
}

/// A target's user answers while the voucher is away, so the answer (a request of its own)
/// cannot be delivered. At the prompt's deadline the voucher does not record a timeout, which
/// would leave the target trusting the newcomer while the newcomer never hears of it: it
/// delivers the vouch again, and the target answers with the acceptance it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_while_the_voucher_was_away_is_given_again_on_redelivery() {
    let quick_prompts = |name: &str| NodeConfig {
        proxy_prompt_timeout: 2,
        clock_skew_allowance: 1,
        vouch_response_timeout: 1,
        ..fast(name)
    };
    let mut v = TestNode::start_with(quick_prompts("voucher")).await;
    let t = TestNode::start_with(NodeConfig {
        auto_accept_vouched: false,
        ..quick_prompts("target")
    })
    .await;
    let e = TestNode::start_with(quick_prompts("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    let id = vouch(&v, &e, &[&t]).await;
    let prompt =
        eventually(|| async { t.n().client.proxy_requests().await.ok()?.into_iter().next() }).await;

    v.config.listen = vec![listen_addr(&v)];
    v.stop().await;
    let answered = t.n().client.confirm_proxy(prompt.id, true).await.unwrap();
    assert_eq!(answered.decision, "accepted");
    wait_device(&t, e.id()).await;

    v.restart().await;
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&e, t.id()).await;
    assert!(v.n().client.audit_verify().await.unwrap().ok);
    assert!(t.n().client.audit_verify().await.unwrap().ok);
}
