//! The test kit: a real `tokengate` server per test and a client for it.
//!
//! - [`Server`] runs the built binary (`serve --listen 127.0.0.1:0`) on a temporary data
//!   dir, learns its address from the line it prints once bound, and can SIGKILL and
//!   restart it on the same data; [`Server::cli`] runs the admin commands on that data.
//! - [`InProcess`] runs the server's router in this process with a [`ManualClock`], for
//!   tests that set the time or wrap the store.
//! - [`Client`] speaks the HTTP API and asserts that no answer is ever a 500.
//! - [`services`]: a PostgreSQL database per test and private `redis-server`s, for clusters.
//! - [`fault_proxy`]: a TCP proxy that can stop forwarding or refuse, to cut one node off.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod services;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::ServiceExt as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokengate_core::{Clock, ManualClock, SystemClock};
use tokengate_server::config::Config;
use tokengate_server::server::Node;
use tokengate_store::{SqliteStore, Store};

/// A password that passes the strength check.
pub const PASSWORD: &str = "correct horse battery staple";
/// Another one, for password changes.
pub const NEW_PASSWORD: &str = "tr0ub4dor & three more words";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh email address, unique across tests and runs.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

/// A `tokengate serve` child process on a temporary data dir. Dropping it kills it.
pub struct Server {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: SocketAddr,
    starts: u32,
}

