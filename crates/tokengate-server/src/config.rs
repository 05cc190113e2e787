//! The one place configuration is read: defaults, then the TOML file, then
//! `TOKENGATE_<KEY>` environment variables, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tokengate_axum::{StalenessPolicy, TrustedProxies};
use tokengate_core::Algorithm;
use tokengate_gate::IssuerConfig;

/// Every configuration key, with its default. Each is also read from `TOKENGATE_<KEY>`.
///
/// Its `Debug` form redacts the secrets (the HS256 secret, passwords in database and Redis
/// URLs): a configuration printed into a log or a panic message must not leak them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database (and nothing else secret-bearing) lives.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `<data_dir>/tokengate.db`) or `postgres://...`.
    pub database_url: Option<String>,
    /// Redis for a cluster's revocation push; none on a single node.
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys and channel, so several clusters can share one Redis.
    pub redis_namespace: String,
    /// `EdDSA` (default), `ES256`, `RS256` or `HS256`.
    pub signing_alg: Algorithm,
    /// The HS256 secret (at least 32 bytes); only with `signing_alg = "HS256"`.
    pub hs256_secret: Option<String>,
    /// Access token lifetime.
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Refresh token (and so session) lifetime.
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// How long after its first use a refresh token may be used again (a client that lost
    /// the response); 0 = never, every reuse is treated as theft.
    #[serde(with = "duration")]
    pub refresh_grace: Duration,
    /// `iss` of the tokens.
    pub issuer: String,
    /// `aud` of the tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// How long the revocation index may go unconfirmed before the node counts as stale.
    #[serde(with = "duration")]
    pub max_staleness: Duration,
    /// What a stale node does: `fail_closed` (503) or `fail_open`.
    pub staleness_policy: StalenessPolicy,
    /// How long one call to the database may take, waiting for a pooled connection
    /// included, before it is given up on (a request then gets 503). Bulk imports get
    /// this per 10 000 revocations; loading the live set at start is not bounded.
    #[serde(with = "duration")]
    pub database_timeout: Duration,
    /// Whether `POST /v1/auth/signup` is open to anyone.
    pub allow_signup: bool,
    /// Log format: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Failed sign-ins allowed per (account email, client IP) per `signin_failure_window`
    /// before further attempts get 429; 0 = no limit.
    pub signin_max_failures: u32,
    /// Failed sign-ins allowed per client IP, across accounts, per `signin_failure_window`;
    /// 0 = no limit.
    pub signin_max_failures_per_ip: u32,
    /// The sliding window of the sign-in failure limits.
    #[serde(with = "duration")]
    pub signin_failure_window: Duration,
    /// How many leading bits of an IPv6 address name one client for the throttles: one
    /// subscriber gets a whole /64 and may send from any address in it.
    pub throttle_ipv6_prefix: u8,
    /// Sign-ups allowed per client network (an IPv4 address, or an IPv6 prefix) per
    /// `signup_window`; 0 = no limit.
    pub signup_max_per_ip: u32,
    /// The sliding window of the sign-up limit.
    #[serde(with = "duration")]
    pub signup_window: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request head, and to start its next request on a
    /// kept-alive connection (the idle timeout).
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Time a client has to send a request body once its head has arrived.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are believed (CIDRs
    /// or addresses, IPv4 and IPv6); empty (the default): the headers are ignored and the
    /// client is the TCP peer. See `tokengate_axum::forwarded` for the algorithm.
    pub trusted_proxies: TrustedProxies,
    /// Gate mode: other issuers whose tokens are verified and revoked (`[[issuers]]`,
    /// from the file only; see docs/gate.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field does not compile until it is listed here.
        let Config {
            listen,
            data_dir,
            database_url,
            redis_url,
            redis_namespace,
            signing_alg,
            hs256_secret,
            access_ttl,
            refresh_ttl,
            refresh_grace,
            issuer,
            audience,
            leeway,
            max_staleness,
            staleness_policy,
            database_timeout,
            allow_signup,
            log_format,
            signin_max_failures,
            signin_max_failures_per_ip,
            signin_failure_window,
            throttle_ipv6_prefix,
            signup_max_per_ip,
            signup_window,
            max_connections,
            header_timeout,
            body_timeout,
            trusted_proxies,
            issuers,
        } = self;
        f.debug_struct("Config")
            .field("listen", listen)
            .field("data_dir", data_dir)
            .field("database_url", &database_url.as_deref().map(redact_url))
            .field("redis_url", &redis_url.as_deref().map(redact_url))
            .field("redis_namespace", redis_namespace)
            .field("signing_alg", signing_alg)
            .field("hs256_secret", &hs256_secret.as_ref().map(|_| REDACTED))
            .field("access_ttl", access_ttl)
            .field("refresh_ttl", refresh_ttl)
            .field("refresh_grace", refresh_grace)
            .field("issuer", issuer)
            .field("audience", audience)
            .field("leeway", leeway)
            .field("max_staleness", max_staleness)
            .field("staleness_policy", staleness_policy)
            .field("database_timeout", database_timeout)
            .field("allow_signup", allow_signup)
            .field("log_format", log_format)
            .field("signin_max_failures", signin_max_failures)
            .field("signin_max_failures_per_ip", signin_max_failures_per_ip)
            .field("signin_failure_window", signin_failure_window)
            .field("throttle_ipv6_prefix", throttle_ipv6_prefix)
            .field("signup_max_per_ip", signup_max_per_ip)
            .field("signup_window", signup_window)
            .field("max_connections", max_connections)
            .field("header_timeout", header_timeout)
            .field("body_timeout", body_timeout)
            .field("trusted_proxies", &format_args!("[{trusted_proxies}]"))
            .field("issuers", issuers)
            .finish()
    }
}

