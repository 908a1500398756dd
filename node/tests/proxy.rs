//! Proxy pairing end to end between real nodes on loopback: the voucher (V) vouches for a
//! new device (E) it paired with directly to its other devices (targets T…), which accept
//! automatically, ask their user, refuse, or do not speak proxy pairing at all. Then E and
//! each accepting target connect, prove the proxied key, replace it by a rekey the voucher
//! cannot follow, and exchange sealed messages.

mod common;
mod proxy_support;

use common::*;
use proxy_support::*;
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::NodeConfig;
use vouchnet_protocol::keys::derive_proxied_key;
use vouchnet_storage::Store;

/// V paired with T first, then with E: a session for E is ready on V.
async fn three(t_config: NodeConfig) -> (TestNode, TestNode, TestNode) {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(t_config).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    pair_online(&e, &v).await;
    (v, t, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_flow_the_target_accepts_automatically_and_the_vouchee_learns_of_it() {
    let v = TestNode::start_with(fast("voucher")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t).await;
    let mut v_events = v.subscribe();
    pair_online(&e, &v).await;

    // The direct pairing made a session ready on the voucher.
    let ready = next_event(&mut v_events, |e| {
        matches!(e, NodeEvent::ProxyPairingVouchingReady { .. })
    })
    .await;
    let NodeEvent::ProxyPairingVouchingReady {
        session_id,
        vouchee,
        vouchee_name,
    } = &ready.event
    else {
        unreachable!()
    };
    assert_eq!(vouchee, &e.id().to_string());
    assert_eq!(vouchee_name, "newcomer");
    let ready_id = vouchnet_protocol::SessionId::from_hex(session_id).unwrap();
    assert_eq!(session(&v, ready_id).await.state, "pending");

    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(
        id, ready_id,
        "the vouch uses the session made ready at pairing"
    );
    // The session goes in_progress, then completed, in that order on the event stream.
    next_event(&mut v_events, session_state(id, "in_progress")).await;
    next_event(&mut v_events, session_state(id, "completed")).await;
    let s = session(&v, id).await;
    assert_eq!(status_of(&s, t.id()), ("accepted".to_owned(), None));

    // The target stores E as proxied, vouched for by V.
    let on_t = wait_device(&t, e.id()).await;
    assert_eq!(on_t.pairing_type, "proxied");
    assert_eq!(on_t.vouched_by, Some(v.id().to_string()));
    assert_eq!(on_t.trust_level, "trusted");
    // The vouchee stores T as proxied, vouched for by V.
    let on_e = wait_device(&e, t.id()).await;
    assert_eq!(on_e.pairing_type, "proxied");
    assert_eq!(on_e.vouched_by, Some(v.id().to_string()));

    // Every trail verifies and tells the story.
    for n in [&v, &t, &e] {
        assert!(n.n().client.audit_verify().await.unwrap().ok, "{}", n.name);
    }
    assert_eq!(audit_count(&v, "vouched for").await, 1);
    assert_eq!(
        audit_count(
            &v,
            &format!("{} accepted (automatically) the vouch", t.id())
        )
        .await,
        1
    );
    assert_eq!(
        audit_count(
            &t,
            &format!(
                "accepted {} on the vouch of {}, automatically",
                e.id(),
                v.id()
            )
        )
        .await,
        1
    );
    assert_eq!(
        audit_count(&e, "accepted this device on the vouch of").await,
        1
    );
    let chains = t.n().client.audit_chains().await.unwrap();
    let chain = chains
        .iter()
        .find(|c| c.device_id == e.id().to_string())
        .unwrap();
    assert_eq!(chain.pairing_type, "proxied");
    assert!(
        chain.steps[0].what.contains("accepted automatically"),
        "{chain:?}"
    );
    let kinds: Vec<&str> = chain.steps[0]
        .evidence
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["vouch_certificate", "vouch_response"]);
    assert_eq!(chain.steps[0].evidence[0].by, v.id().to_string());
    assert_eq!(chain.steps[0].evidence[0].value.len(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_devices_prove_the_key_rekey_so_the_voucher_is_locked_out_and_exchange_messages() {
    let (mut v, mut t, mut e) = three(fast("target")).await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&e, t.id()).await;

    // Off the LAN nothing tells E where T is: dial it, as `vouchnet dial` does.
    e.n().client.dial(t.addr()).await.unwrap();
    wait_online(&e, t.id(), true).await;
    wait_online(&t, e.id(), true).await;
    // The vouchee replaces the proxied key; both sides audit the rekey.
    wait_rekeyed(&[&e, &t]).await;

    // Sealed messages both ways over the new key.
    send_sealed(&e, &t, "hello from the newcomer").await;
    send_sealed(&t, &e, "welcome").await;

    // The key T and E share is the same on both, and is not the one the voucher derived.
    let (v_id, t_id, e_id) = (v.id(), t.id(), e.id());
    for n in [&mut v, &mut t, &mut e] {
        n.stop().await;
    }
    let key_of = |dir: &std::path::Path, of| {
        Store::open(dir)
            .unwrap()
            .device(&of)
            .unwrap()
            .unwrap()
            .session_key
    };
    let t_key = key_of(t.dir.path(), e_id);
    let e_key = key_of(e.dir.path(), t_id);
    assert_eq!(t_key, e_key);
    let v_e_key = key_of(v.dir.path(), e_id);
    assert_ne!(
        t_key,
        derive_proxied_key(&v_e_key, &id, &v_id, &t_id, &e_id)
    );

    // After a restart both still prove the new key and talk.
    t.restart().await;
    e.restart().await;
    e.n().client.dial(t.addr()).await.unwrap();
    wait_online(&e, t_id, true).await;
    e.n()
        .client
        .send_text(t_id, "still here".into())
        .await
        .unwrap();
    assert_eq!(
        t.n().client.inbox().await.unwrap().last().unwrap().text,
        "still here"
    );
}

/// Off the LAN (mDNS off here), nothing but the voucher knows where the target is: the
/// completion passes on the target's addresses, so the vouchee dials it by itself, both
/// prove the proxied key, and they replace it by a rekey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vouchee_reaches_a_target_it_never_met_through_the_addresses_its_voucher_knows() {
    let (v, t, e) = three(fast("target")).await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_online(&e, t.id(), true).await;
    wait_online(&t, e.id(), true).await;
    wait_rekeyed(&[&e]).await;
    let peers = e.n().client.peers().await.unwrap();
    let to_t = peers
        .iter()
        .find(|p| p.device_id == t.id().to_string())
        .expect("connected to the target");
    assert!(to_t.connected && to_t.paired && to_t.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_confirmation_flow_the_target_asks_its_user_who_accepts() {
    let (v, t, e) = three(NodeConfig {
        auto_accept_vouched: false,
        ..fast("target")
    })
    .await;
    let mut t_events = t.subscribe();
    let id = vouch(&v, &e, &[&t]).await;

    let prompt = next_event(&mut t_events, |e| {
        matches!(e, NodeEvent::ProxyPairingConfirmationRequired { .. })
    })
    .await;
    let NodeEvent::ProxyPairingConfirmationRequired {
        id: prompt_id,
        voucher,
        voucher_name,
        vouchee,
        vouchee_name,
        deadline,
    } = &prompt.event
    else {
        unreachable!()
    };
    assert_eq!(voucher, &v.id().to_string());
    assert_eq!(voucher_name, "voucher");
    assert_eq!(vouchee, &e.id().to_string());
    assert_eq!(vouchee_name, "newcomer");
    assert!(*deadline > vouchnet_node::clock::now().as_millis());
    let requests = t.n().client.proxy_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(&requests[0].id, prompt_id);
    // The voucher knows a person is being asked: still waiting, past the usual timeout.
    assert_eq!(status_of(&session(&v, id).await, t.id()).0, "waiting");
    assert!(
        !has_device(&t, e.id()).await,
        "nothing stored before the user answers"
    );

    let out = t
        .n()
        .client
        .confirm_proxy(prompt_id.clone(), true)
        .await
        .unwrap();
    assert_eq!(out.decision, "accepted");
    next_event(&mut t_events, |e| {
        matches!(e, NodeEvent::ResourceDeleted { resource: ResourceKind::ProxyRequest, id } if id == prompt_id)
    })
    .await;
    assert!(t.n().client.proxy_requests().await.unwrap().is_empty());
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&e, t.id()).await;
    let chains = t.n().client.audit_chains().await.unwrap();
    let chain = chains
        .iter()
        .find(|c| c.device_id == e.id().to_string())
        .unwrap();
    assert!(
        chain.steps[0].what.contains("accepted by the user"),
        "{chain:?}"
    );
    let accepted = format!(
        "accepted {} on the vouch of {}, confirmed by the user",
        e.id(),
        v.id()
    );
    assert_eq!(audit_count(&t, &accepted).await, 1);
    let answered = format!("{} accepted (confirmed by the user) the vouch", t.id());
    assert_eq!(audit_count(&v, &answered).await, 1);
}

/// A prompt is on disk before the voucher hears that a person is asked: the target
/// restarts, the prompt is still there with its id and deadline, and the user's answer
/// reaches the voucher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_survives_a_restart_of_the_target_and_is_answered_after_it() {
    let (v, mut t, e) = three(NodeConfig {
        auto_accept_vouched: false,
        ..fast("target")
    })
    .await;
    let mut t_events = t.subscribe();
    let id = vouch(&v, &e, &[&t]).await;
    next_event(&mut t_events, |e| {
        matches!(e, NodeEvent::ProxyPairingConfirmationRequired { .. })
    })
    .await;
    let before = t.n().client.proxy_requests().await.unwrap();
    assert_eq!(before.len(), 1);

    t.stop().await;
    t.restart().await;
    assert_eq!(t.n().client.proxy_requests().await.unwrap(), before);
    assert!(!has_device(&t, e.id()).await, "still nothing stored");

    let out = t
        .n()
        .client
        .confirm_proxy(before[0].id.clone(), true)
        .await
        .unwrap();
    assert_eq!(out.decision, "accepted");
    assert!(t.n().client.proxy_requests().await.unwrap().is_empty());
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&e, t.id()).await;

    // Answered, it is gone from the disk too.
    t.stop().await;
    t.restart().await;
    assert!(t.n().client.proxy_requests().await.unwrap().is_empty());
    assert!(has_device(&t, e.id()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_flow_the_targets_user_refuses_and_nothing_is_stored() {
    let (v, t, e) = three(NodeConfig {
        auto_accept_vouched: false,
        ..fast("target")
    })
    .await;
    let id = vouch(&v, &e, &[&t]).await;
    let requests = eventually(|| async {
        let r = t.n().client.proxy_requests().await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    let out = t
        .n()
        .client
        .confirm_proxy(requests[0].id.clone(), false)
        .await
        .unwrap();
    assert_eq!(out.decision, "rejected");
    assert_eq!(out.reason.as_deref(), Some("user_rejected"));
    assert_eq!(
        final_status(&v, id, t.id()).await,
        ("rejected".to_owned(), Some("user_rejected".to_owned()))
    );
    assert!(!has_device(&t, e.id()).await);
    assert!(!has_device(&e, t.id()).await);
    assert_eq!(audit_count(&t, "refused the vouch").await, 1);
    let answered = format!("{} rejected (user_rejected) the vouch", t.id());
    assert_eq!(audit_count(&v, &answered).await, 1);
    // Answering again finds nothing.
    let err = t
        .n()
        .client
        .confirm_proxy(requests[0].id.clone(), true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_prompt_expires_at_its_deadline() {
    let (v, t, e) = three(NodeConfig {
        auto_accept_vouched: false,
        proxy_prompt_timeout: 1,
        ..fast("target")
    })
    .await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(
        final_status(&v, id, t.id()).await,
        ("rejected".to_owned(), Some("prompt_expired".to_owned()))
    );
    assert!(t.n().client.proxy_requests().await.unwrap().is_empty());
    assert!(!has_device(&t, e.id()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backwards_compatibility_a_target_without_proxy_pairing_is_recorded_unsupported() {
    let (v, t, e) = three(NodeConfig {
        proxy_pairing: false,
        ..fast("old-target")
    })
    .await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(
        final_status(&v, id, t.id()).await,
        ("rejected".to_owned(), Some("unsupported".to_owned()))
    );
    assert!(!has_device(&t, e.id()).await);
    // The direct pairing is unaffected: both online, messages both ways.
    wait_online(&v, t.id(), true).await;
    wait_online(&t, v.id(), true).await;
    v.n()
        .client
        .send_text(t.id(), "still paired".into())
        .await
        .unwrap();
    t.n().client.send_text(v.id(), "yes".into()).await.unwrap();
    assert_eq!(
        t.n().client.inbox().await.unwrap().last().unwrap().text,
        "still paired"
    );
    // The old node refuses to vouch itself, clearly.
    let err = t.n().client.vouch(v.id(), vec![], true).await.unwrap_err();
    assert_eq!(err.kind(), "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vouchers_vouching_the_same_device_to_the_same_target_leave_one_record() {
    let v1 = TestNode::start_with(fast("voucher-1")).await;
    let v2 = TestNode::start_with(fast("voucher-2")).await;
    let t = TestNode::start_with(fast("target")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v1, &t).await;
    pair_online(&v2, &t).await;
    pair_online(&e, &v1).await;
    pair_online(&e, &v2).await;

    let (a, b) = tokio::join!(
        v1.n().client.vouch(e.id(), vec![t.id()], false),
        v2.n().client.vouch(e.id(), vec![t.id()], false)
    );
    let a = vouchnet_protocol::SessionId::from_hex(&a.unwrap().session_id).unwrap();
    let b = vouchnet_protocol::SessionId::from_hex(&b.unwrap().session_id).unwrap();
    let sa = final_status(&v1, a, t.id()).await;
    let sb = final_status(&v2, b, t.id()).await;
    let mut outcomes = [sa, sb];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("accepted".to_owned(), None),
            ("rejected".to_owned(), Some("already_paired".to_owned()))
        ]
    );
    let records: Vec<_> = t
        .devices()
        .await
        .into_iter()
        .filter(|d| d.device_id == e.id().to_string())
        .collect();
    assert_eq!(records.len(), 1, "exactly one device record");
    assert_eq!(audit_count(&t, "accepted").await, 1);
}

/// A vouch to more targets than one device's outbox holds (32 messages) tells the vouchee
/// of every acceptance over the connection, without spilling into the persistent queue:
/// a notification waits for the one in flight and goes out with everything that came
/// meanwhile, instead of one message per acceptance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vouch_to_forty_targets_tells_the_vouchee_everything_without_the_queue() {
    const TARGETS: usize = 40;
    // A queue poll far beyond the test's deadline: a notification that spilled into the
    // queue would arrive too late (the vouchee stays online, so nothing wakes the queue).
    let v = TestNode::start_with(NodeConfig {
        queue_poll_interval: 3600,
        ..fast("voucher")
    })
    .await;
    let e = TestNode::start_with(fast("newcomer")).await;
    let mut targets = Vec::new();
    for i in 0..TARGETS {
        let t = TestNode::start_with(fast(&format!("target-{i}"))).await;
        pair_online(&v, &t).await;
        targets.push(t);
    }
    pair_online(&e, &v).await;
    let refs: Vec<&TestNode> = targets.iter().collect();
    let id = vouch(&v, &e, &refs).await;
    let done = wait_session(&v, id, |s| s.state == "completed").await;
    assert_eq!(
        done.vouches
            .iter()
            .filter(|t| t.status == "accepted")
            .count(),
        TARGETS
    );
    // The voucher records every acceptance as told once the vouchee acknowledged it.
    let told = eventually(|| async {
        let s = v.n().client.session(id).await.unwrap();
        (s.unnotified_acceptances() == 0).then_some(s.vouchee_notified)
    })
    .await;
    assert_eq!(told.len(), TARGETS);
    let ids: std::collections::BTreeSet<_> = told.into_iter().collect();
    assert_eq!(ids.len(), TARGETS, "each acceptance told once");
    for t in &targets {
        assert!(ids.contains(&t.id()));
        let on_e = wait_device(&e, t.id()).await;
        assert_eq!(on_e.vouched_by, Some(v.id().to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_vouch_to_all_vouches_at_once_after_a_direct_pairing() {
    let v = TestNode::start_with(NodeConfig {
        auto_vouch_to_all: true,
        ..fast("voucher")
    })
    .await;
    let t1 = TestNode::start_with(fast("target-1")).await;
    let t2 = TestNode::start_with(fast("target-2")).await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &t1).await;
    pair_online(&v, &t2).await;
    // t2 paired after t1: its own session vouched it to t1 at once.
    wait_device(&t1, t2.id()).await;
    pair_online(&e, &v).await;
    for t in [&t1, &t2] {
        let d = wait_device(t, e.id()).await;
        assert_eq!(d.vouched_by, Some(v.id().to_string()));
    }
    wait_device(&e, t1.id()).await;
    wait_device(&e, t2.id()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_accept_off_and_on_side_by_side() {
    let v = TestNode::start_with(fast("voucher")).await;
    let auto = TestNode::start_with(fast("auto")).await;
    let asks = TestNode::start_with(NodeConfig {
        auto_accept_vouched: false,
        ..fast("asks")
    })
    .await;
    let e = TestNode::start_with(fast("newcomer")).await;
    pair_online(&v, &auto).await;
    pair_online(&v, &asks).await;
    pair_online(&e, &v).await;
    let id = vouch(&v, &e, &[&auto, &asks]).await;
    let s = wait_session(&v, id, |s| status_of(s, auto.id()).0 == "accepted").await;
    assert_eq!(status_of(&s, asks.id()).0, "waiting");
    assert_eq!(s.state, "in_progress");
    // The vouchee heard of the first acceptance before the session completed.
    wait_device(&e, auto.id()).await;
    assert!(!has_device(&e, asks.id()).await);
    let prompt =
        eventually(|| async { asks.n().client.proxy_requests().await.unwrap().pop() }).await;
    asks.n()
        .client
        .confirm_proxy(prompt.id, true)
        .await
        .unwrap();
    assert_eq!(final_status(&v, id, asks.id()).await.0, "accepted");
    wait_device(&e, asks.id()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_messages_reach_a_proxied_device_as_it_comes_online_and_after_the_rekey() {
    let (v, t, e) = three(fast("target")).await;
    let id = vouch(&v, &e, &[&t]).await;
    assert_eq!(final_status(&v, id, t.id()).await.0, "accepted");
    wait_device(&e, t.id()).await;
    let mut e_events = e.subscribe();
    e.n().client.dial(t.addr()).await.unwrap();
    // At once, while the rekey is starting: the proxied key, or the new one, works.
    next_event(&mut e_events, device_changed(t.id(), true)).await;
    e.n()
        .client
        .send_text(t.id(), "first contact".into())
        .await
        .unwrap();
    wait_online(&t, e.id(), true).await;
    t.n()
        .client
        .send_text(e.id(), "first reply".into())
        .await
        .unwrap();
    // After the rekey, on both sides.
    wait_rekeyed(&[&e, &t]).await;
    e.n()
        .client
        .send_text(t.id(), "after the rekey".into())
        .await
        .unwrap();
    t.n()
        .client
        .send_text(e.id(), "still reading you".into())
        .await
        .unwrap();
    let texts = |n: &TestNode| {
        let c = n.n().client.clone();
        async move {
            c.inbox()
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(texts(&t).await, ["first contact", "after the rekey"]);
    assert_eq!(texts(&e).await, ["first reply", "still reading you"]);
    // The voucher cannot read them: it holds no key for that pair at all.
    assert!(v.n().client.inbox().await.unwrap().is_empty());
}