/// What an admin command printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Server {
    /// Start a server with the default configuration.
    pub fn start() -> Server {
        Server::start_with_env(&[])
    }

    /// Start a server with extra `TOKENGATE_*` (or other) environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut server = Server {
            dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
        };
        server.spawn();
        server
    }

    /// The data dir the server (and [`Server::cli`]) use.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server wrote to stderr so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A command for the binary with a clean `TOKENGATE_*` environment plus ours.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOKENGATE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info,sqlx=warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let mut log_header = log.try_clone().expect("clone log handle");
        let _ = writeln!(log_header, "---- start #{} ----", self.starts);
        // Any free port, unless the test chose one (a provider must know the URL first).
        let listen = self
            .env
            .iter()
            .find(|(key, _)| key == "TOKENGATE_LISTEN")
            .map_or("127.0.0.1:0", |(_, addr)| addr.as_str())
            .to_owned();
        let mut child = self
            .command()
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tokengate serve");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout after the address line so the server never blocks on
        // (or dies of) a full or closed pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("tokengate listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "tokengate did not print its address ({error}); exit: {status:?}\nstderr:\n{}",
                    self.log()
                );
            }
        };
        self.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("bad address line {addr:?}: {e}"));
        self.child = Some(child);
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for the current address (a restarted server listens on a new port).
    pub fn client(&self) -> Client {
        Client::new(&self.url())
    }

    /// SIGKILL the server (no graceful shutdown) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the server if it runs, then start it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Run `tokengate --data-dir DIR ARGS...` with `stdin` and wait for it.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut child = self
            .command()
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokengate admin command");
        {
            let mut input = child.stdin.take().expect("child stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        let output = child.wait_with_output().expect("wait for admin command");
        CliOutput {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Run an admin command and assert that it succeeded.
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let out = self.cli(args, stdin);
        assert!(
            out.success,
            "`tokengate {}` failed ({:?}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "==== tokengate stderr ({}) ====\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// In process, with a settable clock
// ---------------------------------------------------------------------------------------

/// The server's router in this process, with a [`ManualClock`] and any [`Store`].
pub struct InProcess {
    /// The node: its state (keys, index, store) is reachable from the test.
    pub node: Node,
    /// The clock every decision of the node reads.
    pub clock: Arc<ManualClock>,
    addr: SocketAddr,
    serve: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl InProcess {
    /// A configuration on `dir` with the defaults of `docs/api.md`.
    pub fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    /// The SQLite store a node on `dir` uses.
    pub async fn sqlite(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("tokengate.db"))
            .await
            .expect("open SQLite store")
    }

    /// A node with the default configuration and a SQLite store on a fresh dir.
    pub async fn start() -> InProcess {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Arc::new(InProcess::sqlite(dir.path()).await);
        let config = InProcess::config(dir.path());
        InProcess::start_on(dir, config, store).await
    }

    /// A node with the default configuration changed by `edit`, on a fresh dir.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> InProcess {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Arc::new(InProcess::sqlite(dir.path()).await);
        let mut config = InProcess::config(dir.path());
        edit(&mut config);
        InProcess::start_on(dir, config, store).await
    }

    /// A node on `dir` with this configuration and store; the clock starts at the real time.
    pub async fn start_on(
        dir: tempfile::TempDir,
        config: Config,
        store: Arc<dyn Store>,
    ) -> InProcess {
        let this = InProcess::serve(dir, config, store).await;
        this.wait_ready().await;
        this
    }

    /// Like [`start_on`](Self::start_on), without waiting for `/readyz`.
    pub async fn serve(dir: tempfile::TempDir, config: Config, store: Arc<dyn Store>) -> InProcess {
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let node = Node::start(config, clock.clone(), store)
            .await
            .expect("start node");
        let app = tokengate_server::routes::router(node.state.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        InProcess {
            node,
            clock,
            addr,
            serve,
            dir,
        }
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this node.
    pub fn client(&self) -> Client {
        Client::new(&self.url())
    }

    /// The live revocations the node's store holds now.
    pub async fn stored_revocations(&self) -> Vec<tokengate_core::Revocation> {
        let state = &self.node.state;
        state
            .sessions
            .store()
            .load_live_revocations(state.now(), state.config.leeway)
            .await
            .unwrap()
            .revocations
    }

    /// How many revocation records of `id` the node's store holds, and how many in all.
    pub async fn stored_records_of(&self, id: &str) -> (usize, usize) {
        let rows = self
            .node
            .state
            .sessions
            .store()
            .revocations_after(0, 10_000)
            .await
            .unwrap();
        let of_id = rows
            .iter()
            .filter(|(_, r)| r.subject_id().to_string() == id)
            .count();
        (of_id, rows.len())
    }

    /// Move the clock forward, then wait until the node has confirmed its revocation index
    /// at the new time (until then a `fail_closed` node answers 503, by design).
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.wait_ready().await;
    }

    /// Wait (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = self.client();
        eventually(Duration::from_secs(10), "node to be ready", || {
            let client = client.clone();
            async move { client.get("/readyz", None).await.status == StatusCode::OK }
        })
        .await;
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP client
// ---------------------------------------------------------------------------------------

/// An answer: status, headers, body text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "body of the {} answer is not JSON ({e}): {:?}",
                self.status, self.text
            )
        })
    }

    /// Assert the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status, status,
            "expected {status}, got {} with body {:?}",
            self.status, self.text
        );
        self
    }

    /// Assert an error answer: this status, a JSON body `{"error", "error_description"}`
    /// with a non-empty description; returns `(error, error_description)`.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode) -> (String, String) {
        self.expect(status);
        let body = self.json();
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `error` in {body}"))
            .to_owned();
        let description = body["error_description"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `error_description` in {body}"))
            .to_owned();
        assert!(!error.is_empty(), "empty `error` in {body}");
        assert!(
            !description.is_empty(),
            "empty `error_description` in {body}"
        );
        (error, description)
    }

    /// Assert an RFC 6750 refusal: 401, `WWW-Authenticate: Bearer error="invalid_token",
    /// error_description="..."`, and the JSON error body; returns the description.
    #[track_caller]
    pub fn expect_invalid_token(&self) -> String {
        let (error, description) = self.expect_error(StatusCode::UNAUTHORIZED);
        assert_eq!(error, "invalid_token", "body: {}", self.text);
        self.expect_challenge();
        description
    }

    /// Assert a 401 carrying a Bearer `WWW-Authenticate` challenge (any `error` code in the
    /// body, e.g. `invalid_grant` for refresh tokens).
    #[track_caller]
    pub fn expect_challenge(&self) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "body: {}", self.text);
        let challenge = self
            .headers
            .get("www-authenticate")
            .unwrap_or_else(|| panic!("401 without WWW-Authenticate; body {:?}", self.text))
            .to_str()
            .expect("WWW-Authenticate is ASCII");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "challenge: {challenge}"
        );
        assert!(
            challenge.contains("error_description=\""),
            "challenge: {challenge}"
        );
    }
}

/// What sign-in and refresh answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub session_id: String,
}

impl Tokens {
    /// Parse a 200 sign-in or refresh answer.
    #[track_caller]
    pub fn from_resp(resp: &Resp) -> Tokens {
        resp.expect(StatusCode::OK);
        serde_json::from_str(&resp.text)
            .unwrap_or_else(|e| panic!("not a token answer ({e}): {}", resp.text))
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client with the `User-Agent` `tokengate-tests`.
    pub fn new(base: &str) -> Client {
        Client::with_user_agent(base, "tokengate-tests")
    }

    /// A client that says it is `user_agent`.
    pub fn with_user_agent(base: &str, user_agent: &str) -> Client {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        Client {
            http,
            base: base.to_owned(),
        }
    }

    /// A request builder for `path`, to send with [`Client::send`].
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Send a request; every answer of tokengate must be something other than a 500.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let resp = self.try_send(request).await.expect("HTTP request");
        assert_ne!(
            resp.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "tokengate answered 500: {}",
            resp.text
        );
        resp
    }

