//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code: every handler carries a `#[utoipa::path]` annotation and
//! `routes::api` registers each one with `utoipa_axum::routes!`, which adds the route to the
//! axum router and its operation to the document in one step — a route cannot be served
//! without being documented; `routes` also serves the finished document. This module is its
//! base: what the handlers cannot say themselves, the title, version and description and the
//! security schemes (the schemas of foreign types are in `schema`).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use crate::schema::ErrorBody;

/// Name of the security scheme of `Authorization: Bearer <JWT>`.
pub const BEARER: &str = "bearer";
/// Name of the security scheme of the `tokengate_session` cookie.
pub const SESSION_COOKIE: &str = "session_cookie";
/// Name of the security scheme of a gate issuer's revoke clients (HTTP Basic).
pub const CLIENT_BASIC: &str = "client_basic";

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
        (name = "gate", description = "Gate mode: tokens of other issuers"),
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
            CLIENT_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A revoke client of a gate issuer (`clients` in its `[[issuers]]` entry): \
                         `Authorization: Basic base64(id:secret)`.",
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
        let doc = ApiDoc::openapi();
        assert_eq!(doc.info.title, "tokengate");
        assert_eq!(doc.info.version, env!("CARGO_PKG_VERSION"));
        let components = doc.components.expect("components");
        assert!(components.security_schemes.contains_key(BEARER));
        assert!(components.security_schemes.contains_key(SESSION_COOKIE));
        assert!(components.schemas.contains_key("ErrorBody"));
    }
}
