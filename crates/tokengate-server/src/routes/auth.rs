//! `/v1/auth/*`: sign-up, sign-in, refresh, sign-out, password change, `me`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokengate_axum::{CredentialSource, Principal, Revoker, SESSION_COOKIE};
use tokengate_core::{Role, Timestamp};
use tokengate_store::{NewSession, NewUser, RefreshOutcome, RefreshRotation, Store, User};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Json};
use crate::openapi::ErrorBody;
use crate::password::{check_strength, Passwords};
use crate::routes::ClientInfo;
use crate::state::{hash_refresh_token, AppState, RefreshToken};

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
    #[schema(value_type = crate::openapi::Role)]
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

/// Trim and lower-case an email address; refuse what cannot be one.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::Unprocessable(
            "email must be an address like name@example.com".into(),
        ))
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized("invalid_grant", "invalid email or password".into())
}

fn account_disabled() -> ApiError {
    ApiError::Forbidden("account_disabled", "this account is disabled".into())
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
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Missing fields, an invalid email or a weak password", body = ErrorBody),
        (status = 503, description = "The store or password hashing is unavailable", body = ErrorBody),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> ApiResult<Response> {
    if !state.config.allow_signup {
        return Err(ApiError::Forbidden(
            "signup_disabled",
            "sign-up is disabled on this server".into(),
        ));
    }
    let email = normalize_email(&body.email)?;
    check_strength(&body.password, &email)
        .map_err(|weak| ApiError::Unprocessable(weak.to_string()))?;
    let user = create_user(
        state.store.as_ref(),
        &state.passwords,
        email,
        body.password,
        Role::User,
        state.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(&user))).into_response())
}

/// Hash the password and create the user (the first user of a store becomes admin).
pub async fn create_user(
    store: &dyn Store,
    passwords: &Passwords,
    email: String,
    password: String,
    role: Role,
    now: Timestamp,
) -> ApiResult<User> {
    if store.user_by_email(&email).await?.is_some() {
        return Err(ApiError::Conflict(
            "an account with this email already exists".into(),
        ));
    }
    let password_hash = passwords.hash(password).await?;
    let user = store
        .create_user(NewUser {
            id: Uuid::now_v7(),
            email,
            password_hash,
            role,
            created_at: now,
        })
        .await
        .map_err(|e| match e {
            tokengate_store::StoreError::Conflict(_) => {
                ApiError::Conflict("an account with this email already exists".into())
            }
            other => other.into(),
        })?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user created");
    Ok(user)
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
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
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
    let user = throttled_authenticate(&state, &client, &body.email, body.password).await?;
    let now = state.now();
    let issued = start_session(&state, &user, &client, now).await?;
    Ok(axum::Json(issued))
}

/// [`authenticate_password`] behind the sign-in throttle: past the limit of failed
/// attempts (per email and client IP, and per IP) the answer is 429 before any password
/// work. The attempt is counted before the check, so concurrent guesses cannot exceed the
/// limit; a right password takes the count back and clears this client's counter.
pub async fn throttled_authenticate(
    state: &AppState,
    client: &ClientInfo,
    raw_email: &str,
    password: String,
) -> ApiResult<User> {
    state
        .throttle
        .begin(raw_email, client.ip, state.now())
        .map_err(|retry| ApiError::TooManyRequests(retry.0))?;
    let result = authenticate_password(state, raw_email, password).await;
    match &result {
        // The password was right (a disabled account is only revealed to its owner).
        Ok(_) | Err(ApiError::Forbidden(..)) => {
            state
                .throttle
                .record_success(raw_email, client.ip, state.now())
        }
        // A wrong password or unknown email stays counted; so does an outage (503),
        // conservatively.
        Err(_) => {}
    }
    result
}

