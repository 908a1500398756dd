//! The control API: local HTTP, token-authenticated, named after the design's UI model.
//!
//! ```text
//! POST /v1/actions/{name}     JSON params        → JSON result     (actions, below)
//! GET  /v1/node                                   → NodeInfo
//! GET  /v1/peers                                  → [PeerView]
//! GET  /v1/devices                                → [DeviceView]
//! GET  /v1/blocked                                → [BlockView]
//! GET  /v1/pairings                               → [PairingRequestView]
//! GET  /v1/sessions, /v1/sessions/{id}            → vouching sessions
//! GET  /v1/proxy/requests                         → [ProxyRequestView]
//! GET  /v1/review                                 → [ReviewView]
//! GET  /v1/audit[?verify=true]                    → [AuditEntryView] | AuditVerifyView
//! GET  /v1/audit/chains                           → [TrustChainView]
//! GET  /v1/inbox                                  → [InboxMessage]
//! GET  /v1/events[?since=N][&token=T]             → Server-Sent Events
//! ```
//!
//! Actions: `network.pair.request {device_id, addr?}`, `network.pair.accept {device_id,
//! code?}`, `network.pair.reject {device_id}`, `network.pair.vouch {vouchee, to?, all?}`,
//! `network.pair.confirmProxy {id, accept}`, `network.device.setTrust {device_id,
//! trust_level}`, `network.device.block {device_id}`, `network.device.unblock {device_id}`,
//! `network.device.unpair {device_id}`, `network.device.review {device_id,
//! keep}`, `network.device.ping {device_id}`, `network.message.send {device_id, text}`,
//! `network.message.clearInbox {}`, `network.dial {addr}`.
//!
//! Errors are `{"error": {"kind": "...", "message": "..."}}` with the status of
//! [`NodeError::status`]; a request without the right token gets 401 and nothing else.
//! The server binds to loopback only unless remote access was explicitly allowed.

pub mod auth;
pub mod events;
pub mod ui;

use crate::client::Client;
use crate::error::NodeError;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vouchnet_protocol::{DeviceId, SessionId};

/// Why the API server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The address is not loopback and remote access was not allowed.
    #[error("refusing to serve the control API on non-loopback address {0}; pass --api-allow-remote (or set api_allow_remote = true) to allow it")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot bind the control API to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct ApiState {
    client: Client,
    token: Arc<String>,
    /// Sessions of the web UI, accepted like the token (see [`ui`]).
    ui: ui::UiAuth,
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    /// The address it is bound to.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How long [`ApiServer::shutdown`] lets open connections finish. An event stream (an open
/// web UI tab, `vouchnet events`) never finishes by itself: without a bound, one open tab
/// would keep `vouchnet run` from stopping.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl ApiServer {
    /// Stops the server: no new connections, and those still open after
    /// a grace of 2 s (`SHUTDOWN_GRACE`) are left to end with the process.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Serves the API for `client` on `addr`, requiring `token`.
pub async fn serve(
    client: Client,
    token: String,
    addr: SocketAddr,
    allow_remote: bool,
) -> Result<ApiServer, ApiError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(ApiError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let router = router(client, token);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::error!("control API stopped: {e}");
        }
    });
    tracing::info!("control API on http://{bound}");
    Ok(ApiServer {
        addr: bound,
        stop,
        task,
    })
}

/// The API's routes, with authentication in front of every one.
pub fn router(client: Client, token: String) -> Router {
    let state = ApiState {
        client,
        token: Arc::new(token),
        ui: ui::UiAuth::new(),
    };
    Router::new()
        .route("/v1/node", get(node_info))
        .route("/v1/peers", get(peers))
        .route("/v1/devices", get(devices))
        .route("/v1/blocked", get(blocked))
        .route("/v1/pairings", get(pairings))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/{id}", get(session))
        .route("/v1/proxy/requests", get(proxy_requests))
        .route("/v1/review", get(review))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/chains", get(audit_chains))
        .route("/v1/inbox", get(inbox))
        .route("/v1/events", get(events_stream))
        .route("/v1/actions/{name}", post(action))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        // The web UI: its page and login need no token; the guard covers every route.
        .merge(ui::routes(state.ui.clone(), state.token.clone()))
        .layer(middleware::from_fn(ui::guard))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // Only the event stream takes the token from the query string (EventSource).
    let query_token = if req.uri().path() == "/v1/events" {
        Query::<TokenQuery>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.token)
    } else {
        None
    };
    let ok = auth::presented_token(req.headers(), query_token.as_deref()).is_some_and(|t| {
        auth::token_matches(t, &state.token) || state.ui.session_valid(t, std::time::Instant::now())
    });
    if !ok {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token",
        );
    }
    next.run(req).await
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_response(status, self.kind(), &self.to_string())
    }
}

type ApiResult = Result<Json<Value>, NodeError>;

fn to_json<T: serde::Serialize>(v: T) -> ApiResult {
    Ok(Json(serde_json::to_value(v).expect("views serialize")))
}

async fn node_info(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.info().await?)
}

async fn peers(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.peers().await?)
}

async fn devices(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.devices().await?)
}

async fn blocked(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.blocked().await?)
}

async fn pairings(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.pair_requests().await?)
}

async fn sessions(State(s): State<ApiState>) -> ApiResult {
    let list = s.client.sessions().await?;
    to_json(list.iter().map(crate::sessions::view).collect::<Vec<_>>())
}

async fn session(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = SessionId::from_hex(&id).ok_or_else(|| {
        NodeError::InvalidArgument(format!("{id:?} is not a session id (32 hex digits)"))
    })?;
    to_json(crate::sessions::view(&s.client.session(id).await?))
}

