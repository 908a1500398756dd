//! The control API over real HTTP: authentication, actions, errors, and the event stream.

mod common;

use common::*;
use serde_json::{json, Value};
use vouchnet_node::api;
use vouchnet_node::api_client::{ApiCallError, ApiClient};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn serve(node: &TestNode) -> api::ApiServer {
    api::serve(
        node.n().client.clone(),
        TOKEN.to_owned(),
        "127.0.0.1:0".parse().unwrap(),
        false,
    )
    .await
    .unwrap()
}

/// Sends a raw HTTP/1.1 request and returns the status code and body.
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_the_token_or_with_a_wrong_one_is_refused() {
    let node = TestNode::start("laptop").await;
    let server = serve(&node).await;
    let get = |auth: &str| {
        format!("GET /v1/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n")
    };
    let (status, body) = raw_http(server.addr, &get("")).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["kind"],
        "unauthorized"
    );
    let (status, _) = raw_http(server.addr, &get("Authorization: Bearer wrong\r\n")).await;
    assert_eq!(status, 401);
    let (status, _) = raw_http(
        server.addr,
        &get(&format!("Authorization: Bearer {}x\r\n", TOKEN)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = raw_http(
        server.addr,
        &get(&format!("Authorization: Bearer {TOKEN}\r\n")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, "[]");
    // Actions are refused too, and change nothing.
    let post = "POST /v1/actions/network.pair.request HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(raw_http(server.addr, post).await.0, 401);
    // The query-string token is accepted by the event stream only.
    let q =
        format!("GET /v1/devices?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_http(server.addr, &q).await.0, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_takes_the_token_from_the_query_for_browsers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start("laptop").await;
    let server = serve(&node).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(format!("GET /v1/events?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let (status, _) = raw_http(
        server.addr,
        "GET /v1/events?token=nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_a_non_loopback_address_is_refused_unless_enabled() {
    let node = TestNode::start("laptop").await;
    let err = api::serve(
        node.n().client.clone(),
        TOKEN.into(),
        "0.0.0.0:0".parse().unwrap(),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, api::ApiError::NotLoopback(_)), "{err}");
    let server = api::serve(
        node.n().client.clone(),
        TOKEN.into(),
        "0.0.0.0:0".parse().unwrap(),
        true,
    )
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_a_stable_kind() {
    let node = TestNode::start("laptop").await;
    let server = serve(&node).await;
    let c = ApiClient::new(server.addr, TOKEN);
    let kind = |r: Result<Value, ApiCallError>| r.unwrap_err().kind().unwrap().to_owned();
    assert_eq!(
        kind(c.action("network.nonsense", json!({})).await),
        "unknown_action"
    );
    assert_eq!(
        kind(
            c.action("network.pair.request", json!({"device_id": "nope"}))
                .await
        ),
        "invalid_argument"
    );
    assert_eq!(
        kind(
            c.action("network.pair.request", json!({"device": "x"}))
                .await
        ),
        "invalid_argument"
    );
    let stranger = TestNode::start("stranger").await;
    let id = stranger.id().to_string();
    assert_eq!(
        kind(
            c.action("network.pair.accept", json!({"device_id": id}))
                .await
        ),
        "pairing_refused"
    );
    assert_eq!(
        kind(
            c.action("network.device.unpair", json!({"device_id": id}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        kind(
            c.action("network.pair.vouch", json!({"vouchee": id, "all": true}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        kind(c.action("network.pair.vouch", json!({"vouchee": id})).await),
        "invalid_argument"
    );
    assert_eq!(
        kind(
            c.action(
                "network.pair.confirmProxy",
                json!({"id": "x", "accept": true})
            )
            .await
        ),
        "not_found"
    );
    assert_eq!(
        kind(
            c.action(
                "network.device.review",
                json!({"device_id": id, "keep": true})
            )
            .await
        ),
        "not_found"
    );
    assert_eq!(
        kind(
            c.action("network.device.ping", json!({"device_id": id}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        kind(
            c.action("network.message.clearInbox", json!({"all": true}))
                .await
        ),
        "invalid_argument"
    );
    assert_eq!(
        c.action("network.message.clearInbox", json!({}))
            .await
            .unwrap(),
        json!({"cleared": 0})
    );
    assert_eq!(c.get("/v1/proxy/requests").await.unwrap(), json!([]));
    assert_eq!(c.get("/v1/review").await.unwrap(), json!([]));
    assert_eq!(kind(c.get("/v1/sessions/zz").await), "invalid_argument");
    assert_eq!(
        kind(c.get(&format!("/v1/sessions/{}", "00".repeat(16))).await),
        "not_found"
    );
    assert_eq!(c.get("/v1/sessions").await.unwrap(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_resource_changes_of_a_pairing_in_order() {
    let a = TestNode::start("laptop").await;
    let b = TestNode::start("phone").await;
    let server = serve(&a).await;
    let c = ApiClient::new(server.addr, TOKEN);
    let mut stream = c.events(None).await.unwrap();

    let b_id = b.id().to_string();
    let out = c
        .action(
            "network.pair.request",
            json!({"device_id": b_id, "addr": b.addr().to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(out["pairing"]["direction"], "outbound");
    let code_b = b.code_for(a.id()).await;
    let code_a = a.code_for(b.id()).await;
    let accepted = c
        .action(
            "network.pair.accept",
            json!({"device_id": b_id, "code": code_b}),
        )
        .await
        .unwrap();
    assert_eq!(accepted["state"], "waiting");
    b.n()
        .client
        .pair_accept(a.id(), Some(code_a))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut last_seq = 0;
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        let seq = ev["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "sequence numbers increase");
        last_seq = seq;
        let label = match (ev["type"].as_str().unwrap(), ev["resource"].as_str()) {
            ("ResourceChanged", Some("pairing_session")) => {
                ev["data"]["stage"].as_str().unwrap().to_owned()
            }
            ("ResourceDeleted", Some("pairing_session")) => "deleted".into(),
            ("PairingConfirmationRequired", _) => {
                format!("prompt {}", ev["code"].as_str().unwrap().len())
            }
            ("ResourceChanged", Some("device")) => {
                assert_eq!(ev["data"]["pairing_type"], "direct");
                "device".into()
            }
            other => panic!("unexpected event {other:?}: {ev}"),
        };
        seen.push(label);
        if seen.last().map(String::as_str) == Some("device") {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "awaiting_peer_key",
            "prompt 6",
            "awaiting_user",
            "awaiting_peer_confirmation",
            "deleted",
            "device"
        ]
    );
    // A late subscriber replays the same events with `since`.
    let mut replay = c.events(Some(0)).await.unwrap();
    let first = replay.next().await.unwrap().unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["data"]["stage"], "awaiting_peer_key");
}
