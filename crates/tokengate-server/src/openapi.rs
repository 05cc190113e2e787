//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code: every handler carries a `#[utoipa::path]` annotation and
//! [`routes::api`](crate::routes::api) registers each one with `utoipa_axum::routes!`, which
//! adds the route to the axum router and its operation to the document in one step — a route
//! cannot be served without being documented. This module adds what the handlers cannot say
//! themselves: the title, version and description, the security schemes, and schemas that
//! mirror types of other crates (the error body, the JWKS, roles) or bodies the handlers
//! build as `serde_json::Value`.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

/// Name of the security scheme of `Authorization: Bearer <JWT>`.
pub const BEARER: &str = "bearer";
/// Name of the security scheme of the `tokengate_session` cookie.
pub const SESSION_COOKIE: &str = "session_cookie";

/// The base of the document: metadata, tags, components the handlers do not reference.
#[derive(OpenApi)]
#[openapi(
    info(title = "tokengate"),
    modifiers(&Metadata),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "auth", description = "Sign-up, sign-in, refresh, sign-out, password"),
        (name = "sessions", description = "The caller's own sessions"),
        (name = "interop", description = "JWKS, forward auth, revocation events"),
        (name = "oauth2", description = "RFC 7009 revocation and RFC 7662 introspection"),
        (name = "admin", description = "Admin-only operations"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Title, version (the crate's), description (the README's first paragraph) and the two
/// ways to present a credential.
struct Metadata;

impl Modify for Metadata {
    fn modify(&self, openapi: &mut Document) {
        openapi.info.title = "tokengate".into();
        openapi.info.version = env!("CARGO_PKG_VERSION").into();
        openapi.info.description = Some(readme_first_paragraph());
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token (JWS, `typ: at+jwt`) from sign-in or refresh, as \
                         `Authorization: Bearer <token>`. When both this header and the session \
                         cookie are present, the header wins.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                tokengate_axum::SESSION_COOKIE,
                "The same access token in the `tokengate_session` cookie (HttpOnly, \
                 SameSite=Lax) for browser sessions. A state-changing request authenticated by \
                 the cookie must come from the same origin (`Sec-Fetch-Site: same-origin`, or \
                 an `Origin`/`Referer` naming the request's host), else 403 `csrf_check_failed`.",
            ))),
        );
    }
}

/// The first prose paragraph of the workspace README (after the title and the quick-start
/// code block), joined into one line.
fn readme_first_paragraph() -> String {
    const README: &str = include_str!("../../../README.md");
    let mut in_code = false;
    let mut paragraph: Vec<&str> = Vec::new();
    for line in README.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() {
            if !paragraph.is_empty() {
                break;
            }
            continue;
        }
        paragraph.push(trimmed);
    }
    if paragraph.is_empty() {
        env!("CARGO_PKG_DESCRIPTION").to_owned()
    } else {
        paragraph.join(" ")
    }
}

/// The whole document: the routes of [`crate::routes::api`] on the base of [`ApiDoc`].
pub fn document() -> Document {
    let (_, document) = crate::routes::api().split_for_parts();
    document
}

