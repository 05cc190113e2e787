//! The "unmodified app" recipe end to end: the nginx configuration of
//! `docs/recipes/unmodified-app-nginx.md`, taken verbatim from the doc, in front of a small
//! app that signs Open WebUI-shaped HS256 tokens, never checks revocation, and whose sign-out
//! only clears its cookie; tokengate runs in gate mode beside it.
//!
//! Needs the `nginx` binary, like [`crate::nginx`]: without it the test prints
//! `skipped: nginx not installed` and passes, unless `TOKENGATE_REQUIRE_NGINX=1`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Client, InProcess, Resp};
use crate::gate::{basic, sign_webui, unix_now, webui_issuer, webui_token, CLIENT_SECRET};
use crate::nginx::{assert_refused, doc_snippet, http_conf, nginx_or_skip, Nginx};

/// The recipe whose nginx block this test runs.
const DOC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/recipes/unmodified-app-nginx.md"
);

/// A whole nginx.conf: the doc's block pointed at `tokengate` and `app`, listening on
/// `front`.
fn recipe_conf(
    dir: &std::path::Path,
    tokengate: SocketAddr,
    app: SocketAddr,
    front: u16,
) -> String {
    let snippet = doc_snippet(
        DOC,
        &[
            ("server 127.0.0.1:8080;", format!("server {tokengate};")),
            ("server 127.0.0.1:3000;", format!("server {app};")),
            ("listen 80;", format!("listen 127.0.0.1:{front};")),
        ],
    );
    http_conf(
        dir,
        &format!(
            "    # ---- docs/recipes/unmodified-app-nginx.md ----
{snippet}    # ---- end of docs/recipes/unmodified-app-nginx.md ----
"
        ),
    )
}

/// Every `X-Auth-User-Id` the app received (empty when none came).
type Seen = Arc<Mutex<Vec<String>>>;

/// The app's view of a request: the identity headers nginx passed on.
fn echo(seen: &Seen, headers: &HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let user = header("x-auth-user-id");
    seen.lock().unwrap().push(user.clone());
    format!("user={user} issuer={}\n", header("x-auth-issuer"))
}

