//! Server-rendered pages: `GET /` (sign-in form), `POST /signin`, `GET /account/sessions`
//! ("where am I signed in"), and the forms that sign a session, or every session, out.
//!
//! The page session is the API's: the `tokengate_session` cookie holds an access token and
//! every page authenticates with the same [`Principal`]/[`Revoker`] extractors as the API
//! (which refuse a cross-origin cookie POST). A second HttpOnly cookie holds the refresh
//! token, sent only to `/account/*`: when the access cookie has expired, the account page
//! renews it through the session service's refresh, as the API does (single use, reuse
//! detection included).
//! Every form also carries a double-submit CSRF token ([`cookies`]).
//!
//! Messages after a redirect travel as a short code in `?m=` that maps to fixed text, so
//! nothing from the URL is ever echoed into a page.

pub mod cookies;
pub mod device;
pub mod view;

use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::Markup;
use serde::Deserialize;
use tokengate_axum::{AuthError, Principal, Revoker, SESSION_COOKIE};
use tokengate_core::VerifyError;
use tokengate_sessions::{
    looks_like_refresh_token, EndSessionError, Issued, SigninError, Unavailable,
};

use crate::client::ClientInfo;
use crate::error::{ApiError, Form};
use crate::metrics::SigninOutcome;
use crate::state::AppState;
use cookies::{csrf_cookie, csrf_matches, new_csrf_token, set_cookies, Cookies};

/// Where a signed-in browser lands.
pub const SESSIONS_PATH: &str = "/account/sessions";

/// The sign-in form's fields.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SigninForm {
    /// Email address.
    #[serde(default)]
    email: String,
    /// Password.
    #[serde(default)]
    password: String,
    /// The CSRF token of the page (equal to the `tokengate_csrf` cookie).
    #[serde(default)]
    csrf: String,
}

/// The fields of a sign-out form.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    /// The CSRF token of the page (equal to the `tokengate_csrf` cookie).
    #[serde(default)]
    csrf: String,
}

/// A fixed message for a `?m=` code; unknown codes show nothing.
fn message(query: Option<&str>) -> Option<(&'static str, bool)> {
    let code = query?.split('&').find_map(|kv| kv.strip_prefix("m="))?;
    Some(match code {
        "expired" => ("Your session expired. Please sign in again.", true),
        "revoked" => ("This session was signed out. Please sign in again.", true),
        "signedout" => ("You are signed out.", false),
        "signedout_all" => ("You signed out everywhere.", false),
        "ended" => ("That session is signed out.", false),
        "gone" => ("That session had already ended.", false),
        _ => return None,
    })
}

/// A page with `Cache-Control: no-store` (it shows session data and a CSRF token).
fn page(status: StatusCode, markup: Markup, set: Vec<String>) -> Response {
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_cookies(headers, set);
    response
}

/// 303 See Other to `location`, setting `set`.
fn redirect(location: &str, set: Vec<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_cookies(headers, set);
    response
}

/// The request's CSRF token, or a new one with the cookie that sets it.
fn csrf_token(state: &AppState, headers: &HeaderMap) -> (String, Vec<String>) {
    match csrf_cookie(headers) {
        Some(token) => (token.to_owned(), Vec::new()),
        None => {
            let token = new_csrf_token();
            let cookie = Cookies::for_state(state).csrf(&token);
            (token, vec![cookie])
        }
    }
}

fn problem(status: StatusCode, title: &str, text: &str, back: &str) -> Response {
    let mut response = page(status, view::problem(title, text, back), Vec::new());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn csrf_failed(back: &str) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form has expired or was sent from another site. Reload the page and try again.",
        back,
    )
}

/// `GET /`: the sign-in form; a browser with a valid session goes to its sessions.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    responses(
        (status = 200, description = "The sign-in form (HTML); sets the `tokengate_csrf` cookie when absent", content_type = "text/html", body = String),
        (status = 303, description = "Already signed in (valid `tokengate_session` cookie): to `/account/sessions`"),
    )
)]
pub async fn signin_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(token) = tokengate_axum::extract::cookie(&headers, SESSION_COOKIE) {
        if !token.is_empty() && state.gate.authenticate(token).is_ok() {
            return redirect(SESSIONS_PATH, Vec::new());
        }
    }
    let (csrf, set) = csrf_token(&state, &headers);
    let markup = view::signin(&csrf, "", message(query.as_deref()));
    page(StatusCode::OK, markup, set)
}

