//! Forward auth behind a real nginx: the `auth_request` configuration of
//! `docs/forward-auth.md`, taken verbatim from the doc, in front of a small upstream that
//! echoes the identity headers it receives.
//!
//! Needs the `nginx` binary (Debian's package `nginx`; `.ci/run` installs it). Without it the
//! test prints `skipped: nginx not installed` and passes, unless `TOKENGATE_REQUIRE_NGINX=1`.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};

/// The forward-auth guide whose nginx snippet this test runs.
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/forward-auth.md");

/// The nginx binary, if installed.
pub(crate) fn find_nginx() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/sbin/nginx");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// The nginx binary, or `None` after printing why the test is skipped; panics instead when
/// `TOKENGATE_REQUIRE_NGINX=1`.
pub(crate) fn nginx_or_skip() -> Option<PathBuf> {
    let found = find_nginx();
    if found.is_none() {
        if std::env::var("TOKENGATE_REQUIRE_NGINX").as_deref() == Ok("1") {
            panic!("nginx not installed, and TOKENGATE_REQUIRE_NGINX=1");
        }
        println!("skipped: nginx not installed");
    }
    found
}

/// The ```nginx block of the `## nginx` section of the markdown file `doc`, with each
/// `(placeholder, value)` of `ports` replaced: the doc must hold each placeholder exactly
/// once, so that its test points it at real ports.
pub(crate) fn doc_snippet(doc: &str, ports: &[(&str, String)]) -> String {
    let text = std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("read {doc}: {e}"));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("nginx"))
        .unwrap_or_else(|| panic!("no `## nginx` section in {doc}"));
    let start = section
        .find("```nginx\n")
        .unwrap_or_else(|| panic!("no ```nginx block in the nginx section of {doc}"))
        + "```nginx\n".len();
    let len = section[start..]
        .find("```")
        .unwrap_or_else(|| panic!("unterminated ```nginx block in {doc}"));
    let mut snippet = section[start..start + len].to_owned();
    for (from, to) in ports {
        let count = snippet.matches(from).count();
        assert_eq!(
            count, 1,
            "the nginx snippet of {doc} should contain `{from}` exactly once (found {count}); \
             keep the doc and its test in sync:\n{snippet}"
        );
        snippet = snippet.replacen(from, to, 1);
    }
    snippet
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether this process runs as root (files it creates belong to uid 0).
fn running_as_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join(".uid-probe");
    std::fs::write(&probe, b"").expect("write uid probe");
    let root = std::fs::metadata(&probe).expect("stat uid probe").uid() == 0;
    let _ = std::fs::remove_file(probe);
    root
}

/// The upstream's answer: the identity headers as nginx passed them on.
const ECHO: &str = "user=$http_x_auth_user_id email=$http_x_auth_email \
                    role=$http_x_auth_role session=$http_x_auth_session_id\\n";

/// A whole nginx.conf: the doc's snippet pointed at `tokengate`, listening on `front`, with
/// an echo upstream on `echo`; every file nginx writes lives in `dir`.
fn nginx_conf(dir: &Path, tokengate: SocketAddr, front: u16, echo: u16) -> String {
    let snippet = doc_snippet(
        DOC,
        &[
            ("server 127.0.0.1:8080;", format!("server {tokengate};")),
            ("listen 80;", format!("listen 127.0.0.1:{front};")),
            (
                "proxy_pass http://127.0.0.1:3000;",
                format!("proxy_pass http://127.0.0.1:{echo};"),
            ),
        ],
    );
    let body = format!(
        "    # ---- docs/forward-auth.md ----
{snippet}    # ---- end of docs/forward-auth.md ----

    # The upstream: echoes the identity headers it received.
    server {{
        listen 127.0.0.1:{echo};
        location / {{
            return 200 \"{ECHO}\";
        }}
    }}
"
    );
    http_conf(dir, &body)
}

/// A whole nginx.conf around `body` (the inside of its `http {}` block): one process in the
/// foreground, every file nginx writes in `dir`.
pub(crate) fn http_conf(dir: &Path, body: &str) -> String {
    let d = dir.display();
    let user = if running_as_root(dir) {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{user}daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    default_type text/plain;

{body}}}
"
    )
}