/// The unmodified app on 127.0.0.1: signs Open WebUI-shaped tokens with the shared secret
/// at sign-in, trusts `X-Auth-User-Id` everywhere else, and signs out by clearing its cookie.
async fn start_app(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (me, fallback) = (seen.clone(), seen);
    let app = axum::Router::new()
        .route(
            "/api/v1/auths/signin",
            post(|axum::Json(body): axum::Json<Value>| async move {
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                let token = if body["old"] == true {
                    old_webui_token(&id)
                } else {
                    webui_token(&id)
                };
                (
                    [(
                        header::SET_COOKIE,
                        format!("token={token}; Path=/; HttpOnly; SameSite=Lax"),
                    )],
                    axum::Json(json!({"id": id, "token": token})),
                )
            }),
        )
        .route(
            "/api/v1/auths/signout",
            post(|| async {
                (
                    [(header::SET_COOKIE, "token=; Path=/; Max-Age=0")],
                    axum::Json(json!({"status": true})),
                )
            }),
        )
        .route(
            "/api/v1/me",
            get(move |headers: HeaderMap| std::future::ready(echo(&me, &headers))),
        )
        .fallback(move |headers: HeaderMap| {
            std::future::ready(echo(&fallback, &headers).into_response())
        });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A token as older Open WebUI versions sign it: `{"id","exp","jti"}`, no `iat`.
fn old_webui_token(id: &str) -> String {
    sign_webui(json!({"id": id, "exp": unix_now() + 3600, "jti": uuid::Uuid::new_v4().to_string()}))
}

/// Sign in through nginx; returns the value of the `token` cookie the app set.
async fn sign_in(front: &Client, id: &str) -> String {
    sign_in_with(front, &json!({"id": id})).await
}

/// Sign in through nginx to an app of the older token format (no `iat`).
async fn sign_in_old(front: &Client, id: &str) -> String {
    sign_in_with(front, &json!({"id": id, "old": true})).await
}

async fn sign_in_with(front: &Client, body: &Value) -> String {
    let resp = front
        .send(front.raw(Method::POST, "/api/v1/auths/signin").json(body))
        .await;
    resp.expect(StatusCode::OK);
    cookie_set(&resp).unwrap_or_else(|| panic!("no token cookie at sign-in: {resp:?}"))
}

/// The `token` cookie a response sets (empty when it clears it).
fn cookie_set(resp: &Resp) -> Option<String> {
    resp.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("token="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The app's own sign-out request through nginx, with the cookie `token`.
fn sign_out_request(front: &Client, cookie: &str) -> reqwest::RequestBuilder {
    front
        .raw(Method::POST, "/api/v1/auths/signout")
        .header("cookie", format!("token={cookie}"))
}

/// What the app calls at tokengate for "sign out everywhere": revoke every token of `sub`.
async fn revoke_user(server: &InProcess, sub: &str) {
    let client = server.client();
    let resp = client
        .send(
            client
                .raw(Method::POST, "/v1/gate/webui/revocations")
                .header("authorization", basic("webui", CLIENT_SECRET))
                .json(&json!({"sub": sub})),
        )
        .await;
    resp.expect(StatusCode::NO_CONTENT);
}

/// `GET /api/v1/me` through nginx with the cookie `token` and any extra headers.
async fn me(front: &Client, cookie: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let mut request = front.raw(Method::GET, "/api/v1/me");
    if let Some(token) = cookie {
        request = request.header("cookie", format!("token={token}"));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    front.send(request).await
}

#[track_caller]
fn assert_user(resp: &Resp, user: &str) {
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, format!("user={user} issuer=webui\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unmodified_apps_sign_out_ends_its_token_behind_nginx() {
    let Some(binary) = nginx_or_skip() else {
        return;
    };
    let server = InProcess::start_with(|c| c.issuers = vec![webui_issuer()]).await;
    let tokengate: SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    let seen = Seen::default();
    let app = start_app(seen.clone()).await;
    let nginx = tokio::task::block_in_place(|| {
        Nginx::start_with(&binary, |dir, front| {
            (recipe_conf(dir, tokengate, app, front), vec![])
        })
    });
    let front = Client::new(&nginx.url());

    // Sign-in goes through unauthenticated; the app's own token then opens its API.
    let alice = sign_in(&front, "alice").await;
    let bob = sign_in(&front, "bob").await;
    assert_user(&me(&front, Some(&alice), &[]).await, "alice");
    assert_user(&me(&front, Some(&bob), &[]).await, "bob");
    let bearer = format!("Bearer {alice}");
    assert_user(
        &me(&front, None, &[("authorization", &bearer)]).await,
        "alice",
    );

    // The app's sign-out, through nginx: the app only clears its cookie...
    let resp = front.send(sign_out_request(&front, &alice)).await;
    resp.expect(StatusCode::OK);
    assert_eq!(cookie_set(&resp).as_deref(), Some(""), "{resp:?}");
    // ...and the same token is refused from then on, as cookie and as Bearer.
    assert_refused(&me(&front, Some(&alice), &[]).await, "signed-out cookie");
    assert_refused(
        &me(&front, None, &[("authorization", &bearer)]).await,
        "signed-out token as Bearer",
    );
    // Only that token: Bob's still works, and so does Alice's next sign-in.
    assert_user(&me(&front, Some(&bob), &[]).await, "bob");
    let alice_again = sign_in(&front, "alice").await;
    assert_user(&me(&front, Some(&alice_again), &[]).await, "alice");

    // A client's own X-Auth-* headers never reach the app: without a token they get 401
    // at nginx, with one they are replaced, on an open route they are dropped.
    let forged = [
        ("x-auth-user-id", "forged-admin"),
        ("x-auth-issuer", "forged"),
    ];
    assert_refused(
        &me(&front, None, &forged).await,
        "forged X-Auth-User-Id, no cookie",
    );
    assert_user(&me(&front, Some(&bob), &forged).await, "bob");
    let mut open = front.raw(Method::GET, "/index.html");
    for (name, value) in forged {
        open = open.header(name, value);
    }
    let resp = front.send(open).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, "user= issuer=\n");
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|user| user == "forged-admin"),
        "the forged header reached the app: {:?}",
        seen.lock().unwrap()
    );

    // Anything but the app's JWTs (an Open WebUI `sk-` API key) is refused, as the recipe says.
    assert_refused(
        &me(
            &front,
            None,
            &[("authorization", "Bearer sk-0123456789abcdef")],
        )
        .await,
        "an API key",
    );

    // "Sign out everywhere": the app revokes a user at tokengate with its client.
    let carol = sign_in(&front, "carol").await;
    assert_user(&me(&front, Some(&carol), &[]).await, "carol");
    // tokengate's clock is manual here: bring it to the real time plus a second, so the
    // revocation comes after the second Carol's token was issued in.
    let lag = unix_now() - server.node.state.now().as_secs();
    server
        .advance(Duration::from_secs(lag.max(0) as u64 + 1))
        .await;
    revoke_user(&server, "carol").await;
    assert_refused(
        &me(&front, Some(&carol), &[]).await,
        "revoked user's cookie",
    );
    assert_user(&me(&front, Some(&bob), &[]).await, "bob");
    assert_user(&me(&front, Some(&alice_again), &[]).await, "alice");

    // The older token format (no `iat`) works behind the same configuration, and the
    // sign-out hook ends such a token by its `jti`.
    let dave = sign_in_old(&front, "dave").await;
    assert_user(&me(&front, Some(&dave), &[]).await, "dave");
    front
        .send(sign_out_request(&front, &dave))
        .await
        .expect(StatusCode::OK);
    assert_refused(
        &me(&front, Some(&dave), &[]).await,
        "signed-out old-format cookie",
    );
    // A user revocation refuses every old-format token of the user, one issued after it too,
    // as the recipe says.
    let erin = sign_in_old(&front, "erin").await;
    assert_user(&me(&front, Some(&erin), &[]).await, "erin");
    revoke_user(&server, "erin").await;
    assert_refused(
        &me(&front, Some(&erin), &[]).await,
        "revoked old-format cookie",
    );
    let erin_later = sign_in_old(&front, "erin").await;
    assert_refused(
        &me(&front, Some(&erin_later), &[]).await,
        "old-format token issued after the user revocation",
    );
    drop(nginx);

    // tokengate unreachable: the app's sign-out fails visibly (nginx's 500) without reaching
    // the app, and so does the API. (Client::send refuses 500s, hence plain reqwest.)
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let down = tokio::task::block_in_place(|| {
        Nginx::start_with(&binary, |dir, front| {
            (recipe_conf(dir, nowhere, app, front), vec![])
        })
    });
    let front = Client::new(&down.url());
    let bob_again = sign_in(&front, "bob").await;
    let resp = sign_out_request(&front, &bob_again).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{resp:?}");
    assert!(
        resp.headers().get(header::SET_COOKIE).is_none(),
        "the app was reached: {resp:?}"
    );
    let resp = front
        .raw(Method::GET, "/api/v1/me")
        .header("cookie", format!("token={bob_again}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{resp:?}");
}
