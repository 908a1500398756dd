//! The web UI the node serves on its control-API address, and what keeps it safe to serve.
//!
//! ```text
//! GET  /, /ui                    → 303 to /ui/
//! GET  /ui/, /ui/{file}          → the embedded page, stylesheet and JS modules
//! POST /v1/actions/ui.login      → {token, path, expires_in}   (API token only)
//! POST /ui/login {token}         → {session}                   (the one-time token, once)
//! ```
//!
//! **Login.** `vouchnet ui` holds the API token (it reads `api.token`), asks the node for a
//! one-time login token, and prints `http://ADDR/ui/#login=TOKEN`. The token sits in the
//! URL's fragment, which a browser never sends to a server nor puts in a `Referer`. The page
//! trades it at `/ui/login` for a session token and erases it from the address bar. A
//! login token works once and for [`LOGIN_TTL`]; a session token lives only in the page's
//! memory (no cookie, no `localStorage`), so nothing outlives the tab, and no request
//! another site makes the browser send can carry it: the API needs it in an `Authorization`
//! header, which only the page's own script sets. Sessions also die with the node.
//!
//! **Origin.** [`guard`] stands in front of every route, the API included. A request whose
//! `Origin` is not this server as the browser reached it by IP address or `localhost` is
//! refused with 403, and so is any cross-site request other than a plain navigation to the
//! page. Requiring the `Host` to be an address or `localhost` defeats DNS rebinding: a page
//! at `evil.example` re-pointed to 127.0.0.1 has origin `http://evil.example:PORT`.
//!
//! **Headers.** Every response carries a strict [`CONTENT_SECURITY_POLICY`] (scripts,
//! styles and connections from this origin only; no inline code, no frames),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options:
//! DENY`; nothing but the static assets may be cached.
//!
//! The assets are embedded with `include_bytes!`: no JavaScript build runs when the node is
//! built or started, and the page loads nothing from anywhere but the node.

use super::auth;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand_core::{CryptoRngCore, OsRng};
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The policy on every response: only this origin's scripts, styles, images and
/// connections; no inline code, no `<base>`, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How long a login token from `vouchnet ui` can be used: long enough to open the link,
/// short enough that one found later in a terminal's scrollback is worthless.
pub const LOGIN_TTL: Duration = Duration::from_secs(300);

/// A session unused for this long ends (a tab left open over a weekend).
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// Outstanding login tokens kept; issuing more drops the oldest.
pub const MAX_LOGINS: usize = 8;

/// Sessions kept; a new login beyond this ends the least recently used.
pub const MAX_SESSIONS: usize = 16;

/// The action that issues a login token (served here, not by the API's action table,
/// because only the API token may call it: a UI session must not mint more logins).
pub const LOGIN_ACTION: &str = "ui.login";

/// Bytes of randomness in login and session tokens (hex-encoded).
const TOKEN_BYTES: usize = 32;

/// Why a login token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginRefused {
    /// Never issued, or already used (the two are indistinguishable by design: a used token
    /// is forgotten).
    #[error("this login link is not valid or was already used; run `vouchnet ui` for a new one")]
    UnknownOrUsed,
    /// Issued, but more than [`LOGIN_TTL`] ago.
    #[error("this login link has expired; run `vouchnet ui` for a new one")]
    Expired,
}

/// Why [`guard`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginRefused {
    /// The `Origin` is another site, or another port, or `null`.
    #[error("requests from origin {origin:?} are not allowed")]
    Foreign {
        /// The origin presented.
        origin: String,
    },
    /// The browser reached the node by a host name other than `localhost` (DNS rebinding,
    /// or a name this check cannot vouch for): open the UI by address.
    #[error("the UI must be opened by IP address or localhost, not {host:?}")]
    HostNotLocal {
        /// The `Host` presented.
        host: String,
    },
    /// The browser says the request comes from another site (`Sec-Fetch-Site`).
    #[error("cross-site requests are not allowed")]
    CrossSite,
}

/// One token with its expiry. The secret is wiped from memory when dropped.
struct Grant {
    secret: Zeroizing<String>,
    expires: Instant,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("secret", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Grants {
    logins: Vec<Grant>,
    sessions: Vec<Grant>,
}

/// Position of `presented` in `list`, comparing every entry in constant time.
fn find(list: &[Grant], presented: &str) -> Option<usize> {
    let mut found = None;
    for (i, g) in list.iter().enumerate() {
        if auth::token_matches(presented, &g.secret) {
            found = Some(i);
        }
    }
    found
}

/// Drops the entry expiring first when `list` is at `max`.
fn make_room(list: &mut Vec<Grant>, max: usize) {
    while list.len() >= max {
        let oldest = list
            .iter()
            .enumerate()
            .min_by_key(|(_, g)| g.expires)
            .map(|(i, _)| i)
            .expect("a full list is not empty");
        list.swap_remove(oldest);
    }
}

fn new_secret(rng: &mut impl CryptoRngCore) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rng.fill_bytes(&mut bytes[..]);
    Zeroizing::new(hex::encode(&bytes[..]))
}

/// The UI's login tokens and sessions, in memory only. Cheap to clone.
///
/// Time is a parameter, so the expiry rules are tested at their boundaries.
#[derive(Debug, Clone, Default)]
pub struct UiAuth {
    grants: Arc<Mutex<Grants>>,
}

impl UiAuth {
    /// No logins, no sessions.
    pub fn new() -> Self {
        UiAuth::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().expect("ui auth lock")
    }

