//! The server's one error type: every handler returns `Result<_, ApiError>`, and each
//! variant maps to a 4xx or 503 with a JSON body. Nothing maps to a panic.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::FromRequest;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokengate_axum::{error_response, AuthError};
use tokengate_sessions::{
    AdminError, EndSessionError, PasswordChangeError, RefreshError, SigninError, SignupError,
    Unavailable,
};
use tokengate_store::StoreError;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    #[error("too many attempts; retry after {0} seconds")]
    TooManyRequests(u64),
    /// 503: something this node depends on is unavailable; nothing was acknowledged.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the store cannot be reached or written; nothing was acknowledged. Logged and
    /// counted (`tokengate_store_errors_total`) once, when the response is built.
    #[error("the database is unavailable; nothing was changed, retry shortly")]
    Store(#[source] StoreError),
    /// 503: password hashing or token signing failed; logged once, when the response is
    /// built.
    #[error("{}", match .0 {
        Unavailable::Signing(_) => "token signing is unavailable; retry shortly",
        _ => "password hashing is unavailable; retry shortly",
    })]
    Service(#[source] Unavailable),
    /// The authentication extractor refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A pure conversion: a conflict is a 409, any other store error a 503 that keeps the
/// error as its source. Nothing is logged or counted here (an error may be converted and
/// then handled), only where the response is built ([`StoreFailure::answer`]).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            other => ApiError::Store(other),
        }
    }
}

/// The mark of a response that answers a store error, in its extensions: the metrics layer
/// counts these responses (`tokengate_store_errors_total`), so the count follows what was
/// answered rather than what was converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreFailure;

impl StoreFailure {
    /// Log `error` (inside its request span, at most once per [`STORE_ERROR_LOG_EVERY`]:
    /// see [`STORE_ERRORS`]) and mark `response` as answering it. For any response built
    /// for a store error: the JSON 503 of [`ApiError`] and the pages' own 503 page.
    pub fn answer(error: &StoreError, response: &mut Response) {
        if let Some(not_logged) = STORE_ERRORS.admit(Instant::now()) {
            tracing::error!(
                %error,
                not_logged,
                "store error (the next ones within {}s are counted in tokengate_store_errors_total, not logged)",
                STORE_ERROR_LOG_EVERY.as_secs()
            );
        }
        response.extensions_mut().insert(StoreFailure);
    }
}

/// How often a store error answered may be logged.
pub const STORE_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The store errors answered by this process: an outage of the database refuses every
/// request that needs it, and a line for each would drown the log (issue 15), so one is
/// logged per [`STORE_ERROR_LOG_EVERY`] with the number of those not logged before it.
/// Every one is still counted (`tokengate_store_errors_total`).
pub static STORE_ERRORS: LogThrottle = LogThrottle::new(STORE_ERROR_LOG_EVERY);

/// Lets one log line through per period and counts the others.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    /// When the last line was let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// A throttle letting one line through per `every`.
    pub const fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Forget the last line (tests that expect one).
    #[cfg(test)]
    fn reset(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = (None, 0);
    }

    /// Whether a line may be written at `now`: `Some(held back since the last one)`, or
    /// `None` (counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, held) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

impl ApiError {
    /// Note that `response` answers this error (built by [`IntoResponse::into_response`],
    /// or by a page): a store error is logged and marked for counting
    /// ([`StoreFailure::answer`]), a hashing or signing failure logged; other errors need
    /// nothing.
    pub fn answered_by(&self, response: &mut Response) {
        match self {
            ApiError::Store(error) => StoreFailure::answer(error, response),
            ApiError::Service(error) => tracing::error!(%error, "request failed"),
            _ => {}
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
            ApiError::Unavailable(_) | ApiError::Store(_) | ApiError::Service(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
            ),
            ApiError::Auth(error) => return error.clone().into_response(),
        };
        let mut response = error_response(status, code.as_str(), &description);
        if let ApiError::TooManyRequests(secs) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        self.answered_by(&mut response);
        response
    }
}

