//! `tokengate-baseline`: the bare baseline `scripts/bench-http` measures tokengate against.
//!
//! An axum 0.8 server that verifies the `Authorization: Bearer` HS256 token with
//! `jsonwebtoken` (signature, `exp`, `nbf`, `iss`, `aud`; 30 s leeway, like tokengate) and
//! answers `GET /v1/verify` and `GET /v1/auth/me` as tokengate does (the same `X-Auth-*`
//! headers; the same JSON body) — and nothing else: no revocation check, no middleware, no
//! logging. A tokengate HS256 access token minted with the same secret is accepted.
//!
//! `tokengate-baseline --listen 127.0.0.1:0 --secret "$TOKENGATE_HS256_SECRET"`

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Bare axum + jsonwebtoken HS256 verifier, the baseline of scripts/bench-http")]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "TOKENGATE_HS256_SECRET", hide_env_values = true)]
    secret: String,
    /// Expected `iss`.
    #[arg(long, default_value = "tokengate")]
    issuer: String,
    /// Expected `aud`.
    #[arg(long, default_value = "tokengate")]
    audience: String,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: Uuid,
    sid: Uuid,
    email: String,
    role: String,
}

#[derive(Serialize)]
struct Me {
    id: Uuid,
    email: String,
    role: String,
    session_id: Uuid,
}

/// A caller whose token verified.
struct Authenticated(Claims);

impl FromRequestParts<Arc<Verifier>> for Authenticated {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut Parts,
        verifier: &Arc<Verifier>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
            .map(|data| Authenticated(data.claims))
            .map_err(|_| StatusCode::UNAUTHORIZED)
    }
}

async fn verify(Authenticated(c): Authenticated) -> Response {
    let mut headers = HeaderMap::with_capacity(4);
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("x-auth-user-id", c.sub.to_string());
    put("x-auth-email", c.email);
    put("x-auth-role", c.role);
    put("x-auth-session-id", c.sid.to_string());
    (StatusCode::OK, headers).into_response()
}

async fn me(Authenticated(c): Authenticated) -> Json<Me> {
    Json(Me {
        id: c.sub,
        email: c.email,
        role: c.role,
        session_id: c.sid,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.secret.len() < 32 {
        return Err("the HS256 secret must be at least 32 bytes".into());
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.set_issuer(&[&args.issuer]);
    validation.set_audience(&[&args.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let verifier = Arc::new(Verifier {
        key: DecodingKey::from_secret(args.secret.as_bytes()),
        validation,
    });
    let app = Router::new()
        .route("/v1/verify", get(verify))
        .route("/v1/auth/me", get(me))
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "tokengate-baseline listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
