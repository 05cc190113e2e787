//! Gate mode over HTTP: forward auth for other issuers' tokens, the sign-out hook, the
//! revocation endpoint of an issuer's clients and admins, the issuers' logout signals
//! (back-channel logout, Shared Signals), and the RFC 8414 metadata.
//! Every decision is `tokengate_gate::GateService`'s; these handlers translate.

use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::FromRequestParts;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use tokengate_axum::{error_response, AuthError, Principal, SESSION_COOKIE};
use tokengate_core::{Role, Timestamp};
use tokengate_gate::{
    AuthenticateError, GateError, GateRevocation, GateRevokeError, GateToken, Issuer,
    SignalChannel, SignalError, SignalRefusal,
};

use crate::error::{ApiError, ApiResult, ErrorCode, Json};
use crate::metrics::SignalOutcome;
use crate::schema::{ErrorBody, IssuerCallerRefusals, JsonBodyRefusals};
use crate::state::AppState;

const X_AUTH_ISSUER: HeaderName = HeaderName::from_static("x-auth-issuer");

/// The credential of a request for `/v1/verify` and the sign-out hook: the Bearer header,
/// else tokengate's session cookie, else the cookie of the first issuer that names one.
pub fn any_credential<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
    match tokengate_axum::extract::credential(headers) {
        Err(AuthError::Missing) => state
            .issuers
            .issuers()
            .iter()
            .filter_map(|issuer| issuer.config().cookie.as_deref())
            .find_map(|name| tokengate_axum::extract::cookie(headers, name))
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing),
        found => found.map(|credential| credential.token),
    }
}

/// Whether `headers` carry tokengate's own session cookie (which the own path reads).
fn has_own_cookie(headers: &HeaderMap) -> bool {
    tokengate_axum::extract::cookie(headers, SESSION_COOKIE).is_some()
}

/// The caller of `/v1/verify`: an own token through the usual [`Principal`] extractor, or a
/// gate token of a configured issuer. The rejection is the whole refusal.
pub enum Verified {
    /// One of tokengate's own tokens.
    Own(Principal),
    /// A token of a gate issuer.
    Gate(GateToken),
}

impl FromRequestParts<AppState> for Verified {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let routed = route(state, &parts.headers)
            .map_err(|error| refusal(&AuthenticateError::Gate(error)))?;
        match routed {
            Some((issuer, token)) => state
                .issuers
                .authenticate(issuer, token)
                .await
                .map(Verified::Gate)
                .map_err(|error| refusal(&error)),
            None => Principal::from_request_parts(parts, state)
                .await
                .map(Verified::Own)
                .map_err(IntoResponse::into_response),
        }
    }
}

impl Verified {
    /// The 200 answer of `/v1/verify` for a gate token, with its `X-Auth-*` headers; 401 when
    /// its subject cannot be an HTTP header value.
    pub fn gate_headers(token: &GateToken) -> Response {
        match auth_headers(token) {
            Some(headers) => (StatusCode::OK, headers).into_response(),
            None => error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "token subject cannot be passed on in a header",
            ),
        }
    }
}

/// `None` when the own-token path should answer (no issuer configured, no credential, or
/// the credential is tokengate's own), else the issuer to verify the credential with.
fn route<'s, 'h>(
    state: &'s AppState,
    headers: &'h HeaderMap,
) -> Result<Option<(&'s Issuer, &'h str)>, GateError> {
    if state.issuers.issuers().is_empty() {
        return Ok(None);
    }
    let Ok(token) = any_credential(state, headers) else {
        // The own path answers a missing or malformed credential as it always has.
        return Ok(None);
    };
    match state.issuers.route(token) {
        Ok(None) => Ok(None),
        Ok(Some(issuer)) => Ok(Some((issuer, token))),
        // A token no issuer claims, beside the own session cookie: the own path decides.
        Err(GateError::UnknownIssuer) if has_own_cookie(headers) => Ok(None),
        Err(error) => Err(error),
    }
}

