//! Where the bus's Redis is, and the connections to it: the one place that opens them.
//!
//! `redis_url` names either one server (anything [`redis::Client::open`] takes:
//! `redis://[user:password@]host:port[/db]`, `unix:///path`) or, with
//! `redis+sentinel://`, a master watched by Redis Sentinel:
//!
//! ```text
//! redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/MASTER_NAME[/DB]
//! ```
//!
//! The hosts are the sentinels (port 26379 when omitted; an IPv6 address in brackets); the
//! user and password (percent-encoded) authenticate to the master, not to the sentinels;
//! `DB` is the master's database (0 when omitted).
//!
//! Behind Sentinel every new connection follows the Sentinel client guidelines: ask each
//! sentinel in turn (the one that answered last first) for the master's address with
//! `SENTINEL get-master-addr-by-name`, connect, and use the server only if `ROLE` says it is
//! a master. A failover breaks the connections to the old master (it is gone, or Sentinel
//! kills its clients when it demotes it to a replica); the next connection asks the
//! sentinels again and reaches the new master. A demoted master still accepts `PUBLISH`
//! (pub/sub is not a write), so [`CommandConnection`] also asks the server its `ROLE` again
//! when it last did more than [`ROLE_RECHECK`] ago, and drops a connection whose server is
//! no longer a master.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, Role,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::{Result, StoreError};

/// The scheme of a `redis_url` that names sentinels.
pub const SENTINEL_SCHEME: &str = "redis+sentinel";
/// Sentinel's default port.
const SENTINEL_PORT: u16 = 26379;
/// Bound on asking one sentinel (connect and answer): a sentinel that does not answer must
/// not keep a node from trying the next one.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a command connection's server is trusted to still be the master before its
/// `ROLE` is asked again (behind Sentinel only).
pub const ROLE_RECHECK: Duration = Duration::from_secs(1);

/// Bounds of one connection to a Redis server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// TCP connect and handshake (`AUTH`, `SELECT`).
    pub(crate) connect: Duration,
    /// One command and its reply.
    pub(crate) response: Duration,
}

impl Timeouts {
    fn config(self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(Some(self.response))
    }
}

/// Where the bus's Redis is.
pub(crate) enum Endpoint {
    /// One server.
    Direct(Client),
    /// The master that a set of sentinels names.
    Sentinel(Sentinels),
}

/// A `redis+sentinel://` URL, parsed.
pub(crate) struct Sentinels {
    nodes: Vec<ConnectionInfo>,
    master_name: String,
    /// Credentials and database of the master (and of any server promoted in its place).
    master: RedisConnectionInfo,
    /// The sentinel that answered last, asked first next time.
    first: AtomicUsize,
}

impl fmt::Debug for Endpoint {
    // Not derived: the connection infos hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Direct(client) => f
                .debug_tuple("Direct")
                .field(client.get_connection_info().addr())
                .finish(),
            Endpoint::Sentinel(s) => f
                .debug_struct("Sentinel")
                .field(
                    "sentinels",
                    &s.nodes.iter().map(ConnectionInfo::addr).collect::<Vec<_>>(),
                )
                .field("master_name", &s.master_name)
                .finish_non_exhaustive(),
        }
    }
}

impl Endpoint {
    /// Parse `url` without connecting.
    pub(crate) fn parse(url: &str) -> Result<Endpoint> {
        Endpoint::parse_or_explain(url).map_err(|why| StoreError::Unavailable(why.into()))
    }