    /// Send a request whose answer may fail to come (a node killed or cut off), and return
    /// whatever it answered, 500 included: the caller records and judges it.
    pub async fn try_send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<Resp> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok(Resp {
            status,
            headers,
            text,
        })
    }

    /// A request with an optional Bearer token and optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut request = self.raw(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        self.request(Method::POST, path, token, body).await
    }

    /// `POST /v1/admin/revocations` (the bulk import) with `body`, as the holder of `token`.
    pub async fn import_revocations(&self, token: &str, body: &Value) -> Resp {
        self.post("/v1/admin/revocations", Some(token), Some(body))
            .await
    }

    pub async fn signup(&self, email: &str, password: &str) -> Resp {
        let body = json!({"email": email, "password": password});
        self.post("/v1/auth/signup", None, Some(&body)).await
    }

    /// Sign up and assert 201; returns the user JSON.
    /// Sign a new user up with a unique email starting with `prefix`; returns the email.
    pub async fn new_user(&self, prefix: &str) -> String {
        let email = unique_email(prefix);
        self.signup_ok(&email).await;
        email
    }

    pub async fn signup_ok(&self, email: &str) -> Value {
        let resp = self.signup(email, PASSWORD).await;
        resp.expect(StatusCode::CREATED);
        resp.json()
    }

    pub async fn signin(&self, email: &str, password: &str) -> Resp {
        let body = json!({"email": email, "password": password});
        self.post("/v1/auth/signin", None, Some(&body)).await
    }

    /// Sign in with [`PASSWORD`] and assert 200.
    pub async fn signin_ok(&self, email: &str) -> Tokens {
        Tokens::from_resp(&self.signin(email, PASSWORD).await)
    }

    /// `POST /oauth2/revoke` (RFC 7009) with `token`.
    pub async fn oauth_revoke(&self, token: &str) -> Resp {
        self.send(
            self.raw(Method::POST, "/oauth2/revoke")
                .form(&[("token", token)]),
        )
        .await
    }

    pub async fn me(&self, token: &str) -> Resp {
        self.get("/v1/auth/me", Some(token)).await
    }

    /// The status `GET /v1/auth/me` answers for `token`.
    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.me(token).await.status
    }

    pub async fn signout(&self, token: &str) -> Resp {
        self.post("/v1/auth/signout", Some(token), None).await
    }

    pub async fn signout_all(&self, token: &str) -> Resp {
        self.post("/v1/auth/signout-all", Some(token), None).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Resp {
        let body = json!({"refresh_token": refresh_token});
        self.post("/v1/auth/refresh", None, Some(&body)).await
    }

    /// Refresh with `refresh_token`, which must succeed; the new pair.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Tokens {
        Tokens::from_resp(&self.refresh(refresh_token).await)
    }

    /// `tokens` are signed out: the access token is refused as revoked and the refresh
    /// token with 401.
    pub async fn assert_signed_out(&self, tokens: &Tokens) {
        self.me(&tokens.access_token).await.expect_invalid_token();
        self.refresh(&tokens.refresh_token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }

    pub async fn password(&self, token: &str, current: &str, new: &str) -> Resp {
        let body = json!({"current_password": current, "new_password": new});
        self.post("/v1/auth/password", Some(token), Some(&body))
            .await
    }

    pub async fn sessions(&self, token: &str) -> Resp {
        self.get("/v1/auth/sessions", Some(token)).await
    }

    pub async fn delete_session(&self, token: &str, id: &str) -> Resp {
        self.request(
            Method::DELETE,
            &format!("/v1/auth/sessions/{id}"),
            Some(token),
            None,
        )
        .await
    }

    /// `revocations` of `/readyz` (the size of the node's index).
    pub async fn indexed_revocations(&self) -> u64 {
        let resp = self.get("/readyz", None).await;
        resp.expect(StatusCode::OK);
        resp.json()["revocations"]
            .as_u64()
            .unwrap_or_else(|| panic!("no `revocations` count in {}", resp.text))
    }
}

// ---------------------------------------------------------------------------------------
// Tokens and waiting
// ---------------------------------------------------------------------------------------

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a compact JWS: {token}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWS part {index} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWS part {index} is not JSON: {e}"))
}

/// The decoded JOSE header of a token.
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

/// The decoded claims of a token.
pub fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The `jti` of a token.
pub fn jti(token: &str) -> String {
    jwt_claims(token)["jti"]
        .as_str()
        .expect("string jti")
        .to_owned()
}

/// The `kid` of a token.
pub fn kid(token: &str) -> String {
    jwt_header(token)["kid"]
        .as_str()
        .expect("string kid")
        .to_owned()
}

/// Poll `check` every 50 ms until it holds; panic naming `what` after `bound`.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (up to `bound`) until `token` is refused by `GET /v1/auth/me`, then check the
/// refusal is a proper RFC 6750 401.
pub async fn until_refused(client: &Client, token: &str, bound: Duration, what: &str) {
    eventually(bound, what, || async move {
        client.me_status(token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    client.me(token).await.expect_invalid_token();
}