fn auth_headers(token: &GateToken) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(9);
    headers.insert(X_AUTH_ISSUER, HeaderValue::from_str(&token.issuer).ok()?);
    headers.insert(
        HeaderName::from_static("x-auth-user-id"),
        HeaderValue::from_str(&token.subject).ok()?,
    );
    let optional = [
        ("x-auth-session-id", &token.session),
        ("x-auth-email", &token.email),
        ("x-auth-role", &token.role),
    ];
    for (name, value) in optional {
        // A value that cannot be a header (control characters, non-ASCII) is left out.
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Some(headers)
}

/// The answer to a refused gate token: 503 while its issuer's keys were never fetched or
/// the index is stale, else 401 with the RFC 6750 challenge.
fn refusal(error: &AuthenticateError) -> Response {
    match error {
        AuthenticateError::Stale => AuthError::Stale.into_response(),
        AuthenticateError::Gate(GateError::NotReady(_)) => {
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable.as_str(),
                &error.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        AuthenticateError::Gate(error) => error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            &error.to_string(),
        ),
    }
}

/// `POST /v1/gate/signout`: the sign-out hook for an app that cannot be changed. The proxy
/// sends the app's own sign-out request here first (nginx `auth_request`, which completes
/// before the app is called; see docs/recipes/unmodified-app-nginx.md); the
/// presented gate token (Bearer or the issuer's cookie) is revoked, and its session where
/// the issuer maps one. Any well-formed request gets 200; nothing is revoked unless the
/// token's signature verifies. No same-origin check: the app protects its own sign-out
/// route, and this can only end the presenter's own token.
#[utoipa::path(
    post,
    path = "/v1/gate/signout",
    tag = "gate",
    responses(
        (status = 200, description = "Done: the presented gate token (and its session) is revoked if it verified; nothing otherwise"),
        (status = 503, description = "The store is unavailable; nothing was revoked", body = ErrorBody),
    )
)]
pub async fn signout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<StatusCode> {
    if let Ok(token) = any_credential(&state, &headers) {
        state.issuers.sign_out(token).await?;
    }
    Ok(StatusCode::OK)
}

/// A revocation request for one issuer: exactly one of `sub`, `sid`, `jti` (with `exp`
/// where known) or `issued_before` (Unix seconds).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateRevocationRequest {
    /// Every token of this user issued before now.
    #[schema(nullable = false)]
    sub: Option<String>,
    /// Every token of this session.
    #[schema(nullable = false)]
    sid: Option<String>,
    /// One token by its token id.
    #[schema(nullable = false)]
    jti: Option<String>,
    /// With `jti`: the token's `exp` (Unix seconds), so the entry is kept no longer.
    #[schema(nullable = false)]
    exp: Option<i64>,
    /// Every token of the issuer issued before this instant (Unix seconds, not in the
    /// future).
    #[schema(nullable = false)]
    issued_before: Option<i64>,
}

impl GateRevocationRequest {
    fn into_revocation(self) -> Result<GateRevocation, ApiError> {
        let nonempty = |value: Option<String>, name: &str| match value {
            Some(v) if v.is_empty() => Err(ApiError::BadRequest(format!("`{name}` is empty"))),
            other => Ok(other),
        };
        let sub = nonempty(self.sub, "sub")?;
        let sid = nonempty(self.sid, "sid")?;
        let jti = nonempty(self.jti, "jti")?;
        let request = match (sub, sid, jti, self.issued_before) {
            (Some(sub), None, None, None) => GateRevocation::Subject(sub),
            (None, Some(sid), None, None) => GateRevocation::Session(sid),
            (None, None, Some(id), None) => GateRevocation::TokenId {
                id,
                exp: self.exp.map(Timestamp::from_secs),
            },
            (None, None, None, Some(cutoff)) => {
                GateRevocation::IssuedBefore(Timestamp::from_secs(cutoff))
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of `sub`, `sid`, `jti` or `issued_before`".into(),
                ))
            }
        };
        if self.exp.is_some() && !matches!(request, GateRevocation::TokenId { .. }) {
            return Err(ApiError::BadRequest("`exp` goes with `jti` only".into()));
        }
        Ok(request)
    }
}

