//! [`SessionService`]: every session operation of a node, over one store, one clock, one
//! key ring and one revocation index.

use std::net::IpAddr;
use std::sync::Arc;

use tokengate_core::{
    Claims, Clock, Freshness, Proof, Revocation, RevocationIndex, Role, StalenessPolicy, Timestamp,
    Verifier, VerifierConfig,
};
use tokengate_store::{
    NewSession, RedisBus, RefreshOutcome, RefreshRotation, RefreshTokenInfo, RevocationPublisher,
    Session, Store, User, UserChange,
};
use uuid::Uuid;

use crate::activity::SessionActivity;
use crate::admin::{Admin, ImportError, IssuedBeforeError};
use crate::config::SessionConfig;
use crate::email::normalize_email;
use crate::error::{
    AdminError, EndSessionError, PasswordChangeError, RefreshError, SigninError, SignupError,
    StartError, Unavailable,
};
use crate::keyring::{KeyInfo, KeyRing, KeyRingError};
use crate::maintenance::Maintenance;
use crate::password::{check_strength, Passwords};
use crate::throttle::{SigninThrottle, SignupThrottle};
use crate::tokens::{
    hash_refresh_token, looks_like_refresh_token, AccessToken, Issued, RefreshToken,
};

/// Who is signing in: recorded with the session, and the IP keys the sign-in throttle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// The client's IP address (the TCP peer), if known.
    pub ip: Option<IpAddr>,
    /// Its `User-Agent`, if any.
    pub user_agent: Option<String>,
}

/// A live session of a user, with `last_seen_at` merged from this process's activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    /// The stored session.
    pub session: Session,
    /// The later of the stored `last_seen_at` and what this process saw since its last flush.
    pub last_seen_at: Timestamp,
    /// Whether this is the session the question was asked from.
    pub current: bool,
}

/// What [`SessionService::introspect`] found out about a token (RFC 7662).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introspection {
    /// An access token that verifies and is not revoked.
    Access(Claims),
    /// A refresh token that is unused, unexpired and of a live session.
    Refresh(RefreshTokenInfo),
    /// Anything else: revoked, expired, forged, used or unknown.
    Inactive,
}

/// Why a token could not be introspected.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    /// The revocation index is stale under `fail_closed`: whether an access token is
    /// revoked cannot be told.
    #[error("the revocation index is stale")]
    Stale,
    /// The store could not be read.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The session logic of a node. Built once by [`SessionService::start`] and shared