/// `POST /signin`: check the password (throttled like the API), start a session, set the
/// cookies and go to `/account/sessions`.
#[utoipa::path(
    post,
    path = "/signin",
    tag = "pages",
    request_body(content = SigninForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: sets `tokengate_session` (the access token; HttpOnly, SameSite=Lax, Path=/, Secure unless listening on loopback, Max-Age = access_ttl), `tokengate_refresh` (Path=/account) and a new `tokengate_csrf`; to `/account/sessions`"),
        (status = 401, description = "The form again with \"wrong email or password\"", content_type = "text/html", body = String),
        (status = 403, description = "A missing or wrong CSRF token, a cross-origin form, or a disabled account", content_type = "text/html", body = String),
        (status = 429, description = "Too many failed attempts: the form with \"try again in N s\" and `Retry-After`", content_type = "text/html", body = String),
        (status = 415, description = "The body is not `application/x-www-form-urlencoded`", body = crate::schema::ErrorBody),
        (status = 503, description = "The store or password hashing is unavailable", content_type = "text/html", body = String),
    )
)]
pub async fn signin_submit(
    State(state): State<AppState>,
    client: ClientInfo,
    method: Method,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    if !tokengate_axum::extract::same_origin(&method, &headers)
        || !csrf_matches(&headers, &form.csrf)
    {
        let (csrf, set) = csrf_token(&state, &headers);
        let text = "This form has expired or was sent from another site. Please try again.";
        let markup = view::signin(&csrf, &form.email, Some((text, true)));
        return page(StatusCode::FORBIDDEN, markup, set);
    }
    let result = state
        .sessions
        .signin(&form.email, form.password, &client.into())
        .await;
    let failed = |status: StatusCode, text: &str| {
        let markup = view::signin(&form.csrf, &form.email, Some((text, true)));
        page(status, markup, Vec::new())
    };
    match result {
        Ok(issued) => {
            state.metrics.signin(SigninOutcome::Ok);
            redirect(SESSIONS_PATH, signed_in_cookies(&state, &issued, true))
        }
        Err(SigninError::Throttled { retry_after }) => {
            state.metrics.signin(SigninOutcome::Throttled);
            let text = format!("Too many attempts, try again in {retry_after} s.");
            let mut response = failed(StatusCode::TOO_MANY_REQUESTS, &text);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        Err(SigninError::Disabled) => {
            state.metrics.signin(SigninOutcome::Disabled);
            failed(StatusCode::FORBIDDEN, "This account is disabled.")
        }
        Err(SigninError::Unavailable(error)) => {
            let mut response = failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is unavailable right now. Please try again shortly.",
            );
            ApiError::from(error).answered_by(&mut response);
            response
        }
        Err(SigninError::Invalid) => {
            state.metrics.signin(SigninOutcome::Invalid);
            failed(StatusCode::UNAUTHORIZED, "Wrong email or password.")
        }
    }
}

/// The cookies of a fresh or renewed page session (and a new CSRF token after sign-in).
fn signed_in_cookies(state: &AppState, issued: &Issued, new_csrf: bool) -> Vec<String> {
    let cookies = Cookies::for_state(state);
    let access_age = u64::try_from(issued.expires_in()).unwrap_or(0);
    let mut set = vec![
        cookies.session(&issued.access_token, access_age),
        cookies.refresh(&issued.refresh_token, state.config.refresh_ttl.as_secs()),
    ];
    if new_csrf {
        set.push(cookies.csrf(&new_csrf_token()));
    }
    set
}

/// Renew the page session with the refresh cookie, through the service's refresh (single
/// use: a reused refresh token revokes the session).
async fn renew(state: &AppState, headers: &HeaderMap) -> Option<Issued> {
    let token = tokengate_axum::extract::cookie(headers, cookies::REFRESH_COOKIE)?;
    if !looks_like_refresh_token(token) {
        return None;
    }
    state.sessions.refresh(token).await.ok()
}

/// What an account page does when the extractor refused: renew an expired session and
/// come back to `back`, send a signed-out browser to the sign-in page with a message, or
/// explain.
async fn refused(state: &AppState, headers: &HeaderMap, error: AuthError, back: &str) -> Response {
    let cleared = || Cookies::for_state(state).cleared().to_vec();
    match error {
        AuthError::Missing | AuthError::NotBearer | AuthError::Invalid(VerifyError::Expired) => {
            let had_refresh =
                tokengate_axum::extract::cookie(headers, cookies::REFRESH_COOKIE).is_some();
            match renew(state, headers).await {
                Some(issued) => redirect(back, signed_in_cookies(state, &issued, false)),
                None if had_refresh || matches!(error, AuthError::Invalid(_)) => {
                    redirect("/?m=expired", cleared())
                }
                None => redirect("/", Vec::new()),
            }
        }
        AuthError::Revoked(_) => redirect("/?m=revoked", cleared()),
        AuthError::Invalid(_) => redirect("/?m=expired", cleared()),
        AuthError::Stale => {
            let mut page = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "This server cannot confirm sessions right now. Please try again in a moment.",
                back,
            );
            page.extensions_mut().insert(tokengate_axum::StaleRefusal);
            page
        }
        AuthError::CrossSite => csrf_failed(SESSIONS_PATH),
        AuthError::Forbidden => problem(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You are not allowed to do this.",
            SESSIONS_PATH,
        ),
    }
}

