//! What other systems plug into: the JWKS, forward auth for reverse proxies, and the
//! OAuth revocation (RFC 7009) and introspection (RFC 7662) endpoints.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokengate_axum::{AuthError, Principal};
use tokengate_sessions::{IntrospectError, Introspection};

use crate::error::{ApiError, ApiResult, ErrorCode, Form};
use crate::routes::gate::Verified;
use crate::schema::{ErrorBody, IntrospectorRefusals, TokenFormRefusals};
use crate::state::AppState;

/// `GET /.well-known/jwks.json`: the public keys that verify tokens, current and
/// previous. HS256 secrets are never published.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "interop",
    responses((status = 200, description = "The public verifying keys (RFC 7517); no keys under HS256", body = crate::schema::Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let jwks = state.sessions.verifier().jwks();
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(jwks),
    )
        .into_response()
}

/// `GET /v1/verify`: forward auth for nginx `auth_request`, Traefik ForwardAuth and Caddy
/// `forward_auth`. The check is the verifier and the in-memory index only: no database.
/// The Bearer header wins over the session cookie when both are present. With gate
/// issuers configured, their tokens are accepted too (Bearer, or the issuer's cookie).
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "interop",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The credential is valid and not revoked; no body", headers(
            ("X-Auth-Issuer" = String, description = "`tokengate` for own tokens, else the gate issuer's `name`"),
            ("X-Auth-User-Id" = String, description = "The user id (`sub`; a gate issuer's mapped subject)"),
            ("X-Auth-Email" = String, description = "The user's email (a gate token's only where it has one)"),
            ("X-Auth-Role" = String, description = "`user` or `admin` (a gate token's mapped role or roles, comma-separated, where it has them)"),
            ("X-Auth-Session-Id" = String, description = "The session id (`sid`; a gate token's only where its issuer maps one)"),
        )),
        (status = 401, description = "No credential, or an invalid, expired or revoked one, or a token of no configured issuer", body = ErrorBody),
        (status = 503, description = "The revocation index is stale (`fail_closed`), or a gate issuer's keys were never fetched yet", body = ErrorBody),
    )
)]
pub async fn verify(verified: Verified) -> Response {
    let c = match verified {
        Verified::Own(principal) => principal.claims,
        Verified::Gate(token) => return Verified::gate_headers(&token),
    };
    // Room for these five and the four the outer layers add (three security headers and
    // the request id), so the map never grows.
    let mut headers = HeaderMap::with_capacity(9);
    let mut uuid_text = uuid::Uuid::encode_buffer();
    let mut put = |name: HeaderName, value: Result<HeaderValue, _>| {
        if let Ok(value) = value {
            headers.insert(name, value);
        }
    };
    put(
        X_AUTH_USER_ID,
        HeaderValue::from_str(c.sub.hyphenated().encode_lower(&mut uuid_text)),
    );
    // The email's own buffer becomes the header value: no copy.
    put(
        X_AUTH_EMAIL,
        HeaderValue::from_maybe_shared(Bytes::from(c.email)),
    );
    put(X_AUTH_ROLE, Ok(HeaderValue::from_static(c.role.as_str())));
    put(X_AUTH_ISSUER, Ok(HeaderValue::from_static("tokengate")));
    put(
        X_AUTH_SESSION_ID,
        HeaderValue::from_str(c.sid.hyphenated().encode_lower(&mut uuid_text)),
    );
    (StatusCode::OK, headers).into_response()
}

const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_AUTH_ROLE: HeaderName = HeaderName::from_static("x-auth-role");
const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");
const X_AUTH_ISSUER: HeaderName = HeaderName::from_static("x-auth-issuer");

