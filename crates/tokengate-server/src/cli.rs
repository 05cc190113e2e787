//! The command line: `serve` and the admin commands, which work on the same data as a
//! running server (it reads their revocations from the store every 250 ms,
//! `tokengate_store::sync::TAIL_EVERY`, and in a cluster they are also pushed over Redis).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokengate_core::{Clock, Revocation, Role, SystemClock, Timestamp};
use tokengate_gate::service::revocation_for;
use tokengate_gate::{GateRevocation, Issuers};
use tokengate_sessions::{Admin, AdminError, KeyState, Passwords};
use tokengate_store::Store;
use uuid::Uuid;

use crate::config::{Config, Overrides};
use crate::state::session_config;

/// tokengate: JWT sessions whose sign-out really signs out.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes (they beat `TOKENGATE_*` and the config file).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory for the SQLite database [env: TOKENGATE_DATA_DIR] [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file [env: TOKENGATE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// sqlite://PATH or postgres://... [env: TOKENGATE_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL for a cluster [env: TOKENGATE_REDIS_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on [env: TOKENGATE_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Revoke a user's sessions, one session, one token, or every token issued before a time.
    Revoke(RevokeArgs),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Import revoked token ids.
    #[command(subcommand)]
    Revocations(RevocationsCommand),
    /// Gate mode's issuers (`[[issuers]]` in the configuration).
    #[command(subcommand)]
    Issuers(IssuersCommand),
    /// Copy the SQLite database to FILE while a server keeps running on it (see
    /// docs/operations.md for the restore procedure; on Postgres use pg_dump).
    Backup(BackupArgs),
}

/// `tokengate backup --to FILE [--force]`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (created 0600: it holds the signing keys).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `tokengate issuers ...`
#[derive(Debug, Subcommand)]
pub enum IssuersCommand {
    /// Each configured issuer, its key source, and its keys fetched now (count, or the error).
    List,
}

/// `tokengate user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin (or prompted for on a terminal).
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: sign-in is refused and every session is revoked.
    Disable {
        /// Email address.
        email: String,
    },
}

/// `tokengate revoke --user E | --session ID | --jti JTI | --issued-before TIME [--user E |
/// --sessions]`,
/// or for a gate issuer `tokengate revoke --issuer NAME (--sub S | --sid S | --jti J [--exp T]
/// | --issued-before TIME)`
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct RevokeArgs {
    /// Every session of this user (by email); with --issued-before, only that user's
    /// access tokens issued before TIME.
    #[arg(long, value_name = "EMAIL", conflicts_with = "issuer")]
    pub user: Option<String>,
    /// One session, by id.
    #[arg(long, value_name = "ID", conflicts_with_all = ["user", "jti", "issued_before", "issuer"])]
    pub session: Option<Uuid>,
    /// One access token, by its jti (a UUID for tokengate's own tokens; any string with
    /// --issuer).
    #[arg(long, value_name = "JTI", conflicts_with_all = ["user", "session", "issued_before", "sub", "sid"])]
    pub jti: Option<String>,
    /// A gate issuer (its `name`): revoke its tokens instead of tokengate's own.
    #[arg(long, value_name = "NAME")]
    pub issuer: Option<String>,
    /// With --issuer: every token of this subject issued before now.
    #[arg(long, value_name = "SUB", requires = "issuer", conflicts_with_all = ["sid", "jti", "issued_before"])]
    pub sub: Option<String>,
    /// With --issuer: every token of this session.
    #[arg(long, value_name = "SID", requires = "issuer", conflicts_with_all = ["sub", "jti", "issued_before"])]
    pub sid: Option<String>,
    /// With --issuer --jti: the token's expiry (RFC 3339 or Unix seconds), so the entry is
    /// kept no longer.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "jti")]
    pub exp: Option<Timestamp>,
    /// Every access token of every user (or of --user) issued before TIME, e.g. after a
    /// signing key was compromised: RFC 3339 (`2026-12-01T00:00:00Z`) or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub issued_before: Option<Timestamp>,
    /// With --issued-before (and no --user): also end every session created before TIME,
    /// so their refresh tokens stop working too; after restoring a backup.
    #[arg(long, requires = "issued_before", conflicts_with_all = ["user", "issuer"])]
    pub sessions: bool,
}

/// A point in time given as RFC 3339 or as Unix seconds.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(Timestamp::from_secs(secs));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| Timestamp::from_secs(t.unix_timestamp()))
        .map_err(|_| {
            format!("{text:?} is neither RFC 3339 (2026-12-01T00:00:00Z) nor Unix seconds")
        })
}