/// `GET /account/sessions`: the caller's sessions, each with a sign-out button.
#[utoipa::path(
    get,
    path = "/account/sessions",
    tag = "pages",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "The caller's live sessions (device, IP, created, last seen, \"this device\") with a sign-out form for each and \"sign out everywhere\"", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to `/` (with a message when the session expired or was signed out); or the session was renewed with the refresh cookie: back here"),
        (status = 503, description = "The store is unavailable or the revocation index is stale", content_type = "text/html", body = String),
    )
)]
pub async fn sessions_page(
    State(state): State<AppState>,
    principal: Result<Principal, AuthError>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let principal = match principal {
        Ok(principal) => principal,
        Err(error) => return refused(&state, &headers, error, SESSIONS_PATH).await,
    };
    let sessions = match state.own_sessions(&principal).await {
        Ok(sessions) => sessions,
        Err(_) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "Your sessions cannot be listed right now. Please try again shortly.",
                SESSIONS_PATH,
            )
        }
    };
    let mut rows: Vec<view::SessionRow> = sessions
        .into_iter()
        .map(|view| view::SessionRow {
            device: device::describe(view.user_agent.as_deref()),
            view,
        })
        .collect();
    // This device first, then the most recently seen.
    rows.sort_by(|a, b| {
        b.view
            .current
            .cmp(&a.view.current)
            .then_with(|| b.view.last_seen_at.cmp(&a.view.last_seen_at))
    });
    let (csrf, set) = csrf_token(&state, &headers);
    let markup = view::sessions(
        &principal.claims.email,
        &csrf,
        &rows,
        message(query.as_deref()),
    );
    page(StatusCode::OK, markup, set)
}

/// `POST /account/sessions/{id}/signout`: sign one of the caller's sessions out.
#[utoipa::path(
    post,
    path = "/account/sessions/{id}/signout",
    tag = "pages",
    security(("session_cookie" = [])),
    params(("id" = String, Path, description = "A session id (UUID) of the caller's")),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out: another session back to `/account/sessions`; this browser's own session to `/` with its cookies cleared; not signed in: to `/`"),
        crate::schema::SignoutFormRefusals,
    )
)]
pub async fn end_session_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    FormCaller(principal): FormCaller,
) -> Response {
    match state.end_own_session(&principal, &id).await {
        Ok(()) if id.parse() == Ok(principal.session_id()) => redirect(
            "/?m=signedout",
            Cookies::for_state(&state).cleared().to_vec(),
        ),
        Ok(()) => redirect("/account/sessions?m=ended", Vec::new()),
        Err(EndSessionError::NotFound) => redirect("/account/sessions?m=gone", Vec::new()),
        Err(EndSessionError::Unavailable(error)) => not_signed_out("The session", error),
    }
}

/// `POST /account/signout-all`: sign every session of the caller out, this one included.
#[utoipa::path(
    post,
    path = "/account/signout-all",
    tag = "pages",
    security(("session_cookie" = [])),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Every session is signed out and this browser's cookies cleared: to `/`; not signed in: to `/`"),
        crate::schema::SignoutFormRefusals,
    )
)]
pub async fn signout_all_submit(
    State(state): State<AppState>,
    FormCaller(principal): FormCaller,
) -> Response {
    match state
        .sessions
        .sign_out_everywhere(principal.user_id())
        .await
    {
        Ok(_) => redirect(
            "/?m=signedout_all",
            Cookies::for_state(&state).cleared().to_vec(),
        ),
        Err(error) => not_signed_out("Your sessions", error),
    }
}

/// The caller of a sign-out form: authenticated as a revoker (a stale index does not stop
/// a sign-out) and with the page's CSRF token in a `CsrfForm` body; otherwise the
/// rejection is the answer to give instead.
pub struct FormCaller(Principal);

impl FromRequest<AppState> for FormCaller {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let revoker = Revoker::from_request_parts(&mut parts, state).await;
        let headers = parts.headers.clone();
        let Form(form) = Form::<CsrfForm>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let principal = match revoker {
            Ok(Revoker(principal)) => principal,
            Err(error) => return Err(refused(state, &headers, error, SESSIONS_PATH).await),
        };
        if !csrf_matches(&headers, &form.csrf) {
            return Err(csrf_failed(SESSIONS_PATH));
        }
        Ok(FormCaller(principal))
    }
}

/// The 503 page of a sign-out the store could not record: `what` was not signed out.
fn not_signed_out(what: &str, error: Unavailable) -> Response {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        &format!(
            "{what} could not be signed out right now; nothing was changed. Please try again shortly."
        ),
        SESSIONS_PATH,
    );
    ApiError::from(error).answered_by(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_message_codes_show_text() {
        assert!(message(Some("m=expired")).is_some());
        assert!(message(Some("x=1&m=signedout")).is_some());
        assert!(message(Some("m=<script>")).is_none());
        assert!(message(None).is_none());
    }
}