/// The caller of an issuer's revocation endpoint, by the issuer named in the path: one of
/// its clients (HTTP Basic) or an admin of tokengate (Bearer). The rejection is the answer:
/// 404 for an unknown issuer, 401 `invalid_client` with a Basic challenge for anyone else, 403
/// for a Bearer that is not an admin's. Extracted before the body is read.
pub struct IssuerCaller(String);

impl FromRequestParts<AppState> for IssuerCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(issuer) = state.issuers.issuers().by_name(&name) else {
            return Err(ApiError::NotFound(format!("no issuer is named {name:?}")).into_response());
        };
        let headers = &parts.headers;
        if let Some((id, secret)) = basic_credentials(headers) {
            return if issuer.client_matches(&id, &secret) {
                Ok(IssuerCaller(name))
            } else {
                Err(invalid_client())
            };
        }
        match tokengate_axum::extract::credential(headers) {
            Ok(credential) => match state.gate.authenticate(credential.token) {
                Ok(claims) if claims.role == Role::Admin => Ok(IssuerCaller(name)),
                Ok(_) => Err(AuthError::Forbidden.into_response()),
                Err(error) => Err(error.into_response()),
            },
            Err(_) => Err(invalid_client()),
        }
    }
}

/// `Authorization: Basic` user and password (RFC 7617; RFC 6749 §2.3.1 form-encodes
/// both, which leaves ids and secrets without special characters as they are).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// 401 `invalid_client` with `WWW-Authenticate: Basic` (RFC 6749 §5.2).
pub fn invalid_client() -> Response {
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tokengate\""),
    );
    response
}

/// `POST /v1/gate/{issuer}/revocations`: the app's "sign out everywhere", password change
/// and admin actions for tokens of one issuer. 204 once the revocation is durable; it then
/// reaches every node of a cluster like any other.
#[utoipa::path(
    post,
    path = "/v1/gate/{issuer}/revocations",
    tag = "gate",
    security(("client_basic" = []), ("bearer" = [])),
    params(("issuer" = String, Path, description = "The issuer's configured `name`")),
    request_body(content = GateRevocationRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Recorded and applied"),
        (status = 400, description = "Not exactly one of `sub`, `sid`, `jti`, `issued_before`; an empty value; `issued_before` in the future; malformed JSON", body = ErrorBody),
        IssuerCallerRefusals,
        JsonBodyRefusals,
        (status = 422, description = "A member of the wrong type, or an unknown member", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was revoked", body = ErrorBody),
    )
)]
pub async fn revocations(
    State(state): State<AppState>,
    IssuerCaller(name): IssuerCaller,
    Json(request): Json<GateRevocationRequest>,
) -> ApiResult<StatusCode> {
    let request = request.into_revocation()?;
    match state.issuers.revoke(&name, &request).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(GateRevokeError::UnknownIssuer(_)) => {
            Err(ApiError::NotFound(format!("no issuer is named {name:?}")))
        }
        Err(GateRevokeError::CutoffInFuture) => Err(ApiError::BadRequest(
            "`issued_before` is in the future".into(),
        )),
        Err(GateRevokeError::Unavailable(error)) => Err(error.into()),
    }
}

/// RFC 7009 for a gate token: the caller must be a client of the token's issuer (HTTP
/// Basic); then the token is revoked if its signature verifies.
pub async fn revoke_gate_token(
    state: &AppState,
    issuer: &Issuer,
    headers: &HeaderMap,
    token: &str,
) -> Response {
    match basic_credentials(headers) {
        Some((id, secret)) if issuer.client_matches(&id, &secret) => {
            match state.issuers.revoke_token(issuer, token).await {
                Ok(()) => StatusCode::OK.into_response(),
                Err(error) => ApiError::from(error).into_response(),
            }
        }
        _ => invalid_client(),
    }
}

