//! Model-based test of the revocation rules.
//!
//! Random sequences of sign-in, refresh, refresh-token reuse, sign-out, sign-out-all,
//! password change, admin disable, key rotation and clock advance run against TWO
//! in-process nodes that share one SQLite file and one `ManualClock` (each node tails the
//! store every 250 ms, as two processes on one data dir do). After every step, for every
//! access token ever issued, each node must accept it (`GET /v1/auth/me` 200) if and only
//! if a small reference model says so:
//!
//!   accepted  <=>  its session is live  &&  its user is enabled  &&  now <= exp + leeway
//!
//! The node that served the step must agree at once; the other one within the tail's
//! propagation delay (a bounded wait, no timing assertion). On a mismatch the whole
//! sequence is printed. `PROPTEST_CASES` overrides the number of cases (default 8).

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::ServiceExt as _;
use common::{Client, NEW_PASSWORD, PASSWORD};
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::json;
use tokengate_core::{Clock, ManualClock, SystemClock, Timestamp};
use tokengate_server::config::Config;
use tokengate_server::server::Node;
use tokengate_store::{SqliteStore, Store};

const ACCESS_TTL: i64 = 900;
const LEEWAY: i64 = 30;
/// How long the other node may take to see a change (its tail runs every 250 ms).
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Op {
    SignIn { user: usize, node: usize },
    Refresh { session: usize, node: usize },
    ReuseRefresh { session: usize, node: usize },
    SignOut { token: usize, node: usize },
    SignOutAll { token: usize, node: usize },
    ChangePassword { token: usize, node: usize },
    AdminDisable { user: usize, node: usize },
    RotateKey,
    Advance { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..2usize;
    let pick = 0..64usize;
    prop_oneof![
        6 => (0..2usize, node.clone()).prop_map(|(user, node)| Op::SignIn { user, node }),
        4 => (pick.clone(), node.clone()).prop_map(|(session, node)| Op::Refresh { session, node }),
        2 => (pick.clone(), node.clone()).prop_map(|(session, node)| Op::ReuseRefresh { session, node }),
        3 => (pick.clone(), node.clone()).prop_map(|(token, node)| Op::SignOut { token, node }),
        1 => (pick.clone(), node.clone()).prop_map(|(token, node)| Op::SignOutAll { token, node }),
        1 => (pick.clone(), node.clone()).prop_map(|(token, node)| Op::ChangePassword { token, node }),
        1 => (0..2usize, node).prop_map(|(user, node)| Op::AdminDisable { user, node }),
        1 => Just(Op::RotateKey),
        2 => prop_oneof![Just(5u64), Just(120), Just(400), Just(950)].prop_map(|secs| Op::Advance { secs }),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------

struct User {
    email: String,
    id: String,
    password: &'static str,
    enabled: bool,
}

struct Session {
    user: usize,
    live: bool,
    refresh: String,
    used_refresh: Vec<String>,
}

struct Token {
    access: String,
    session: usize,
    exp: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Accept,
    Refuse,
    /// Exactly at the expiry boundary: either answer is right.
    Either,
}

struct Model {
    users: Vec<User>,
    sessions: Vec<Session>,
    tokens: Vec<Token>,
}

impl Model {
    fn expect(&self, t: &Token, now: i64) -> Expect {
        let s = &self.sessions[t.session];
        if !s.live || !self.users[s.user].enabled || now > t.exp + LEEWAY {
            Expect::Refuse
        } else if now == t.exp + LEEWAY {
            Expect::Either
        } else {
            Expect::Accept
        }
    }
    fn accepted(&self, token: usize, now: i64) -> bool {
        self.expect(&self.tokens[token], now) == Expect::Accept
    }
    fn end_user_sessions(&mut self, user: usize, except: Option<usize>) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if s.user == user && Some(i) != except {
                s.live = false;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Two nodes on one store and one clock
// ---------------------------------------------------------------------------------------

struct Cluster {
    nodes: Vec<(Node, tokio::task::JoinHandle<()>)>,
    clients: Vec<Client>,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    config: Config,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            // Every sign-in of the test is right; keep throttling out of the picture.
            signin_max_failures: 1_000,
            signin_max_failures_per_ip: 1_000,
            ..Config::default()
        };
        assert_eq!(config.access_ttl, Duration::from_secs(ACCESS_TTL as u64));
        assert_eq!(config.leeway, Duration::from_secs(LEEWAY as u64));
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let mut nodes = Vec::new();
        let mut clients = Vec::new();
        let mut first_store: Option<Arc<dyn Store>> = None;
        for _ in 0..2 {
            // One store per node, like two processes on one data dir.
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(&dir.path().join("tokengate.db"))
                    .await
                    .unwrap(),
            );
            first_store.get_or_insert_with(|| store.clone());
            let node = Node::start(config.clone(), clock.clone(), store)
                .await
                .unwrap();
            let app = tokengate_server::routes::router(node.state.clone())
                .into_make_service_with_connect_info::<SocketAddr>();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let serve = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            nodes.push((node, serve));
            clients.push(Client::new(&url));
        }
        let cluster = Cluster {
            nodes,
            clients,
            clock,
            store: first_store.unwrap(),
            config,
            _dir: dir,
        };
        cluster.wait_ready().await;
        cluster
    }

    fn now(&self) -> i64 {
        self.clock.now().as_secs()
    }

    async fn wait_ready(&self) {
        for c in &self.clients {
            common::eventually(PROPAGATION_BOUND, "node ready", || {
                let c = c.clone();
                async move { c.get("/readyz", None).await.status == StatusCode::OK }
            })
            .await;
        }
    }

    async fn stop(self) {
        for (node, serve) in self.nodes {
            serve.abort();
            node.stop().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------------------

fn fail(ops: &[Op], step: usize, what: String) -> String {
    let mut text = format!("model mismatch at step {step}: {what}\nsequence:\n");
    for (i, op) in ops.iter().enumerate() {
        text.push_str(&format!(
            "  {i:2}{} {op:?}\n",
            if i == step { " >>" } else { "   " }
        ));
    }
    text
}

/// Every token on node `n` matches the model; `strict`: now, else within the bound.
async fn check_node(
    cluster: &Cluster,
    model: &Model,
    n: usize,
    strict: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + PROPAGATION_BOUND;
    loop {
        let now = cluster.now();
        let mut wrong = None;
        for (i, t) in model.tokens.iter().enumerate() {
            let expect = model.expect(t, now);
            if expect == Expect::Either {
                continue;
            }
            let status = cluster.clients[n].me_status(&t.access).await;
            let ok = match expect {
                Expect::Accept => status == StatusCode::OK,
                _ => status == StatusCode::UNAUTHORIZED,
            };
            if !ok {
                wrong = Some(format!(
                    "node {n}: token {i} (session {}, exp in {} s) expected {expect:?}, got {status}",
                    t.session,
                    t.exp - now
                ));
                break;
            }
        }
        match wrong {
            None => return Ok(()),
            Some(w) if strict || Instant::now() >= deadline => return Err(w),
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn run(ops: &[Op]) -> Result<(), String> {
    let cluster = Cluster::start().await;
    let result = run_on(&cluster, ops).await;
    cluster.stop().await;
    result
}

async fn run_on(cluster: &Cluster, ops: &[Op]) -> Result<(), String> {
    let a = &cluster.clients[0];
    let admin_email = common::unique_email("model-admin");
    a.signup_ok(&admin_email).await; // the first user is the admin
    let mut model = Model {
        users: Vec::new(),
        sessions: Vec::new(),
        tokens: Vec::new(),
    };
    for u in 0..2 {
        let email = common::unique_email(&format!("model-{u}"));
        let user = a.signup_ok(&email).await;
        model.users.push(User {
            email,
            id: user["id"].as_str().unwrap().to_owned(),
            password: PASSWORD,
            enabled: true,
        });
    }

    for (step, op) in ops.iter().enumerate() {
        let now = cluster.now();
        let bad = |what: String| fail(ops, step, what);
        // The node that served the step (its answer must match at once), if any.
        let mut acting = None;
        match *op {
            Op::SignIn { user, node } => {
                acting = Some(node);
                let u = &model.users[user];
                let resp = cluster.clients[node].signin(&u.email, u.password).await;
                if u.enabled {
                    if resp.status != StatusCode::OK {
                        return Err(bad(format!("sign-in of an enabled user: {}", resp.status)));
                    }
                    let t = common::Tokens::from_resp(&resp);
                    let exp = common::jwt_claims(&t.access_token)["exp"].as_i64().unwrap();
                    if exp != now + ACCESS_TTL {
                        return Err(bad(format!("exp {exp} is not iat + access_ttl")));
                    }
                    model.sessions.push(Session {
                        user,
                        live: true,
                        refresh: t.refresh_token,
                        used_refresh: Vec::new(),
                    });
                    model.tokens.push(Token {
                        access: t.access_token,
                        session: model.sessions.len() - 1,
                        exp,
                    });
                } else if resp.status == StatusCode::OK {
                    return Err(bad("a disabled user signed in".into()));
                }
            }
            Op::Refresh { session, node } => {
                if model.sessions.is_empty() {
                    continue;
                }
                acting = Some(node);
                let si = session % model.sessions.len();
                let s = &model.sessions[si];
                let live = s.live && model.users[s.user].enabled;
                let resp = cluster.clients[node].refresh(&s.refresh).await;
                if live {
                    if resp.status != StatusCode::OK {
                        return Err(bad(format!(
                            "refresh of live session {si}: {}",
                            resp.status
                        )));
                    }
                    let t = common::Tokens::from_resp(&resp);
                    let exp = common::jwt_claims(&t.access_token)["exp"].as_i64().unwrap();
                    let s = &mut model.sessions[si];
                    let old = std::mem::replace(&mut s.refresh, t.refresh_token);
                    s.used_refresh.push(old);
                    model.tokens.push(Token {
                        access: t.access_token,
                        session: si,
                        exp,
                    });
                } else if resp.status == StatusCode::OK {
                    return Err(bad(format!("refresh of ended session {si} succeeded")));
                }
            }
            Op::ReuseRefresh { session, node } => {
                if model.sessions.is_empty() {
                    continue;
                }
                let si = session % model.sessions.len();
                let Some(used) = model.sessions[si].used_refresh.last().cloned() else {
                    continue;
                };
                acting = Some(node);
                let resp = cluster.clients[node].refresh(&used).await;
                if resp.status == StatusCode::OK {
                    return Err(bad(format!(
                        "reused refresh token of session {si} accepted"
                    )));
                }
                // A reuse is theft: the whole session ends.
                model.sessions[si].live = false;
            }
            Op::SignOut { token, node }
            | Op::SignOutAll { token, node }
            | Op::ChangePassword { token, node } => {
                if model.tokens.is_empty() {
                    continue;
                }
                acting = Some(node);
                let ti = token % model.tokens.len();
                let accepted = model.accepted(ti, now);
                let t = &model.tokens[ti];
                let (si, user) = (t.session, model.sessions[t.session].user);
                let c = &cluster.clients[node];
                let resp = match op {
                    Op::SignOut { .. } => c.signout(&t.access).await,
                    Op::SignOutAll { .. } => c.signout_all(&t.access).await,
                    _ => {
                        let u = &model.users[user];
                        let new = if u.password == PASSWORD {
                            NEW_PASSWORD
                        } else {
                            PASSWORD
                        };
                        c.password(&t.access, u.password, new).await
                    }
                };
                let expected = if accepted {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::UNAUTHORIZED
                };
                if resp.status != expected {
                    return Err(bad(format!(
                        "{op:?} with token {ti}: expected {expected}, got {} {}",
                        resp.status, resp.text
                    )));
                }
                if accepted {
                    match op {
                        Op::SignOut { .. } => model.sessions[si].live = false,
                        Op::SignOutAll { .. } => model.end_user_sessions(user, None),
                        _ => {
                            let u = &mut model.users[user];
                            u.password = if u.password == PASSWORD {
                                NEW_PASSWORD
                            } else {
                                PASSWORD
                            };
                            model.end_user_sessions(user, Some(si));
                        }
                    }
                }
            }
            Op::AdminDisable { user, node } => {
                acting = Some(node);
                let c = &cluster.clients[node];
                let admin = c.signin_ok(&admin_email).await;
                let id = model.users[user].id.clone();
                let resp = c
                    .post(
                        &format!("/v1/admin/users/{id}/disable"),
                        Some(&admin.access_token),
                        Some(&json!({})),
                    )
                    .await;
                if resp.status != StatusCode::NO_CONTENT {
                    return Err(bad(format!("admin disable: {} {}", resp.status, resp.text)));
                }
                model.users[user].enabled = false;
                model.end_user_sessions(user, None);
            }
            Op::RotateKey => {
                tokengate_sessions::keyring::rotate(
                    cluster.store.as_ref(),
                    &tokengate_server::state::session_config(&cluster.config),
                    Timestamp::from_secs(now),
                )
                .await
                .map_err(|e| bad(format!("rotate: {e}")))?;
            }
            Op::Advance { secs } => {
                cluster.clock.advance(Duration::from_secs(secs));
                cluster.wait_ready().await;
            }
        }
        for n in 0..2 {
            check_node(cluster, &model, n, acting == Some(n))
                .await
                .map_err(|w| fail(ops, step, w))?;
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Every case starts two nodes; shrinking is kept short (the failure message
        // already prints the whole sequence).
        max_shrink_iters: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn two_nodes_accept_exactly_what_the_model_says(ops in proptest::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(run(&ops));
        prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    }
}