async fn proxy_requests(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.proxy_requests().await?)
}

async fn review(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.review().await?)
}

async fn audit_chains(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.audit_chains().await?)
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    verify: bool,
}

async fn audit(State(s): State<ApiState>, Query(q): Query<AuditQuery>) -> ApiResult {
    if q.verify {
        to_json(s.client.audit_verify().await?)
    } else {
        to_json(s.client.audit().await?)
    }
}

async fn inbox(State(s): State<ApiState>) -> ApiResult {
    to_json(s.client.inbox().await?)
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
}

async fn events_stream(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> impl IntoResponse {
    events::stream(s.client.events(), q.since)
}

// --------------------------------------------------------------------------------------
// Actions

fn params<T: DeserializeOwned>(body: Value) -> Result<T, NodeError> {
    serde_json::from_value(body)
        .map_err(|e| NodeError::InvalidArgument(format!("invalid parameters: {e}")))
}

fn device_id(s: &str) -> Result<DeviceId, NodeError> {
    s.parse()
        .map_err(|e| NodeError::InvalidArgument(format!("{s:?} is not a device id: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairRequestParams {
    device_id: String,
    addr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairAcceptParams {
    device_id: String,
    code: Option<String>,
}

/// An action without parameters: `{}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    device_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustParams {
    device_id: String,
    trust_level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    device_id: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DialParams {
    addr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VouchParams {
    vouchee: String,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmProxyParams {
    id: String,
    accept: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewParams {
    device_id: String,
    keep: bool,
}

fn multiaddr(s: &str) -> Result<libp2p::Multiaddr, NodeError> {
    s.parse()
        .map_err(|e| NodeError::InvalidArgument(format!("{s:?} is not a multiaddress: {e}")))
}

async fn action(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body
        .map(|Json(v)| v)
        .unwrap_or(Value::Object(Default::default()));
    match run_action(&s.client, &name, body).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            "unknown_action",
            &format!("no action named {name:?}"),
        ),
        Err(e) => e.into_response(),
    }
}

/// Runs action `name`; `Ok(None)` if there is no such action.
async fn run_action(client: &Client, name: &str, body: Value) -> Result<Option<Value>, NodeError> {
    let ok = json!({"ok": true});
    let value = match name {
        "network.pair.request" => {
            let p: PairRequestParams = params(body)?;
            let addr = p.addr.as_deref().map(multiaddr).transpose()?;
            serde_json::to_value(client.pair_request(device_id(&p.device_id)?, addr).await?)
        }
        "network.pair.accept" => {
            let p: PairAcceptParams = params(body)?;
            serde_json::to_value(client.pair_accept(device_id(&p.device_id)?, p.code).await?)
        }
        "network.pair.reject" => {
            let p: DeviceParams = params(body)?;
            client.pair_reject(device_id(&p.device_id)?).await?;
            Ok(ok)
        }
        "network.pair.vouch" => {
            let p: VouchParams = params(body)?;
            if p.all && !p.to.is_empty() {
                return Err(NodeError::InvalidArgument(
                    "give either `to` or `all`, not both".into(),
                ));
            }
            if !p.all && p.to.is_empty() {
                return Err(NodeError::InvalidArgument(
                    "give the targets (`to`) or `all`".into(),
                ));
            }
            let to =
                p.to.iter()
                    .map(|t| device_id(t))
                    .collect::<Result<Vec<_>, _>>()?;
            serde_json::to_value(client.vouch(device_id(&p.vouchee)?, to, p.all).await?)
        }
        "network.pair.confirmProxy" => {
            let p: ConfirmProxyParams = params(body)?;
            serde_json::to_value(client.confirm_proxy(p.id, p.accept).await?)
        }
        "network.device.review" => {
            let p: ReviewParams = params(body)?;
            serde_json::to_value(
                client
                    .review_decide(device_id(&p.device_id)?, p.keep)
                    .await?,
            )
        }
        "network.device.setTrust" => {
            let p: TrustParams = params(body)?;
            let level = crate::views::parse_trust_level(&p.trust_level).ok_or_else(|| {
                NodeError::InvalidArgument(format!(
                    "{:?} is not a trust level (trusted, unreliable, blocked)",
                    p.trust_level
                ))
            })?;
            serde_json::to_value(client.set_trust(device_id(&p.device_id)?, level).await?)
        }
        "network.device.block" => {
            let p: DeviceParams = params(body)?;
            serde_json::to_value(client.block(device_id(&p.device_id)?).await?)
        }
        "network.device.unblock" => {
            let p: DeviceParams = params(body)?;
            serde_json::to_value(client.unblock(device_id(&p.device_id)?).await?)
        }
        "network.device.unpair" => {
            let p: DeviceParams = params(body)?;
            client.unpair(device_id(&p.device_id)?).await?;
            Ok(ok)
        }
        "network.device.ping" => {
            let p: DeviceParams = params(body)?;
            let rtt = client.ping(device_id(&p.device_id)?).await?;
            serde_json::to_value(crate::views::PingView {
                device_id: p.device_id,
                rtt_ms: rtt.as_secs_f64() * 1000.0,
            })
        }
        "network.message.send" => {
            let p: SendParams = params(body)?;
            client.send_text(device_id(&p.device_id)?, p.text).await?;
            Ok(ok)
        }
        "network.message.clearInbox" => {
            let _: EmptyParams = params(body)?;
            Ok(serde_json::json!({ "cleared": client.clear_inbox().await? }))
        }
        "network.dial" => {
            let p: DialParams = params(body)?;
            client.dial(multiaddr(&p.addr)?).await?;
            Ok(ok)
        }
        _ => return Ok(None),
    };
    Ok(Some(value.expect("views serialize")))
}
