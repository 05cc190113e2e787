//! The cluster under faults, against real processes: does the staleness promise hold?
//!
//! Each test starts two `tokengate serve` nodes (A and B) on a PostgreSQL database of its
//! own and a private `redis-server`, with `max_staleness = 2s` and `fail_closed`; puts
//! steady `/v1/verify` traffic on both ([`TRAFFIC_TASKS`] clients per node cycling through
//! every token); keeps signing sessions out on both nodes while it injects one fault; heals
//! it; and then checks, from every answer it recorded with its instant:
//!
//! 1. no signed-out token was accepted by any node later than `max_staleness` (+ [`MARGIN`])
//!    after its sign-out was acknowledged;
//! 2. no acknowledged revocation is lost: after the heal each one is refused by both nodes;
//! 3. no answer was a 5xx other than 503;
//! 4. both nodes serve a live token again within `max_staleness` + 3 s of the heal;
//! 5. what tokengate keeps in Redis is bounded by the live revocations: no key without an
//!    expiry (nothing that only grows), no more keys than acknowledged revocations;
//! 6. a node's log grows by a bounded number of lines over an outage (one when it turns
//!    stale, one when it recovers, and a few about the lost connection), not one per
//!    refused request.
//!
//! The faults: Redis paused (SIGSTOP) for 6 s; Redis killed and restarted empty; node A cut
//! from Redis and node A cut from PostgreSQL by a [`FaultProxy`] that stops forwarding
//! (the hang that a closed connection does not reveal) for 6 s; node A SIGKILLed right after
//! a burst of 200 sign-outs, then restarted. Each test prints one `fault: ...` line with its
//! figures (worst accept after acknowledgement, recovery per node), which BENCHMARKS.md
//! ("Faults") records with the command that reproduces them. Each takes 15 to 25 s; they use
//! separate services, so the test harness runs them in parallel.
//!
//! They need PostgreSQL and Redis, and skip without them like the other cluster tests
//! ([`common::services`]).

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use common::services::{namespace, node_env, services, skip, Database, OwnRedis, POSTGRES_ADDR};
use common::{Client, Server};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The nodes' `max_staleness`.
const MAX_STALENESS: Duration = Duration::from_secs(2);
/// Tolerance on top of `max_staleness` for the lateness of an acceptance. The stamps already
/// favour the node (a verify counts from the instant the test sent it, a sign-out from the
/// instant its 204 arrived); this covers the test's own polling and scheduling on a shared
/// 2-core machine.
const MARGIN: Duration = Duration::from_millis(150);
/// Both nodes serve again within this of the heal (`max_staleness` + 3 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// How long a hang (paused Redis, blackholed connection) lasts.
const OUTAGE: Duration = Duration::from_secs(6);
/// How long Redis stays down before it is restarted empty.
const REDIS_DOWN: Duration = Duration::from_secs(3);
/// Traffic before a fault and sign-outs after the heal.
const AROUND: Duration = Duration::from_secs(1);
/// Verify clients per node, each pausing [`TRAFFIC_PAUSE`] between requests (some 250
/// requests a second per node: enough to see every token every few tenths of a second,
/// little enough for several clusters on 2 cores).
const TRAFFIC_TASKS: usize = 3;
const TRAFFIC_PAUSE: Duration = Duration::from_millis(10);
/// A verify or sign-out that has not answered by then is recorded as unanswered.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);
const SIGNOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// One sign-out started this often, on A and B in turn, during a fault.
const SIGNOUT_EVERY: Duration = Duration::from_millis(100);
/// Sessions never signed out: the nodes' "serving" signal.
const LIVE: usize = 2;
/// Sign-outs in the burst before a SIGKILL, and how many run at once.
const BURST: usize = 200;
const BURST_CONCURRENCY: usize = 8;
/// Warnings and errors a node may log over an outage: a constant, however many requests it
/// refused. (Its INFO lines, such as one per sign-out, are not about the outage.)
const LOG_LINES_BOUND: usize = 12;
/// The tokens the traffic watches most: those handed to sign-out between 15 and 35
/// sign-outs ago (some 1.5 to 3.5 s ago), where a late acceptance would show.
const WATCHED: std::ops::Range<usize> = 15..35;
/// Sessions one test user holds.
const SESSIONS_PER_USER: usize = 50;

