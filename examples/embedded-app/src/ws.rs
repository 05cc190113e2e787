//! A websocket that is closed when its session is revoked.
//!
//! A long-lived connection is authenticated once, at upgrade time; checking the token on
//! every request does nothing for it afterwards. So the socket subscribes to the index
//! ([`RevocationIndex::subscribe`](tokengate_core::RevocationIndex::subscribe)) and closes
//! itself with code [`REVOKED`] as soon as a revocation covering its token is applied —
//! whether this process signed the session out or the tail brought the revocation from
//! another process. It also closes when its token expires ([`EXPIRED`]). Meanwhile it
//! echoes text messages.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokengate_axum::{Gate, Principal};
use tokengate_core::{Claims, Revocation};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::AppState;

/// Close code sent when the socket's token is revoked (4000–4999: for applications).
pub const REVOKED: u16 = 4001;
/// Close code sent when the socket's token expires.
pub const EXPIRED: u16 = 4002;

/// `GET /ws`: [`Principal`] refuses a missing, invalid or revoked token with 401 before
/// any upgrade happens.
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Subscribed before the upgrade; `serve_socket` re-checks once after, which covers a
    // revocation applied between the extractor's check and this line.
    let revocations = state.index().subscribe();
    let gate = Arc::clone(&state.gate);
    upgrade.on_upgrade(move |socket| serve_socket(socket, principal.claims, gate, revocations))
}

/// Why the socket ends.
enum Ending {
    Revoked,
    Expired,
    /// The index is gone: the app is shutting down.
    GoingAway,
    /// The client closed the connection or it broke: nothing to send.
    ClientLeft,
}

async fn serve_socket(
    mut socket: WebSocket,
    claims: Claims,
    gate: Arc<Gate>,
    mut revocations: Receiver<Revocation>,
) {
    let ending = watch(&mut socket, &claims, &gate, &mut revocations).await;
    let frame = match ending {
        Ending::Revoked => (REVOKED, "session revoked"),
        Ending::Expired => (EXPIRED, "token expired"),
        Ending::GoingAway => (axum::extract::ws::close_code::AWAY, "server shutting down"),
        Ending::ClientLeft => return,
    };
    let close = Message::Close(Some(CloseFrame {
        code: frame.0,
        reason: Utf8Bytes::from_static(frame.1),
    }));
    // The client may already be gone; there is nobody left to tell.
    let _ = socket.send(close).await;
}

/// Echo text until the token is revoked or expires, or the client leaves.
async fn watch(
    socket: &mut WebSocket,
    claims: &Claims,
    gate: &Gate,
    revocations: &mut Receiver<Revocation>,
) -> Ending {
    let still_valid = || gate.index().check(claims, gate.clock().now()).is_ok();
    if !still_valid() {
        return Ending::Revoked;
    }
    let expiry = tokio::time::sleep(time_left(claims, gate));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            event = revocations.recv() => match event {
                Ok(revocation) if revocation.covers(claims) => return Ending::Revoked,
                Ok(_) => {}
                // Too slow to see every event: ask the index instead, which has them all.
                Err(RecvError::Lagged(_)) if !still_valid() => return Ending::Revoked,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ending::GoingAway,
            },
            () = &mut expiry => return Ending::Expired,
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return Ending::ClientLeft;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ending::ClientLeft,
                // Pings are answered by the websocket library; binary is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Until the verifier would refuse the token as expired: `exp` plus the leeway.
fn time_left(claims: &Claims, gate: &Gate) -> Duration {
    let deadline = claims.exp.plus(gate.verifier().config().leeway);
    let secs = deadline
        .as_secs()
        .saturating_sub(gate.clock().now().as_secs());
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokengate_core::{Role, Timestamp};
    use uuid::Uuid;

    fn claims() -> Claims {
        Claims {
            iss: "i".into(),
            sub: Uuid::new_v4(),
            aud: "a".into(),
            iat: Timestamp::from_secs(1_000),
            nbf: Timestamp::from_secs(1_000),
            exp: Timestamp::from_secs(1_900),
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            email: "a@example.com".into(),
            role: Role::User,
        }
    }

    #[test]
    fn each_kind_of_revocation_covers_exactly_the_tokens_the_index_refuses() {
        let c = claims();
        let exp = c.exp;
        let at = Timestamp::from_secs;
        let other = Uuid::new_v4();
        let cases = [
            (Revocation::Token { jti: c.jti, exp }, true),
            (Revocation::Token { jti: other, exp }, false),
            (Revocation::Session { sid: c.sid, exp }, true),
            (Revocation::Session { sid: other, exp }, false),
            (
                Revocation::User {
                    sub: c.sub,
                    issued_before: at(1_001),
                    exp,
                },
                true,
            ),
            // Issued in the cutoff's second: a sign-in right after "revoke user" works.
            (
                Revocation::User {
                    sub: c.sub,
                    issued_before: at(1_000),
                    exp,
                },
                false,
            ),
            (
                Revocation::User {
                    sub: other,
                    issued_before: at(1_001),
                    exp,
                },
                false,
            ),
            (
                Revocation::IssuedBefore {
                    issued_before: at(1_001),
                    exp,
                },
                true,
            ),
            (
                Revocation::IssuedBefore {
                    issued_before: at(1_000),
                    exp,
                },
                false,
            ),
        ];
        for (revocation, expected) in cases {
            assert_eq!(revocation.covers(&c), expected, "{revocation:?}");
            let index = tokengate_core::RevocationIndex::new(Duration::ZERO);
            index.apply(&revocation, at(1_000));
            assert_eq!(
                index.check(&c, at(1_000)).is_err(),
                expected,
                "index disagrees on {revocation:?}"
            );
        }
    }
}
