//! Who is calling: the client's address and `User-Agent`, as the session service records
//! them with a session and keys its throttles on, and as the request span logs the address.
//!
//! The address is the TCP peer, or behind trusted reverse proxies (`trusted_proxies`) the
//! one [`TrustedProxies::client_ip`] reads from `Forwarded` / `X-Forwarded-For`:
//! [`client_ip`] is the only place it is resolved, for throttles, sessions and logs alike.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap};
use tokengate_axum::TrustedProxies;
use tokengate_sessions::Client;

use crate::state::AppState;

/// Who is calling, for the throttles and the sessions list: the client's address and
/// `User-Agent`.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// The client's address: the TCP peer, or the address a trusted proxy forwarded.
    pub ip: Option<IpAddr>,
    /// The `User-Agent`, truncated to 256 characters.
    pub user_agent: Option<String>,
}

/// The client's address of a request: its TCP peer (the `ConnectInfo` the listener puts in
/// the extensions), resolved through `proxies`' forwarding headers; `None` for a request
/// that came through no listener (an in-process call).
pub fn client_ip(
    proxies: &TrustedProxies,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| proxies.client_ip(peer.ip(), headers))
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(
            &state.config.trusted_proxies,
            &parts.extensions,
            &parts.headers,
        );
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}

impl From<ClientInfo> for Client {
    fn from(client: ClientInfo) -> Self {
        Client {
            ip: client.ip,
            user_agent: client.user_agent,
        }
    }
}