/// `tokengate keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; tokens signed by the old one verify until they expire.
    Rotate,
    /// List the signing keys.
    List,
}

/// `tokengate revocations ...`
#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    /// Import lines `JTI EXP_UNIX` (another system's denylist); all or nothing.
    Import {
        /// The file to read (`-` for stdin).
        file: PathBuf,
    },
}

impl Cli {
    /// The configuration, with this command line's flags on top.
    pub fn config(&self) -> anyhow::Result<Config> {
        let listen = match &self.command {
            Command::Serve { listen } => *listen,
            _ => None,
        };
        Config::load(
            self.global.config.as_deref(),
            &Overrides {
                listen,
                data_dir: self.global.data_dir.clone(),
                database_url: self.global.database_url.clone(),
                redis_url: self.global.redis_url.clone(),
            },
        )
    }
}

/// Run an admin command against the store and print what it did. Returns the
/// revocations it recorded (durably), for the caller to push to a cluster's other nodes.
pub async fn run_admin(
    command: Command,
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Vec<Revocation>> {
    let admin = Admin::new(
        store,
        Arc::new(session_config(config)),
        Arc::new(SystemClock),
        Passwords::new()?,
    );
    let mut recorded = Vec::new();
    match command {
        Command::Serve { .. } => anyhow::bail!("serve is not an admin command"),
        Command::Backup(_) => anyhow::bail!("backup works on the database file, not the store"),
        Command::User(UserCommand::Create {
            email,
            admin: make_admin,
        }) => {
            // Refuse a bad email before asking for a password.
            let email = tokengate_sessions::normalize_email(&email)?;
            let password = read_password()?;
            let role = if make_admin { Role::Admin } else { Role::User };
            let user = admin.create_user(&email, password, role).await?;
            println!(
                "created user {} <{}> role={}",
                user.id,
                user.email,
                user.role.as_str()
            );
        }
        Command::User(UserCommand::Disable { email }) => {
            let user = user_by_email(&admin, &email).await?;
            let revoked = admin
                .disable_user(user.id)
                .await
                .with_context(|| format!("cannot disable {}", user.email))?;
            println!(
                "disabled {}; revoked {} session(s)",
                user.email,
                revoked.len()
            );
            recorded = revoked;
        }
        Command::Revoke(args) => recorded = revoke(&admin, config, args).await?,
        Command::Issuers(IssuersCommand::List) => list_issuers(config).await?,
        Command::Keys(KeysCommand::Rotate) => {
            let kid = admin.rotate_key().await?;
            println!("new signing key {kid}; previous keys verify until their tokens expire");
        }
        Command::Keys(KeysCommand::List) => {
            println!(
                "{:<24} {:<6} {:<12} {:<12} state",
                "kid", "alg", "created", "verify_until"
            );
            for key in admin.keys().await? {
                let state = match key.state {
                    KeyState::Current => "current",
                    KeyState::Retired => "retired",
                    KeyState::Next => "next (verifies now, signs within seconds)",
                    KeyState::Verifying => "verifying",
                };
                let until = key
                    .verify_until
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                println!(
                    "{:<24} {:<6} {:<12} {:<12} {state}",
                    key.kid, key.alg, key.created_at, until
                );
            }
        }
        Command::Revocations(RevocationsCommand::Import { file }) => {
            let latest = admin.latest_import_exp(admin.now());
            let revocations = read_import(&file, latest)?;
            let imported = admin.import(&revocations).await?;
            println!("imported {} revocation(s)", imported.len());
            recorded = imported;
        }
    }
    Ok(recorded)
}

/// `tokengate backup`: an online copy of the SQLite database (never of Postgres, whose own
/// tools do it better). Prints the time the snapshot was taken at the earliest, which the
/// restore procedure needs.
pub async fn backup(config: &Config, args: BackupArgs) -> anyhow::Result<()> {
    let url = config.database_url();
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "tokengate backup copies a SQLite database; this one is Postgres: back it up with \
             pg_dump (or point-in-time recovery), see docs/operations.md"
        );
    }
    let Some(db) = tokengate_store::SqliteStore::file_of_url(&url)? else {
        anyhow::bail!("an in-memory database cannot be backed up");
    };
    let started = SystemClock.now();
    let file = tokengate_store::backup::backup_sqlite(&db, &args.to, args.force).await?;
    let at = time::OffsetDateTime::from_unix_timestamp(started.as_secs())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| started.to_string());
    println!(
        "backed up {} to {} ({} bytes); snapshot taken at {at} (Unix {started})",
        db.display(),
        file.path.display(),
        file.bytes,
    );
    Ok(())
}