/// What a redacted secret prints as.
const REDACTED: &str = "<redacted>";

/// `url` with the password of its user info (`scheme://user:PASSWORD@host/...`) replaced by
/// [`REDACTED`]; a URL without one is returned as it is.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let Some((user_info, _host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => {
            format!(
                "{scheme}://{user}:{REDACTED}@{}",
                &rest[user_info.len() + 1..]
            )
        }
        None => url.to_owned(),
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            redis_namespace: "tokengate".to_owned(),
            signing_alg: Algorithm::EdDSA,
            hs256_secret: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::ZERO,
            issuer: "tokengate".to_owned(),
            audience: "tokengate".to_owned(),
            leeway: Duration::from_secs(30),
            max_staleness: Duration::from_secs(5),
            staleness_policy: StalenessPolicy::FailClosed,
            database_timeout: Duration::from_secs(2),
            allow_signup: true,
            log_format: LogFormat::Text,
            signin_max_failures: 5,
            signin_max_failures_per_ip: 50,
            signin_failure_window: Duration::from_secs(15 * 60),
            throttle_ipv6_prefix: 64,
            signup_max_per_ip: 20,
            signup_window: Duration::from_secs(10 * 60),
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::default(),
            issuers: Vec::new(),
        }
    }
}

/// The keys that may come from the environment (`TOKENGATE_` + key in capitals).
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "redis_url",
    "redis_namespace",
    "signing_alg",
    "hs256_secret",
    "access_ttl",
    "refresh_ttl",
    "refresh_grace",
    "issuer",
    "audience",
    "leeway",
    "max_staleness",
    "staleness_policy",
    "database_timeout",
    "allow_signup",
    "log_format",
    "signin_max_failures",
    "signin_max_failures_per_ip",
    "signin_failure_window",
    "throttle_ipv6_prefix",
    "signup_max_per_ip",
    "signup_window",
    "max_connections",
    "header_timeout",
    "body_timeout",
    "trusted_proxies",
];

/// Values given as command-line flags; they beat the environment and the file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--redis-url`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

impl Config {
    /// Read the configuration: defaults < `file` (or `TOKENGATE_CONFIG`) < environment < flags.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let from_env = std::env::var_os("TOKENGATE_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
            if !path.is_file() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Env::prefixed("TOKENGATE_").only(KEYS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.signing_alg == Algorithm::HS256 {
            match &self.hs256_secret {
                Some(secret) if secret.len() >= 32 => {}
                Some(_) => anyhow::bail!("hs256_secret must be at least 32 bytes"),
                None => {
                    anyhow::bail!("signing_alg = \"HS256\" needs hs256_secret (at least 32 bytes)")
                }
            }
        }
        if self.access_ttl.is_zero() || self.refresh_ttl.is_zero() {
            anyhow::bail!("access_ttl and refresh_ttl must be positive");
        }
        if self.database_timeout.is_zero() {
            anyhow::bail!("database_timeout must be positive");
        }
        if self.max_staleness.is_zero() {
            anyhow::bail!("max_staleness must be positive");
        }
        if self.throttle_ipv6_prefix > 128 {
            anyhow::bail!("throttle_ipv6_prefix must be between 0 and 128");
        }
        if self.max_connections == 0 || self.header_timeout.is_zero() || self.body_timeout.is_zero()
        {
            anyhow::bail!("max_connections, header_timeout and body_timeout must be positive");
        }
        if let Some(url) = &self.redis_url {
            tokengate_store::RedisBus::check_url(url)
                .map_err(|why| anyhow::anyhow!("redis_url: {why}"))?;
        }
        tokengate_gate::config::check_all(&self.issuers)?;
        if let Some(entry) = self
            .issuers
            .iter()
            .find(|entry| entry.issuer.as_deref() == Some(self.issuer.as_str()))
        {
            anyhow::bail!(
                "issuer {:?}: its `issuer` is tokengate's own ({:?}); own tokens need no entry",
                entry.name,
                self.issuer
            );
        }
        Ok(())
    }

