//! `/v1/auth/*`: sign-up, sign-in, refresh, sign-out, password change, `me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokengate_axum::{CredentialSource, Principal, Revoker};
use tokengate_core::Role;
use tokengate_sessions::Issued;
use tokengate_store::User;
use uuid::Uuid;

use crate::client::ClientInfo;
use crate::error::{ApiResult, Json};
use crate::pages::cookies::{set_cookies, Cookies};
use crate::schema::{ErrorBody, JsonBodyRefusals, SignedInRefusals};
use crate::state::AppState;

/// Sign-up and sign-in body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    /// An email address; trimmed and lower-cased.
    #[schema(example = "ada@example.com")]
    email: String,
    /// The password (sign-up checks its strength).
    #[schema(example = "correct horse battery staple")]
    password: String,
}

/// A user as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// User id.
    id: Uuid,
    /// Normalized email address.
    email: String,
    /// `admin` for the first user of a server, `user` otherwise.
    #[schema(value_type = crate::schema::Role)]
    role: Role,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id,
            email: user.email.clone(),
            role: user.role,
        }
    }
}

/// The answer to sign-in and refresh.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token: a JWS (`typ: at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// The refresh token (`tgr_` + 256 random bits), single use.
    pub refresh_token: String,
    /// The session both tokens belong to.
    pub session_id: Uuid,
}

/// `POST /v1/auth/signup`
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Created; the first user of a server becomes `admin`", body = UserView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 403, description = "Sign-up is disabled (`signup_disabled`)", body = ErrorBody),
        (status = 409, description = "An account with this email exists", body = ErrorBody),
        JsonBodyRefusals,
        (status = 422, description = "Missing fields, an invalid email (look-alike and invisible characters included) or a weak password", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this client's network (`too_many_requests`); checked before any work", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the window lets the client try again"))),
        (status = 503, description = "The store or password hashing is unavailable", body = ErrorBody),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(body): Json<Credentials>,
) -> ApiResult<Response> {
    let user = state
        .sessions
        .signup(&body.email, body.password, &client.into())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(&user))).into_response())
}

/// `POST /v1/auth/signin`
#[utoipa::path(
    post,
    path = "/v1/auth/signin",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "A new session with its access and refresh tokens", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Wrong email or password (`invalid_grant`): the same answer after the same work either way", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        JsonBodyRefusals,
        (status = 422, description = "Missing or mistyped fields", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins for this account from this client, or from this client's IP across accounts (`too_many_requests`); checked before the password", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the failure window lets the client try again"))),
        (status = 503, description = "The store or password hashing is unavailable", body = ErrorBody),
    )
)]
pub async fn signin(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(body): Json<Credentials>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let issued = state
        .sessions
        .signin(&body.email, body.password, &client.into())
        .await?;
    Ok(axum::Json(TokenResponse::from(issued)))
}

impl From<Issued> for TokenResponse {
    fn from(issued: Issued) -> Self {
        TokenResponse {
            expires_in: issued.expires_in(),
            access_token: issued.access_token,
            token_type: "Bearer",
            refresh_token: issued.refresh_token,
            session_id: issued.session_id,
        }
    }
}

/// What `GET /v1/auth/me` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// User id (`sub`).
    id: Uuid,
    /// Email address.
    email: String,
    /// `user` or `admin`.
    #[schema(value_type = crate::schema::Role)]
    role: Role,
    /// Session id (`sid`).
    session_id: Uuid,
}

/// `GET /v1/auth/me`: straight from the verified token, no database access.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The caller, from the verified token", body = Me),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 503, description = "The revocation index is stale (`fail_closed`)", body = ErrorBody),
    )
)]
pub async fn me(principal: Principal) -> axum::Json<Me> {
    let c = principal.claims;
    axum::Json(Me {
        id: c.sub,
        email: c.email,
        role: c.role,
        session_id: c.sid,
    })
}

/// `POST /v1/auth/signout`: revoke the caller's whole session (every access token of it
/// and its refresh token), durably, before answering 204.
#[utoipa::path(
    post,
    path = "/v1/auth/signout",
    tag = "auth",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "The session is revoked: every access token of it and its refresh token; a cookie-authenticated caller's cookie is cleared"),
        SignedInRefusals,
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn signout(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
) -> ApiResult<Response> {
    state
        .sessions
        .sign_out(principal.user_id(), principal.session_id())
        .await?;
    Ok(no_content_clearing_cookies(&state, principal.source))
}

/// `POST /v1/auth/signout-all`: revoke every session of the caller.
#[utoipa::path(
    post,
    path = "/v1/auth/signout-all",
    tag = "auth",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Every session of the caller is revoked; a cookie-authenticated caller's cookie is cleared"),
        SignedInRefusals,
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn signout_all(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
) -> ApiResult<Response> {
    state
        .sessions
        .sign_out_everywhere(principal.user_id())
        .await?;
    Ok(no_content_clearing_cookies(&state, principal.source))
}

/// 204; a cookie-authenticated caller also gets the pages' cleared session and refresh
/// cookies (with the same flags as when they were set, so the browser drops them).
fn no_content_clearing_cookies(state: &AppState, source: CredentialSource) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if source == CredentialSource::Cookie {
        set_cookies(response.headers_mut(), Cookies::for_state(state).cleared());
    }
    response
}

/// Refresh body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    /// The refresh token from sign-in or the previous refresh.
    refresh_token: String,
}

/// `POST /v1/auth/refresh`: single use. A token presented twice is taken as stolen: the
/// whole session is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access and refresh token for the same session", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Unknown, expired, malformed or ended refresh token; a reused one also revokes its session (`invalid_grant`)", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        JsonBodyRefusals,
        (status = 422, description = "Missing or mistyped fields", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let issued = state.sessions.refresh(&body.refresh_token).await?;
    Ok(axum::Json(TokenResponse::from(issued)))
}

/// Password change body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    /// The password in force.
    current_password: String,
    /// The new password (strength-checked).
    new_password: String,
}

/// `POST /v1/auth/password`: change the password and revoke every other session.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every other session of the user is revoked"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No credential, an invalid, expired or revoked one, or the user no longer exists", body = ErrorBody),
        (status = 403, description = "The current password is wrong (`invalid_grant`), or a cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        JsonBodyRefusals,
        (status = 422, description = "Missing fields or a weak new password", body = ErrorBody),
        (status = 429, description = "Too many wrong current passwords for this account from this client (the sign-in throttle, `too_many_requests`); checked before the password", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the failure window lets the client try again"))),
        (status = 503, description = "The store or password hashing is unavailable, or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    Json(body): Json<PasswordChange>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .change_password(
            principal.user_id(),
            principal.session_id(),
            body.current_password,
            body.new_password,
            &client.into(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