/// `tokengate revoke --issuer ...`: the revocation the gate issuer's endpoint would record.
async fn revoke_at_issuer(
    admin: &Admin,
    config: &Config,
    name: &str,
    args: RevokeArgs,
) -> anyhow::Result<Vec<Revocation>> {
    let issuers = Issuers::new(&config.issuers, config.leeway).map_err(anyhow::Error::msg)?;
    let Some(issuer) = issuers.by_name(name) else {
        anyhow::bail!("no issuer is named {name:?} in the configuration");
    };
    let request = match (args.sub, args.sid, args.jti, args.issued_before) {
        (Some(sub), None, None, None) => GateRevocation::Subject(sub),
        (None, Some(sid), None, None) => GateRevocation::Session(sid),
        (None, None, Some(id), None) => GateRevocation::TokenId { id, exp: args.exp },
        (None, None, None, Some(cutoff)) => GateRevocation::IssuedBefore(cutoff),
        _ => anyhow::bail!("with --issuer, say one of --sub, --sid, --jti or --issued-before"),
    };
    let what = match &request {
        GateRevocation::Subject(sub) => format!("every token of {sub:?} issued before now"),
        GateRevocation::Session(sid) => format!("session {sid:?}"),
        GateRevocation::TokenId { id, .. } => format!("token {id:?}"),
        GateRevocation::IssuedBefore(cutoff) => format!("every token issued before {cutoff}"),
    };
    let revocation = revocation_for(issuer, &request, admin.now())?;
    admin.record(&[revocation]).await?;
    println!("revoked {what} of issuer {name}");
    Ok(vec![revocation])
}

async fn revoke(
    admin: &Admin,
    config: &Config,
    args: RevokeArgs,
) -> anyhow::Result<Vec<Revocation>> {
    if let Some(name) = args.issuer.clone() {
        return revoke_at_issuer(admin, config, &name, args).await;
    }
    if args.sub.is_some() || args.sid.is_some() || args.exp.is_some() {
        anyhow::bail!("--sub, --sid and --exp go with --issuer");
    }
    if let (Some(cutoff), true) = (args.issued_before, args.sessions) {
        let (revocation, ended) = admin.revoke_everything_before(cutoff).await?;
        println!("revoked every token issued before {cutoff} and ended {ended} session(s) created before it");
        Ok(vec![revocation])
    } else if let Some(issued_before) = args.issued_before {
        let user = match &args.user {
            Some(email) => Some(user_by_email(admin, email).await?),
            None => None,
        };
        let revocation = admin
            .revoke_issued_before(user.as_ref().map(|u| u.id), issued_before)
            .await?;
        match user {
            Some(user) => println!(
                "revoked every token of {} issued before {issued_before}",
                user.email
            ),
            None => println!("revoked every token issued before {issued_before}"),
        }
        Ok(vec![revocation])
    } else if let Some(email) = args.user {
        let user = user_by_email(admin, &email).await?;
        let revoked = admin.revoke_user(user.id).await?;
        println!("revoked {} session(s) of {}", revoked.len(), user.email);
        Ok(revoked)
    } else if let Some(sid) = args.session {
        match admin.end_session(sid).await? {
            Some(revocation) => {
                println!("revoked session {sid}");
                Ok(vec![revocation])
            }
            None => anyhow::bail!("no session {sid}"),
        }
    } else if let Some(jti) = args.jti {
        let jti: Uuid = jti.parse().map_err(|_| {
            anyhow::anyhow!("--jti {jti:?} is not a UUID (tokengate's token ids are)")
        })?;
        let revocation = admin.revoke_token_id(jti).await?;
        println!("revoked token {jti}");
        Ok(vec![revocation])
    } else {
        anyhow::bail!("say what to revoke: --user, --session, --jti or --issued-before")
    }
}