    /// The database URL, defaulting to the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("tokengate.db").display()),
        }
    }
}

pub use tokengate_gate::duration;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Load with `toml` as the config file and `env` set, inside a figment Jail (which
    /// serialises tests that touch the process environment).
    #[allow(clippy::result_large_err)] // figment's Jail closure must return figment::Error
    fn load(toml: Option<&str>, env: &[(&str, &str)], flags: Overrides) -> Result<Config, String> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in env {
                jail.set_env(k, v);
            }
            let file = match toml {
                Some(text) => {
                    jail.create_file("tokengate.toml", text)?;
                    Some(PathBuf::from("tokengate.toml"))
                }
                None => None,
            };
            out = Some(Config::load(file.as_deref(), &flags).map_err(|e| e.to_string()));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(duration::parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration::parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(duration::parse("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(
            duration::parse("30d").unwrap(),
            Duration::from_secs(2_592_000)
        );
        assert_eq!(duration::parse("42").unwrap(), Duration::from_secs(42));
        assert!(duration::parse("15 minutes").is_err());
        assert!(duration::parse("m").is_err());
        assert!(duration::parse("").is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(None, &[], Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.max_staleness, Duration::from_secs(5));
        assert_eq!(c.signing_alg, Algorithm::EdDSA);
        assert_eq!(c.staleness_policy, StalenessPolicy::FailClosed);
        assert_eq!(c.database_url(), "sqlite://./data/tokengate.db");
    }

    #[test]
    fn flags_beat_env_and_env_beats_file() {
        let file = "access_ttl = \"10m\"\nlisten = \"127.0.0.1:1000\"\nissuer = \"file\"\n";
        let env = [
            ("TOKENGATE_LISTEN", "127.0.0.1:2000"),
            ("TOKENGATE_ISSUER", "env"),
        ];
        let flags = Overrides {
            listen: Some("127.0.0.1:3000".parse().unwrap()),
            ..Overrides::default()
        };
        let c = load(Some(file), &env, flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.issuer, "env");
        assert_eq!(c.access_ttl, Duration::from_secs(600));
    }

    #[test]
    fn unknown_keys_and_short_hs256_secrets_are_refused() {
        assert!(load(Some("acces_ttl = \"10m\""), &[], Overrides::default()).is_err());
        assert!(load(
            Some("signing_alg = \"HS256\"\nhs256_secret = \"short\""),
            &[],
            Overrides::default()
        )
        .is_err());
        assert!(load(Some("signing_alg = \"HS256\""), &[], Overrides::default()).is_err());
        let ok = "signing_alg = \"HS256\"\nhs256_secret = \"0123456789abcdef0123456789abcdef\"";
        assert!(load(Some(ok), &[], Overrides::default()).is_ok());
    }

    #[test]
    fn debug_output_redacts_the_secrets() {
        let config = Config {
            hs256_secret: Some("the-hs256-secret-0123456789abcdef".to_owned()),
            database_url: Some("postgres://tokengate:db-password@db.internal:5432/tg".to_owned()),
            redis_url: Some("redis://:redis-password@127.0.0.1:6379/0".to_owned()),
            ..Config::default()
        };
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in ["the-hs256-secret", "db-password", "redis-password"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("\"<redacted>\""), "{text}");
            assert!(
                text.contains("postgres://tokengate:<redacted>@db.internal:5432/tg"),
                "{text}"
            );
            assert!(
                text.contains("redis://:<redacted>@127.0.0.1:6379/0"),
                "{text}"
            );
            assert!(text.contains("issuer: \"tokengate\""), "{text}");
        }
        assert_eq!(
            redact_url("sqlite://./data/tokengate.db"),
            "sqlite://./data/tokengate.db"
        );
        assert_eq!(redact_url("redis://user@host/0"), "redis://user@host/0");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn sentinel_redis_urls_are_checked_at_load_and_redacted() {
        let url = "redis+sentinel://app:sentinel-secret@10.0.0.1:26379,10.0.0.2/mymaster/1";
        let config = load(None, &[("TOKENGATE_REDIS_URL", url)], Overrides::default()).unwrap();
        assert_eq!(config.redis_url.as_deref(), Some(url));
        let debug = format!("{config:?}");
        assert!(!debug.contains("sentinel-secret"), "{debug}");
        assert!(
            debug.contains("redis+sentinel://app:<redacted>@10.0.0.1:26379,10.0.0.2/mymaster/1"),
            "{debug}"
        );

        for (bad, why) in [
            (
                "redis+sentinel://:hunter2@10.0.0.1:26379",
                "master name is missing",
            ),
            (
                "redis+sentinel://:hunter2@10.0.0.1:huh/m",
                "sentinel 1: the port",
            ),
            (
                "redis+sentinel://:hunter2@a,,b/m",
                "sentinel 2: the host is empty",
            ),
            ("redis://:hunter2@[::1/0", "invalid redis url"),
        ] {
            let flags = Overrides {
                redis_url: Some(bad.to_owned()),
                ..Overrides::default()
            };
            let error = load(None, &[], flags).unwrap_err();
            assert!(error.starts_with("redis_url: "), "{error}");
            assert!(error.contains(why), "{bad}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn trusted_proxies_come_from_a_file_list_or_an_env_string() {
        let none = load(None, &[], Overrides::default()).unwrap();
        assert!(none.trusted_proxies.is_empty());
        let file = "trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"]";
        let from_file = load(Some(file), &[], Overrides::default()).unwrap();
        assert_eq!(
            from_file.trusted_proxies.to_string(),
            "10.0.0.0/8, 2001:db8::/32, 192.0.2.1/32"
        );
        let env = [(
            "TOKENGATE_TRUSTED_PROXIES",
            "10.0.0.0/8, 2001:db8::/32 192.0.2.1",
        )];
        let from_env = load(None, &env, Overrides::default()).unwrap();
        assert_eq!(from_env.trusted_proxies, from_file.trusted_proxies);
        assert!(format!("{from_env:?}").contains("trusted_proxies: [10.0.0.0/8, "));
        let error = load(
            Some("trusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"]"),
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.contains("\"proxy.internal\""), "{error}");
        let env = [("TOKENGATE_TRUSTED_PROXIES", "10.0.0.1/8")];
        let error = load(None, &env, Overrides::default()).unwrap_err();
        assert!(error.contains("write 10.0.0.0/8"), "{error}");
    }

    #[test]
    fn gate_issuers_come_from_the_file_and_are_checked_at_load() {
        const WEBUI: &str = r#"
[[issuers]]
name = "webui"
hs256_secret = "an app's own secret of at least 32 bytes"
audience_optional = true
claims = { subject = "id" }
cookie = "token"
"#;
        let config = load(Some(WEBUI), &[], Overrides::default()).unwrap();
        assert_eq!(config.issuers.len(), 1);
        assert_eq!(config.issuers[0].claims.subject, "id");
        let debug = format!("{config:?}");
        assert!(!debug.contains("own secret"), "{debug}");

        let refused = |toml: &str| load(Some(toml), &[], Overrides::default()).unwrap_err();
        let error = refused(&format!("{WEBUI}{WEBUI}"));
        assert!(error.contains("webui"), "{error}");
        let error = refused(
            "[[issuers]]\nname = \"own\"\nissuer = \"tokengate\"\n\
             jwks_uri = \"https://idp.example/jwks\"\naudiences = [\"x\"]\n",
        );
        assert!(error.contains("tokengate's own"), "{error}");
        let error = refused(
            "[[issuers]]\nname = \"idp\"\nissuer = \"https://idp.example\"\n\
             jwks_uri = \"http://idp.example/jwks\"\naudiences = [\"x\"]\n",
        );
        assert!(error.contains("HTTPS"), "{error}");
    }
}