/// The document as JSON, built once.
fn document_json() -> Result<&'static str, ApiError> {
    static JSON: OnceLock<String> = OnceLock::new();
    if let Some(json) = JSON.get() {
        return Ok(json);
    }
    let json = document().to_json().map_err(|error| {
        tracing::error!(%error, "cannot serialize the OpenAPI document");
        ApiError::Unavailable("the OpenAPI document is unavailable".into())
    })?;
    Ok(JSON.get_or_init(|| json))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        (status = 503, description = "The document could not be serialized", body = ErrorBody),
    )
)]
pub async fn openapi_json() -> Result<Response, ApiError> {
    let json = document_json()?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Schemas of types that live in other crates or are built as JSON values
// ---------------------------------------------------------------------------------------

/// The body of every error (`tokengate_axum::ErrorBody`).
#[derive(ToSchema)]
#[schema(example = json!({"error": "invalid_token", "error_description": "token has been revoked"}))]
pub struct ErrorBody {
    /// A machine-readable code: `invalid_request`, `invalid_token`, `invalid_grant`,
    /// `insufficient_scope`, `csrf_check_failed`, `account_disabled`, `signup_disabled`,
    /// `not_found`, `conflict`, `request_too_large`, `too_many_requests`,
    /// `temporarily_unavailable`.
    pub error: String,
    /// A sentence for humans.
    pub error_description: String,
}

/// What a user may do (`tokengate_core::Role`); the first user of a server is an admin.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary user.
    User,
    /// May call the admin endpoints and introspect tokens.
    Admin,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` (200) or `not_ready` (503).
    #[schema(example = "ready")]
    pub status: String,
    /// `ok` or `unreachable`.
    #[schema(example = "ok")]
    pub store: String,
    /// `current` or `stale`.
    #[schema(example = "current")]
    pub revocation_index: String,
    /// Entries in this node's revocation index.
    pub revocations: u64,
}

/// A public key (RFC 7517); never private or symmetric material.
#[derive(ToSchema)]
pub struct Jwk {
    /// `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Matched against a token's `kid` header.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[schema(rename = "use")]
    pub use_: String,
    /// `Ed25519` (OKP) or `P-256` (EC).
    #[schema(nullable = false)]
    pub crv: Option<String>,
    /// x coordinate (OKP, EC), base64url.
    #[schema(nullable = false)]
    pub x: Option<String>,
    /// y coordinate (EC), base64url.
    #[schema(nullable = false)]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[schema(nullable = false)]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[schema(nullable = false)]
    pub e: Option<String>,
}

/// `GET /.well-known/jwks.json`: the current key and, after a rotation, the previous ones
/// until the tokens they signed have expired. Empty under HS256.
#[derive(ToSchema)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One entry of `POST /v1/admin/revocations`.
#[derive(ToSchema)]
pub struct RevocationEntry {
    /// The revoked token's `jti` (UUID text).
    pub jti: Uuid,
    /// Its `exp`, Unix seconds (positive).
    pub exp: i64,
}

/// `POST /oauth2/introspect` (RFC 7662). Only `active` when the token is not active.
#[derive(ToSchema)]
pub struct Introspection {
    /// Whether the token is valid, unexpired and not revoked.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[schema(nullable = false)]
    pub token_type: Option<String>,
    /// Issuer (access tokens).
    #[schema(nullable = false)]
    pub iss: Option<String>,
    /// User id.
    #[schema(nullable = false)]
    pub sub: Option<Uuid>,
    /// Audience (access tokens).
    #[schema(nullable = false)]
    pub aud: Option<String>,
    /// Issued at (Unix seconds); for a refresh token, when its session began.
    #[schema(nullable = false)]
    pub iat: Option<i64>,
    /// Not before (access tokens).
    #[schema(nullable = false)]
    pub nbf: Option<i64>,
    /// Expiry (Unix seconds).
    #[schema(nullable = false)]
    pub exp: Option<i64>,
    /// Token id (access tokens).
    #[schema(nullable = false)]
    pub jti: Option<Uuid>,
    /// Session id.
    #[schema(nullable = false)]
    pub sid: Option<Uuid>,
    /// The user's email (access tokens).
    #[schema(nullable = false)]
    pub username: Option<String>,
    /// The user's email (access tokens).
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// The user's role (access tokens).
    #[schema(nullable = false)]
    pub role: Option<Role>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn description_is_the_readme_first_paragraph() {
        let text = readme_first_paragraph();
        assert!(!text.is_empty());
        assert!(!text.starts_with('#') && !text.starts_with('`'), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn document_has_metadata_and_security_schemes() {
        let doc = document();
        assert_eq!(doc.info.title, "tokengate");
        assert_eq!(doc.info.version, env!("CARGO_PKG_VERSION"));
        let components = doc.components.expect("components");
        assert!(components.security_schemes.contains_key(BEARER));
        assert!(components.security_schemes.contains_key(SESSION_COOKIE));
        assert!(components.schemas.contains_key("ErrorBody"));
    }
}
