//! Who is calling: the peer address and `User-Agent`, as the session service records them
//! with a session and keys its throttles on.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use tokengate_sessions::Client;

/// Who is calling, for the sessions list: the peer address and `User-Agent`.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// The TCP peer (the proxy's address when behind one).
    pub ip: Option<IpAddr>,
    /// The `User-Agent`, truncated to 256 characters.
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
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