/// (`Arc`) by everything that answers requests.
pub struct SessionService {
    config: Arc<SessionConfig>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyRing>,
    index: Arc<RevocationIndex>,
    freshness: Arc<Freshness>,
    activity: Arc<SessionActivity>,
    throttle: SigninThrottle,
    signups: SignupThrottle,
    publisher: RevocationPublisher,
    admin: Admin,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl SessionService {
    /// Load the signing keys (making the first one, or rotating to the configured
    /// algorithm, when needed), then every live revocation into a new index; only then is
    /// the service ready to answer. `bus` joins a cluster: this node's revocations are
    /// pushed to the others, and theirs received.
    ///
    /// Returns the service and its [`Maintenance`], which must run for the index to stay
    /// current (`maintenance.spawn()`).
    pub async fn start(
        store: Arc<dyn Store>,
        config: SessionConfig,
        clock: Arc<dyn Clock>,
        bus: Option<RedisBus>,
    ) -> Result<(Arc<SessionService>, Maintenance), StartError> {
        let now = clock.now();
        let config = Arc::new(config);
        let verifier = Arc::new(Verifier::new(
            VerifierConfig {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
            },
            Vec::new(),
        ));
        let keys = Arc::new(KeyRing::load(store.as_ref(), &config, verifier, now).await?);

        let index = Arc::new(RevocationIndex::new(config.leeway));
        // The load proves the index current as of when it started (see Freshness).
        let load_started = clock.now_ms();
        let live = store.load_live_revocations(now, config.leeway).await?;
        let loaded = index.load(live.revocations, now);
        tracing::info!(revocations = loaded, "revocation index loaded");

        // The index was just loaded from the store, the source of truth: it is current as
        // of the load's start, and stays so while the tail or the bus keeps proving it
        // (see IndexSync).
        let freshness = Arc::new(Freshness::new(
            config.staleness_policy,
            config.max_staleness,
        ));
        freshness.mark_in_sync(Proof::Store, load_started);

        let publisher = match bus.clone() {
            Some(bus) => RevocationPublisher::to_bus(bus),
            None => RevocationPublisher::none(),
        };
        let passwords = Passwords::new()?;
        let service = Arc::new(SessionService {
            throttle: SigninThrottle::new(config.throttle),
            signups: SignupThrottle::new(config.signup, config.throttle.ipv6_prefix),
            admin: Admin::new(store.clone(), config.clone(), clock.clone(), passwords),
            config,
            store,
            clock,
            keys,
            index,
            freshness,
            activity: Arc::new(SessionActivity::default()),
            publisher,
        });
        let maintenance = Maintenance::new(service.clone(), live.cursor, bus);
        Ok((service, maintenance))
    }

    /// The current time from the one clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The store: users, sessions, keys and the durable revocation record.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The one clock every decision reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The signing keys and the verifier whose key set they maintain.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// The verifier of access tokens (for a request gate).
    pub fn verifier(&self) -> &Arc<Verifier> {
        self.keys.verifier()
    }

    /// This node's revocation index (for a request gate).
    pub fn index(&self) -> &Arc<RevocationIndex> {
        &self.index
    }

    /// Whether the index is current (for a request gate).
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// When sessions were last seen; feed it from the gate's observer
    /// ([`SessionActivity::accepted`]).
    pub fn activity(&self) -> &Arc<SessionActivity> {
        &self.activity
    }

    /// The sign-in throttle.
    pub fn throttle(&self) -> &SigninThrottle {
        &self.throttle
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        self.admin.passwords()
    }

    /// The store-only operations, without applying anything to this node's index.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Apply revocations the store has just made durable to this node's index, so the
    /// very next request sees them, and publish them to the other nodes of a cluster
    /// before returning (bounded by [`PUBLISH_TIMEOUT`](tokengate_store::PUBLISH_TIMEOUT)): a revocation acknowledged after
    /// this has reached Redis, which is what makes a node's heartbeat round trip a proof
    /// that it has seen it. A failed push loses nothing: the other nodes also read it from
    /// the store.
    pub async fn apply(&self, revocations: &[Revocation]) {
        let now = self.now();
        for revocation in revocations {
            self.index.apply(revocation, now);
        }
        self.publisher.publish(revocations).await;
    }

    /// Record revocations durably (all or nothing), then [`apply`](Self::apply) them.
    pub async fn record(&self, revocations: &[Revocation]) -> Result<(), Unavailable> {
        self.admin.record(revocations).await?;
        self.apply(revocations).await;
        Ok(())
    }

    /// [`record`](Self::record) for revocations caused by a signal (a logout token, a
    /// security event) whose id is `signal`: recorded and applied only the first time that
    /// id is seen, by any node; `false` (nothing done) for a replay.
    pub async fn record_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
    ) -> Result<bool, Unavailable> {
        let first = self
            .admin
            .record_once(signal, signal_exp, revocations)
            .await?;
        if first {
            self.apply(revocations).await;
        }
        Ok(first)
    }

