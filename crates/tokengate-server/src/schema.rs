//! The shapes of the API's answers that more than one module needs, and the OpenAPI schemas
//! of types that live in other crates or are built as JSON values (the error body, the
//! JWKS, roles). A leaf: it uses nothing of this crate, so handlers, pages and the OpenAPI
//! document can all refer to it.

use serde::Serialize;
use tokengate_core::Timestamp;
use tokengate_sessions::LiveSession;
use utoipa::ToSchema;
use uuid::Uuid;

/// A session as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: Uuid,
    /// Sign-in time (RFC 3339).
    pub created_at: String,
    /// Last request seen (RFC 3339).
    pub last_seen_at: String,
    /// `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// Client IP at sign-in.
    pub ip: Option<String>,
    /// Whether this is the session of the calling token.
    pub current: bool,
}

/// Format Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.as_secs())
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl From<LiveSession> for SessionView {
    fn from(live: LiveSession) -> Self {
        SessionView {
            id: live.session.id,
            created_at: rfc3339(live.session.created_at),
            last_seen_at: rfc3339(live.last_seen_at),
            user_agent: live.session.user_agent,
            ip: live.session.ip,
            current: live.current,
        }
    }
}

/// The body of every error (`tokengate_axum::ErrorBody`).
#[derive(ToSchema)]
#[schema(example = json!({"error": "invalid_token", "error_description": "token has been revoked"}))]
pub struct ErrorBody {
    /// A machine-readable code: `invalid_request`, `invalid_token`, `invalid_grant`,
    /// `insufficient_scope`, `csrf_check_failed`, `account_disabled`, `signup_disabled`,
    /// `not_found`, `conflict`, `request_too_large`, `too_many_requests`,
    /// `temporarily_unavailable`.
    pub error: String,
    /// A sentence for humans.
    pub error_description: String,
}

/// The refusals of every route that takes a user's access token (Bearer or cookie).
#[derive(utoipa::IntoResponses)]
pub enum SignedInRefusals {
    /// No credential, or an invalid, expired or revoked one
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// A cookie-authenticated request from another origin (`csrf_check_failed`)
    #[response(status = 403)]
    CrossOrigin(ErrorBody),
}

/// The refusals of every route that reads a JSON body of at most 64 KiB.
#[derive(utoipa::IntoResponses)]
pub enum JsonBodyRefusals {
    /// The body is over 64 KiB
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not `application/json`
    #[response(status = 415)]
    NotJson(ErrorBody),
}

/// The refusals of the RFC 7009 and RFC 7662 routes, which read a `TokenForm`.
#[derive(utoipa::IntoResponses)]
pub enum TokenFormRefusals {
    /// No `token` parameter, or a malformed form (`invalid_request`)
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// The body is over 64 KiB
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not `application/x-www-form-urlencoded`
    #[response(status = 415)]
    NotForm(ErrorBody),
}

/// The refusals of the signed-in pages' sign-out forms.
#[derive(utoipa::IntoResponses)]
pub enum SignoutFormRefusals {
    /// A missing or wrong CSRF token, or a cross-origin form
    #[response(status = 403, content_type = "text/html")]
    Csrf(String),
    /// The body is not `application/x-www-form-urlencoded`
    #[response(status = 415)]
    NotForm(ErrorBody),
    /// The store is unavailable; nothing was signed out
    #[response(status = 503, content_type = "text/html")]
    Unavailable(String),
}

/// The refusals of every admin route.
#[derive(utoipa::IntoResponses)]
pub enum AdminRefusals {
    /// No credential, or an invalid, expired or revoked one
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The caller is not an admin (`insufficient_scope`), or a cookie-authenticated request
    /// from another origin (`csrf_check_failed`)
    #[response(status = 403)]
    NotAdmin(ErrorBody),
}

/// The refusals of the `IssuerCaller` extractor (a gate issuer's revocation endpoint).
#[derive(utoipa::IntoResponses)]
pub enum IssuerCallerRefusals {
    /// Neither a client of this issuer (HTTP Basic, `invalid_client`) nor a valid Bearer token
    #[response(status = 401)]
    NotAClient(ErrorBody),
    /// A Bearer token that is not an admin's (`insufficient_scope`)
    #[response(status = 403)]
    NotAdmin(ErrorBody),
    /// No issuer of that name
    #[response(status = 404)]
    UnknownIssuer(ErrorBody),
}

