//! The one extractor every authenticated route uses.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use tokengate_core::{Claims, Role};
use uuid::Uuid;

use crate::error::AuthError;
use crate::gate::{Gate, Staleness};

/// Name of the cookie that carries the access token for browser sessions.
pub const SESSION_COOKIE: &str = "tokengate_session";

/// Where the credential of a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer ...`
    Bearer,
    /// The `tokengate_session` cookie.
    Cookie,
}

/// The credential found in a request, before verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    /// The token text.
    pub token: &'a str,
    /// Where it came from.
    pub source: CredentialSource,
}

/// Find the access token: the `Authorization: Bearer` header wins over the
/// `tokengate_session` cookie when both are present (an API client's explicit header is
/// what it meant; the cookie may be stale browser state).
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        return Ok(Credential {
            token,
            source: CredentialSource::Bearer,
        });
    }
    match cookie(headers, SESSION_COOKIE) {
        Some(token) if !token.is_empty() => Ok(Credential {
            token,
            source: CredentialSource::Cookie,
        }),
        _ => Err(AuthError::Missing),
    }
}

/// The value of the cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// CSRF defence for cookie-authenticated requests that change state: the browser must
/// say the request is same-origin (`Sec-Fetch-Site`), or its `Origin` (else `Referer`)
/// must name the host the request was sent to. Together with `SameSite=Lax` this stops a
/// cross-site form from using the cookie. Bearer requests need no such check: a browser
/// never attaches that header by itself.
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match origin {
        Some(origin) => authority_of(origin).is_some_and(|a| a.eq_ignore_ascii_case(host)),
        None => false,
    }
}

fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// An authenticated caller: the token verified and was not revoked.
///
/// Use it as a handler argument; the app state must give an `Arc<Gate>` via `FromRef`.
/// A refused request answers 401 with `WWW-Authenticate` (RFC 6750), 503 while the index
/// is stale under `fail_closed`, 403 for a cross-site cookie request.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The verified claims.
    pub claims: Claims,
    /// Where the token came from.
    pub source: CredentialSource,
}

impl Principal {
    /// The user id (`sub`).
    pub fn user_id(&self) -> Uuid {
        self.claims.sub
    }
    /// The session id (`sid`).
    pub fn session_id(&self) -> Uuid {
        self.claims.sid
    }
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.claims.role == Role::Admin
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<Gate>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate_parts(&Arc::<Gate>::from_ref(state), parts, Staleness::Enforce)
    }
}

/// The one authentication path of every extractor. Refusals decided here (no credential,
/// cross-site cookie) are reported to the observer; `Gate` reports its own.
fn authenticate_parts(
    gate: &Gate,
    parts: &Parts,
    staleness: Staleness,
) -> Result<Principal, AuthError> {
    let found = credential(&parts.headers).and_then(|credential| {
        if credential.source == CredentialSource::Cookie
            && !same_origin(&parts.method, &parts.headers)
        {
            Err(AuthError::CrossSite)
        } else {
            Ok(credential)
        }
    });
    let credential = match found {
        Ok(credential) => credential,
        Err(error) => {
            gate.report(&error);
            return Err(error);
        }
    };
    let claims = gate.authenticate_with(credential.token, staleness)?;
    Ok(Principal {
        claims,
        source: credential.source,
    })
}

/// An authenticated caller of an endpoint that only revokes (sign-out, ending a session):
/// accepted even while the index is stale, because revoking needs no fresh index and
/// refusing would leave a user unable to end a session during an outage.
#[derive(Clone, Debug)]
pub struct Revoker(pub Principal);

impl<S> FromRequestParts<S> for Revoker
where
    Arc<Gate>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate_parts(&Arc::<Gate>::from_ref(state), parts, Staleness::Permit).map(Revoker)
    }
}

/// An authenticated caller with the `admin` role; others get 403.
#[derive(Clone, Debug)]
pub struct Admin(pub Principal);

impl<S> FromRequestParts<S> for Admin
where
    Arc<Gate>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if principal.is_admin() {
            Ok(Admin(principal))
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_wins_over_cookie() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "tokengate_session=xyz"),
        ]);
        let c = credential(&h).unwrap();
        assert_eq!(c.token, "abc");
        assert_eq!(c.source, CredentialSource::Bearer);
    }

    #[test]
    fn cookie_is_used_without_header() {
        let h = headers(&[("cookie", "a=1; tokengate_session=xyz; b=2")]);
        let c = credential(&h).unwrap();
        assert_eq!(c.token, "xyz");
        assert_eq!(c.source, CredentialSource::Cookie);
    }

    #[test]
    fn non_bearer_scheme_and_empty_credentials_are_refused() {
        assert_eq!(
            credential(&headers(&[("authorization", "Basic Zm9v")])),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer ")])),
            Err(AuthError::Missing)
        );
        assert_eq!(credential(&headers(&[])), Err(AuthError::Missing));
        assert_eq!(
            credential(&headers(&[("cookie", "tokengate_session=")])),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn cross_site_cookie_posts_are_refused_and_same_origin_ones_pass() {
        let post = Method::POST;
        assert!(same_origin(&Method::GET, &headers(&[])));
        assert!(!same_origin(&post, &headers(&[("host", "a.test")])));
        assert!(!same_origin(
            &post,
            &headers(&[("host", "a.test"), ("origin", "https://evil.test")])
        ));
        assert!(same_origin(
            &post,
            &headers(&[("host", "a.test"), ("origin", "https://a.test")])
        ));
        assert!(same_origin(
            &post,
            &headers(&[
                ("host", "a.test:8080"),
                ("referer", "http://a.test:8080/account")
            ])
        ));
        assert!(!same_origin(
            &post,
            &headers(&[("host", "a.test"), ("sec-fetch-site", "cross-site")])
        ));
        assert!(same_origin(
            &post,
            &headers(&[("sec-fetch-site", "same-origin")])
        ));
    }
}