    /// Sign an access token for `user` in session `sid`, issued at `now`, expiring at `exp`.
    pub async fn mint(
        &self,
        user: &User,
        sid: Uuid,
        now: Timestamp,
        exp: Timestamp,
    ) -> Result<AccessToken, Unavailable> {
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: user.id,
            aud: self.config.audience.clone(),
            iat: now,
            nbf: now,
            exp,
            jti: Uuid::new_v4(),
            sid,
            email: user.email.clone(),
            role: user.role,
        };
        let signer = self.keys.signer_reloading(self.store.as_ref(), now).await;
        let token = signer.sign(&claims).map_err(|error| {
            tracing::error!(%error, "signing failed");
            Unavailable::Signing(error)
        })?;
        Ok(AccessToken { token, exp })
    }

    /// Sign up: when sign-up is open and `client`'s network is under its sign-up limit,
    /// create a `user` (the first user of a store becomes admin) with a normalised email
    /// and a password that passes the policy.
    pub async fn signup(
        &self,
        raw_email: &str,
        password: String,
        client: &Client,
    ) -> Result<User, SignupError> {
        if !self.config.allow_signup {
            return Err(SignupError::Closed);
        }
        if let Err(retry) = self.signups.begin(client.ip, self.now()) {
            return Err(SignupError::Throttled {
                retry_after: retry.0,
            });
        }
        self.admin
            .create_user(raw_email, password, Role::User)
            .await
    }

    /// Sign in: [`authenticate`](Self::authenticate), then [`start_session`](Self::start_session).
    pub async fn signin(
        &self,
        raw_email: &str,
        password: String,
        client: &Client,
    ) -> Result<Issued, SigninError> {
        let user = self.authenticate(raw_email, password, client).await?;
        self.start_session(&user, client).await
    }

    /// Check an email and password behind the sign-in throttle: past the limit of failed
    /// attempts (per email and client IP, and per IP) the answer is `Throttled` before any
    /// password work. The attempt is counted before the check, so concurrent guesses cannot
    /// exceed the limit; a right password takes the count back and clears this client's
    /// counter.
    ///
    /// Unknown email and wrong password get the same answer after the same work (a decoy
    /// hash); a disabled account is only revealed to a caller who knows its password.
    pub async fn authenticate(
        &self,
        raw_email: &str,
        password: String,
        client: &Client,
    ) -> Result<User, SigninError> {
        if let Err(retry) = self.throttle.begin(raw_email, client.ip, self.now()) {
            return Err(SigninError::Throttled {
                retry_after: retry.0,
            });
        }
        let result = self.check_password(raw_email, password).await;
        match &result {
            // The password was right (a disabled account is only revealed to its owner).
            Ok(_) | Err(SigninError::Disabled) => {
                self.throttle
                    .record_success(raw_email, client.ip, self.now())
            }
            // A wrong password or unknown email stays counted; so does an outage,
            // conservatively.
            Err(_) => {}
        }
        result
    }

    async fn check_password(&self, raw_email: &str, password: String) -> Result<User, SigninError> {
        let user = match normalize_email(raw_email) {
            Ok(email) => self.store.user_by_email(&email).await?,
            Err(_) => None,
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let matched = self.passwords().verify(password, hash).await;
        match user {
            Some(user) if matched && user.disabled => Err(SigninError::Disabled),
            Some(user) if matched => Ok(user),
            _ => Err(SigninError::Invalid),
        }
    }

    /// Create a session for an authenticated `user` and mint its first access and
    /// refresh tokens.
    pub async fn start_session(&self, user: &User, client: &Client) -> Result<Issued, SigninError> {
        let now = self.now();
        let sid = Uuid::now_v7();
        let access_exp = now.plus(self.config.access_ttl);
        let refresh_exp = now.plus(self.config.refresh_ttl);
        let refresh = RefreshToken::generate();
        let created = self
            .store
            .create_session(NewSession {
                id: sid,
                user_id: user.id,
                created_at: now,
                user_agent: client.user_agent.clone(),
                ip: client.ip.map(|ip| ip.to_string()),
                password_hash: user.password_hash.clone(),
                access_exp,
                refresh_hash: refresh.hash,
                refresh_exp,
            })
            .await?;
        if !created {
            // The password changed or the account was disabled while the password was
            // being checked: the credentials are no longer good.
            return Err(SigninError::Invalid);
        }
        let access = self.mint(user, sid, now, access_exp).await?;
        tracing::info!(user_id = %user.id, session_id = %sid, "signed in");
        Ok(Issued {
            access_token: access.token,
            access_exp: access.exp,
            refresh_token: refresh.text,
            refresh_exp,
            session_id: sid,
            user_id: user.id,
            issued_at: now,
        })
    }

    /// Exchange a refresh token for a new access and refresh token of the same session.
    /// Single use: a token presented again after the grace period is taken as stolen and
    /// its whole session is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, RefreshError> {
        if !looks_like_refresh_token(refresh_token) {
            return Err(RefreshError::Malformed);
        }
        let now = self.now();
        let next = RefreshToken::generate();
        let access_exp = now.plus(self.config.access_ttl);
        let refresh_exp = now.plus(self.config.refresh_ttl);
        let outcome = self
            .store
            .rotate_refresh(RefreshRotation {
                presented_hash: hash_refresh_token(refresh_token),
                new_hash: next.hash,
                new_refresh_exp: refresh_exp,
                new_access_exp: access_exp,
                now,
                grace: self.config.refresh_grace,
            })
            .await?;
        match outcome {
            RefreshOutcome::Rotated { session, user } => {
                let access = self.mint(&user, session.id, now, access_exp).await?;
                Ok(Issued {
                    access_token: access.token,
                    access_exp: access.exp,
                    refresh_token: next.text,
                    refresh_exp,
                    session_id: session.id,
                    user_id: user.id,
                    issued_at: now,
                })
            }
            RefreshOutcome::Reused { revocation } => {
                self.apply(&[revocation]).await;
                tracing::warn!(session_id = %revocation.subject_id(), "refresh token reused; session revoked");
                Err(RefreshError::Reused)
            }
            RefreshOutcome::Unknown => Err(RefreshError::Unknown),
            RefreshOutcome::Expired => Err(RefreshError::Expired),
            RefreshOutcome::SessionEnded => Err(RefreshError::SessionEnded),
            RefreshOutcome::UserDisabled => Err(RefreshError::Disabled),
        }
    }

    /// Sign session `sid` out: every access token of it and its refresh token, durably,
    /// then in this node's index. Ending a session already ended does nothing.
    pub async fn sign_out(&self, user_id: Uuid, sid: Uuid) -> Result<(), Unavailable> {
        if let Some(revocation) = self.admin.end_session(sid).await? {
            self.apply(&[revocation]).await;
        }
        tracing::info!(%user_id, session_id = %sid, "signed out");
        Ok(())
    }

    /// Sign every session of `user_id` out; returns how many were live.
    pub async fn sign_out_everywhere(&self, user_id: Uuid) -> Result<usize, Unavailable> {
        let revocations = self
            .store
            .end_user_sessions(user_id, None, self.now())
            .await?;
        self.apply(&revocations).await;
        tracing::info!(%user_id, sessions = revocations.len(), "signed out everywhere");
        Ok(revocations.len())
    }

    /// End one of `user_id`'s own live sessions. Another user's (or an unknown, or an
    /// ended) session is `NotFound`, and nothing is revoked.
    pub async fn end_own_session(&self, user_id: Uuid, sid: Uuid) -> Result<(), EndSessionError> {
        let now = self.now();
        let session = self
            .store
            .session(sid)
            .await?
            .ok_or(EndSessionError::NotFound)?;
        if session.user_id != user_id || !session.is_live(now) {
            return Err(EndSessionError::NotFound);
        }
        if let Some(revocation) = self.admin.end_session(sid).await? {
            self.apply(&[revocation]).await;
        }
        tracing::info!(%user_id, session_id = %sid, "session ended by its owner");
        Ok(())
    }

    /// Change `user_id`'s password and end every other session than `current`, in one
    /// transaction: a sign-in still checking the old password can no longer create a
    /// session. Returns how many sessions were ended.
    ///
    /// The current password is checked behind the sign-in throttle (the account's email
    /// and `client`'s network), so a stolen access token buys no more guesses than the
    /// sign-in form.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: Uuid,
        current_password: String,
        new_password: String,
        client: &Client,
    ) -> Result<usize, PasswordChangeError> {
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(PasswordChangeError::UnknownUser)?;
        if let Err(retry) = self.throttle.begin(&user.email, client.ip, self.now()) {
            return Err(PasswordChangeError::Throttled {
                retry_after: retry.0,
            });
        }
        if !self
            .passwords()
            .verify(current_password, Some(user.password_hash.clone()))
            .await
        {
            return Err(PasswordChangeError::WrongPassword);
        }
        self.throttle
            .record_success(&user.email, client.ip, self.now());
        check_strength(&new_password, &user.email)?;
        let hash = self.passwords().hash(new_password).await?;
        let revocations = self
            .store
            .update_user(
                user.id,
                UserChange::Password {
                    hash: &hash,
                    keep: Some(current),
                },
                self.now(),
            )
            .await?
            .ok_or(PasswordChangeError::UnknownUser)?;
        self.apply(&revocations).await;
        tracing::info!(user_id = %user.id, revoked_sessions = revocations.len(), "password changed");
        Ok(revocations.len())
    }

    /// `user_id`'s live sessions, `current` marked, with `last_seen_at` merged from this
    /// node's in-memory activity (which reaches the store in batches).
    pub async fn live_sessions(
        &self,
        user_id: Uuid,
        current: Uuid,
    ) -> Result<Vec<LiveSession>, Unavailable> {
        let sessions = self.store.live_sessions(user_id, self.now()).await?;
        Ok(sessions
            .into_iter()
            .map(|session| {
                let last_seen_at = self
                    .activity
                    .last_seen(session.id)
                    .map_or(session.last_seen_at, |t| t.max(session.last_seen_at));
                LiveSession {
                    current: session.id == current,
                    last_seen_at,
                    session,
                }
            })
            .collect())
    }

    /// An admin ends every session of the user `user_id`; returns how many were live.
    pub async fn revoke_user(&self, admin: Uuid, user_id: Uuid) -> Result<usize, AdminError> {
        let revocations = self.admin.revoke_user(user_id).await?;
        self.apply(&revocations).await;
        tracing::info!(%admin, %user_id, sessions = revocations.len(), "admin revoked user's sessions");
        Ok(revocations.len())
    }

    /// An admin disables the user `user_id` (sign-in and refresh are refused) and ends
    /// every session. Disabling oneself is refused: it is a mistake, never a request.
    pub async fn disable_user(&self, admin: Uuid, user_id: Uuid) -> Result<usize, AdminError> {
        self.admin.user(user_id).await?;
        if user_id == admin {
            return Err(AdminError::SelfDisable);
        }
        let revocations = self.admin.disable_user(user_id).await?;
        self.apply(&revocations).await;
        tracing::info!(%admin, %user_id, sessions = revocations.len(), "admin disabled user");
        Ok(revocations.len())
    }

    /// An admin imports revocations (another system's denylist), all or nothing: an
    /// `exp` past now + refresh_ttl + leeway fails the import, and repeated ids are
    /// recorded once (see [`Admin::prepare_import`]). Returns how many were recorded.
    pub async fn import(
        &self,
        admin: Uuid,
        revocations: &[Revocation],
    ) -> Result<usize, ImportError> {
        let recorded = self.admin.import(revocations).await?;
        self.apply(&recorded).await;
        tracing::info!(%admin, entries = revocations.len(), recorded = recorded.len(), "revocations imported");
        Ok(recorded.len())
    }

    /// An admin revokes every access token issued before `issued_before`, of everyone
    /// (after a key compromise); see [`Admin::revoke_issued_before`].
    pub async fn revoke_issued_before(
        &self,
        admin: Uuid,
        issued_before: Timestamp,
    ) -> Result<(), IssuedBeforeError> {
        let revocation = self.admin.revoke_issued_before(None, issued_before).await?;
        self.apply(&[revocation]).await;
        tracing::info!(%admin, %issued_before, "admin revoked every token issued before the cutoff");
        Ok(())
    }

    /// Whether this node's index already refuses the token with `claims` for the rest of
    /// its life: the index is current, and an entry covering the token lasts at least to
    /// `exp + leeway`. Every entry of the index was durable before it was applied, so
    /// recording another revocation would add nothing.
    fn already_revoked(&self, claims: &Claims) -> bool {
        !self.freshness.is_stale(self.clock.now_ms())
            && self
                .index
                .check(claims, claims.exp.plus(self.config.leeway))
                .is_err()
    }

    /// Revoke a token held by the caller (RFC 7009: holding a token is the right to revoke
    /// it). A refresh token ends its whole session; an access token that verifies is
    /// revoked by its `jti`. Anything else (unknown, expired, foreign) does nothing, and
    /// the caller cannot tell the difference. Needs no fresh index.
    pub async fn revoke_token(&self, token: &str) -> Result<(), Unavailable> {
        let now = self.now();
        if looks_like_refresh_token(token) {
            if let Some(info) = self.store.refresh_token(hash_refresh_token(token)).await? {
                if info.session.ended_at.is_some() {
                    // Ended already: its revocation was recorded then.
                    return Ok(());
                }
                if let Some(revocation) = self.admin.end_session(info.session.id).await? {
                    self.apply(&[revocation]).await;
                    tracing::info!(session_id = %info.session.id, "session revoked through its refresh token");
                }
            }
        } else if let Ok(claims) = self.verifier().verify(token, now) {
            if self.already_revoked(&claims) {
                tracing::debug!(jti = %claims.jti, "access token already revoked");
                return Ok(());
            }
            let revocation = Revocation::Token {
                jti: claims.jti,
                exp: claims.exp,
            };
            self.record(&[revocation]).await?;
            tracing::info!(jti = %claims.jti, "access token revoked");
        }
        Ok(())
    }

    /// Describe a token for a resource server (RFC 7662): a refresh token from the store,
    /// an access token from the verifier and this node's index, which must be current under
    /// `fail_closed`.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, IntrospectError> {
        let now = self.now();
        if looks_like_refresh_token(token) {
            let info = self
                .store
                .refresh_token(hash_refresh_token(token))
                .await
                .map_err(Unavailable::from)?;
            return Ok(match info {
                Some(info) if info.is_active(now) => Introspection::Refresh(info),
                _ => Introspection::Inactive,
            });
        }
        let Ok(claims) = self.verifier().verify(token, now) else {
            return Ok(Introspection::Inactive);
        };
        if self.freshness.is_stale(self.clock.now_ms()) {
            self.freshness.count_stale_answer();
            if self.freshness.policy() == StalenessPolicy::FailClosed {
                return Err(IntrospectError::Stale);
            }
        }
        Ok(match self.index.check(&claims, now) {
            Ok(()) => Introspection::Access(claims),
            Err(_) => Introspection::Inactive,
        })
    }

    /// Make a new signing key current (see [`crate::keyring::rotate`]) and load it here at
    /// once; other nodes load it within a second. Returns its `kid`.
    pub async fn rotate_key(&self) -> Result<String, KeyRingError> {
        let kid = self.admin.rotate_key().await?;
        self.keys.reload(self.store.as_ref(), self.now()).await?;
        Ok(kid)
    }

    /// The stored keys and what each does now.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, Unavailable> {
        Ok(self.admin.keys().await?)
    }
}
