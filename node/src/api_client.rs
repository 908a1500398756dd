//! The CLI's side of the control API: a minimal HTTP/1.1 client over loopback.
//!
//! It reads the address and token the running node wrote to its data directory, sends one
//! request per connection, and turns an API error body into an [`ApiCallError`] whose
//! message is what the user sees on stderr.

use crate::datadir::{DataDir, DataDirError};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiCallError {
    /// The node is not running, or its files are unreadable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The connection failed.
    #[error("cannot reach the node's control API at {addr}: {reason} (is `vouchnet run` still running?)")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error kind (docs/cli.md).
        kind: String,
        /// Human-readable message.
        message: String,
    },
    /// The answer was not what the API sends.
    #[error("unexpected answer from the control API: {0}")]
    Protocol(String),
}

impl ApiCallError {
    /// The stable kind of an API error, if this is one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ApiCallError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// A client of one node's control API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: String,
}

impl ApiClient {
    /// A client for the node running in `dir`.
    pub fn from_data_dir(dir: &DataDir) -> Result<Self, ApiCallError> {
        let addr = dir.read_api_addr()?;
        let token = dir.read_api_token()?;
        Ok(ApiClient { addr, token })
    }

    /// A client for `addr` with `token`.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        ApiClient {
            addr,
            token: token.into(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<Incoming>, ApiCallError> {
        let connect_err = |e: &dyn std::fmt::Display| ApiCallError::Connect {
            addr: self.addr,
            reason: e.to_string(),
        };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| connect_err(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| ApiCallError::Protocol(e.to_string()))?;
        sender.send_request(req).await.map_err(|e| connect_err(&e))
    }

    async fn json(resp: hyper::Response<Incoming>) -> Result<Value, ApiCallError> {
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiCallError::Protocol(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiCallError::Protocol(format!("{status}: {e}")))?;
        if status.is_success() {
            return Ok(value);
        }
        let kind = value["error"]["kind"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("error")
            .to_owned();
        Err(ApiCallError::Api {
            status: status.as_u16(),
            kind,
            message,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiCallError> {
        Self::json(self.send(Method::GET, path, None).await?).await
    }

    /// `POST /v1/actions/{name}` with `params`.
    pub async fn action(&self, name: &str, params: Value) -> Result<Value, ApiCallError> {
        Self::json(
            self.send(Method::POST, &format!("/v1/actions/{name}"), Some(&params))
                .await?,
        )
        .await
    }

    /// Opens the event stream (after `since`, or from now).
    pub async fn events(&self, since: Option<u64>) -> Result<EventStream, ApiCallError> {
        let path = match since {
            Some(s) => format!("/v1/events?since={s}"),
            None => "/v1/events".to_owned(),
        };
        let resp = self.send(Method::GET, &path, None).await?;
        if resp.status() != StatusCode::OK {
            return Err(Self::json(resp)
                .await
                .err()
                .unwrap_or(ApiCallError::Protocol("event stream refused".into())));
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// Server-Sent Events from `GET /v1/events`, one JSON event at a time.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    /// Bytes received and not yet parsed; kept as bytes so a UTF-8 sequence split across
    /// two chunks is decoded whole.
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the node closed the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ApiCallError>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&raw);
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(
                    serde_json::from_str(&data.join("\n"))
                        .map_err(|e| ApiCallError::Protocol(e.to_string())),
                );
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Some(Err(ApiCallError::Protocol(e.to_string()))),
                None => return None,
            }
        }
    }
}
