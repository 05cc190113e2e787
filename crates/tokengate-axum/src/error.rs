//! Error responses: JSON `{"error", "error_description"}` and, for 401, the RFC 6750
//! `WWW-Authenticate` challenge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokengate_core::{RevocationKind, VerifyError};

/// The mark, in a response's extensions, of a 503 refusing a request because the
/// revocation index is stale ([`AuthError::Stale`]). Such refusals are expected while an
/// outage lasts and are counted by [`Freshness`](tokengate_core::Freshness), whose observer
/// logs the outage once when it starts and once when it ends: a request log should not log
/// each of them as a server error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleRefusal;

/// The JSON body of every error tokengate answers.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// A machine-readable code (`invalid_token`, `invalid_request`, ...).
    pub error: &'a str,
    /// A sentence for humans.
    pub error_description: &'a str,
}

/// Build an error response with the JSON body; a 401 also gets
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="..."`.
pub fn error_response(status: StatusCode, code: &str, description: &str) -> Response {
    let body = ErrorBody {
        error: code,
        error_description: description,
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            bearer_challenge("invalid_token", description),
        );
    }
    if status == StatusCode::FORBIDDEN && code == "insufficient_scope" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            bearer_challenge(code, description),
        );
    }
    response
}

fn bearer_challenge(code: &str, description: &str) -> HeaderValue {
    // The description goes inside a quoted-string: drop the characters that would end it.
    let safe: String = description
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && (c.is_ascii_graphic() || *c == ' '))
        .collect();
    HeaderValue::from_str(&format!(
        "Bearer error=\"{code}\", error_description=\"{safe}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header and no session cookie.
    #[error("no access token: send Authorization: Bearer <token>")]
    Missing,
    /// The `Authorization` header is not a Bearer credential.
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    /// The token failed verification.
    #[error("{0}")]
    Invalid(VerifyError),
    /// The token was revoked.
    #[error("token has been revoked")]
    Revoked(RevocationKind),
    /// This node cannot be sure its revocation index is current and the policy is
    /// `fail_closed`.
    #[error("revocation state is not current on this node; retry shortly")]
    Stale,
    /// A cookie-authenticated state-changing request failed the CSRF check.
    #[error(
        "cross-site request refused: cookie-authenticated requests must come from the same origin"
    )]
    CrossSite,
    /// The caller is authenticated but lacks the role the route needs.
    #[error("this operation needs the admin role")]
    Forbidden,
}

impl AuthError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing
            | AuthError::NotBearer
            | AuthError::Invalid(_)
            | AuthError::Revoked(_) => StatusCode::UNAUTHORIZED,
            AuthError::Stale => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::CrossSite | AuthError::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing
            | AuthError::NotBearer
            | AuthError::Invalid(_)
            | AuthError::Revoked(_) => "invalid_token",
            AuthError::Stale => "temporarily_unavailable",
            AuthError::CrossSite => "csrf_check_failed",
            AuthError::Forbidden => "insufficient_scope",
        }
    }

    /// A short label for metrics and logs (`missing`, `expired`, `revoked`, `invalid`, ...).
    pub fn outcome(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::NotBearer => "missing",
            AuthError::Invalid(VerifyError::Expired) => "expired",
            AuthError::Invalid(_) => "invalid",
            AuthError::Revoked(_) => "revoked",
            AuthError::Stale => "stale",
            AuthError::CrossSite => "csrf",
            AuthError::Forbidden => "forbidden",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        if matches!(self, AuthError::Stale) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response.extensions_mut().insert(StaleRefusal);
        }
        response
    }
}
