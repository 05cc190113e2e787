//! The pages' cookies: the session (access token), the refresh token, and the CSRF token.
//!
//! All are HttpOnly and SameSite=Lax, and Secure unless the server listens on loopback
//! (a development setup, or behind a local TLS proxy) — a browser drops Secure cookies
//! over plain `http://`.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokengate_axum::SESSION_COOKIE;

use crate::state::AppState;

/// The refresh token of a page session; sent only to the pages under [`REFRESH_PATH`].
pub const REFRESH_COOKIE: &str = "tokengate_refresh";
/// Where the refresh cookie is sent: the account pages, which renew an expired session.
pub const REFRESH_PATH: &str = "/account";
/// The double-submit CSRF token: this cookie and a hidden form field must match.
pub const CSRF_COOKIE: &str = "tokengate_csrf";

/// How long a CSRF cookie lives (it carries no authority by itself).
const CSRF_MAX_AGE_SECS: u64 = 12 * 3600;

/// Builds `Set-Cookie` values with the flags this server uses.
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    /// Flags for this server: Secure unless it listens on loopback.
    pub fn for_state(state: &AppState) -> Cookies {
        Cookies {
            secure: !state.config.listen.ip().is_loopback(),
        }
    }

    fn build(&self, name: &str, value: &str, path: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    /// The session cookie holding `access_token` for `max_age` seconds.
    pub fn session(&self, access_token: &str, max_age: u64) -> String {
        self.build(SESSION_COOKIE, access_token, "/", max_age)
    }

    /// The refresh cookie, sent to the account pages only.
    pub fn refresh(&self, refresh_token: &str, max_age: u64) -> String {
        self.build(REFRESH_COOKIE, refresh_token, REFRESH_PATH, max_age)
    }

    /// A CSRF cookie with this token.
    pub fn csrf(&self, token: &str) -> String {
        self.build(CSRF_COOKIE, token, "/", CSRF_MAX_AGE_SECS)
    }

    /// Cookies that remove the session and refresh cookies.
    pub fn cleared(&self) -> [String; 2] {
        [
            self.build(SESSION_COOKIE, "", "/", 0),
            self.build(REFRESH_COOKIE, "", REFRESH_PATH, 0),
        ]
    }
}

/// Append `Set-Cookie` headers.
pub fn set_cookies<I: IntoIterator<Item = String>>(headers: &mut HeaderMap, cookies: I) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// A fresh CSRF token: 256 random bits, base64url.
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The request's CSRF cookie, if it has a well-formed one.
pub fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    tokengate_axum::extract::cookie(headers, CSRF_COOKIE).filter(|t| {
        t.len() == 43
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Double-submit check: the form field equals the cookie, compared in constant time.
pub fn csrf_matches(headers: &HeaderMap, field: &str) -> bool {
    match csrf_cookie(headers) {
        Some(cookie) => !field.is_empty() && bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn csrf_field_must_equal_the_cookie() {
        let token = new_csrf_token();
        let h = with_cookie(&format!("a=b; {CSRF_COOKIE}={token}"));
        assert!(csrf_matches(&h, &token));
        assert!(!csrf_matches(&h, ""));
        assert!(!csrf_matches(&h, &new_csrf_token()));
        assert!(!csrf_matches(&HeaderMap::new(), &token));
        // A malformed cookie never matches, even itself.
        assert!(!csrf_matches(
            &with_cookie(&format!("{CSRF_COOKIE}=x")),
            "x"
        ));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_off_loopback() {
        let local = Cookies { secure: false }.session("t", 900);
        assert_eq!(
            local,
            "tokengate_session=t; Path=/; Max-Age=900; HttpOnly; SameSite=Lax"
        );
        let remote = Cookies { secure: true }.refresh("r", 60);
        assert!(remote.contains("Path=/account") && remote.ends_with("; Secure"));
    }
}
