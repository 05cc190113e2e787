//! Gate mode against a real OpenID provider: panva's `oidc-provider` in
//! `tests/oidc-provider` (its README says what it serves and mints), started on loopback
//! for each test, with tokengate in process pointing an `[[issuers]]` entry at its
//! discovery document. Tokens come from the provider's own flows (`flow.mjs`): client
//! credentials and the authorization code flow of a user login.
//!
//! Needs Node.js 20.18 or later and `npm ci --prefix tests/oidc-provider` (`.ci/run` does
//! both). Without them the tests print `skipped: ...` and pass, unless
//! `TOKENGATE_REQUIRE_OIDC=1`.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokengate_core::{Clock, SystemClock};
use tokengate_gate::IssuerConfig;

/// The provider harness, relative to this crate.
const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/oidc-provider");

/// The resource (audience) of every access token the provider mints.
const RESOURCE: &str = "https://api.tokengate.test";

/// How long the provider may take to print `ready`, and one `flow.mjs` run may take.
const NODE_DEADLINE: Duration = Duration::from_secs(30);

fn harness() -> PathBuf {
    PathBuf::from(HARNESS)
}

/// Why the provider cannot run here, if it cannot: no Node.js 20.18+ or no install.
fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let node_ok = Command::new("node")
            .args([
                "-e",
                "process.exit(typeof URL.parse === 'function' ? 0 : 1)",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !node_ok {
            return Some("Node.js 20.18 or later not found (node on PATH)".to_owned());
        }
        if !harness().join("node_modules/oidc-provider").is_dir() {
            return Some(format!(
                "oidc-provider not installed (npm ci --prefix tests/oidc-provider); looked in {}",
                harness().join("node_modules").display()
            ));
        }
        None
    })
    .as_deref()
}

/// False (after printing `skipped: ...`) when the provider cannot run here; panics instead
/// under `TOKENGATE_REQUIRE_OIDC=1`.
fn provider_available() -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    if std::env::var("TOKENGATE_REQUIRE_OIDC").as_deref() == Ok("1") {
        panic!("{why}, and TOKENGATE_REQUIRE_OIDC=1");
    }
    println!("skipped: {why}");
    false
}

/// Run blocking work (child processes) off the runtime's worker threads, which serve
/// tokengate in process; a panic inside is passed on as it is.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

// ---------------------------------------------------------------------------------------
// The provider process
// ---------------------------------------------------------------------------------------

/// `node provider.mjs` on loopback; dropping it kills it.
struct Provider {
    child: Child,
    issuer: String,
    port: u16,
    /// The provider's stderr (notices, logs), shown when a test fails.
    log: tempfile::NamedTempFile,
}

impl Provider {
    /// Start the provider on `port` (0: any free one) with the keys of `keys` (a fresh key
    /// when `None`), sending back-channel logouts of client `web` to `backchannel` if given.
    /// A fixed port that is still taken (the previous provider on it is going away) is
    /// tried again until the deadline.
    fn start(port: u16, keys: Option<&Path>, backchannel: Option<&str>) -> Provider {
        let deadline = Instant::now() + NODE_DEADLINE;
        loop {
            match Provider::try_start(port, keys, backchannel, deadline) {
                Ok(provider) => return provider,
                Err(error) if port != 0 && Instant::now() < deadline => {
                    eprintln!("provider did not start on port {port}, trying again: {error}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("the OpenID provider did not start: {error}"),
            }
        }
    }

    fn try_start(
        port: u16,
        keys: Option<&Path>,
        backchannel: Option<&str>,
        deadline: Instant,
    ) -> Result<Provider, String> {
        let log = tempfile::NamedTempFile::new().expect("create provider log");
        let mut command = Command::new("node");
        command
            .arg(harness().join("provider.mjs"))
            .args(["--port", &port.to_string()]);
        if let Some(keys) = keys {
            command.arg("--keys").arg(keys);
        }
        if let Some(uri) = backchannel {
            command.args(["--backchannel-uri", uri]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen().expect("reopen provider log")))
            .spawn()
            .map_err(|e| format!("spawn node: {e}"))?;
        let stdout = child.stdout.take().expect("provider stdout");
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout after the ready line (it should print nothing more).
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let stderr =
            |log: &tempfile::NamedTempFile| std::fs::read_to_string(log.path()).unwrap_or_default();
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                return Err(format!(
                    "no `ready` line ({error}); exit: {status:?}; stderr:\n{}",
                    stderr(&log)
                ));
            }
        };
        let Some(issuer) = line.strip_prefix("ready ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "expected `ready <issuer>`, got {line:?}; stderr:\n{}",
                stderr(&log)
            ));
        };
        let bound: u16 = issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the issuer {issuer:?}"));
        assert!(port == 0 || bound == port, "asked for {port}, got {issuer}");
        Ok(Provider {
            child,
            issuer,
            port: bound,
            log,
        })
    }

    /// `http://127.0.0.1:PORT`, exactly as the tokens' `iss`.
    fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Kill it now (as dropping it does).
    fn stop(self) {}
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "==== provider {} stderr ====\n{}",
                self.issuer,
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
        }
    }
}

