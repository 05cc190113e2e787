//! An axum app that embeds tokengate as a library instead of running the `tokengate` server.
//!
//! It writes only what is its own: four routes and the glue between them and tokengate. All
//! the security code comes from the libraries:
//!
//! - [`tokengate_sessions::SessionService`] does sign-in (argon2id with a decoy hash, the
//!   sign-in throttle, a session in the store, a token minted with the stored signing key),
//!   sign-out (durable first, then this process's index) and user creation, and its
//!   [`Maintenance`](tokengate_sessions::Maintenance) task keeps the index current: it reads
//!   the revocations other processes record in the same database (the `tokengate` admin CLI,
//!   another copy of this app), purges expired entries and reloads rotated keys.
//! - [`tokengate_axum::Principal`], built on a [`Gate`] over the service's verifier, index,
//!   clock and freshness, protects a route: no database access per request.
//!
//! The routes:
//! - **Sign-in** (`POST /login`, [`routes::login`]): [`SessionService::signin`].
//! - **A protected route** (`GET /hello`, [`routes::hello`]): it takes a [`Principal`]. All
//!   the extractor needs is that the app state gives an `Arc<Gate>` through [`FromRef`].
//! - **Sign-out** (`POST /logout`, [`routes::logout`]): [`SessionService::sign_out`].
//! - **A websocket closed on revocation** (`GET /ws`, [`ws`]): authenticated once at upgrade
//!   time, then it listens to [`RevocationIndex::subscribe`] and closes itself (code 4001) as
//!   soon as a revocation covering its token arrives.
//!
//! [`App::open`] starts the service, which loads the live revocations into the index
//! *before* the listener is bound, then its maintenance.
//!
//! [`Principal`]: tokengate_axum::Principal
//! [`RevocationIndex::subscribe`]: tokengate_core::RevocationIndex::subscribe

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use tokengate_axum::{Gate, StalenessPolicy};
use tokengate_core::{RevocationIndex, Role, SystemClock, Timestamp};
use tokengate_sessions::{MaintenanceHandle, SessionConfig, SessionService, SignupError};
use tokengate_store::{SqliteStore, User};
use tokio::net::TcpListener;

pub mod routes;
pub mod ws;

/// The `iss` of the tokens this app mints, and the only issuer its verifier accepts.
pub const ISSUER: &str = "tokengate-example-embedded";
/// The `aud` of the tokens this app mints, and the only audience its verifier accepts.
pub const AUDIENCE: &str = "tokengate-example-embedded";
/// How long an access token lives. This app has no refresh tokens: sign in again after this.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock skew allowed on `exp`/`nbf`; the index keeps an entry until `exp` plus this.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// How long the index may go without the tail confirming it before requests get 503.
pub const MAX_STALENESS: Duration = Duration::from_secs(5);
/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "app.db";

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Sign-in, sign-out and users, over the same SQLite store the `tokengate` server uses,
    /// opened on this app's own file.
    pub sessions: Arc<SessionService>,
    /// Verifier + revocation index + clock + freshness: what [`tokengate_axum::Principal`]
    /// checks every request against.
    pub gate: Arc<Gate>,
}

/// This impl is all [`tokengate_axum::Principal`] asks of an app's state.
impl FromRef<AppState> for Arc<Gate> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.gate)
    }
}

impl AppState {
    /// The current time, from the one clock every validity decision reads.
    pub fn now(&self) -> Timestamp {
        self.sessions.now()
    }

    /// This process's revocation index.
    pub fn index(&self) -> &Arc<RevocationIndex> {
        self.sessions.index()
    }
}

/// The session settings of this app: its own issuer and audience, access tokens of
/// [`ACCESS_TTL`] and sessions that end with them (it hands out no refresh tokens).
pub fn session_config() -> SessionConfig {
    SessionConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        access_ttl: ACCESS_TTL,
        refresh_ttl: ACCESS_TTL,
        leeway: LEEWAY,
        max_staleness: MAX_STALENESS,
        staleness_policy: StalenessPolicy::FailClosed,
        ..SessionConfig::default()
    }
}

/// A started app: its state and the maintenance that keeps its revocation index current.
pub struct App {
    state: AppState,
    // Dropping it stops the maintenance; `serve` stops it cleanly.
    maintenance: MaintenanceHandle,
}

impl App {
    /// Open (creating if needed) `data_dir/app.db` and start the session service: it loads
    /// or creates the signing key and loads every live revocation into the index; then its
    /// maintenance starts. Only after this may the app answer requests: before the load,
    /// the index would accept revoked tokens.
    pub async fn open(data_dir: &Path) -> anyhow::Result<App> {
        let path = data_dir.join(DATABASE_FILE);
        let store = Arc::new(
            SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        );
        let (sessions, maintenance) =
            SessionService::start(store, session_config(), Arc::new(SystemClock), None).await?;
        let gate = Arc::new(Gate::new(
            Arc::clone(sessions.verifier()),
            Arc::clone(sessions.index()),
            Arc::clone(sessions.clock()),
            Arc::clone(sessions.freshness()),
        ));
        Ok(App {
            state: AppState { sessions, gate },
            maintenance: maintenance.spawn(),
        })
    }

    /// Create the user `email` with `password`, unless a user with that email exists
    /// already (then it is returned unchanged: re-running with the same `--user` is
    /// harmless, and this never resets a password behind the user's back).
    ///
    /// The first user a store ever gets is made `admin` by the store; this app does not
    /// look at roles.
    pub async fn seed_user(&self, email: &str, password: &str) -> anyhow::Result<User> {
        let admin = self.state.sessions.admin();
        match admin
            .create_user(email, password.to_owned(), Role::User)
            .await
        {
            Ok(user) => {
                tracing::info!(email = %user.email, "user created");
                Ok(user)
            }
            Err(SignupError::Exists) => {
                tracing::info!(%email, "user exists; password left as it is");
                Ok(admin.user_by_email(email).await?)
            }
            Err(error) => Err(anyhow::Error::new(error).context(format!("cannot create {email}"))),
        }
    }

    /// The state the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The app's routes.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serve on `listener` until `shutdown` completes, then stop the maintenance.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        self.maintenance.stop().await;
        served
    }
}

/// `POST /login`, `GET /hello`, `POST /logout`, `GET /ws`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/login", post(routes::login))
        .route("/hello", get(routes::hello))
        .route("/logout", post(routes::logout))
        .route("/ws", get(ws::upgrade))
        .with_state(state)
}

/// A user to create at start: `EMAIL:PASSWORD` on the command line.
#[derive(Clone)]
pub struct SeedUser {
    /// The email address.
    pub email: String,
    /// The password, hashed before it is stored.
    pub password: String,
}

// Never shows the password.
impl std::fmt::Debug for SeedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedUser")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl FromStr for SeedUser {
    type Err = String;

    /// Split at the first `:`; an email address has none, a password may.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((email, password)) if !email.is_empty() && !password.is_empty() => Ok(SeedUser {
                email: email.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("expected EMAIL:PASSWORD".into()),
        }
    }
}

/// What `main` parsed from the command line.
#[derive(Debug)]
pub struct Options {
    /// Holds `app.db`.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub listen: std::net::SocketAddr,
    /// Users to create if missing.
    pub users: Vec<SeedUser>,
}

/// Open the app, create the seed users, then listen until Ctrl-C.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let app = App::open(&options.data_dir).await?;
    for user in &options.users {
        app.seed_user(&user.email, &user.password).await?;
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    app.serve(listener, async {
        // If the handler cannot be installed, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await?;
    Ok(())
}