    /// Parse `url` without connecting, or say why it is refused. The reason never quotes
    /// the URL: it may hold a password.
    pub(crate) fn parse_or_explain(url: &str) -> std::result::Result<Endpoint, String> {
        match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(SENTINEL_SCHEME) => {
                Sentinels::parse(rest).map(Endpoint::Sentinel).map_err(|e| {
                    format!(
                        "invalid redis url: {e} (expected {SENTINEL_SCHEME}://\
                         [[user]:password@]host[:port][,host[:port]...]/MASTER_NAME[/DB])"
                    )
                })
            }
            _ => Client::open(url)
                .map(Endpoint::Direct)
                .map_err(|e| format!("invalid redis url: {e}")),
        }
    }

    /// A client for the server to publish and subscribe on: the one server, or the master
    /// the sentinels name now (its `ROLE` checked).
    pub(crate) async fn client(&self, timeouts: Timeouts) -> RedisResult<Client> {
        match self {
            Endpoint::Direct(client) => Ok(client.clone()),
            Endpoint::Sentinel(sentinels) => sentinels.resolve(timeouts).await.map(|(c, _)| c),
        }
    }

    /// A pub/sub connection to the server to subscribe on.
    pub(crate) async fn pubsub(&self, timeouts: Timeouts) -> RedisResult<PubSub> {
        self.client(timeouts).await?.get_async_pubsub().await
    }

    /// A command connection to the server to publish on.
    async fn connection(&self, timeouts: Timeouts) -> RedisResult<MultiplexedConnection> {
        match self {
            Endpoint::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&timeouts.config())
                    .await
            }
            Endpoint::Sentinel(sentinels) => sentinels.resolve(timeouts).await.map(|(_, c)| c),
        }
    }
}