/// Check an email and password with the same answer and the same work whether the email
/// is unknown or the password wrong. A disabled account is only revealed to a caller who
/// knows its password.
pub async fn authenticate_password(
    state: &AppState,
    raw_email: &str,
    password: String,
) -> ApiResult<User> {
    let user = match normalize_email(raw_email) {
        Ok(email) => state.store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matched = state.passwords.verify(password, hash).await;
    match user {
        Some(user) if matched && user.disabled => Err(account_disabled()),
        Some(user) if matched => Ok(user),
        _ => Err(invalid_credentials()),
    }
}

/// Create a session for `user` and mint its first access and refresh tokens.
pub async fn start_session(
    state: &AppState,
    user: &User,
    client: &ClientInfo,
    now: Timestamp,
) -> ApiResult<TokenResponse> {
    let sid = Uuid::now_v7();
    let access_exp = state.access_exp(now);
    let refresh = RefreshToken::generate();
    let created = state
        .store
        .create_session(NewSession {
            id: sid,
            user_id: user.id,
            created_at: now,
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            password_hash: user.password_hash.clone(),
            access_exp,
            refresh_hash: refresh.hash,
            refresh_exp: now.plus(state.config.refresh_ttl),
        })
        .await?;
    if !created {
        // The password changed or the account was disabled while the password was being
        // checked: the credentials are no longer good.
        return Err(invalid_credentials());
    }
    let access = state.mint(user, sid, now, access_exp).await?;
    tracing::info!(user_id = %user.id, session_id = %sid, "signed in");
    Ok(token_response(
        access.token,
        access.exp,
        now,
        refresh.text,
        sid,
    ))
}

fn token_response(
    access_token: String,
    exp: Timestamp,
    now: Timestamp,
    refresh_token: String,
    sid: Uuid,
) -> TokenResponse {
    TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: exp.as_secs().saturating_sub(now.as_secs()),
        refresh_token,
        session_id: sid,
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
    #[schema(value_type = crate::openapi::Role)]
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
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "A cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn signout(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
) -> ApiResult<Response> {
    let now = state.now();
    if let Some(revocation) = state.store.end_session(principal.session_id(), now).await? {
        state.apply(&[revocation]);
    }
    tracing::info!(user_id = %principal.user_id(), session_id = %principal.session_id(), "signed out");
    Ok(no_content_clearing_cookie(principal.source))
}

/// `POST /v1/auth/signout-all`: revoke every session of the caller.
#[utoipa::path(
    post,
    path = "/v1/auth/signout-all",
    tag = "auth",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Every session of the caller is revoked; a cookie-authenticated caller's cookie is cleared"),
        (status = 401, description = "No credential, or an invalid, expired or revoked one", body = ErrorBody),
        (status = 403, description = "A cookie-authenticated request from another origin (`csrf_check_failed`)", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was revoked (a stale revocation index does not stop a sign-out)", body = ErrorBody),
    )
)]
pub async fn signout_all(
    State(state): State<AppState>,
    Revoker(principal): Revoker,
) -> ApiResult<Response> {
    let now = state.now();
    let revocations = state
        .store
        .end_user_sessions(principal.user_id(), None, now)
        .await?;
    state.apply(&revocations);
    tracing::info!(user_id = %principal.user_id(), sessions = revocations.len(), "signed out everywhere");
    Ok(no_content_clearing_cookie(principal.source))
}

fn no_content_clearing_cookie(source: CredentialSource) -> Response {
    let mut headers = HeaderMap::new();
    if source == CredentialSource::Cookie {
        if let Ok(value) =
            format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax").parse()
        {
            headers.insert(header::SET_COOKIE, value);
        }
    }
    (StatusCode::NO_CONTENT, headers).into_response()
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
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Missing or mistyped fields", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    if !looks_like_refresh_token(&body.refresh_token) {
        return Err(ApiError::Unauthorized(
            "invalid_grant",
            "malformed refresh token".into(),
        ));
    }
    let now = state.now();
    let next = RefreshToken::generate();
    let access_exp = state.access_exp(now);
    let outcome = state
        .store
        .rotate_refresh(RefreshRotation {
            presented_hash: hash_refresh_token(&body.refresh_token),
            new_hash: next.hash,
            new_refresh_exp: now.plus(state.config.refresh_ttl),
            new_access_exp: access_exp,
            now,
            grace: state.config.refresh_grace,
        })
        .await?;
    let grant = |text: &str| Err(ApiError::Unauthorized("invalid_grant", text.to_owned()));
    match outcome {
        RefreshOutcome::Rotated { session, user } => {
            let access = state.mint(&user, session.id, now, access_exp).await?;
            Ok(axum::Json(token_response(
                access.token,
                access.exp,
                now,
                next.text,
                session.id,
            )))
        }
        RefreshOutcome::Reused { revocation } => {
            state.apply(&[revocation]);
            tracing::warn!(session_id = %revocation.subject_id(), "refresh token reused; session revoked");
            grant("refresh token was already used; the session has been revoked")
        }
        RefreshOutcome::Unknown => grant("unknown refresh token"),
        RefreshOutcome::Expired => grant("refresh token has expired"),
        RefreshOutcome::SessionEnded => grant("the session of this refresh token has ended"),
        RefreshOutcome::UserDisabled => Err(account_disabled()),
    }
}

/// `tgr_` + 43 base64url characters.
pub fn looks_like_refresh_token(text: &str) -> bool {
    text.strip_prefix("tgr_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
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
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Missing fields or a weak new password", body = ErrorBody),
        (status = 503, description = "The store or password hashing is unavailable, or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<PasswordChange>,
) -> ApiResult<StatusCode> {
    let user = state
        .store
        .user_by_id(principal.user_id())
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "invalid_token",
                "the user of this token no longer exists".into(),
            )
        })?;
    if !state
        .passwords
        .verify(body.current_password, Some(user.password_hash.clone()))
        .await
    {
        return Err(ApiError::Forbidden(
            "invalid_grant",
            "current password is incorrect".into(),
        ));
    }
    check_strength(&body.new_password, &user.email)
        .map_err(|weak| ApiError::Unprocessable(weak.to_string()))?;
    let hash = state.passwords.hash(body.new_password).await?;
    // One transaction: the new hash and the end of every other session land together, and
    // a sign-in still checking the old password can no longer create a session.
    let now = state.now();
    let revocations = state
        .store
        .change_password(user.id, &hash, Some(principal.session_id()), now)
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "invalid_token",
                "the user of this token no longer exists".into(),
            )
        })?;
    state.apply(&revocations);
    tracing::info!(user_id = %user.id, revoked_sessions = revocations.len(), "password changed");
    Ok(StatusCode::NO_CONTENT)
}
