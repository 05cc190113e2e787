//! The server's one error type: every handler returns `Result<_, ApiError>`, and each
//! variant maps to a 4xx or 503 with a JSON body. Nothing maps to a panic.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokengate_axum::{error_response, AuthError};
use tokengate_store::StoreError;

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
    Unauthorized(&'static str, String),
    /// 403 with its `error` code.
    #[error("{1}")]
    Forbidden(&'static str, String),
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

impl From<crate::password::HashError> for ApiError {
    fn from(error: crate::password::HashError) -> Self {
        tracing::error!(%error, "password hashing failed");
        ApiError::Unavailable("password hashing is unavailable; retry shortly".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let description = self.to_string();
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Unauthorized(code, _) => (StatusCode::UNAUTHORIZED, *code),
            ApiError::Forbidden(code, _) => (StatusCode::FORBIDDEN, *code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request")
            }
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            ApiError::Auth(error) => return error.clone().into_response(),
        };
        let mut response = error_response(status, code, &description);
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