/// The refusals of the `Introspector` extractor (RFC 7662 introspection).
#[derive(utoipa::IntoResponses)]
pub enum IntrospectorRefusals {
    /// The caller is not authenticated as an admin
    #[response(status = 401)]
    NotAdmin(ErrorBody),
    /// A cookie-authenticated request from another origin (`csrf_check_failed`)
    #[response(status = 403)]
    CrossOrigin(ErrorBody),
}

/// What a user may do (`tokengate_core::Role`); the first user of a server is an admin.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary user.
    User,
    /// May call the admin endpoints and introspect tokens.
    Admin,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` (200) or `not_ready` (503).
    #[schema(example = "ready")]
    pub status: String,
    /// `ok` or `unreachable`.
    #[schema(example = "ok")]
    pub store: String,
    /// `current` or `stale`.
    #[schema(example = "current")]
    pub revocation_index: String,
    /// Age in milliseconds of the newest proof that the index has seen every acknowledged
    /// revocation (stale once it passes `max_staleness`); null if there never was one.
    #[schema(example = 312)]
    pub revocation_index_lag_ms: Option<u64>,
    /// Entries in this node's revocation index.
    pub revocations: u64,
    /// Gate issuers whose keys were never fetched (their tokens get 503 until then).
    pub issuers_not_ready: Vec<String>,
}

/// A public key (RFC 7517); never private or symmetric material.
#[derive(ToSchema)]
pub struct Jwk {
    /// `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Matched against a token's `kid` header.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[schema(rename = "use")]
    pub use_: String,
    /// `Ed25519` (OKP) or `P-256` (EC).
    #[schema(nullable = false)]
    pub crv: Option<String>,
    /// x coordinate (OKP, EC), base64url.
    #[schema(nullable = false)]
    pub x: Option<String>,
    /// y coordinate (EC), base64url.
    #[schema(nullable = false)]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[schema(nullable = false)]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[schema(nullable = false)]
    pub e: Option<String>,
}

/// `GET /.well-known/jwks.json`: the current key and, after a rotation, the previous ones
/// until the tokens they signed have expired. Empty under HS256.
#[derive(ToSchema)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One entry of `POST /v1/admin/revocations`.
#[derive(ToSchema)]
pub struct RevocationEntry {
    /// The revoked token's `jti` (UUID text).
    pub jti: Uuid,
    /// Its `exp`, Unix seconds (positive).
    pub exp: i64,
}

/// `POST /oauth2/introspect` (RFC 7662). Only `active` when the token is not active.
#[derive(ToSchema)]
pub struct Introspection {
    /// Whether the token is valid, unexpired and not revoked.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[schema(nullable = false)]
    pub token_type: Option<String>,
    /// Issuer (access tokens).
    #[schema(nullable = false)]
    pub iss: Option<String>,
    /// User id.
    #[schema(nullable = false)]
    pub sub: Option<Uuid>,
    /// Audience (access tokens).
    #[schema(nullable = false)]
    pub aud: Option<String>,
    /// Issued at (Unix seconds); for a refresh token, when its session began.
    #[schema(nullable = false)]
    pub iat: Option<i64>,
    /// Not before (access tokens).
    #[schema(nullable = false)]
    pub nbf: Option<i64>,
    /// Expiry (Unix seconds).
    #[schema(nullable = false)]
    pub exp: Option<i64>,
    /// Token id (access tokens).
    #[schema(nullable = false)]
    pub jti: Option<Uuid>,
    /// Session id.
    #[schema(nullable = false)]
    pub sid: Option<Uuid>,
    /// The user's email (access tokens).
    #[schema(nullable = false)]
    pub username: Option<String>,
    /// The user's email (access tokens).
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// The user's role (access tokens).
    #[schema(nullable = false)]
    pub role: Option<Role>,
}