impl Sentinels {
    /// Parse what follows `redis+sentinel://`. Errors name the part at fault, never its text.
    fn parse(rest: &str) -> std::result::Result<Sentinels, String> {
        if rest.contains(['?', '#']) {
            return Err("a sentinel URL takes no query nor fragment".to_owned());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The last `@`: a password may hold one (it should be percent-encoded, but `@` cannot
        // appear in a host list, so this reading is unambiguous).
        let (user_info, hosts) = match authority.rsplit_once('@') {
            Some((user_info, hosts)) => (Some(user_info), hosts),
            None => (None, authority),
        };
        let mut master = RedisConnectionInfo::default();
        if let Some(user_info) = user_info {
            let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
            let decode = |part: &str, what: &str| {
                percent_decode_str(part)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
            };
            let (user, password) = (decode(user, "user")?, decode(password, "password")?);
            if !user.is_empty() {
                master = master.set_username(user);
            }
            if !password.is_empty() {
                master = master.set_password(password);
            }
        }
        let nodes = hosts
            .split(',')
            .enumerate()
            .map(|(i, host)| parse_host(host).map_err(|e| format!("sentinel {}: {e}", i + 1)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut segments = path.split('/');
        let master_name = segments.next().unwrap_or_default();
        if master_name.is_empty() {
            return Err("the master name is missing after the sentinels".to_owned());
        }
        let master_name = percent_decode_str(master_name)
            .decode_utf8()
            .map_err(|_| "the master name is not UTF-8 once percent-decoded".to_owned())?
            .into_owned();
        match (segments.next(), segments.next()) {
            (None, _) => {}
            (Some(db), None) => {
                let db = db
                    .parse::<u16>()
                    .map_err(|_| "the database after the master name is not a number")?;
                master = master.set_db(i64::from(db));
            }
            (Some(_), Some(_)) => {
                return Err("too many path segments after the master name".to_owned())
            }
        }
        Ok(Sentinels {
            nodes,
            master_name,
            master,
            first: AtomicUsize::new(0),
        })
    }

    /// The master, connected and its `ROLE` checked: ask each sentinel in turn, starting
    /// with the one that answered last, and take the first address that leads to a master.
    async fn resolve(&self, timeouts: Timeouts) -> RedisResult<(Client, MultiplexedConnection)> {
        let first = self.first.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.nodes.len() {
            let at = (first + i) % self.nodes.len();
            let asked = tokio::time::timeout(SENTINEL_TIMEOUT, self.ask(at)).await;
            let (host, port) = match asked {
                Ok(Ok(Some(address))) => address,
                Ok(Ok(None)) => {
                    last_error = Some(failure("a sentinel does not know the master name"));
                    continue;
                }
                Ok(Err(e)) => {
                    last_error = Some(e);
                    continue;
                }
                Err(_) => {
                    last_error = Some(failure("a sentinel did not answer in time"));
                    continue;
                }
            };
            match self.connect_master(host, port, timeouts).await {
                Ok(found) => {
                    self.first.store(at, Ordering::Relaxed);
                    return Ok(found);
                }
                // Mid-failover a sentinel may still name the old master; another may not.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| failure("no sentinel")))
    }

    /// Ask sentinel `at` for the master's address.
    async fn ask(&self, at: usize) -> RedisResult<Option<(String, u16)>> {
        let client = Client::open(self.nodes[at].clone())?;
        let timeouts = Timeouts {
            connect: SENTINEL_TIMEOUT,
            response: SENTINEL_TIMEOUT,
        };
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&timeouts.config())
            .await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await
    }

    async fn connect_master(
        &self,
        host: String,
        port: u16,
        timeouts: Timeouts,
    ) -> RedisResult<(Client, MultiplexedConnection)> {
        let info = ConnectionAddr::Tcp(host, port)
            .into_connection_info()?
            .set_redis_settings(self.master.clone());
        let client = Client::open(info)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&timeouts.config())
            .await?;
        if !is_master(&mut conn).await? {
            return Err(failure(
                "the server a sentinel names as master is not (yet) a master",
            ));
        }
        Ok((client, conn))
    }
}

/// One `host[:port]` of the sentinel list.
fn parse_host(host: &str) -> std::result::Result<ConnectionInfo, String> {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let (name, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address lacks its closing bracket")?;
        match after {
            "" => (name, None),
            _ => (
                name,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("unexpected text after an IPv6 address")?,
                ),
            ),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Err("the host is empty".to_owned());
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("the port is not a number from 1 to 65535")?,
    };
    ConnectionAddr::Tcp(name.to_owned(), port)
        .into_connection_info()
        .map_err(|_| "not a valid address".to_owned())
}

async fn is_master(conn: &mut MultiplexedConnection) -> RedisResult<bool> {
    let role: Role = redis::cmd("ROLE").query_async(conn).await?;
    Ok(matches!(role, Role::Primary { .. }))
}

fn failure(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, what))
}

/// The command connection every clone of a bus shares: one multiplexed connection, opened
/// on first use, replaced after it breaks and (behind Sentinel) when its server is no
/// longer the master.
pub(crate) struct CommandConnection {
    endpoint: Arc<Endpoint>,
    timeouts: Timeouts,
    current: Mutex<Option<Current>>,
}

struct Current {
    conn: MultiplexedConnection,
    /// Counts the connections opened, so that a failure seen on an older one does not
    /// drop a newer one.
    generation: u64,
    /// When the server last said it is a master.
    verified: Instant,
}

/// A connection handed out by [`CommandConnection::get`]; give it back to
/// [`CommandConnection::discard`] when it failed.
pub(crate) struct Lease {
    pub(crate) conn: MultiplexedConnection,
    generation: u64,
}

impl CommandConnection {
    pub(crate) fn new(endpoint: Arc<Endpoint>, timeouts: Timeouts) -> CommandConnection {
        CommandConnection {
            endpoint,
            timeouts,
            current: Mutex::new(None),
        }
    }

    /// The current connection, opened (through the sentinels, if any) when there is none.
    pub(crate) async fn get(&self) -> RedisResult<Lease> {
        let mut current = self.current.lock().await;
        if let (Some(held), Endpoint::Sentinel(_)) = (current.as_mut(), &*self.endpoint) {
            if held.verified.elapsed() >= ROLE_RECHECK {
                match is_master(&mut held.conn).await {
                    Ok(true) => held.verified = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(
                            "the redis server is no longer the master; asking the sentinels again"
                        );
                        *current = None;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis ROLE failed; reconnecting");
                        *current = None;
                    }
                }
            }
        }
        if let Some(held) = current.as_ref() {
            return Ok(Lease {
                conn: held.conn.clone(),
                generation: held.generation,
            });
        }
        let conn = self.endpoint.connection(self.timeouts).await?;
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        *current = Some(Current {
            conn: conn.clone(),
            generation,
            verified: Instant::now(),
        });
        Ok(Lease { conn, generation })
    }

    /// Drop `lease`'s connection (if it is still the current one): the next
    /// [`get`](CommandConnection::get) opens a new one.
    pub(crate) async fn discard(&self, lease: &Lease) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|held| held.generation == lease.generation)
        {
            *current = None;
        }
    }
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn sentinels(url: &str) -> Sentinels {
        match Endpoint::parse(url) {
            Ok(Endpoint::Sentinel(s)) => s,
            Ok(other) => panic!("{url} parsed as {other:?}"),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    fn refusal(url: &str) -> String {
        match Endpoint::parse(url) {
            Ok(endpoint) => panic!("{url} accepted as {endpoint:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn tcp(info: &ConnectionInfo) -> (String, u16) {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => panic!("not TCP: {other:?}"),
        }
    }

    #[test]
    fn sentinel_url_names_every_sentinel_the_master_and_its_credentials() {
        let s = sentinels(
            "redis+sentinel://app:p%40ss%2Fword@s1:26380,10.0.0.2,[::1]:26381/mymaster/3",
        );
        let nodes: Vec<_> = s.nodes.iter().map(tcp).collect();
        assert_eq!(
            nodes,
            [
                ("s1".to_owned(), 26380),
                ("10.0.0.2".to_owned(), 26379),
                ("::1".to_owned(), 26381)
            ]
        );
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(s.master.username(), Some("app"));
        assert_eq!(s.master.password(), Some("p@ss/word"));
        assert_eq!(s.master.db(), 3);
        // The sentinels themselves get no credentials.
        assert!(s
            .nodes
            .iter()
            .all(|n| n.redis_settings().password().is_none()));

        let s = sentinels("REDIS+SENTINEL://:secret@127.0.0.1:5000/m");
        assert_eq!(s.master.username(), None);
        assert_eq!(s.master.password(), Some("secret"));
        assert_eq!(s.master.db(), 0);
        let s = sentinels("redis+sentinel://h/m");
        assert_eq!(s.master.password(), None);
    }

    #[test]
    fn bad_sentinel_urls_are_refused_without_quoting_the_password() {
        for (url, expected) in [
            ("redis+sentinel://h1:1,h2:2", "master name is missing"),
            ("redis+sentinel://h1:1/", "master name is missing"),
            ("redis+sentinel://h1:1,/m", "sentinel 2: the host is empty"),
            ("redis+sentinel:///m", "sentinel 1: the host is empty"),
            ("redis+sentinel://h:0/m", "port is not a number"),
            ("redis+sentinel://h:99999/m", "port is not a number"),
            ("redis+sentinel://h:x/m", "port is not a number"),
            ("redis+sentinel://[::1/m", "closing bracket"),
            ("redis+sentinel://h/m/x", "database"),
            ("redis+sentinel://h/m/1/2", "too many path segments"),
            ("redis+sentinel://h/m?db=1", "no query"),
            ("redis+sentinel://:hunter2@h:bad/m", "sentinel 1: the port"),
            // A `/` in an unencoded password cuts the URL short: the error still quotes
            // nothing of it.
            (
                "redis+sentinel://:hun/ter2@h/m",
                "sentinel 1: the host is empty",
            ),
        ] {
            let error = refusal(url);
            assert!(error.contains(expected), "{url}: {error}");
            assert!(error.contains("redis+sentinel://"), "{url}: {error}");
            assert!(
                !error.contains("hunter2") && !error.contains("hun"),
                "{error}"
            );
        }
    }

    #[test]
    fn other_urls_are_one_server() {
        assert!(matches!(
            Endpoint::parse("redis://:pw@127.0.0.1:6379/2"),
            Ok(Endpoint::Direct(_))
        ));
        let error = refusal("http://127.0.0.1");
        assert!(error.contains("invalid redis url"), "{error}");
        let debug = format!(
            "{:?}",
            Endpoint::parse("redis://:pw@127.0.0.1:6379/2").unwrap()
        );
        assert!(!debug.contains("pw"), "{debug}");
        let debug = format!("{:?}", Endpoint::parse("redis+sentinel://:pw@h/m").unwrap());
        assert!(!debug.contains("pw"), "{debug}");
    }
}