    /// Issues a one-time login token, valid for [`LOGIN_TTL`] from `now`.
    pub fn issue_login(&self, now: Instant, rng: &mut impl CryptoRngCore) -> String {
        let secret = new_secret(rng);
        let token = secret.to_string();
        let mut g = self.lock();
        g.logins.retain(|l| l.expires > now);
        make_room(&mut g.logins, MAX_LOGINS);
        g.logins.push(Grant {
            secret,
            expires: now + LOGIN_TTL,
        });
        token
    }

    /// Trades a login token for a new session token. The login token is gone afterwards,
    /// whether it was still valid or had expired.
    pub fn redeem(
        &self,
        presented: &str,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<String, LoginRefused> {
        let mut g = self.lock();
        let login = find(&g.logins, presented).map(|i| g.logins.swap_remove(i));
        g.logins.retain(|l| l.expires > now);
        match login {
            None => return Err(LoginRefused::UnknownOrUsed),
            Some(l) if l.expires <= now => return Err(LoginRefused::Expired),
            Some(_) => {}
        }
        let secret = new_secret(rng);
        let session = secret.to_string();
        g.sessions.retain(|s| s.expires > now);
        make_room(&mut g.sessions, MAX_SESSIONS);
        g.sessions.push(Grant {
            secret,
            expires: now + SESSION_IDLE,
        });
        Ok(session)
    }

    /// Whether `presented` is a live session; using it keeps it alive for another
    /// [`SESSION_IDLE`].
    pub fn session_valid(&self, presented: &str, now: Instant) -> bool {
        let mut g = self.lock();
        g.sessions.retain(|s| s.expires > now);
        match find(&g.sessions, presented) {
            Some(i) => {
                g.sessions[i].expires = now + SESSION_IDLE;
                true
            }
            None => false,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Assets

/// An embedded file of the UI.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../ui/index.html"),
};

const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/dom.js"),
    },
    Asset {
        name: "fingerprint.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/fingerprint.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../ui/icon.svg"),
    },
];

fn asset_response(a: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            // Revalidated each time, so a new node binary never serves an old page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response()
}

async fn index() -> Response {
    asset_response(&INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => asset_response(a),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

// ------------------------------------------------------------------------------------------
// Login

#[derive(Clone)]
struct UiState {
    auth: UiAuth,
    api_token: Arc<String>,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

/// `POST /v1/actions/ui.login`: a login token, for the API token's holder only.
async fn issue_login(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let ok =
        auth::presented_token(&headers, None).is_some_and(|t| auth::token_matches(t, &s.api_token));
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token (a UI session cannot issue login tokens)",
        );
    }
    let token = s.auth.issue_login(Instant::now(), &mut OsRng);
    Json(json!({
        "path": format!("/ui/#login={token}"),
        "token": token,
        "expires_in": LOGIN_TTL.as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    token: String,
}

/// `POST /ui/login`: the one-time token for a session token.
async fn login(State(s): State<UiState>, Json(p): Json<LoginParams>) -> Response {
    match s.auth.redeem(&p.token, Instant::now(), &mut OsRng) {
        Ok(session) => Json(json!({"session": session})).into_response(),
        Err(e) => error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string()),
    }
}

/// The UI's routes; they need no token (the page must load before it logs in), except
/// [`LOGIN_ACTION`], which checks the API token itself.
pub fn routes(auth: UiAuth, api_token: Arc<String>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
        .route("/ui/login", post(login))
        .route(&format!("/v1/actions/{LOGIN_ACTION}"), post(issue_login))
        .with_state(UiState { auth, api_token })
}

/// Where a browser on this device reaches an API bound at `bound`: a wildcard address is
/// not something to browse to, so it becomes loopback.
pub fn browser_addr(bound: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

// ------------------------------------------------------------------------------------------
// The guard in front of everything

/// Whether `host` (a `Host` header: name or address, optional port) names this machine
/// in a way DNS cannot re-point: an IP address, or `localhost`.
fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a request with these headers may reach the node. Requests without `Origin`
/// or `Sec-Fetch-Site` (the CLI, scripts, a same-origin `GET`) pass: they still need a
/// token. A navigation to the page from another site is let through — it carries no
/// credential and shows only the login page.
pub fn check_origin(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), OriginRefused> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        let host = header_str(headers, &header::HOST).unwrap_or("");
        if origin != format!("http://{host}") {
            return Err(OriginRefused::Foreign {
                origin: origin.to_owned(),
            });
        }
        if !host_is_local(host) {
            return Err(OriginRefused::HostNotLocal {
                host: host.to_owned(),
            });
        }
    }
    let site = header_str(headers, &HeaderName::from_static("sec-fetch-site"));
    if matches!(site, Some("cross-site" | "same-site")) {
        let mode = header_str(headers, &HeaderName::from_static("sec-fetch-mode"));
        let page = path == "/" || path == "/ui" || path == "/ui/";
        if !(method == Method::GET && mode == Some("navigate") && page) {
            return Err(OriginRefused::CrossSite);
        }
    }
    Ok(())
}

/// Middleware for the whole server: refuses foreign origins (403) and sets the security
/// headers on every response.
pub async fn guard(req: Request, next: Next) -> Response {
    let mut resp = match check_origin(req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => error(StatusCode::FORBIDDEN, "forbidden_origin", &e.to_string()),
    };
    let h = resp.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in set {
        h.insert(name, value);
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn a_login_token_works_once() {
        let (auth, mut rng, t0) = (UiAuth::new(), rng(), Instant::now());
        let login = auth.issue_login(t0, &mut rng);
        assert_eq!(login.len(), 2 * TOKEN_BYTES);
        let session = auth.redeem(&login, t0, &mut rng).unwrap();
        assert_ne!(session, login);
        assert!(auth.session_valid(&session, t0));
        assert_eq!(
            auth.redeem(&login, t0, &mut rng),
            Err(LoginRefused::UnknownOrUsed)
        );
    }

    #[test]
    fn a_login_token_expires_at_its_ttl() {
        let (auth, mut rng, t0) = (UiAuth::new(), rng(), Instant::now());
        let a = auth.issue_login(t0, &mut rng);
        let b = auth.issue_login(t0, &mut rng);
        let just_before = t0 + LOGIN_TTL - Duration::from_millis(1);
        assert!(auth.redeem(&a, just_before, &mut rng).is_ok());
        assert_eq!(
            auth.redeem(&b, t0 + LOGIN_TTL, &mut rng),
            Err(LoginRefused::Expired)
        );
        // An expired token is forgotten too.
        assert_eq!(
            auth.redeem(&b, t0, &mut rng),
            Err(LoginRefused::UnknownOrUsed)
        );
    }

    #[test]
    fn wrong_tokens_are_refused_and_are_not_sessions() {
        let (auth, mut rng, t0) = (UiAuth::new(), rng(), Instant::now());
        let login = auth.issue_login(t0, &mut rng);
        let mut wrong = login.clone();
        wrong.replace_range(0..1, if login.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            auth.redeem(&wrong, t0, &mut rng),
            Err(LoginRefused::UnknownOrUsed)
        );
        assert_eq!(
            auth.redeem("", t0, &mut rng),
            Err(LoginRefused::UnknownOrUsed)
        );
        // A login token is not a session, and the refusals did not consume it.
        assert!(!auth.session_valid(&login, t0));
        assert!(auth.redeem(&login, t0, &mut rng).is_ok());
    }

    #[test]
    fn a_session_ends_after_being_idle_and_use_keeps_it_alive() {
        let (auth, mut rng, t0) = (UiAuth::new(), rng(), Instant::now());
        let login = auth.issue_login(t0, &mut rng);
        let s = auth.redeem(&login, t0, &mut rng).unwrap();
        let t1 = t0 + SESSION_IDLE - Duration::from_millis(1);
        assert!(auth.session_valid(&s, t1));
        assert!(auth.session_valid(&s, t1 + SESSION_IDLE - Duration::from_millis(1)));
        assert!(!auth.session_valid(&s, t1 + 2 * SESSION_IDLE));
    }

    #[test]
    fn logins_and_sessions_are_bounded_oldest_first() {
        let (auth, mut rng, t0) = (UiAuth::new(), rng(), Instant::now());
        let logins: Vec<String> = (0..=MAX_LOGINS)
            .map(|i| auth.issue_login(t0 + Duration::from_millis(i as u64), &mut rng))
            .collect();
        assert_eq!(
            auth.redeem(&logins[0], t0, &mut rng),
            Err(LoginRefused::UnknownOrUsed)
        );
        let sessions: Vec<String> = (0..=MAX_SESSIONS)
            .map(|i| {
                let at = t0 + Duration::from_millis(i as u64);
                let l = auth.issue_login(at, &mut rng);
                auth.redeem(&l, at, &mut rng).unwrap()
            })
            .collect();
        assert!(!auth.session_valid(&sessions[0], t0));
        assert!(auth.session_valid(&sessions[MAX_SESSIONS], t0));
        assert_eq!(auth.lock().sessions.len(), MAX_SESSIONS);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_this_servers_own_origin_by_address_or_localhost_passes() {
        let get = Method::GET;
        let ok =
            |h: &[(&'static str, &'static str)]| check_origin(&get, "/v1/devices", &headers(h));
        assert_eq!(ok(&[("host", "127.0.0.1:5000")]), Ok(()));
        assert_eq!(
            ok(&[
                ("host", "127.0.0.1:5000"),
                ("origin", "http://127.0.0.1:5000")
            ]),
            Ok(())
        );
        assert_eq!(
            ok(&[
                ("host", "localhost:5000"),
                ("origin", "http://localhost:5000")
            ]),
            Ok(())
        );
        assert_eq!(
            ok(&[("host", "[::1]:5000"), ("origin", "http://[::1]:5000")]),
            Ok(())
        );
        assert_eq!(
            ok(&[
                ("host", "127.0.0.1:5000"),
                ("origin", "http://evil.example")
            ]),
            Err(OriginRefused::Foreign {
                origin: "http://evil.example".into()
            })
        );
        assert_eq!(
            ok(&[
                ("host", "127.0.0.1:5000"),
                ("origin", "http://127.0.0.1:5001")
            ]),
            Err(OriginRefused::Foreign {
                origin: "http://127.0.0.1:5001".into()
            })
        );
        assert_eq!(
            ok(&[("host", "127.0.0.1:5000"), ("origin", "null")]),
            Err(OriginRefused::Foreign {
                origin: "null".into()
            })
        );
        // DNS rebinding: the origin matches the host, but the host is a name.
        assert_eq!(
            ok(&[
                ("host", "evil.example:5000"),
                ("origin", "http://evil.example:5000")
            ]),
            Err(OriginRefused::HostNotLocal {
                host: "evil.example:5000".into()
            })
        );
    }

    #[test]
    fn cross_site_requests_are_refused_except_a_navigation_to_the_page() {
        let cross = [
            ("host", "127.0.0.1:5000"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ];
        assert_eq!(check_origin(&Method::GET, "/ui/", &headers(&cross)), Ok(()));
        assert_eq!(
            check_origin(&Method::GET, "/v1/devices", &headers(&cross)),
            Err(OriginRefused::CrossSite)
        );
        assert_eq!(
            check_origin(&Method::POST, "/ui/login", &headers(&cross)),
            Err(OriginRefused::CrossSite)
        );
        let no_cors = [
            ("host", "127.0.0.1:5000"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "no-cors"),
        ];
        assert_eq!(
            check_origin(&Method::GET, "/ui/", &headers(&no_cors)),
            Err(OriginRefused::CrossSite)
        );
        let same = [
            ("host", "127.0.0.1:5000"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(
            check_origin(&Method::POST, "/ui/login", &headers(&same)),
            Ok(())
        );
    }

    #[test]
    fn hosts_are_local_only_as_addresses_or_localhost() {
        for h in [
            "127.0.0.1:1",
            "127.0.0.1",
            "localhost:9",
            "LOCALHOST",
            "[::1]:3",
            "10.0.0.2:80",
        ] {
            assert!(host_is_local(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:80",
            "localhost.evil.example:1",
            "[nope]:1",
            "",
            "[::1",
        ] {
            assert!(!host_is_local(h), "{h}");
        }
    }

    #[test]
    fn a_wildcard_bind_address_is_browsed_as_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(browser_addr(addr("0.0.0.0:80")), addr("127.0.0.1:80"));
        assert_eq!(browser_addr(addr("[::]:80")), addr("[::1]:80"));
        assert_eq!(browser_addr(addr("127.0.0.1:5")), addr("127.0.0.1:5"));
        assert_eq!(browser_addr(addr("10.1.2.3:5")), addr("10.1.2.3:5"));
    }

    #[test]
    fn every_asset_has_a_type_and_the_page_loads_only_embedded_modules() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(page.contains(r#"<script type="module" src="/ui/app.js">"#));
        // No inline script or style, and nothing from elsewhere.
        assert!(!page.contains("<style"));
        assert!(!page.contains("style="));
        assert!(!page.contains("http://") && !page.contains("https://"));
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).unwrap();
            assert!(!js.contains("innerHTML"), "{} sets innerHTML", a.name);
            for storage in [
                "localStorage.",
                "sessionStorage.",
                "indexedDB.",
                "document.cookie",
            ] {
                assert!(!js.contains(storage), "{} uses {storage}", a.name);
            }
            assert!(!js.contains("https://"), "{} loads from elsewhere", a.name);
        }
    }
}