/// `axum::Json` with our error answers (see `From<JsonRejection>`): malformed JSON 400,
/// missing or mistyped fields 422, wrong content type 415, body over the limit 413.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
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
}

/// `axum::Form` with our error answers (for RFC 7009/7662 and the web pages; see
/// `From<FormRejection>`): wrong content type 415, body over the limit 413, else 400.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct Form<T>(pub T);

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge;
        }
        match rejection {
            FormRejection::InvalidFormContentType(_) => ApiError::UnsupportedMediaType(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            ),
            other => ApiError::BadRequest(other.body_text()),
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
            other => ApiError::Service(other),
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
            SignupError::Throttled { retry_after } => ApiError::TooManyRequests(retry_after),
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
            PasswordChangeError::Throttled { retry_after } => {
                ApiError::TooManyRequests(retry_after)
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_log_throttle_lets_one_line_through_per_period_and_counts_the_others() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.admit(start + Duration::from_secs(10)), Some(3));
        assert_eq!(throttle.admit(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit(start + Duration::from_secs(25)), Some(1));
    }
    use std::error::Error as _;

    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    /// The log lines written while `f` runs.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        let buffer = crate::test_log::LogBuffer::default();
        let subscriber = buffer.subscriber().finish();
        let _capture = crate::test_log::CAPTURE.blocking_lock();
        let out = tracing::subscriber::with_default(subscriber, || {
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let text = buffer.text();
        (out, text)
    }

    #[test]
    fn converting_a_store_error_has_no_side_effect_and_keeps_its_source() {
        let (error, log) = logged(|| ApiError::from(StoreError::Unavailable("disk full".into())));
        assert_eq!(log, "", "the conversion logs nothing");
        assert!(matches!(error, ApiError::Store(_)), "{error:?}");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("store unavailable: disk full")
        );
        let conflict = ApiError::from(StoreError::Conflict("email".into()));
        assert!(matches!(conflict, ApiError::Conflict(_)), "{conflict:?}");
    }

    #[test]
    fn a_store_error_is_marked_when_answered_and_logged_once_per_period() {
        let answer = || ApiError::from(StoreError::Unavailable("disk full".into())).into_response();
        let (response, log) = logged(|| {
            STORE_ERRORS.reset();
            // An outage: the second answer within the period is counted, not logged.
            let _ = answer();
            answer()
        });
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.extensions().get::<StoreFailure>(),
            Some(&StoreFailure)
        );
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("ERROR") && log.contains("disk full"), "{log}");
        // Other answers carry no mark.
        let other = ApiError::Unavailable("signing".into()).into_response();
        assert!(other.extensions().get::<StoreFailure>().is_none());
        let conflict = ApiError::from(StoreError::Conflict("email".into())).into_response();
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert!(conflict.extensions().get::<StoreFailure>().is_none());
    }

    #[derive(serde::Deserialize)]
    struct Body1 {
        #[allow(dead_code)] // Only its presence and type are checked.
        n: u32,
    }

    async fn status_of(path: &str, content_type: &str, body: &'static str) -> StatusCode {
        let app = Router::new()
            .route("/json", post(|Json(_): Json<Body1>| async { "ok" }))
            .route("/form", post(|Form(_): Form<Body1>| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(64));
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        app.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn json_rejections_keep_their_status() {
        let json = "application/json";
        assert_eq!(
            status_of("/json", json, r#"{"n": 1}"#).await,
            StatusCode::OK
        );
        assert_eq!(status_of("/json", json, "{").await, StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of("/json", json, r#"{"n": "x"}"#).await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of("/json", "text/plain", r#"{"n": 1}"#).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let large = r#"{"n": 1, "padding": "................................................................"}"#;
        assert_eq!(
            status_of("/json", json, large).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn form_rejections_keep_their_status() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(status_of("/form", form, "n=1").await, StatusCode::OK);
        assert_eq!(
            status_of("/form", form, "n=x").await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of("/form", "application/json", "n=1").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let large = "n=1&padding=.................................................................";
        assert_eq!(
            status_of("/form", form, large).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