const NODE_NAMES: [&str; 2] = ["A", "B"];

// ---------------------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_holds_the_staleness_promise() {
    let Some(cluster) = Cluster::start(Cut::Nothing) else {
        return;
    };
    let load = Load::start(&cluster, signouts_for(OUTAGE)).await;
    let began = load.fault_begins(&cluster).await;
    blocking(|| cluster.redis.pause());
    tokio::time::sleep(OUTAGE).await;
    blocking(|| cluster.redis.resume());
    load.healed(&cluster, "Redis paused (SIGSTOP) for 6 s", began, &[0, 1])
        .await
        .assert_promise_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_holds_the_staleness_promise() {
    let Some(mut cluster) = Cluster::start(Cut::Nothing) else {
        return;
    };
    let load = Load::start(&cluster, signouts_for(REDIS_DOWN)).await;
    let began = load.fault_begins(&cluster).await;
    blocking(|| cluster.redis.kill());
    tokio::time::sleep(REDIS_DOWN).await;
    assert!(
        blocking(|| cluster.redis.spawn()),
        "restart the private redis-server"
    );
    load.healed(
        &cluster,
        "Redis killed, restarted empty after 3 s",
        began,
        &[0, 1],
    )
    .await
    .assert_promise_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_redis_holds_the_staleness_promise() {
    cut_node_a_for_an_outage(Cut::Redis, "node A cut from Redis (blackhole) for 6 s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_postgres_holds_the_staleness_promise() {
    cut_node_a_for_an_outage(
        Cut::Postgres,
        "node A cut from PostgreSQL (blackhole) for 6 s",
    )
    .await;
}

/// Blackhole node A's link to the service `cut` names for [`OUTAGE`], under load, and judge
/// the promise on both nodes.
async fn cut_node_a_for_an_outage(cut: Cut, name: &'static str) {
    let Some(cluster) = Cluster::start(cut) else {
        return;
    };
    let load = Load::start(&cluster, signouts_for(OUTAGE)).await;
    let began = load.fault_begins(&cluster).await;
    cluster.proxy().set(Fault::Blackhole).await;
    tokio::time::sleep(OUTAGE).await;
    cluster.proxy().set(Fault::Pass).await;
    load.healed(&cluster, name, began, &[0, 1])
        .await
        .assert_promise_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_a_burst_of_sign_outs_loses_none() {
    let Some(mut cluster) = Cluster::start(Cut::Nothing) else {
        return;
    };
    // The restart takes about as long as a short outage; sign-outs go on meanwhile.
    let load = Load::start(&cluster, BURST + signouts_for(REDIS_DOWN)).await;
    let began = load.fault_begins(&cluster).await;
    load.burst_on(0, BURST).await;
    blocking(|| cluster.nodes[0].kill());
    blocking(|| cluster.nodes[0].restart());
    cluster.clients[0].send_replace(cluster.nodes[0].client());
    // Only B's log is judged: A's holds its own start-up.
    let name = "node A SIGKILLed after a burst of 200 sign-outs, restarted";
    load.healed(&cluster, name, began, &[1])
        .await
        .assert_promise_held();
}

/// Sign-outs the driver makes over a fault of `outage`, with [`AROUND`] on each side and
/// some to spare.
fn signouts_for(outage: Duration) -> usize {
    let window = outage + 2 * AROUND;
    (window.as_millis() / SIGNOUT_EVERY.as_millis()) as usize + 10
}

/// Run a blocking step (a process to signal, start or wait for) without stalling the
/// runtime's other worker, which carries the traffic.
fn blocking<T>(step: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(step)
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

/// Which of node A's services goes through the [`FaultProxy`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Nothing,
    Redis,
    Postgres,
}

/// Two nodes on a database and a Redis of their own. Fields drop in order: the nodes
/// first, then the proxy and the services they used.
struct Cluster {
    nodes: [Server; 2],
    /// The current client of each node (a restarted node listens on a new port).
    clients: [watch::Sender<Client>; 2],
    proxy: Option<FaultProxy>,
    redis: OwnRedis,
    _db: Database,
}

impl Cluster {
    fn start(cut: Cut) -> Option<Cluster> {
        let db = services()?;
        let Some(redis) = OwnRedis::start(&[]) else {
            skip("cannot start a private redis-server");
            return None;
        };
        let proxy = match cut {
            Cut::Nothing => None,
            Cut::Redis => Some(FaultProxy::start(redis.addr())),
            Cut::Postgres => Some(FaultProxy::start(POSTGRES_ADDR.into())),
        };
        let (db_url, redis_url) = (db.url(), redis.url());
        let (mut a_db, mut a_redis) = (db_url.clone(), redis_url.clone());
        match (&proxy, cut) {
            (Some(proxy), Cut::Redis) => a_redis = format!("redis://{}", proxy.addr()),
            (Some(proxy), Cut::Postgres) => a_db = db.url_via(proxy.addr()),
            _ => {}
        }
        let ns = namespace();
        let env = |db: &str, redis: &str| {
            let mut env: Vec<(String, String)> = node_env(db, redis, &ns)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            env.push(("TOKENGATE_MAX_STALENESS".to_owned(), "2s".to_owned()));
            env.push((
                "TOKENGATE_STALENESS_POLICY".to_owned(),
                "fail_closed".to_owned(),
            ));
            env
        };
        let start = |env: Vec<(String, String)>| {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
            Server::start_with_env(&env)
        };
        let nodes = [start(env(&a_db, &a_redis)), start(env(&db_url, &redis_url))];
        let clients = [
            watch::Sender::new(nodes[0].client()),
            watch::Sender::new(nodes[1].client()),
        ];
        Some(Cluster {
            nodes,
            clients,
            proxy,
            redis,
            _db: db,
        })
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("this cluster has a proxy")
    }

    fn client(&self, node: usize) -> Client {
        self.clients[node].borrow().clone()
    }

    /// Each node's log so far.
    fn logs(&self) -> [String; 2] {
        [self.nodes[0].log(), self.nodes[1].log()]
    }
}

// ---------------------------------------------------------------------------------------
// The load and what it records
// ---------------------------------------------------------------------------------------

/// One `/v1/verify` the traffic sent.
struct Verify {
    node: usize,
    token: usize,
    sent: Instant,
    answer: Answer,
}

/// A status, or why none came (a killed node, a timeout).
type Answer = Result<StatusCode, String>;

/// One sign-out and what came of it.
struct SignOut {
    token: usize,
    /// The node whose 204 acknowledged it, and when that 204 arrived.
    acked: Option<(usize, Instant)>,
    /// Every answer, from each node tried.
    answers: Vec<(usize, Answer)>,
}

/// What the traffic, the sign-outs and the test share: the tokens, and what they record.
struct Shared {
    /// Access tokens, one per session: the first [`LIVE`] are never signed out.
    tokens: Vec<String>,
    /// The next token to sign out.
    next: AtomicUsize,
    verifies: Mutex<Vec<Verify>>,
    signouts: Mutex<Vec<SignOut>>,
}

/// Steady verify traffic on both nodes, and the sessions to sign out during a fault.
struct Load {
    shared: Arc<Shared>,
    stop_traffic: watch::Sender<bool>,
    traffic: JoinSet<()>,
    clients: [watch::Receiver<Client>; 2],
    /// The length of each node's log when the fault began.
    log_offsets: Mutex<[usize; 2]>,
}

impl Load {
    /// Sign in [`LIVE`] + `signouts` sessions on both nodes and start the traffic.
    async fn start(cluster: &Cluster, signouts: usize) -> Load {
        let shared = Arc::new(Shared {
            tokens: sessions(cluster, LIVE + signouts).await,
            next: AtomicUsize::new(LIVE),
            verifies: Mutex::default(),
            signouts: Mutex::default(),
        });
        let clients = [
            cluster.clients[0].subscribe(),
            cluster.clients[1].subscribe(),
        ];
        let (stop_traffic, stop) = watch::channel(false);
        let mut traffic = JoinSet::new();
        for (node, client) in clients.iter().enumerate() {
            for task in 0..TRAFFIC_TASKS {
                traffic.spawn(verify_traffic(
                    node,
                    task,
                    client.clone(),
                    shared.clone(),
                    stop.clone(),
                ));
            }
        }
        Load {
            shared,
            stop_traffic,
            traffic,
            clients,
            log_offsets: Mutex::new([0, 0]),
        }
    }

    /// Let the traffic run for [`AROUND`], note the logs' lengths, start the sign-outs;
    /// returns the sign-out driver, to hand to [`Load::healed`].
    async fn fault_begins(&self, cluster: &Cluster) -> SignOutDriver {
        tokio::time::sleep(AROUND).await;
        *self.log_offsets.lock().unwrap() = cluster.logs().map(|log| log.len());
        SignOutDriver::start(self)
    }

    /// Sign out `count` sessions on `node` at once ([`BURST_CONCURRENCY`] in flight).
    async fn burst_on(&self, node: usize, count: usize) {
        let first = self.shared.next.fetch_add(count, Ordering::SeqCst);
        assert!(
            first + count <= self.shared.tokens.len(),
            "sessions for the burst"
        );
        futures_util::stream::iter(first..first + count)
            .map(|token| {
                let shared = self.shared.clone();
                let client = self.clients[node].borrow().clone();
                async move {
                    let answer = sign_out(&client, &shared.tokens[token]).await;
                    let acked =
                        (answer == Ok(StatusCode::NO_CONTENT)).then(|| (node, Instant::now()));
                    shared.signouts.lock().unwrap().push(SignOut {
                        token,
                        acked,
                        answers: vec![(node, answer)],
                    });
                }
            })
            .buffer_unordered(BURST_CONCURRENCY)
            .collect::<()>()
            .await;
    }

    /// The fault is healed now: sign out for [`AROUND`] more, watch both nodes recover,
    /// check every revocation on both, and judge what was recorded.
    async fn healed(
        mut self,
        cluster: &Cluster,
        fault: &'static str,
        driver: SignOutDriver,
        judged_logs: &[usize],
    ) -> Report {
        let heal = Instant::now();
        tokio::time::sleep(AROUND).await;
        driver.stop().await;
        // Until both nodes have served live tokens for a second, and every acknowledged
        // revocation is older than the promise (bounded by the recovery bound).
        let last_ack = self.acked().iter().map(|&(_, _, at)| at).max();
        let promise_kept_by = last_ack.map_or(heal, |at| at + MAX_STALENESS + MARGIN);
        let deadline = heal + RECOVERY_BOUND + AROUND;
        loop {
            let now = Instant::now();
            let settled = self
                .recovery(heal)
                .iter()
                .all(|r| r.is_some_and(|r| now.duration_since(heal + r) >= AROUND));
            if now >= deadline || (settled && now >= promise_kept_by) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_traffic.send_replace(true);
        while self.traffic.join_next().await.is_some() {}
        let sweep = self.sweep().await;
        let offsets = *self.log_offsets.lock().unwrap();
        let logs = cluster.logs();
        // Warnings and errors written since the fault began, on the nodes judged.
        let outage_lines = [0, 1].map(|node| {
            judged_logs.contains(&node).then(|| {
                logs[node]
                    .get(offsets[node]..)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        });
        let redis = RedisFootprint::of(&cluster.redis);
        self.judge(fault, heal, sweep, outage_lines, redis)
    }

    /// Every acknowledged sign-out: (token, acknowledging node, when).
    fn acked(&self) -> Vec<(usize, usize, Instant)> {
        let signouts = self.shared.signouts.lock().unwrap();
        signouts
            .iter()
            .filter_map(|s| s.acked.map(|(node, at)| (s.token, node, at)))
            .collect()
    }

    /// How long after `heal` each node began serving live tokens for good, as recorded so
    /// far: from the first 200 after its last other answer. `None` while it is not serving.
    fn recovery(&self, heal: Instant) -> [Option<Duration>; 2] {
        let verifies = self.shared.verifies.lock().unwrap();
        [0, 1].map(|node| {
            let mut serving_since = None;
            for v in verifies
                .iter()
                .filter(|v| v.node == node && v.token < LIVE && v.sent >= heal)
            {
                match (&v.answer, serving_since) {
                    (Ok(StatusCode::OK), None) => serving_since = Some(v.sent),
                    (Ok(StatusCode::OK), Some(_)) => {}
                    _ => serving_since = None,
                }
            }
            serving_since.map(|since| since.duration_since(heal))
        })
    }

    /// After the heal: each acknowledged revocation checked on both nodes.
    async fn sweep(&self) -> Vec<(usize, usize, Answer)> {
        let mut answers = Vec::new();
        for (token, _, _) in self.acked() {
            for (node, client) in self.clients.iter().enumerate() {
                let client = client.borrow().clone();
                answers.push((
                    node,
                    token,
                    verify(&client, &self.shared.tokens[token]).await,
                ));
            }
        }
        answers
    }

    fn judge(
        &self,
        fault: &'static str,
        heal: Instant,
        sweep: Vec<(usize, usize, Answer)>,
        outage_lines: [Option<Vec<String>>; 2],
        redis: RedisFootprint,
    ) -> Report {
        let mut violations = Vec::new();
        let acked = self.acked();
        let ack_of = |token: usize| acked.iter().find(|a| a.0 == token).copied();
        let verifies = self.shared.verifies.lock().unwrap();
        let signouts = self.shared.signouts.lock().unwrap();

        // 1. Late acceptances.
        let mut worst: Option<Duration> = None;
        let mut late = Vec::new();
        for v in verifies.iter().filter(|v| v.answer == Ok(StatusCode::OK)) {
            let Some((_, acked_on, at)) = ack_of(v.token) else {
                continue;
            };
            let Some(lag) = v.sent.checked_duration_since(at) else {
                continue;
            };
            worst = worst.max(Some(lag));
            if lag > MAX_STALENESS + MARGIN {
                late.push(format!(
                    "node {} accepted token #{} {} ms after its sign-out was acknowledged by node {}",
                    NODE_NAMES[v.node],
                    v.token,
                    lag.as_millis(),
                    NODE_NAMES[acked_on]
                ));
            }
        }
        summarize(&mut violations, "late acceptances", late);

        // 2. Lost revocations.
        let lost = sweep
            .iter()
            .filter(|(_, _, answer)| *answer != Ok(StatusCode::UNAUTHORIZED))
            .map(|(node, token, answer)| {
                format!(
                    "after the heal node {} answers {answer:?} for token #{token}, whose sign-out was acknowledged",
                    NODE_NAMES[*node]
                )
            })
            .collect();
        summarize(
            &mut violations,
            "acknowledged revocations not refused",
            lost,
        );

        // 3. 5xx other than 503.
        let verify_answers = verifies.iter().map(|v| (v.node, &v.answer, "verify"));
        let signout_answers = signouts
            .iter()
            .flat_map(|s| s.answers.iter().map(|(node, a)| (*node, a, "sign-out")));
        let server_errors = verify_answers
            .chain(signout_answers)
            .filter_map(|(node, answer, what)| match answer {
                Ok(status)
                    if status.is_server_error() && *status != StatusCode::SERVICE_UNAVAILABLE =>
                {
                    Some(format!(
                        "a {what} on node {} answered {status}",
                        NODE_NAMES[node]
                    ))
                }
                _ => None,
            })
            .collect();
        summarize(&mut violations, "5xx answers other than 503", server_errors);

        // 4. Recovery.
        drop(verifies);
        let recovery = self.recovery(heal);
        for (node, r) in recovery.iter().enumerate() {
            match r {
                Some(r) if *r <= RECOVERY_BOUND => {}
                Some(r) => violations.push(format!(
                    "node {} served live tokens again only {} ms after the heal",
                    NODE_NAMES[node],
                    r.as_millis()
                )),
                None => violations.push(format!(
                    "node {} did not serve live tokens again within {} ms of the heal",
                    NODE_NAMES[node],
                    (RECOVERY_BOUND + AROUND).as_millis()
                )),
            }
        }

        // 5. Redis memory.
        if !redis.without_expiry.is_empty() {
            violations.push(format!(
                "Redis keys without an expiry (they only grow): {:?}",
                redis.without_expiry
            ));
        }
        if redis.keys > acked.len() {
            violations.push(format!(
                "Redis holds {} keys for {} acknowledged revocations",
                redis.keys,
                acked.len()
            ));
        }

        // 6. Log lines over the outage.
        for (node, lines) in outage_lines.iter().enumerate() {
            let Some(lines) = lines.as_ref().filter(|l| l.len() > LOG_LINES_BOUND) else {
                continue;
            };
            let first: Vec<&str> = lines.iter().take(5).map(String::as_str).collect();
            violations.push(format!(
                "node {} logged {} warnings and errors over the outage (bound {LOG_LINES_BOUND}), such as:\n  {}",
                NODE_NAMES[node],
                lines.len(),
                first.join("\n  ")
            ));
        }

        let answered = self.shared.verifies.lock().unwrap().len();
        Report {
            fault,
            acked: acked.len(),
            verifies: answered,
            worst,
            recovery,
            log_lines: outage_lines.map(|lines| lines.map(|l| l.len())),
            redis,
            violations,
        }
    }
}

/// Keep at most a few examples of one kind of violation, with their count.
fn summarize(violations: &mut Vec<String>, kind: &str, found: Vec<String>) {
    if found.is_empty() {
        return;
    }
    let examples: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
    violations.push(format!(
        "{} {kind}, such as:\n  {}",
        found.len(),
        examples.join("\n  ")
    ));
}

/// Sign `count` sessions in, spread over both nodes and over users of
/// [`SESSIONS_PER_USER`] sessions each; their access tokens.
async fn sessions(cluster: &Cluster, count: usize) -> Vec<String> {
    let mut emails = Vec::new();
    for user in 0..count.div_ceil(SESSIONS_PER_USER) {
        emails.push(cluster.client(user % 2).new_user("fault").await);
    }
    futures_util::stream::iter(0..count)
        .map(|i| {
            let client = cluster.client(i % 2);
            let email = emails[i / SESSIONS_PER_USER].clone();
            async move { client.signin_ok(&email).await.access_token }
        })
        .buffered(4)
        .collect()
        .await
}

/// `GET /v1/verify` with `token`.
async fn verify(client: &Client, token: &str) -> Answer {
    let request = client
        .raw(Method::GET, "/v1/verify")
        .bearer_auth(token)
        .timeout(VERIFY_TIMEOUT);
    client
        .try_send(request)
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

/// `POST /v1/auth/signout` with `token`.
async fn sign_out(client: &Client, token: &str) -> Answer {
    let request = client
        .raw(Method::POST, "/v1/auth/signout")
        .bearer_auth(token)
        .timeout(SIGNOUT_TIMEOUT);
    client
        .try_send(request)
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

/// One verify client of `node` until stopped: every other request goes to the next of its
/// share of all the tokens, the others to the [`WATCHED`] ones.
async fn verify_traffic(
    node: usize,
    task: usize,
    clients: watch::Receiver<Client>,
    load: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let tokens = load.tokens.len();
    let (mut any, mut recent) = (task, task);
    for request in 0.. {
        if *stop.borrow() {
            break;
        }
        let signed_out = load.next.load(Ordering::SeqCst).min(tokens);
        let handed = signed_out - LIVE;
        let token = if request % 2 == 1 && handed > 0 {
            recent += 1;
            let back = if handed > WATCHED.start {
                WATCHED.start + recent % (WATCHED.end.min(handed) - WATCHED.start)
            } else {
                recent % handed
            };
            signed_out - 1 - back
        } else {
            any = (any + TRAFFIC_TASKS) % tokens;
            any
        };
        let client = clients.borrow().clone();
        let sent = Instant::now();
        let answer = verify(&client, &load.tokens[token]).await;
        load.verifies.lock().unwrap().push(Verify {
            node,
            token,
            sent,
            answer,
        });
        tokio::time::sleep(TRAFFIC_PAUSE).await;
    }
}

/// Signs a session out every [`SIGNOUT_EVERY`], on A and B in turn; a sign-out the first
/// node does not acknowledge is tried on the other.
struct SignOutDriver {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SignOutDriver {
    fn start(load: &Load) -> SignOutDriver {
        let (stop, mut stopped) = watch::channel(false);
        let shared = load.shared.clone();
        let clients = load.clients.clone();
        let task = tokio::spawn(async move {
            let mut in_flight = JoinSet::new();
            let mut tick = tokio::time::interval(SIGNOUT_EVERY);
            for turn in 0.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let token = shared.next.fetch_add(1, Ordering::SeqCst);
                if token >= shared.tokens.len() {
                    break;
                }
                let first = turn % 2;
                let (shared, clients) = (shared.clone(), clients.clone());
                in_flight.spawn(async move {
                    let mut signout = SignOut {
                        token,
                        acked: None,
                        answers: Vec::new(),
                    };
                    for node in [first, 1 - first] {
                        let client = clients[node].borrow().clone();
                        let answer = sign_out(&client, &shared.tokens[token]).await;
                        let done = answer == Ok(StatusCode::NO_CONTENT);
                        signout.answers.push((node, answer));
                        if done {
                            signout.acked = Some((node, Instant::now()));
                            break;
                        }
                    }
                    shared.signouts.lock().unwrap().push(signout);
                });
            }
            while in_flight.join_next().await.is_some() {}
        });
        SignOutDriver { stop, task }
    }

    /// Stop starting sign-outs and wait for those in flight.
    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.expect("the sign-out driver");
    }
}

// ---------------------------------------------------------------------------------------
// Redis and the report
// ---------------------------------------------------------------------------------------

/// What the cluster left in its Redis.
struct RedisFootprint {
    keys: usize,
    without_expiry: Vec<String>,
    used_memory: String,
}

impl RedisFootprint {
    fn of(redis: &OwnRedis) -> RedisFootprint {
        let keys: Vec<String> = redis
            .cli(&["--scan"])
            .lines()
            .map(str::to_owned)
            .filter(|k| !k.is_empty())
            .collect();
        let without_expiry = keys
            .iter()
            .filter(|k| redis.cli(&["ttl", k]).trim() == "-1")
            .cloned()
            .collect();
        let used_memory = redis
            .cli(&["info", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory_human:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        RedisFootprint {
            keys: keys.len(),
            without_expiry,
            used_memory,
        }
    }
}

/// The figures of one fault, and what broke the promise.
struct Report {
    fault: &'static str,
    acked: usize,
    verifies: usize,
    worst: Option<Duration>,
    recovery: [Option<Duration>; 2],
    log_lines: [Option<usize>; 2],
    redis: RedisFootprint,
    violations: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
        let lines = |n: Option<usize>| n.map_or("-".to_owned(), |n| n.to_string());
        write!(
            f,
            "fault: {}: {} sign-outs acknowledged, {} verifies; worst accept after \
             acknowledgement {} (bound {} ms); recovery A {}, B {} (bound {} ms); warnings and \
             errors logged over the outage A {}, B {}; Redis after: {} keys, used_memory {}",
            self.fault,
            self.acked,
            self.verifies,
            ms(self.worst),
            (MAX_STALENESS + MARGIN).as_millis(),
            ms(self.recovery[0]),
            ms(self.recovery[1]),
            RECOVERY_BOUND.as_millis(),
            lines(self.log_lines[0]),
            lines(self.log_lines[1]),
            self.redis.keys,
            self.redis.used_memory,
        )
    }
}

impl Report {
    #[track_caller]
    fn assert_promise_held(&self) {
        println!("{self}");
        assert!(
            self.violations.is_empty(),
            "{self}\nthe promise was broken:\n- {}",
            self.violations.join("\n- ")
        );
    }
}
