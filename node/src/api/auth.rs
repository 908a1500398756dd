//! Bearer-token authentication of the control API.
//!
//! The token is 32 random bytes from the OS CSPRNG, hex-encoded, written with mode 0600 in
//! the data directory at every start; whoever can read it is the device's user. Every
//! request must carry it as `Authorization: Bearer <token>`; the event stream also accepts
//! `?token=` because a browser's `EventSource` cannot set headers. Tokens are compared in
//! constant time.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// Whether `presented` is the expected token (constant time in the token's content).
pub fn token_matches(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// The token a request presents: the bearer header, else (if allowed) the query parameter.
pub fn presented_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    from_header.or(query_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches("abcd", "abcd"));
        assert!(!token_matches("abce", "abcd"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("", "abcd"));
        assert!(!token_matches("abcde", "abcd"));
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h, Some("q")), Some("q"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hdr"),
        );
        assert_eq!(presented_token(&h, Some("q")), Some("hdr"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic hdr"));
        assert_eq!(presented_token(&h, None), None);
    }
}