/// An nginx child process on a temporary prefix; dropping it kills it.
pub(crate) struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Start nginx in front of `tokengate`; retries with new ports if one was taken.
    fn start(binary: &Path, tokengate: SocketAddr) -> Nginx {
        Nginx::start_with(binary, |dir, front| {
            let echo = free_port();
            (nginx_conf(dir, tokengate, front, echo), vec![echo])
        })
    }

    /// Start nginx with the configuration `conf(dir, front)` makes for a prefix `dir` and a
    /// front port `front`, and wait until it listens on `front` and on the other ports
    /// `conf` returns; retries with new ports if one was taken.
    pub(crate) fn start_with(
        binary: &Path,
        conf: impl Fn(&Path, u16) -> (String, Vec<u16>),
    ) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Nginx::try_start(binary, &conf) {
                Ok(nginx) => return nginx,
                Err(error) => last_error = error,
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    fn try_start(
        binary: &Path,
        make_conf: &impl Fn(&Path, u16) -> (String, Vec<u16>),
    ) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().expect("create nginx prefix");
        let front = free_port();
        let conf = dir.path().join("nginx.conf");
        let (text, others) = make_conf(dir.path(), front);
        std::fs::File::create(&conf)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut nginx = Nginx {
            child,
            dir,
            port: front,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!(
                    "nginx exited ({status}); nginx.conf:\n{text}\nerror.log:\n{}",
                    nginx.error_log()
                ));
            }
            let up = std::iter::once(&front)
                .chain(&others)
                .all(|&port| TcpStream::connect(("127.0.0.1", port)).is_ok());
            if up {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen on {front} and {others:?} within 20 s; error.log:\n{}",
                    nginx.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("==== nginx error.log ====\n{}", self.error_log());
        }
    }
}

/// `GET /app/page` through nginx with an optional Bearer token, cookie and forged header.
async fn through(
    front: &Client,
    bearer: Option<&str>,
    cookie: Option<&str>,
    forged_email: Option<&str>,
) -> Resp {
    let mut request = front.raw(Method::GET, "/app/page?x=1");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(token) = cookie {
        request = request.header("cookie", format!("tokengate_session={token}"));
    }
    if let Some(email) = forged_email {
        request = request.header("x-auth-email", email);
    }
    front.send(request).await
}

/// nginx's own 401, with tokengate's RFC 6750 challenge passed on.
#[track_caller]
pub(crate) fn assert_refused(resp: &Resp, what: &str) {
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401 from nginx, got {} {:?}",
        resp.status,
        resp.text
    );
    let challenge = resp
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: nginx should pass tokengate's Bearer challenge on, got {challenge:?}"
    );
    assert!(
        !resp.text.contains("user="),
        "{what}: the upstream must not be reached: {:?}",
        resp.text
    );
}

/// The upstream's echo for a user.
fn echo_line(user: &serde_json::Value, session_id: &str) -> String {
    format!(
        "user={} email={} role={} session={}\n",
        user["id"].as_str().expect("user id"),
        user["email"].as_str().expect("user email"),
        user["role"].as_str().expect("user role"),
        session_id
    )
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_an_upstream() {
    let Some(binary) = nginx_or_skip() else {
        return;
    };

    let server = Server::start();
    let api = server.client();
    let nginx = Nginx::start(&binary, server.addr());
    let front = Client::new(&nginx.url());

    // The first user is the admin; the second an ordinary user.
    let admin = api.signup_ok(&unique_email("nginx-admin")).await;
    let user = api.signup_ok(&unique_email("nginx-user")).await;
    assert_eq!(admin["role"], "admin");
    assert_eq!(user["role"], "user");

    // No credential: nginx refuses on tokengate's word.
    assert_refused(&through(&front, None, None, None).await, "no credential");
    assert_refused(
        &through(&front, None, None, Some("evil@x")).await,
        "no credential, forged X-Auth-Email",
    );

    // A signed-in Bearer request reaches the upstream with the user's identity.
    let tokens = api.signin_ok(user["email"].as_str().expect("email")).await;
    let expected = echo_line(&user, &tokens.session_id);
    let resp = through(&front, Some(&tokens.access_token), None, None).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, expected);

    // A client-sent X-Auth-Email is replaced by tokengate's.
    let resp = through(&front, Some(&tokens.access_token), None, Some("evil@x")).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, expected);
    assert!(
        !resp.text.contains("evil@x"),
        "forged header passed: {}",
        resp.text
    );

    // The session cookie works as well.
    let resp = through(&front, None, Some(&tokens.access_token), None).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, expected);

    // The admin's role comes through as `admin`.
    let admin_tokens = api.signin_ok(admin["email"].as_str().expect("email")).await;
    let resp = through(&front, Some(&admin_tokens.access_token), None, None).await;
    resp.expect(StatusCode::OK);
    assert_eq!(resp.text, echo_line(&admin, &admin_tokens.session_id));

    // A garbage token is refused.
    assert_refused(
        &through(&front, Some("not-a-token"), None, None).await,
        "garbage Bearer token",
    );
    assert_refused(
        &through(&front, Some("eyJhbGciOiJub25lIn0.e30."), None, None).await,
        "unsigned token",
    );
    assert_refused(
        &through(&front, None, Some("garbage"), None).await,
        "garbage cookie",
    );

    // After sign-out the same request is refused, by header and by cookie.
    api.signout(&tokens.access_token)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_refused(
        &through(&front, Some(&tokens.access_token), None, None).await,
        "signed-out Bearer token",
    );
    assert_refused(
        &through(&front, None, Some(&tokens.access_token), None).await,
        "signed-out cookie",
    );

    // Other sessions are untouched.
    let resp = through(&front, Some(&admin_tokens.access_token), None, None).await;
    resp.expect(StatusCode::OK);

    drop(nginx);
}