/// `tokengate issuers list`: fetch each issuer's keys now and say how it went.
async fn list_issuers(config: &Config) -> anyhow::Result<()> {
    let issuers = Issuers::new(&config.issuers, config.leeway).map_err(anyhow::Error::msg)?;
    if issuers.is_empty() {
        println!("no issuers configured (gate mode is off)");
        return Ok(());
    }
    issuers.refresh_due(SystemClock.now()).await;
    println!(
        "{:<16} {:<6} {:<10} {:<12} iss / keys from / last error",
        "name", "keys", "algs", "fetched"
    );
    for issuer in issuers.iter() {
        let entry = issuer.config();
        let status = issuer.key_status();
        let source = entry
            .discovery
            .as_deref()
            .or(entry.jwks_uri.as_deref())
            .unwrap_or("hs256 secret");
        let algs = issuer
            .algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let fetched = status
            .fetched_at
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        println!(
            "{:<16} {:<6} {:<10} {:<12} {} / {} / {}",
            entry.name,
            status.keys,
            algs,
            fetched,
            entry.issuer.as_deref().unwrap_or("(no iss)"),
            source,
            status.last_error.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

async fn user_by_email(admin: &Admin, email: &str) -> anyhow::Result<tokengate_store::User> {
    match admin.user_by_email(email).await {
        Err(AdminError::NotFound) => {
            let email = tokengate_sessions::normalize_email(email)?;
            anyhow::bail!("no user with email {email}")
        }
        other => Ok(other?),
    }
}

fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(password)
}

/// Parse an import file: one `JTI EXP_UNIX` per line; blank lines and `#` comments are
/// skipped. The first bad line fails the whole import, naming its number; so does an
/// `EXP_UNIX` after `latest` (see `Admin::latest_import_exp`).
pub fn parse_import_lines(text: &str, latest: Timestamp) -> anyhow::Result<Vec<Revocation>> {
    let mut revocations = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| anyhow::anyhow!("line {}: {why}; nothing was imported", i + 1);
        let mut fields = line.split_whitespace();
        let (Some(jti), Some(exp), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `JTI EXP_UNIX`"));
        };
        let jti: Uuid = jti.parse().map_err(|_| bad("JTI is not a UUID"))?;
        let exp: i64 = exp
            .parse()
            .ok()
            .filter(|e| *e > 0)
            .ok_or_else(|| bad("EXP_UNIX is not a positive integer"))?;
        if exp > latest.as_secs() {
            return Err(bad(&format!(
                "EXP_UNIX {exp} is after {latest} (now + refresh_ttl + leeway)"
            )));
        }
        revocations.push(Revocation::Token {
            jti,
            exp: Timestamp::from_secs(exp),
        });
    }
    Ok(revocations)
}

fn read_import(file: &std::path::Path, latest: Timestamp) -> anyhow::Result<Vec<Revocation>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    parse_import_lines(&text, latest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const LATEST: Timestamp = Timestamp::from_secs(2_000_000_000);

    #[test]
    fn import_lines_past_the_latest_exp_name_their_line() {
        let text = "3b241101-e2bb-4255-8caf-4136c566a962 1700000000\n\
                    3b241101-e2bb-4255-8caf-4136c566a963 9223372036854775807\n";
        let err = parse_import_lines(text, LATEST).unwrap_err().to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(err.contains("after"), "{err}");
    }

    #[test]
    fn times_parse_as_rfc3339_or_unix_seconds() {
        assert_eq!(
            parse_time("1700000000").unwrap(),
            Timestamp::from_secs(1_700_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            Timestamp::from_secs(1_700_000_000)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn issued_before_combines_with_user_only() {
        const JTI: &str = "3b241101-e2bb-4255-8caf-4136c566a962";
        // `tokengate revoke` followed by these arguments: accepted or not.
        let cases: [(&[&str], bool); 8] = [
            (&["--issued-before", "1700000000"], true),
            (
                &["--user", "a@example.com", "--issued-before", "1700000000"],
                true,
            ),
            (&["--jti", JTI, "--issued-before", "1"], false),
            (&["--user", "a@example.com", "--jti", JTI], false),
            (&[], false),
            (&["--issued-before", "1", "--sessions"], true),
            (&["--sessions"], false),
            (
                &[
                    "--user",
                    "a@example.com",
                    "--issued-before",
                    "1",
                    "--sessions",
                ],
                false,
            ),
        ];
        for (args, accepted) in cases {
            let argv = ["tokengate", "revoke"].iter().chain(args).copied();
            assert_eq!(
                Cli::try_parse_from(argv).is_ok(),
                accepted,
                "revoke {args:?}"
            );
        }
    }

    #[test]
    fn import_lines_parse_and_skip_comments() {
        let text = "# denylist\n\n3b241101-e2bb-4255-8caf-4136c566a962 1700000000\n";
        let revs = parse_import_lines(text, LATEST).unwrap();
        assert_eq!(revs.len(), 1);
        assert_eq!(revs[0].exp(), Timestamp::from_secs(1_700_000_000));
    }

    #[test]
    fn first_bad_import_line_is_named() {
        let text =
            "3b241101-e2bb-4255-8caf-4136c566a962 1700000000\nnot-a-uuid 1700000000\nalso bad\n";
        let err = parse_import_lines(text, LATEST).unwrap_err().to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse_import_lines("3b241101-e2bb-4255-8caf-4136c566a962 soon", LATEST)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}
