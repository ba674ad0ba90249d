//! Who may use the server: loopback clients by default; with an access token, whoever opened
//! `/login?token=…` once (the token becomes an `HttpOnly; SameSite=Strict` cookie).
//!
//! Without a token, only requests whose `Host` is a loopback name are answered, so a web page
//! elsewhere cannot reach the server through DNS rebinding.

use std::net::SocketAddr;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;

/// The cookie holding the token.
pub const COOKIE: &str = "nina_token";
/// Shortest token accepted.
pub const MIN_TOKEN: usize = 16;

/// Why a listen address or token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to listen on {0} without an access token: listen on 127.0.0.1, or set a token"
    )]
    NeedsToken(SocketAddr),
    /// Too short, or with characters a cookie cannot hold.
    #[error("the access token must be {MIN_TOKEN}-256 characters of A-Z a-z 0-9 _ - . ~")]
    BadToken,
}

/// Checks the listen address against the token.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), AuthError> {
    if let Some(t) = token {
        let ok = (MIN_TOKEN..=256).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'));
        if !ok {
            return Err(AuthError::BadToken);
        }
        return Ok(());
    }
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(AuthError::NeedsToken(addr))
    }
}

/// Compares in time that depends on the lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token (256 bits, hex) from the operating system.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn cookie_token(h: &HeaderMap) -> Option<&str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether `Host` names the loopback interface.
pub fn loopback_host(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|n| format!("[{n}]"))
    } else {
        host.split(':').next().map(str::to_string)
    };
    matches!(name.as_deref(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// The middleware in front of every route.
pub async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match st.token() {
        None => {
            if !loopback_host(req.headers()) {
                return (
                    StatusCode::FORBIDDEN,
                    "this server answers on 127.0.0.1 only",
                )
                    .into_response();
            }
        }
        Some(t) => {
            let path = req.uri().path();
            let ok = path == "/login"
                || cookie_token(req.headers()).is_some_and(|c| same(c.as_bytes(), t.as_bytes()));
            if !ok {
                return (
                    StatusCode::UNAUTHORIZED,
                    "open /login?token=… with the access token first",
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

/// `/login?token=…` query.
#[derive(Debug, Deserialize)]
pub struct Login {
    token: Option<String>,
}

/// `GET /login?token=…`: sets the cookie and sends the browser on (so the token leaves the
/// address bar).
pub async fn login(State(st): State<AppState>, Query(q): Query<Login>) -> Response {
    let Some(t) = st.token() else {
        return Redirect::to("/sessions").into_response();
    };
    let given = q.token.unwrap_or_default();
    if !same(given.as_bytes(), t.as_bytes()) {
        tracing::warn!("login with a wrong token");
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    let mut r = Redirect::to("/sessions").into_response();
    // The token was checked against the configured one: cookie-safe characters only.
    if let Ok(v) =
        HeaderValue::from_str(&format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/"))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_rules() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let lo6: SocketAddr = "[::1]:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lan: SocketAddr = "192.0.2.4:1".parse().unwrap();
        assert!(check_listen(lo, None).is_ok());
        assert!(check_listen(lo6, None).is_ok());
        assert_eq!(check_listen(any, None), Err(AuthError::NeedsToken(any)));
        assert_eq!(check_listen(lan, None), Err(AuthError::NeedsToken(lan)));
        assert!(check_listen(any, Some("0123456789abcdef")).is_ok());
        assert_eq!(check_listen(any, Some("short")), Err(AuthError::BadToken));
        assert_eq!(
            check_listen(any, Some("0123456789abcdef; Path=/x")),
            Err(AuthError::BadToken)
        );
    }

    #[test]
    fn compare_and_cookie() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; nina_token=xyz; b=2".parse().unwrap());
        assert_eq!(cookie_token(&h), Some("xyz"));
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn hosts() {
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("localhost", true),
            ("[::1]:9", true),
            ("evil.example:8080", false),
            ("127.0.0.1.evil.example", false),
            ("[::2]", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(loopback_host(&h), ok, "{host}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }
}