/// `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata of tokengate's own
/// issuer (the revocation and introspection endpoints, the keys).
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "interop",
    responses((status = 200, description = "RFC 8414 authorization server metadata: `issuer`, `jwks_uri`, `revocation_endpoint`, `introspection_endpoint` and what they accept", body = Object))
)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = state.config.issuer.trim_end_matches('/');
    // The endpoints are absolute URLs under the issuer when it is one, as RFC 8414 asks.
    let base = if issuer.starts_with("https://") || issuer.starts_with("http://") {
        issuer.to_owned()
    } else {
        String::new()
    };
    let body = json!({
        "issuer": state.config.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        // Required by RFC 8414; tokengate has no authorization endpoint.
        "response_types_supported": [],
    });
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        axum::Json(body),
    )
        .into_response()
}

/// The form of a back-channel logout request (`application/x-www-form-urlencoded`).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LogoutForm {
    /// The logout token: a JWT signed by the issuer (OpenID Connect Back-Channel Logout
    /// 1.0 §2.4).
    #[schema(required = true, nullable = false)]
    logout_token: Option<String>,
}

/// A refused back-channel logout: 400 `invalid_request` (Back-Channel Logout 1.0 §2.8),
/// with `Cache-Control: no-store` like every answer of the route.
fn logout_refused(description: &str) -> Response {
    no_store(error_response(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest.as_str(),
        description,
    ))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to what `GateService::signal` did with a signal to `issuer`, counted:
/// `accepted` for an accepted one, `refused` for one that failed a check or is a replay,
/// 503 when the issuer's keys or the store are unavailable.
fn signal_answer(
    state: &AppState,
    issuer: &Issuer,
    channel: SignalChannel,
    result: Result<tokengate_gate::Signal, SignalRefusal>,
    accepted: StatusCode,
    refused: impl FnOnce(&SignalError) -> Response,
) -> Response {
    let count = |outcome, events: &[_]| {
        state
            .metrics
            .signal(issuer.name(), channel, outcome, events)
    };
    match result {
        Ok(signal) => {
            count(SignalOutcome::Accepted, &signal.events);
            accepted.into_response()
        }
        Err(SignalRefusal::Invalid(error)) => {
            let outcome = match error {
                SignalError::Replayed => SignalOutcome::Replayed,
                _ => SignalOutcome::Refused,
            };
            count(outcome, &[]);
            refused(&error)
        }
        Err(SignalRefusal::Unavailable(error)) => {
            count(SignalOutcome::Unavailable, &[]);
            ApiError::from(error).into_response()
        }
        Err(refusal @ SignalRefusal::NotReady(_)) => {
            count(SignalOutcome::Unavailable, &[]);
            ApiError::Unavailable(refusal.to_string()).into_response()
        }
        // `signal_receiver` answered these before `signal` was called.
        Err(refusal @ (SignalRefusal::UnknownIssuer(_) | SignalRefusal::NotConfigured(_))) => {
            ApiError::NotFound(refusal.to_string()).into_response()
        }
    }
}

/// `POST /v1/gate/{issuer}/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
/// The identity provider posts a logout token; once it passes every check of §2.6 and its
/// `jti` was never seen, its session (`sid`) or user (`sub` alone) is revoked durably, on
/// every node. 200 then, or 400 and nothing revoked.
#[utoipa::path(
    post,
    path = "/v1/gate/{issuer}/backchannel-logout",
    tag = "gate",
    params(("issuer" = String, Path, description = "The issuer's configured `name`")),
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The logout token was valid and its session or user is revoked (durable, and on its way to every node)", headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Not a form with one `logout_token`, or a logout token that fails a check of Back-Channel Logout 1.0 §2.6 (signature, iss, aud, iat, exp, jti, events, sid/sub, nonce) or was received before; nothing was revoked", body = ErrorBody),
        (status = 404, description = "No issuer of that name, or it has no `backchannel_logout` table", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 503, description = "The issuer's keys were never fetched, or the store is unavailable; nothing was revoked", body = ErrorBody),
    )
)]
pub async fn backchannel_logout(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: Result<axum::Form<LogoutForm>, FormRejection>,
) -> Response {
    let channel = SignalChannel::BackchannelLogout;
    let issuer = match state.issuers.signal_receiver(&name, channel) {
        Ok(issuer) => issuer,
        Err(refusal) => return ApiError::NotFound(refusal.to_string()).into_response(),
    };
    let token = match form {
        Ok(axum::Form(LogoutForm {
            logout_token: Some(token),
        })) if !token.is_empty() => token,
        Ok(_) => return logout_refused("missing form parameter `logout_token`"),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::TooLarge.into_response()
        }
        Err(FormRejection::InvalidFormContentType(_)) => {
            return logout_refused("expected Content-Type: application/x-www-form-urlencoded")
        }
        Err(_) => return logout_refused("the body is not a form with one `logout_token`"),
    };
    let result = state.issuers.signal(issuer, channel, &token).await;
    no_store(signal_answer(
        &state,
        issuer,
        channel,
        result,
        StatusCode::OK,
        |error| logout_refused(&error.to_string()),
    ))
}

