//! Sign-in, a protected route and sign-out: the HTTP side of embedding tokengate.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokengate_axum::{error_response, Principal};
use tokengate_core::{Claims, Timestamp};
use tokengate_store::{NewSession, Store, StoreError, User};
use uuid::Uuid;

use crate::{AppState, ACCESS_TTL, AUDIENCE, ISSUER};

/// Why a request to one of this app's own routes failed. (A refused token never gets here:
/// the [`Principal`] extractor answers that itself, 401 with `WWW-Authenticate`.)
#[derive(Debug)]
pub enum AppError {
    /// The body is not the JSON the route expects (400, 415, 422 or 413).
    BadRequest(JsonRejection),
    /// Unknown email or wrong password: one answer for both.
    InvalidCredentials,
    /// The account was disabled (e.g. with `tokengate user disable`).
    Disabled,
    /// The store failed or the token could not be signed: nothing was done, retry.
    Unavailable,
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store error");
        AppError::Unavailable
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::BadRequest(rejection) => error_response(
                rejection.status(),
                "invalid_request",
                &rejection.body_text(),
            ),
            AppError::InvalidCredentials => error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid email or password",
            ),
            AppError::Disabled => error_response(
                StatusCode::FORBIDDEN,
                "account_disabled",
                "this account is disabled",
            ),
            AppError::Unavailable => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the database is unavailable; nothing was changed, retry shortly",
            ),
        }
    }
}

/// Trim and lower-case an email address, as the store keeps it; `None` if it cannot be one.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let plausible = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    plausible.then_some(email)
}

/// The body of `POST /login`.
#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// The answer to `POST /login`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// The `sid` of the token: ending this session revokes it.
    pub session_id: Uuid,
}

/// `POST /login`: check the password, start a session in the store, mint a token for it.
///
/// An unknown email and a wrong password get the same 401 after the same argon2 work.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, AppError> {
    let Json(body) = body.map_err(AppError::BadRequest)?;
    let user = match normalize_email(&body.email) {
        Some(email) => state.store.user_by_email(&email).await?,
        None => None,
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matched = state.passwords.verify(body.password, hash).await;
    let user = match user {
        Some(user) if matched && user.disabled => return Err(AppError::Disabled),
        Some(user) if matched => user,
        _ => return Err(AppError::InvalidCredentials),
    };

    let now = state.now();
    let sid = Uuid::now_v7();
    let exp = now.plus(ACCESS_TTL);
    let created = state
        .store
        .create_session(NewSession {
            id: sid,
            user_id: user.id,
            created_at: now,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ip: None,
            // The store creates the session only if this is still the user's hash and the
            // user still enabled: a password change or disable racing this sign-in wins.
            password_hash: user.password_hash.clone(),
            access_exp: exp,
            refresh_hash: unusable_refresh_hash(),
            // No refresh tokens here, so the session lives exactly as long as its token.
            refresh_exp: exp,
        })
        .await?;
    if !created {
        return Err(AppError::InvalidCredentials);
    }
    let access_token = mint(&state, &user, sid, now, exp)?;
    tracing::info!(user_id = %user.id, session_id = %sid, "signed in");
    Ok(Json(LoginResponse {
        access_token,
        session_id: sid,
    }))
}

/// The store keeps a refresh token per session, but this app hands none out: it stores the
/// hash of 32 random bytes that are thrown away, so no refresh can ever succeed.
fn unusable_refresh_hash() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Sign an access token for `user` in session `sid`. Every claim is required by the
/// verifier; `jti` is fresh per token and `sid` ties it to the session sign-out ends.
fn mint(
    state: &AppState,
    user: &User,
    sid: Uuid,
    now: Timestamp,
    exp: Timestamp,
) -> Result<String, AppError> {
    let claims = Claims {
        iss: ISSUER.into(),
        sub: user.id,
        aud: AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp,
        jti: Uuid::new_v4(),
        sid,
        email: user.email.clone(),
        role: user.role,
    };
    state.signer.sign(&claims).map_err(|error| {
        tracing::error!(%error, "signing failed");
        AppError::Unavailable
    })
}

/// `GET /hello`: a protected route. Taking a [`Principal`] is all it does to be protected;
/// by the time the handler runs, the token has verified and is not revoked.
pub async fn hello(principal: Principal) -> String {
    format!("hello {}", principal.claims.email)
}

/// `POST /logout`: end the caller's session. The revocation is durable in the store
/// before this process's index learns it, and the index has it before the 204: the very
/// next request with the token gets 401. If the store fails, 503 and nothing is revoked,
/// never a 204 that a restart would forget.
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode, AppError> {
    let now = state.now();
    if let Some(revocation) = state.store.end_session(principal.session_id(), now).await? {
        // Also tells the subscribers: the websockets of this session close now.
        state.index().apply(&revocation, now);
    }
    tracing::info!(session_id = %principal.session_id(), "signed out");
    Ok(StatusCode::NO_CONTENT)
}
