#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The example app served in-process on a loopback port: sign-in, the protected route, the
//! websocket, and revocation arriving both from this process's sign-out and from another
//! process writing to the same database.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tempfile::TempDir;
use tokengate_core::{Clock, SystemClock};
use tokengate_example_embedded::routes::LoginResponse;
use tokengate_example_embedded::{App, DATABASE_FILE};
use tokengate_store::{SqliteStore, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct-horse-battery";
/// Liveness bounds, not timing assertions: a revocation must arrive, not arrive fast.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
const TAIL_WITHIN: Duration = Duration::from_secs(3);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Running {
    dir: TempDir,
    base: String,
    ws_url: String,
    http: reqwest::Client,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(dir.path()).await.unwrap();
    app.seed_user(EMAIL, PASSWORD).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    Running {
        dir,
        base: format!("http://{addr}"),
        ws_url: format!("ws://{addr}/ws"),
        http: reqwest::Client::new(),
    }
}

impl Running {
    async fn login(&self) -> LoginResponse {
        let response = self
            .http
            .post(format!("{}/login", self.base))
            .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn hello(&self, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/hello", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn open_ws(&self, token: &str) -> Socket {
        let mut request = self.ws_url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        socket
    }

    fn database(&self) -> std::path::PathBuf {
        self.dir.path().join(DATABASE_FILE)
    }
}

async fn assert_echoes(socket: &mut Socket) {
    socket.send(Message::text("ping 1")).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "ping 1"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// The close frame the server sends, skipping anything before it.
async fn close_frame(socket: &mut Socket) -> CloseFrame {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("websocket failed before a close frame: {error}"),
                None => panic!("websocket ended without a close frame"),
            }
        }
    };
    tokio::time::timeout(CLOSE_WITHIN, wait)
        .await
        .expect("no close frame after the revocation")
}

fn assert_closed_as_revoked(frame: &CloseFrame) {
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "session revoked");
}

async fn assert_refused_with_challenge(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("a 401 without WWW-Authenticate")
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
}

async fn end_session_from_another_process(database: &Path, sid: uuid::Uuid) {
    let other = SqliteStore::open(database).await.unwrap();
    let revocation = other.end_session(sid, SystemClock.now()).await.unwrap();
    assert!(revocation.is_some(), "the session is unknown to the store");
}

#[tokio::test]
async fn logout_refuses_the_token_and_closes_its_websocket() {
    let app = start().await;
    let login = app.login().await;
    let token = login.access_token.as_str();

    let hello = app.hello(token).await;
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text().await.unwrap(), format!("hello {EMAIL}"));

    let mut socket = app.open_ws(token).await;
    assert_echoes(&mut socket).await;

    let logout = app
        .http
        .post(format!("{}/logout", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    assert_closed_as_revoked(&close_frame(&mut socket).await);
    assert_refused_with_challenge(app.hello(token).await).await;
}

#[tokio::test]
async fn a_session_ended_by_another_process_reaches_the_app_through_the_tail() {
    let app = start().await;
    let login = app.login().await;
    let token = login.access_token.as_str();
    let mut socket = app.open_ws(token).await;
    assert_echoes(&mut socket).await;
    assert_eq!(app.hello(token).await.status(), StatusCode::OK);

    // What `tokengate revoke --session` does: a durable revocation in the shared database,
    // and nothing else. Only the tail can bring it to the running app.
    end_session_from_another_process(&app.database(), login.session_id).await;

    let refused = tokio::time::timeout(TAIL_WITHIN, async {
        loop {
            let response = app.hello(token).await;
            if response.status() != StatusCode::OK {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the revocation never reached the app");
    assert_refused_with_challenge(refused).await;
    assert_closed_as_revoked(&close_frame(&mut socket).await);
}

#[tokio::test]
async fn a_revoked_token_cannot_open_a_websocket_and_other_sessions_are_untouched() {
    let app = start().await;
    let first = app.login().await;
    let second = app.login().await;
    let mut other_socket = app.open_ws(&second.access_token).await;

    let logout = app
        .http
        .post(format!("{}/logout", app.base))
        .bearer_auth(&first.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", first.access_token).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        Err(other) => panic!("expected an HTTP 401, got {other}"),
        Ok(_) => panic!("a revoked token opened a websocket"),
    }

    // The other session's socket still echoes, and its token still works.
    assert_echoes(&mut other_socket).await;
    assert_eq!(
        app.hello(&second.access_token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = start().await;
    let mut answers = Vec::new();
    for (email, password) in [
        (EMAIL, "wrong-horse-battery"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = app
            .http
            .post(format!("{}/login", app.base))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        answers.push(response.text().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);

    let missing_field = app
        .http
        .post(format!("{}/login", app.base))
        .json(&serde_json::json!({ "email": EMAIL }))
        .send()
        .await
        .unwrap();
    assert!(missing_field.status().is_client_error());
}