/// The media type of a pushed Security Event Token (RFC 8935 §2).
const SECEVENT_JWT: &str = "application/secevent+jwt";

/// An RFC 8935 §2.3 error: 400 `{"err","description"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"err": "invalid_audience", "description": "token audience is not accepted"}))]
pub struct SetErrorBody {
    /// `invalid_request`, `invalid_key`, `invalid_issuer` or `invalid_audience` (RFC 8935
    /// §2.4).
    err: &'static str,
    /// A sentence for humans.
    description: String,
}

fn set_refused(err: &'static str, description: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(SetErrorBody { err, description }),
    )
        .into_response()
}

/// Whether `headers` say the body is a Security Event Token (parameters ignored).
fn is_secevent(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(SECEVENT_JWT))
}

/// `POST /v1/gate/{issuer}/ssf`: RFC 8935 push delivery of a Security Event Token
/// (RFC 8417) from the issuer's Shared Signals transmitter. CAEP `session-revoked` and
/// `credential-change`, RISC `account-disabled` and `sessions-revoked` revoke their
/// subject's session or tokens durably, on every node; other events are accepted and
/// ignored. 202 then, or 400 with RFC 8935's `{"err","description"}` and nothing revoked.
#[utoipa::path(
    post,
    path = "/v1/gate/{issuer}/ssf",
    tag = "gate",
    params(("issuer" = String, Path, description = "The issuer's configured `name`")),
    request_body(content = String, content_type = "application/secevent+jwt", description = "The SET: a JWS in compact form"),
    responses(
        (status = 202, description = "The SET was valid and its events are acted on (durable, and on its way to every node); events tokengate does not know are ignored"),
        (status = 400, description = "Not `application/secevent+jwt`, or a SET that fails a check (`invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience`) or was received before; nothing was revoked", body = SetErrorBody),
        (status = 404, description = "No issuer of that name, or it has no `ssf` table", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 503, description = "The issuer's keys were never fetched, or the store is unavailable; nothing was revoked", body = ErrorBody),
    )
)]
pub async fn security_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let channel = SignalChannel::SharedSignals;
    let issuer = match state.issuers.signal_receiver(&name, channel) {
        Ok(issuer) => issuer,
        Err(refusal) => return ApiError::NotFound(refusal.to_string()).into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::TooLarge.into_response()
        }
        Err(rejection) => return set_refused("invalid_request", rejection.body_text()),
    };
    if !is_secevent(&headers) {
        return set_refused(
            "invalid_request",
            format!("expected Content-Type: {SECEVENT_JWT}"),
        );
    }
    let Ok(token) = std::str::from_utf8(&body) else {
        return set_refused("invalid_request", "the body is not UTF-8".into());
    };
    let result = state.issuers.signal(issuer, channel, token.trim()).await;
    signal_answer(
        &state,
        issuer,
        channel,
        result,
        StatusCode::ACCEPTED,
        |error| set_refused(error.set_error_code(), error.to_string()),
    )
}
