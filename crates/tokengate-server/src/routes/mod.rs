//! The HTTP surface (see `docs/api.md`): one module per area, one router.

pub mod admin;
pub mod auth;
pub mod gate;
pub mod health;
pub mod interop;
pub mod sessions;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::headers::SecurityHeaders;
use crate::metrics::TrackRequestsLayer;
use crate::schema::ErrorBody;
use crate::state::AppState;
use crate::trace::RequestTraceLayer;

/// Request bodies above this get 413 (`docs/api.md`).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The bulk revocation import takes up to 16 MiB.
pub const IMPORT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Every route the router serves, as `(METHOD, PATH)` with axum's `{param}` syntax.
///
/// The router registers each handler through `utoipa_axum::routes!`, so a served route is
/// always in the OpenAPI document; `tests/openapi.rs` checks this list against the document
/// in both directions and calls each entry on a running server. Add a route here when you
/// add one to [`api`]. (The metrics take their route labels from the router itself.)
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/v1/verify"),
    ("GET", "/v1/events/revocations"),
    ("POST", "/oauth2/revoke"),
    ("POST", "/oauth2/introspect"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("POST", "/v1/gate/signout"),
    ("POST", "/v1/gate/{issuer}/revocations"),
    ("POST", "/v1/gate/{issuer}/backchannel-logout"),
    ("POST", "/v1/gate/{issuer}/ssf"),
    ("POST", "/v1/auth/signup"),
    ("POST", "/v1/auth/signin"),
    ("GET", "/v1/auth/me"),
    ("POST", "/v1/auth/signout"),
    ("POST", "/v1/auth/signout-all"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/password"),
    ("GET", "/v1/auth/sessions"),
    ("DELETE", "/v1/auth/sessions/{id}"),
    ("POST", "/v1/admin/users/{id}/revoke"),
    ("POST", "/v1/admin/users/{id}/disable"),
    ("POST", "/v1/admin/revocations"),
    ("POST", "/v1/admin/revocations/issued-before"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("POST", "/signin"),
    ("GET", "/account/sessions"),
    ("POST", "/account/sessions/{id}/signout"),
    ("POST", "/account/signout-all"),
];

/// The hot paths that log nothing: they are answered from the verified token and memory
/// alone (no store, no signing) and their handlers write no log line. [`router`] gives them
/// to [`RequestTraceLayer`], which serves them in a DEBUG rather than an INFO request span,
/// so by default they cost no span; keep a route here only while its handler logs nothing.
pub const QUIET_ROUTES: &[(&str, &str)] = &[("GET", "/v1/verify"), ("GET", "/v1/auth/me")];

/// The API sign-in, whose answers the metrics count by outcome (the pages count their own).
pub const SIGNIN_ROUTE: &str = "/v1/auth/signin";

/// The routes with their OpenAPI operations, before state, fallbacks and outer layers.
/// [`router`] serves it; [`document`] describes it.
pub fn api() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(interop::jwks))
        .routes(routes!(interop::verify))
        .routes(routes!(interop::revocation_events))
        .routes(routes!(interop::revoke))
        .routes(routes!(interop::introspect))
        .routes(routes!(gate::metadata))
        .routes(routes!(gate::signout))
        .routes(routes!(gate::revocations))
        .routes(routes!(gate::backchannel_logout))
        .routes(routes!(gate::security_event))
        .routes(routes!(auth::signup))
        .routes(routes!(auth::signin))
        .routes(routes!(auth::me))
        .routes(routes!(auth::signout))
        .routes(routes!(auth::signout_all))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::change_password))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::delete))
        .routes(routes!(admin::revoke_user))
        .routes(routes!(admin::disable_user))
        .routes(routes!(admin::revoke_issued_before))
        .routes(routes!(crate::metrics::metrics))
        .routes(routes!(crate::pages::signin_page))
        .routes(routes!(crate::pages::signin_submit))
        .routes(routes!(crate::pages::sessions_page))
        .routes(routes!(crate::pages::end_session_submit))
        .routes(routes!(crate::pages::signout_all_submit));
    // The other routes get BODY_LIMIT, set around the whole router (see `router`).
    let import = OpenApiRouter::new()
        .routes(routes!(admin::import))
        .layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT));
    api.merge(import)
}

/// The whole document: the routes of [`api`] on the base of [`crate::openapi::ApiDoc`].
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, document) = api().split_for_parts();
    document
}

/// The document as JSON, built once.
fn document_json() -> Result<&'static str, ApiError> {
    static JSON: OnceLock<String> = OnceLock::new();
    if let Some(json) = JSON.get() {
        return Ok(json);
    }
    let json = document().to_json().map_err(|error| {
        tracing::error!(%error, "cannot serialize the OpenAPI document");
        ApiError::Unavailable("the OpenAPI document is unavailable".into())
    })?;
    Ok(JSON.get_or_init(|| json))
}

/// `GET /openapi.json`: the OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        (status = 503, description = "The document could not be serialized", body = ErrorBody),
    )
)]
pub async fn openapi_json() -> Result<Response, ApiError> {
    let json = document_json()?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

/// The whole HTTP API: the routes, and around them (outermost first) the request id and
/// span ([`RequestTraceLayer`]), the security headers, panics answered as 503 and the
/// default body limit.
///
/// Those layers wrap the router once, so they run once per request on one small service
/// (`Router::layer` would wrap every route and clone each layer per request); serve it with
/// `axum::ServiceExt::into_make_service_with_connect_info`. Only the metrics layer runs
/// after routing, as it needs the matched route.
pub fn router(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
       + Clone
       + Send
       + Sync
       + 'static {
    let (api, _document) = api().split_for_parts();
    let security_headers = SecurityHeaders::for_listen(state.config.listen);
    let proxies = Arc::new(state.config.trusted_proxies.clone());
    let routes = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TrackRequestsLayer::new(state.metrics.clone()).counting_signins_at(SIGNIN_ROUTE))
        .with_state(state);
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(RequestTraceLayer::new(QUIET_ROUTES, proxies))
        .layer(security_headers)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Unavailable("internal error; it has been logged".into()).into_response()
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(routes)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    tokengate_axum::error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method not allowed on this endpoint",
    )
}
