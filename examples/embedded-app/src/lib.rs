//! An axum app that embeds tokengate as a library instead of running the `tokengate` server.
//!
//! It has routes of its own and shows the four things an app needs from tokengate:
//!
//! - **Sign-in** (`POST /login`, [`routes::login`]): check an argon2id password hash kept in
//!   the tokengate store, create a session with [`Store::create_session`], and mint an access
//!   token with the app's [`SigningKey`] ([`keys`]).
//! - **A protected route** (`GET /hello`, [`routes::hello`]): it takes a
//!   [`tokengate_axum::Principal`]. The extractor verifies the token and checks it against the
//!   in-memory [`RevocationIndex`]: no database access per request. All the extractor needs is
//!   that the app state gives an `Arc<Gate>` through [`FromRef`].
//! - **Sign-out** (`POST /logout`, [`routes::logout`]): [`Store::end_session`] makes the
//!   revocation durable first, then [`RevocationIndex::apply`] makes this process refuse the
//!   token at once, then 204.
//! - **A websocket closed on revocation** (`GET /ws`, [`ws`]): authenticated once at upgrade
//!   time, then it listens to [`RevocationIndex::subscribe`] and closes itself (code 4001) as
//!   soon as a revocation covering its token arrives.
//!
//! At start ([`App::open`]) the live revocations are loaded from the store into the index
//! *before* the listener is bound; then a small task ([`tail`]) reads the revocations other
//! processes record in the same database (the `tokengate` admin CLI, another copy of this
//! app) every 250 ms, applies them and keeps the index's [`Freshness`] confirmed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use tokengate_axum::{Freshness, Gate, StalenessPolicy};
use tokengate_core::{
    Clock, RevocationIndex, Role, SigningKey, SystemClock, Timestamp, Verifier, VerifierConfig,
};
use tokengate_store::{NewUser, SqliteStore, Store, User};
use tokio::net::TcpListener;
use uuid::Uuid;

pub mod keys;
pub mod password;
pub mod routes;
pub mod tail;
pub mod ws;

use password::Passwords;

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
    /// Users, sessions, signing keys and the durable revocation record: the same SQLite
    /// store the `tokengate` server uses, opened on this app's own file.
    pub store: Arc<SqliteStore>,
    /// Verifier + revocation index + clock + freshness: what [`tokengate_axum::Principal`]
    /// checks every request against.
    pub gate: Arc<Gate>,
    /// The key that signs the tokens `/login` hands out.
    pub signer: Arc<SigningKey>,
    /// argon2id hashing and verification, off the async runtime.
    pub passwords: Passwords,
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
        self.gate.clock().now()
    }

    /// This process's revocation index.
    pub fn index(&self) -> &Arc<RevocationIndex> {
        self.gate.index()
    }
}

/// A started app: its state and the task that keeps its revocation index current.
pub struct App {
    state: AppState,
    // Stops the tail when the app is dropped.
    _tail: tail::Tail,
}

impl App {
    /// Open (creating if needed) `data_dir/app.db`, load or create the signing key, load
    /// every live revocation into the index and start the tail. Only after this may the app
    /// answer requests: before the load, the index would accept revoked tokens.
    pub async fn open(data_dir: &Path) -> anyhow::Result<App> {
        let path = data_dir.join(DATABASE_FILE);
        let store = Arc::new(
            SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now();

        let keys = keys::load_or_create(store.as_ref(), now).await?;
        let verifier = Arc::new(Verifier::new(
            VerifierConfig {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                leeway: LEEWAY,
            },
            keys.verifying,
        ));

        let index = Arc::new(RevocationIndex::new(LEEWAY));
        let live = store.load_live_revocations(now, LEEWAY).await?;
        let loaded = index.load(live.revocations, now);
        tracing::info!(revocations = loaded, "revocation index loaded");
        // The index now holds everything recorded up to the cursor; the tail keeps it so.
        let freshness = Arc::new(Freshness::new(StalenessPolicy::FailClosed, MAX_STALENESS));
        freshness.mark_in_sync(now);

        let gate = Arc::new(Gate::new(verifier, index, clock, freshness));
        let tail = tail::spawn(store.clone(), Arc::clone(&gate), live.cursor);
        let state = AppState {
            store,
            gate,
            signer: Arc::new(keys.signer),
            passwords: Passwords::new()?,
        };
        Ok(App { state, _tail: tail })
    }

    /// Create the user `email` with an argon2id hash of `password`, unless a user with that
    /// email exists already (then it is returned unchanged: re-running with the same
    /// `--user` is harmless, and this never resets a password behind the user's back).
    ///
    /// The first user a store ever gets is made `admin` by the store; this app does not
    /// look at roles.
    pub async fn seed_user(&self, email: &str, password: &str) -> anyhow::Result<User> {
        let email = routes::normalize_email(email)
            .with_context(|| format!("{email:?} is not an email address"))?;
        anyhow::ensure!(!password.is_empty(), "the password of {email} is empty");
        let store = &self.state.store;
        if let Some(user) = store.user_by_email(&email).await? {
            tracing::info!(%email, "user exists; password left as it is");
            return Ok(user);
        }
        let password_hash = self.state.passwords.hash(password.to_owned()).await?;
        let user = store
            .create_user(NewUser {
                id: Uuid::now_v7(),
                email,
                password_hash,
                role: Role::User,
                created_at: self.state.now(),
            })
            .await?;
        tracing::info!(email = %user.email, "user created");
        Ok(user)
    }

    /// The state the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The app's routes.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serve on `listener` until `shutdown` completes. The tail runs as long as this does.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
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
