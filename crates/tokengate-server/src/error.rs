//! The server's one error type: every handler returns `Result<_, ApiError>`, and each
//! variant maps to a 4xx or 503 with a JSON body. Nothing maps to a panic.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokengate_axum::{error_response, AuthError};
use tokengate_sessions::{
    AdminError, EndSessionError, PasswordChangeError, RefreshError, SigninError, SignupError,
    Unavailable,
};
use tokengate_store::StoreError;

/// The `error` code of a JSON error body (RFC 6749 §5.2 names where one fits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A malformed or unacceptable request.
    InvalidRequest,
    /// Bad credentials: a wrong password, or an unknown, expired or reused refresh token.
    InvalidGrant,
    /// The access token is not good (its user is gone, or it is not an admin's).
    InvalidToken,
    /// The account is disabled.
    AccountDisabled,
    /// Sign-up is switched off.
    SignupDisabled,
    /// No such resource.
    NotFound,
    /// The request conflicts with what exists.
    Conflict,
    /// The body is over the limit.
    RequestTooLarge,
    /// Throttled.
    TooManyRequests,
    /// The store, password hashing or signing is unavailable.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::SignupDisabled => "signup_disabled",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with `error = invalid_request`.
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed but unacceptable (weak password, invalid email).
    #[error("{0}")]
    Unprocessable(String),
    /// 401 for bad credentials or refresh tokens, with its `error` code.
    #[error("{1}")]
    Unauthorized(ErrorCode, String),
    /// 403 with its `error` code.
    #[error("{1}")]
    Forbidden(ErrorCode, String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body is too large")]
    TooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After` seconds.
    #[error("too many failed attempts; retry after {0} seconds")]
    TooManyRequests(u64),
    /// 503: the store cannot be reached or written; nothing was acknowledged.
    #[error("{0}")]
    Unavailable(String),
    /// The authentication extractor refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            other => {
                crate::metrics::store_error();
                tracing::error!(error = %other, "store error");
                ApiError::Unavailable(
                    "the database is unavailable; nothing was changed, retry shortly".into(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let description = self.to_string();
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            ApiError::Unprocessable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
            }
            ApiError::Unauthorized(code, _) => (StatusCode::UNAUTHORIZED, *code),
            ApiError::Forbidden(code, _) => (StatusCode::FORBIDDEN, *code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::RequestTooLarge),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
            ),
            ApiError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests)
            }
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
            ),
            ApiError::Auth(error) => return error.clone().into_response(),
        };
        let mut response = error_response(status, code.as_str(), &description);
        if let ApiError::TooManyRequests(secs) = self {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// `axum::Json` with our error answers: malformed JSON 400, missing or mistyped fields
/// 422, wrong content type 415, body over the limit 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge;
    }
    match rejection {
        JsonRejection::JsonDataError(e) => {
            ApiError::Unprocessable(format!("invalid request body: {}", e.body_text()))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `axum::Form` with our error answers (for RFC 7009/7662 and the web pages).
#[derive(Debug, Clone, Copy, Default)]
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge)
            }
            Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            )),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

// The session service's errors, each mapped to one answer. The texts are the API's.

impl From<Unavailable> for ApiError {
    fn from(error: Unavailable) -> Self {
        match error {
            Unavailable::Store(error) => ApiError::from(error),
            Unavailable::Hashing(error) => {
                tracing::error!(%error, "password hashing failed");
                ApiError::Unavailable("password hashing is unavailable; retry shortly".into())
            }
            // The service logged the signing error.
            Unavailable::Signing(_) => {
                ApiError::Unavailable("token signing is unavailable; retry shortly".into())
            }
        }
    }
}

fn account_disabled() -> ApiError {
    ApiError::Forbidden(
        ErrorCode::AccountDisabled,
        "this account is disabled".into(),
    )
}

impl From<SignupError> for ApiError {
    fn from(error: SignupError) -> Self {
        match error {
            SignupError::Closed => ApiError::Forbidden(
                ErrorCode::SignupDisabled,
                "sign-up is disabled on this server".into(),
            ),
            SignupError::InvalidEmail(error) => ApiError::Unprocessable(error.to_string()),
            SignupError::WeakPassword(weak) => ApiError::Unprocessable(weak.to_string()),
            SignupError::Exists => {
                ApiError::Conflict("an account with this email already exists".into())
            }
            SignupError::Unavailable(error) => error.into(),
        }
    }
}

impl From<SigninError> for ApiError {
    fn from(error: SigninError) -> Self {
        match error {
            SigninError::Invalid => {
                ApiError::Unauthorized(ErrorCode::InvalidGrant, "invalid email or password".into())
            }
            SigninError::Disabled => account_disabled(),
            SigninError::Throttled { retry_after } => ApiError::TooManyRequests(retry_after),
            SigninError::Unavailable(error) => error.into(),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Disabled => account_disabled(),
            RefreshError::Unavailable(error) => error.into(),
            grant @ (RefreshError::Malformed
            | RefreshError::Unknown
            | RefreshError::Expired
            | RefreshError::Reused
            | RefreshError::SessionEnded) => {
                ApiError::Unauthorized(ErrorCode::InvalidGrant, grant.to_string())
            }
        }
    }
}

impl From<PasswordChangeError> for ApiError {
    fn from(error: PasswordChangeError) -> Self {
        match error {
            PasswordChangeError::UnknownUser => ApiError::Unauthorized(
                ErrorCode::InvalidToken,
                "the user of this token no longer exists".into(),
            ),
            PasswordChangeError::WrongPassword => ApiError::Forbidden(
                ErrorCode::InvalidGrant,
                "current password is incorrect".into(),
            ),
            PasswordChangeError::WeakPassword(weak) => ApiError::Unprocessable(weak.to_string()),
            PasswordChangeError::Unavailable(error) => error.into(),
        }
    }
}

impl From<EndSessionError> for ApiError {
    fn from(error: EndSessionError) -> Self {
        match error {
            EndSessionError::NotFound => ApiError::NotFound("no such session".into()),
            EndSessionError::Unavailable(error) => error.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::InvalidEmail(error) => ApiError::Unprocessable(error.to_string()),
            AdminError::NotFound => ApiError::NotFound("no such user".into()),
            AdminError::SelfDisable => {
                ApiError::Conflict("you cannot disable your own account".into())
            }
            AdminError::Unavailable(error) => error.into(),
        }
    }
}