/// Start a provider without blocking the runtime.
async fn start_provider(port: u16, keys: Option<PathBuf>) -> Provider {
    blocking(move || Provider::start(port, keys.as_deref(), None)).await
}

/// Run `node SCRIPT ARGS...` in the harness (bounded by [`NODE_DEADLINE`]) and parse the
/// JSON it prints.
fn node_json(script: &str, args: &[String]) -> Value {
    let what = format!("node {script} {}", args.join(" "));
    let mut child = Command::new("node")
        .arg(harness().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{what}`: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + NODE_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` took more than {NODE_DEADLINE:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    assert!(
        status.success(),
        "`{what}` failed ({status}); stderr:\n{stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`{what}` printed no JSON ({e}): {stdout:?}\nstderr:\n{stderr}"))
}

/// `node flow.mjs ARGS...`: the JSON it prints.
async fn flow(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    blocking(move || node_json("flow.mjs", &args)).await
}

/// A client-credentials access token (client `svc`, `sub` = `svc`, no `sid`).
async fn client_credentials(provider: &Provider) -> String {
    let answer = flow(&["client-credentials", "--issuer", provider.issuer()]).await;
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_owned()
}

/// A user login through the authorization code flow: a new provider session each time.
struct Login {
    access_token: String,
    sub: String,
    sid: String,
    /// The provider session's cookies, for `flow.mjs logout`.
    cookies: Value,
}

async fn login(provider: &Provider, user: &str) -> Login {
    let answer = flow(&["login", "--issuer", provider.issuer(), "--user", user]).await;
    let field = |name: &str| {
        answer[name]
            .as_str()
            .unwrap_or_else(|| panic!("no `{name}` in {answer}"))
            .to_owned()
    };
    let login = Login {
        access_token: field("access_token"),
        sub: field("sub"),
        sid: field("sid"),
        cookies: answer["cookies"].clone(),
    };
    assert_eq!(jwt_claims(&login.access_token)["sid"], login.sid.as_str());
    login
}

/// A private JWK set of one key made by `provider.mjs genkey`, written to `dir/NAME.json`.
async fn genkey(dir: &Path, alg: &str, kid: &str) -> Value {
    let args = vec![
        "genkey".into(),
        "--alg".into(),
        alg.into(),
        "--kid".into(),
        kid.into(),
    ];
    let set = blocking(move || node_json("provider.mjs", &args)).await;
    assert_eq!(set["keys"][0]["kid"], kid, "{set}");
    write_json(&dir.join(format!("{kid}.json")), &set);
    set
}

fn write_json(path: &Path, value: &Value) -> PathBuf {
    std::fs::write(path, value.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_owned()
}

// ---------------------------------------------------------------------------------------
// tokengate in front of it
// ---------------------------------------------------------------------------------------

/// The `[[issuers]]` entry for the provider, named `idp`.
fn idp(provider: &Provider, audiences: &[&str]) -> IssuerConfig {
    let issuer = provider.issuer();
    serde_json::from_value(json!({
        "name": "idp",
        "issuer": issuer,
        "discovery": format!("{issuer}/.well-known/openid-configuration"),
        "audiences": audiences,
    }))
    .expect("issuer entry")
}

/// tokengate in process, gating the provider's tokens for `audiences`.
async fn tokengate(provider: &Provider, audiences: &[&str]) -> InProcess {
    let entry = idp(provider, audiences);
    InProcess::start_with(move |c| c.issuers = vec![entry]).await
}

/// Bring the node's manual clock up to the real time (it starts there and stands still),
/// so that the provider's fresh `iat` is never ahead of it by more than the leeway.
async fn catch_up(server: &InProcess) {
    let behind = SystemClock.now().as_secs() - server.clock.now().as_secs();
    if let Ok(secs @ 1..) = u64::try_from(behind) {
        server.advance(Duration::from_secs(secs)).await;
    }
}

/// `GET /v1/verify` with `token` as Bearer.
async fn verify(server: &InProcess, token: &str) -> Resp {
    catch_up(server).await;
    server.client().get("/v1/verify", Some(token)).await
}

/// `/v1/verify` accepts `token` as the provider's, for `sub` (and `sid`, if any).
#[track_caller]
fn assert_verified(resp: &Resp, sub: &str, sid: Option<&str>, what: &str) {
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "{what}: expected 200 from /v1/verify, got {} {:?}",
        resp.status,
        resp.text
    );
    let header = |name: &str| {
        resp.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    };
    assert_eq!(header("x-auth-issuer").as_deref(), Some("idp"), "{what}");
    assert_eq!(header("x-auth-user-id").as_deref(), Some(sub), "{what}");
    assert_eq!(header("x-auth-session-id").as_deref(), sid, "{what}");
}

/// The number of keys tokengate holds for `idp`.
fn keys_held(server: &InProcess) -> usize {
    server
        .node
        .state
        .issuers
        .issuers()
        .by_name("idp")
        .expect("issuer idp")
        .key_status()
        .keys
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_tokens_verify_with_their_subject_and_session() {
    if !provider_available() {
        return;
    }
    let provider = start_provider(0, None).await;
    let server = tokengate(&provider, &[RESOURCE]).await;

    // A service's token: client credentials, `sub` = the client id, no session.
    let service = client_credentials(&provider).await;
    assert_eq!(jwt_header(&service)["typ"], "at+jwt");
    assert_eq!(jwt_claims(&service)["aud"], RESOURCE);
    let sub = jwt_claims(&service)["sub"].as_str().unwrap().to_owned();
    assert_eq!(sub, "svc");
    let resp = verify(&server, &service).await;
    assert_verified(&resp, &sub, None, "client-credentials token");

    // A user's token from the authorization code flow: `sub` and the provider's `sid`.
    let alice = login(&provider, "alice").await;
    assert_eq!(alice.sub, "alice");
    assert_eq!(jwt_claims(&alice.access_token)["sub"], "alice");
    let resp = verify(&server, &alice.access_token).await;
    assert_verified(&resp, "alice", Some(&alice.sid), "login token");
    assert_eq!(resp.headers["x-auth-email"], "alice@example.test");

    // The same token with one signature byte changed is refused.
    let mut forged = alice.access_token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    verify(&server, &String::from_utf8(forged).unwrap())
        .await
        .expect_invalid_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_the_provider_is_fetched_on_first_sight_and_the_old_one_still_verifies() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("key dir");
    let old = genkey(dir.path(), "RS256", "rot-old").await;
    let new = genkey(dir.path(), "ES256", "rot-new").await;
    let both = write_json(
        &dir.path().join("both.json"),
        &json!({"keys": [new["keys"][0].clone(), old["keys"][0].clone()]}),
    );

    let provider = start_provider(0, Some(dir.path().join("rot-old.json"))).await;
    let (port, issuer) = (provider.port, provider.issuer().to_owned());
    let server = tokengate(&provider, &[RESOURCE]).await;
    assert_eq!(keys_held(&server), 1);
    let old_service = client_credentials(&provider).await;
    let old_alice = login(&provider, "alice").await;
    assert_eq!(kid(&old_service), "rot-old");
    assert_verified(
        &verify(&server, &old_service).await,
        "svc",
        None,
        "token of the old key",
    );

    // Rotation: the same issuer on the same port, the new key first (it signs), the old
    // one still published.
    provider.stop();
    let provider = start_provider(port, Some(both)).await;
    assert_eq!(provider.issuer(), issuer);
    let new_service = client_credentials(&provider).await;
    assert_eq!(kid(&new_service), "rot-new");
    assert_eq!(jwt_header(&new_service)["alg"], "ES256");
    assert_eq!(keys_held(&server), 1, "nothing fetched the new set yet");

    // The first token naming the new kid is the first unknown kid tokengate sees: it
    // fetches the set once and the token verifies at once (no retry here: a second
    // unknown kid within 30 s would not be fetched for).
    assert_verified(
        &verify(&server, &new_service).await,
        "svc",
        None,
        "first token of the new key",
    );
    assert_eq!(keys_held(&server), 2, "both published keys are held");
    let new_alice = login(&provider, "alice").await;
    assert_eq!(kid(&new_alice.access_token), "rot-new");
    assert_verified(
        &verify(&server, &new_alice.access_token).await,
        "alice",
        Some(&new_alice.sid),
        "login token of the new key",
    );

    // Tokens of the old key, still published, keep verifying.
    assert_verified(
        &verify(&server, &old_service).await,
        "svc",
        None,
        "client-credentials token of the old key after the rotation",
    );
    assert_verified(
        &verify(&server, &old_alice.access_token).await,
        "alice",
        Some(&old_alice.sid),
        "login token of the old key after the rotation",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_provider_down_tokens_of_known_keys_still_verify() {
    if !provider_available() {
        return;
    }
    let provider = start_provider(0, None).await;
    let port = provider.port;
    let server = tokengate(&provider, &[RESOURCE]).await;
    let service = client_credentials(&provider).await;
    let alice = login(&provider, "alice").await;
    assert_verified(&verify(&server, &service).await, "svc", None, "before");

    provider.stop();
    assert_verified(
        &verify(&server, &service).await,
        "svc",
        None,
        "client-credentials token, provider down",
    );
    assert_verified(
        &verify(&server, &alice.access_token).await,
        "alice",
        Some(&alice.sid),
        "login token, provider down",
    );
    let resp = server.client().get("/readyz", None).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.json()["issuers_not_ready"], json!([]), "{}", resp.text);

    // A token of a key tokengate never saw, met while the provider is down: the refetch
    // fails, the token is refused (401, not 503: the issuer's keys did arrive once), and
    // the keys held are kept.
    let stranger = {
        let provider = start_provider(port, None).await;
        client_credentials(&provider).await
    };
    assert_ne!(kid(&stranger), kid(&service));
    verify(&server, &stranger).await.expect_invalid_token();
    let status = server
        .node
        .state
        .issuers
        .issuers()
        .by_name("idp")
        .unwrap()
        .key_status();
    assert_eq!(status.keys, 1, "{status:?}");
    assert!(status.last_error.is_some(), "{status:?}");
    assert_verified(
        &verify(&server, &service).await,
        "svc",
        None,
        "known key after a failed refetch",
    );
    assert_verified(
        &verify(&server, &alice.access_token).await,
        "alice",
        Some(&alice.sid),
        "known key after a failed refetch",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_for_another_audience_refuses_the_providers_tokens() {
    if !provider_available() {
        return;
    }
    let provider = start_provider(0, None).await;
    let server = tokengate(&provider, &["https://other.example"]).await;
    let service = client_credentials(&provider).await;
    let alice = login(&provider, "alice").await;
    for (token, what) in [
        (&service, "client credentials"),
        (&alice.access_token, "login"),
    ] {
        let resp = verify(&server, token).await;
        let description = resp.expect_invalid_token();
        assert!(
            description.contains("audience"),
            "{what}: the refusal should name the audience: {description}"
        );
        assert!(resp.headers.get("x-auth-user-id").is_none(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revokes_one_provider_session_and_the_users_other_session_still_verifies() {
    if !provider_available() {
        return;
    }
    let provider = start_provider(0, None).await;
    let server = tokengate(&provider, &[RESOURCE]).await;
    let client = server.client();
    // The first user of a fresh tokengate is its admin.
    let admin = client.signup_ok(&unique_email("oidc-admin")).await;
    assert_eq!(admin["role"], "admin");
    let admin = client
        .signin_ok(admin["email"].as_str().expect("email"))
        .await;

    // Two logins of alice: two provider sessions, two devices.
    let laptop = login(&provider, "alice").await;
    let phone = login(&provider, "alice").await;
    assert_ne!(laptop.sid, phone.sid);
    for device in [&laptop, &phone] {
        assert_verified(
            &verify(&server, &device.access_token).await,
            "alice",
            Some(&device.sid),
            "before the revocation",
        );
    }

    client
        .post(
            "/v1/gate/idp/revocations",
            Some(&admin.access_token),
            Some(&json!({"sid": laptop.sid})),
        )
        .await
        .expect(StatusCode::NO_CONTENT);

    let description = verify(&server, &laptop.access_token)
        .await
        .expect_invalid_token();
    assert!(description.contains("revoked"), "{description}");
    assert_verified(
        &verify(&server, &phone.access_token).await,
        "alice",
        Some(&phone.sid),
        "the other session",
    );
    // A new login is a new session: it verifies.
    let again = login(&provider, "alice").await;
    assert_verified(
        &verify(&server, &again.access_token).await,
        "alice",
        Some(&again.sid),
        "a new login",
    );
}

/// The recipe's `[[issuers]]` entry, as written in docs/recipes/openid-provider.md, is a
/// valid configuration with the claim mapping it describes. Needs no provider.
#[test]
fn the_recipes_issuer_entry_is_a_valid_configuration() {
    const DOC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/recipes/openid-provider.md"
    );
    let doc = std::fs::read_to_string(DOC).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let start = doc
        .find("```toml\n")
        .unwrap_or_else(|| panic!("no ```toml block in {DOC}"))
        + "```toml\n".len();
    let block = &doc[start..start + doc[start..].find("```").expect("closed ```toml block")];
    let block = block.replace("<hex SHA-256 of its secret>", &"ab".repeat(32));
    let config: tokengate_server::config::Config = figment::Figment::from(
        figment::providers::Serialized::defaults(tokengate_server::config::Config::default()),
    )
    .merge(<figment::providers::Toml as figment::providers::Format>::string(&block))
    .extract()
    .unwrap_or_else(|e| panic!("the recipe's entry does not parse: {e}\n{block}"));
    tokengate_gate::config::check_all(&config.issuers)
        .unwrap_or_else(|e| panic!("the recipe's entry is refused: {e}\n{block}"));
    let [sso] = config.issuers.as_slice() else {
        panic!("expected one entry: {block}")
    };
    assert_eq!(sso.name, "sso");
    assert_eq!(sso.claims.role, "realm_access.roles");
    assert_eq!(
        sso.claims.session, "sid",
        "a partial table keeps the defaults"
    );
    assert_eq!(sso.clients.len(), 1);
}

/// The `toml` block of the oidc-provider section of docs/recipes/logout-signals.md, with
/// the recipe's provider address replaced by `issuer`'s.
fn logout_recipe_entry(issuer: &str) -> String {
    const DOC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/recipes/logout-signals.md"
    );
    let doc = std::fs::read_to_string(DOC).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let section = &doc[doc
        .find("## oidc-provider")
        .expect("an oidc-provider section")..];
    let start = section.find("```toml\n").expect("a ```toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("closed block")];
    assert!(
        block.contains("http://127.0.0.1:9400"),
        "the recipe's provider address changed: {block}"
    );
    block.replace("http://127.0.0.1:9400", issuer)
}

/// A port free now, for a server the provider must know the URL of before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_at_the_provider_is_refused_on_both_nodes_within_a_second_and_the_other_device_still_verifies(
) {
    use crate::cluster::within;
    use crate::common::services::{namespace, node_env, services};
    if !provider_available() {
        return;
    }
    let Some(db) = services() else { return };

    // The provider calls node A back: the recipe's command line, with A's port.
    let port_a = free_port();
    let backchannel = format!("http://127.0.0.1:{port_a}/v1/gate/idp/backchannel-logout");
    let provider = blocking(move || Provider::start(0, None, Some(&backchannel))).await;
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("tokengate.toml");
    std::fs::write(&config, logout_recipe_entry(provider.issuer())).expect("write config");
    let (db_url, ns, listen_a) = (db.url(), namespace(), format!("127.0.0.1:{port_a}"));
    let config = config.to_str().expect("UTF-8 path");
    let mut env = node_env(&db_url, "redis://127.0.0.1:6379", &ns);
    env.push(("TOKENGATE_CONFIG", config));
    let b = Server::start_with_env(&env);
    env.push(("TOKENGATE_LISTEN", &listen_a));
    let a = Server::start_with_env(&env);
    let nodes = [("A", a.client()), ("B", b.client())];

    // Two devices: two logins of alice, two provider sessions.
    let laptop = login(&provider, "alice").await;
    let phone = login(&provider, "alice").await;
    assert_ne!(laptop.sid, phone.sid);
    for (node, client) in &nodes {
        for device in [&laptop, &phone] {
            // The first request may come before the node's first key fetch (503).
            let verified = within(Duration::from_secs(10), async || {
                client
                    .get("/v1/verify", Some(&device.access_token))
                    .await
                    .status
                    == StatusCode::OK
            })
            .await;
            assert!(
                verified,
                "node {node} does not accept the {} token",
                device.sid
            );
        }
    }

    // Sign out on the laptop at the provider: it calls node A before it answers.
    let answer = flow(&[
        "logout",
        "--issuer",
        provider.issuer(),
        "--cookies",
        &laptop.cookies.to_string(),
    ])
    .await;
    assert_eq!(answer, json!({"ok": true}));
    // The promise: refused on every node within a second of the provider's logout.
    for (node, client) in &nodes {
        let refused = within(Duration::from_secs(1), async || {
            client
                .get("/v1/verify", Some(&laptop.access_token))
                .await
                .status
                == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(
            refused,
            "node {node} still accepts the laptop's token 1 s after the logout; A's log:\n{}",
            a.log()
        );
        let resp = client.get("/v1/verify", Some(&phone.access_token)).await;
        assert_verified(&resp, "alice", Some(&phone.sid), "the phone's session");
    }
    let metrics = nodes[0].1.get("/metrics", None).await.text;
    let accepted = r#"tokengate_gate_signals_total{issuer="idp",kind="backchannel_logout",outcome="accepted"} 1"#;
    assert!(metrics.contains(accepted), "{metrics}");
}
