//! Sign-in, a protected route and sign-out: the HTTP side of embedding tokengate; the
//! session service decides, these handlers translate.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokengate_axum::{error_response, Principal};
use tokengate_sessions::{Client, SigninError, Unavailable};
use uuid::Uuid;

use crate::AppState;

/// Why a request to one of this app's own routes failed. (A refused token never gets here:
/// the [`Principal`] extractor answers that itself, 401 with `WWW-Authenticate`.)
#[derive(Debug)]
pub enum AppError {
    /// The body is not the JSON the route expects (400, 415, 422 or 413).
    BadRequest(JsonRejection),
    /// Why the session service refused a sign-in.
    Signin(SigninError),
    /// The store failed: nothing was done, retry.
    Unavailable(Unavailable),
}

impl From<SigninError> for AppError {
    fn from(error: SigninError) -> Self {
        AppError::Signin(error)
    }
}

impl From<Unavailable> for AppError {
    fn from(error: Unavailable) -> Self {
        AppError::Unavailable(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::BadRequest(rejection) => {
                return error_response(
                    rejection.status(),
                    "invalid_request",
                    &rejection.body_text(),
                )
            }
            AppError::Signin(SigninError::Invalid) => (StatusCode::UNAUTHORIZED, "invalid_grant"),
            AppError::Signin(SigninError::Disabled) => (StatusCode::FORBIDDEN, "account_disabled"),
            AppError::Signin(SigninError::Throttled { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            AppError::Signin(SigninError::Unavailable(error)) | AppError::Unavailable(error) => {
                tracing::error!(%error, "request failed");
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        };
        error_response(status, code, &self.to_string())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::BadRequest(rejection) => write!(f, "{}", rejection.body_text()),
            AppError::Signin(SigninError::Unavailable(_)) | AppError::Unavailable(_) => {
                f.write_str("the database is unavailable; nothing was changed, retry shortly")
            }
            AppError::Signin(error) => write!(f, "{error}"),
        }
    }
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

/// `POST /login`: the session service checks the password (an unknown email and a wrong
/// one get the same answer after the same work, behind the sign-in throttle), starts a
/// session in the store and mints a token for it.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, AppError> {
    let Json(body) = body.map_err(AppError::BadRequest)?;
    let client = Client {
        ip: None,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let issued = state
        .sessions
        .signin(&body.email, body.password, &client)
        .await?;
    // The refresh token stays unused: this app hands out none, and the session ends with
    // the access token (`refresh_ttl = ACCESS_TTL`).
    Ok(Json(LoginResponse {
        access_token: issued.access_token,
        session_id: issued.session_id,
    }))
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
    // Applying it to the index also tells the subscribers: the websockets of this session
    // close now.
    state
        .sessions
        .sign_out(principal.user_id(), principal.session_id())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