/// `GET /v1/events/revocations`: server-sent events, one `revocation` event per revocation
/// this node applies (`{"kind","id","exp"}`), so apps can drop live websockets. Admins only.
/// A client too slow to keep up gets a `lagged` event with the number of events it missed
/// and should resynchronise (e.g. re-check its open connections). The stream ends when the
/// token it was opened with expires or is revoked (within [`RECHECK_EVERY`]).
#[utoipa::path(
    get,
    path = "/v1/events/revocations",
    tag = "interop",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Server-sent events: `event: revocation` with data \
            `{\"kind\",\"id\",\"issued_before\",\"exp\"}` per revocation; `event: lagged` with the \
            number of missed events for a client that fell behind", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "The caller is not an admin (`insufficient_scope`)", body = ErrorBody),
        (status = 503, description = "The revocation index is stale (`fail_closed`)", body = ErrorBody),
    )
)]
pub async fn revocation_events(
    State(state): State<AppState>,
    tokengate_axum::Admin(admin): tokengate_axum::Admin,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;

    let receiver = state.index().subscribe();
    let claims = admin.claims;
    let ticker = tokio::time::interval(RECHECK_EVERY);
    let stream = futures_util::stream::unfold(
        (receiver, ticker, state, claims),
        |(mut receiver, mut ticker, state, claims)| async move {
            let event = loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        // The stream's own credential is revoked: it ends, unannounced.
                        Ok(revocation) if revocation.covers(&claims) => return None,
                        Ok(revocation) => {
                            break Event::default()
                                .event("revocation")
                                .json_data(serde_json::json!({
                                    "kind": revocation.kind(),
                                    "id": revocation.subject_id(),
                                    "issued_before": revocation.issued_before(),
                                    "exp": revocation.exp(),
                                }))
                                .unwrap_or_else(|_| Event::default().event("error"));
                        }
                        Err(RecvError::Lagged(missed)) => {
                            if !credential_holds(&state, &claims) {
                                return None;
                            }
                            break Event::default().event("lagged").data(missed.to_string());
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = ticker.tick() => {
                        if !credential_holds(&state, &claims) {
                            return None;
                        }
                    }
                }
            };
            Some((Ok(event), (receiver, ticker, state, claims)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// How often an open event stream re-checks its credential against the clock and the
/// index (besides on every event): a stream ends at most this long after its token
/// expires or is revoked by a revocation it was not sent (one it missed while lagging).
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the token a stream was opened with would still be accepted now: not past
/// `exp + leeway` by the service clock, and not refused by the index.
fn credential_holds(state: &AppState, claims: &tokengate_core::Claims) -> bool {
    let now = state.now();
    now <= claims.exp.plus(state.sessions.config().leeway)
        && state.index().check(claims, now).is_ok()
}

/// The form of an RFC 7009 revocation or RFC 7662 introspection request
/// (`application/x-www-form-urlencoded`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// The access or refresh token to revoke or describe (required).
    #[schema(required = true, nullable = false)]
    token: Option<String>,
    /// `access_token` or `refresh_token`; a hint only.
    #[allow(dead_code)] // A hint only: the token's form tells what it is.
    #[schema(nullable = false)]
    token_type_hint: Option<String>,
}

impl TokenForm {
    /// The `token` parameter, required and non-empty.
    fn token(self) -> Result<String, ApiError> {
        self.token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::BadRequest("missing form parameter `token`".into()))
    }
}

/// `POST /oauth2/revoke` (RFC 7009). Holding a token is the right to revoke it. A refresh
/// token ends its whole session (every access token minted from it); an access token is
/// revoked by its `jti`. Unknown, expired, already revoked or foreign tokens get 200 too,
/// so the answer tells nothing about the token. Works while the index is stale: revoking
/// needs no fresh index. A gate issuer's token needs HTTP Basic authentication of one of
/// that issuer's clients.
#[utoipa::path(
    post,
    path = "/oauth2/revoke",
    tag = "oauth2",
    // None for tokengate's own tokens; a gate token's issuer's client (HTTP Basic).
    security((), ("client_basic" = [])),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or unknown, expired or already revoked: the answer tells nothing about the token"),
        (status = 401, description = "A gate issuer's token without valid HTTP Basic credentials of one of that issuer's clients (`invalid_client`); nothing was revoked", body = ErrorBody),
        TokenFormRefusals,
        (status = 503, description = "The store is unavailable; nothing was revoked", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> ApiResult<Response> {
    let token = form.token()?;
    if let Ok(Some(issuer)) = state.issuers.route(&token) {
        return Ok(crate::routes::gate::revoke_gate_token(&state, issuer, &headers, &token).await);
    }
    state.sessions.revoke_token(&token).await?;
    Ok(StatusCode::OK.into_response())
}

/// The caller of introspection: an admin's access token (Bearer, or the session cookie under
/// the CSRF rule). Any other caller gets 401 `invalid_token`: RFC 7662 §2.1 requires the
/// endpoint to be authorised, and only admins are.
pub struct Introspector;

impl FromRequestParts<AppState> for Introspector {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if Principal::from_request_parts(parts, state)
            .await?
            .is_admin()
        {
            Ok(Introspector)
        } else {
            Err(ApiError::Unauthorized(
                ErrorCode::InvalidToken,
                "introspection needs an admin's access token".into(),
            ))
        }
    }
}

/// `POST /oauth2/introspect` (RFC 7662). The caller authenticates with an admin's access
/// token; anyone else gets 401. Answers `{"active": false}` for revoked, expired, forged
/// or unknown tokens, and 503 while this node's index is stale under `fail_closed`.
#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    tag = "oauth2",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`{\"active\": false}` for revoked, expired, forged or unknown tokens; the claims otherwise", body = crate::schema::Introspection),
        IntrospectorRefusals,
        TokenFormRefusals,
        (status = 503, description = "The store is unavailable or the revocation index is stale (`fail_closed`)", body = ErrorBody),
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    _caller: Introspector,
    Form(form): Form<TokenForm>,
) -> ApiResult<Response> {
    let token = form.token()?;
    let body = match state.sessions.introspect(&token).await {
        Ok(Introspection::Refresh(info)) => json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": info.session.user_id,
            "sid": info.session.id,
            "exp": info.exp,
            "iat": info.session.created_at,
        }),
        Ok(Introspection::Access(claims)) => json!({
            "active": true,
            "token_type": "access_token",
            "iss": claims.iss,
            "sub": claims.sub,
            "aud": claims.aud,
            "iat": claims.iat,
            "nbf": claims.nbf,
            "exp": claims.exp,
            "jti": claims.jti,
            "sid": claims.sid,
            "username": claims.email,
            "email": claims.email,
            "role": claims.role,
        }),
        Ok(Introspection::Inactive) => json!({"active": false}),
        Err(IntrospectError::Stale) => return Err(ApiError::Auth(AuthError::Stale)),
        Err(IntrospectError::Unavailable(error)) => return Err(error.into()),
    };
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response())
}
