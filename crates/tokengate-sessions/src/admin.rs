//! The operations that only touch the store: creating users, cutting them off, recording
//! revocations and rotating keys. They return what they recorded (durably) and apply
//! nothing to any index: the admin CLI runs them against the database of servers that read
//! the record every 250 ms, and [`SessionService`](crate::SessionService) wraps them and
//! applies the revocations to its own index at once.

use std::collections::HashMap;
use std::sync::Arc;

use tokengate_core::{Clock, Revocation, Role, Timestamp};
use tokengate_store::{NewUser, Store, StoreError, User, UserChange};
use uuid::Uuid;

use crate::config::SessionConfig;
use crate::email::normalize_email;
use crate::error::{AdminError, SignupError, Unavailable};
use crate::keyring::{self, KeyInfo, KeyRingError};
use crate::password::{check_strength, Passwords};

/// Why a bulk import was refused; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An entry's `exp` is later than any token this service mints can live: it would pin
    /// the entry in every node's memory (and the store) for as long as it says.
    #[error("entry {position}: `exp` {exp} is after {latest} (now + refresh_ttl + leeway); nothing was imported")]
    TooLate {
        /// The entry's position in the import, counted from 0.
        position: usize,
        /// Its `exp`.
        exp: Timestamp,
        /// The latest `exp` accepted now.
        latest: Timestamp,
    },
    /// The store could not record the import.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why an issued-before revocation was refused; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum IssuedBeforeError {
    /// The cutoff is after now.
    #[error("the cutoff {issued_before} is in the future (now is {now})")]
    InTheFuture {
        /// The cutoff asked for.
        issued_before: Timestamp,
        /// The time now.
        now: Timestamp,
    },
    /// No such user, or the store is unavailable (nothing was recorded).
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Store-only administration over one store, one configuration and one clock.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    config: Arc<SessionConfig>,
    clock: Arc<dyn Clock>,
    passwords: Passwords,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Administration of `store` with `config`, reading the time from `clock`.
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<SessionConfig>,
        clock: Arc<dyn Clock>,
        passwords: Passwords,
    ) -> Self {
        Admin {
            store,
            config,
            clock,
            passwords,
        }
    }

    /// The current time from the one clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The store administered.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Create a user with a normalised email and an argon2id hash of a password that
    /// passes the policy. The first user of a store becomes admin whatever `role` says.
    pub async fn create_user(
        &self,
        raw_email: &str,
        password: String,
        role: Role,
    ) -> Result<User, SignupError> {
        let email = normalize_email(raw_email)?;
        check_strength(&password, &email)?;
        // Hashed before the existence check, so that an existing email (409) costs the
        // same time as a new one (201): the answer names the conflict, the timing does not
        // add an oracle that works where the answer is hidden.
        let password_hash = self.passwords.hash(password).await?;
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(SignupError::Exists);
        }
        let user = self
            .store
            .create_user(NewUser {
                id: Uuid::now_v7(),
                email,
                password_hash,
                role,
                created_at: self.now(),
            })
            .await
            .map_err(|error| match error {
                // Created by a concurrent request between the check and the insert.
                StoreError::Conflict(_) => SignupError::Exists,
                other => other.into(),
            })?;
        tracing::info!(user_id = %user.id, role = user.role.as_str(), "user created");
        Ok(user)
    }

    /// The user with this email (normalised first).
    pub async fn user_by_email(&self, raw_email: &str) -> Result<User, AdminError> {
        let email = normalize_email(raw_email)?;
        self.store
            .user_by_email(&email)
            .await?
            .ok_or(AdminError::NotFound)
    }

    /// The user with this id.
    pub async fn user(&self, id: Uuid) -> Result<User, AdminError> {
        self.store.user_by_id(id).await?.ok_or(AdminError::NotFound)
    }

    /// End every session of an existing user.
    pub async fn revoke_user(&self, user_id: Uuid) -> Result<Vec<Revocation>, AdminError> {
        self.user(user_id).await?;
        Ok(self
            .store
            .end_user_sessions(user_id, None, self.now())
            .await?)
    }

    /// Disable a user and end every session, in one transaction: a sign-in or refresh
    /// racing it finds the user disabled.
    pub async fn disable_user(&self, user_id: Uuid) -> Result<Vec<Revocation>, AdminError> {
        self.store
            .update_user(user_id, UserChange::Disabled(true), self.now())
            .await?
            .ok_or(AdminError::NotFound)
    }

    /// End one session by id; `None` when it does not exist or had already ended.
    pub async fn end_session(&self, sid: Uuid) -> Result<Option<Revocation>, Unavailable> {
        Ok(self.store.end_session(sid, self.now()).await?)
    }

    /// Revoke one access token by its `jti` alone: its `exp` is unknown, and no token
    /// issued before now outlives `now + access_ttl + leeway`.
    pub async fn revoke_token_id(&self, jti: Uuid) -> Result<Revocation, Unavailable> {
        let now = self.now();
        let revocation = Revocation::Token {
            jti,
            exp: now.plus(self.config.access_ttl + self.config.leeway),
        };
        self.record(&[revocation]).await?;
        Ok(revocation)
    }

    /// Record revocations durably (all or nothing), e.g. another system's denylist.
    pub async fn record(&self, revocations: &[Revocation]) -> Result<(), Unavailable> {
        Ok(self
            .store
            .record_revocations(revocations, self.now())
            .await?)
    }

    /// Record revocations durably together with the id of the signal that caused them,
    /// unless that id was recorded before (a replay): then nothing is recorded and the
    /// answer is `false`. See [`Store::record_revocations_once`](tokengate_store::Store::record_revocations_once).
    pub async fn record_once(
        &self,
        signal: Uuid,
        signal_exp: Timestamp,
        revocations: &[Revocation],
    ) -> Result<bool, Unavailable> {
        Ok(self
            .store
            .record_revocations_once(signal, signal_exp, revocations, self.now())
            .await?)
    }

    /// The latest `exp` an imported revocation may carry at `now`: no token minted here
    /// outlives `now + refresh_ttl` (plus the verifier's leeway), so a later one only pins
    /// memory.
    pub fn latest_import_exp(&self, now: Timestamp) -> Timestamp {
        now.plus(self.config.refresh_ttl + self.config.leeway)
    }

    /// Check an import and drop its repeats: an entry whose `exp` is past
    /// [`latest_import_exp`](Self::latest_import_exp) fails the whole import, naming its
    /// position; repeated ids (a `Token` or `Session` named twice) are kept once, with the
    /// latest `exp`, in the order they first appear.
    pub fn prepare_import(
        &self,
        revocations: &[Revocation],
        now: Timestamp,
    ) -> Result<Vec<Revocation>, ImportError> {
        let latest = self.latest_import_exp(now);
        if let Some((position, revocation)) = revocations
            .iter()
            .enumerate()
            .find(|(_, revocation)| revocation.exp() > latest)
        {
            return Err(ImportError::TooLate {
                position,
                exp: revocation.exp(),
                latest,
            });
        }
        let mut unique: Vec<Revocation> = Vec::with_capacity(revocations.len());
        let mut seen: HashMap<(tokengate_core::RevocationKind, Uuid), usize> =
            HashMap::with_capacity(revocations.len());
        for revocation in revocations {
            match revocation {
                Revocation::Token { .. } | Revocation::Session { .. } => {
                    let key = (revocation.kind(), revocation.subject_id());
                    match seen.get(&key) {
                        Some(&at) if unique[at].exp() < revocation.exp() => {
                            unique[at] = *revocation;
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(key, unique.len());
                            unique.push(*revocation);
                        }
                    }
                }
                other => unique.push(*other),
            }
        }
        Ok(unique)
    }

    /// Import revocations (another system's denylist), all or nothing: checked and
    /// deduplicated by [`prepare_import`](Self::prepare_import), then recorded. Returns
    /// what was recorded.
    pub async fn import(&self, revocations: &[Revocation]) -> Result<Vec<Revocation>, ImportError> {
        let unique = self.prepare_import(revocations, self.now())?;
        self.record(&unique).await?;
        Ok(unique)
    }

    /// Revoke every access token issued before `issued_before` (after a key compromise),
    /// of one user or, with `user_id` `None`, of everyone. Such a token expires at the
    /// latest `access_ttl` after it was issued; the entry is kept as long as any token issued
    /// before now could live (as for [`revoke_token_id`](Self::revoke_token_id)). A cutoff
    /// in the future is refused: it would refuse tokens not issued yet.
    pub async fn revoke_issued_before(
        &self,
        user_id: Option<Uuid>,
        issued_before: Timestamp,
    ) -> Result<Revocation, IssuedBeforeError> {
        let now = self.now();
        if issued_before > now {
            return Err(IssuedBeforeError::InTheFuture { issued_before, now });
        }
        let exp = now.plus(self.config.access_ttl + self.config.leeway);
        let revocation = match user_id {
            Some(sub) => {
                self.user(sub).await?;
                Revocation::User {
                    sub,
                    issued_before,
                    exp,
                }
            }
            None => Revocation::IssuedBefore { issued_before, exp },
        };
        self.record(&[revocation]).await.map_err(AdminError::from)?;
        Ok(revocation)
    }

    /// Everything that existed before `cutoff` stops working: every access token issued
    /// before it ([`revoke_issued_before`](Self::revoke_issued_before) for everyone), then
    /// every session created before it, so their refresh tokens cannot mint new ones. For a
    /// restore from a backup, whose database has forgotten the sign-outs made after it.
    /// Returns the revocation and how many sessions were ended; retrying after a failure
    /// is safe.
    pub async fn revoke_everything_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<(Revocation, u64), IssuedBeforeError> {
        let revocation = self.revoke_issued_before(None, cutoff).await?;
        let ended = self
            .store
            .end_sessions_created_before(cutoff, self.now())
            .await
            .map_err(AdminError::from)?;
        Ok((revocation, ended))
    }

    /// Make a new key of the configured algorithm the signing key (see
    /// [`keyring::rotate`]); returns its `kid`.
    pub async fn rotate_key(&self) -> Result<String, KeyRingError> {
        keyring::rotate(self.store.as_ref(), &self.config, self.now()).await
    }

    /// The stored keys and what each does now.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        keyring::list(self.store.as_ref(), self.now()).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::time::Duration;

    use tokengate_core::ManualClock;
    use tokengate_store::SqliteStore;

    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    async fn admin(dir: &tempfile::TempDir) -> Admin {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("admin.db"))
                .await
                .unwrap(),
        );
        let config = SessionConfig {
            refresh_ttl: Duration::from_secs(1_000),
            leeway: Duration::from_secs(10),
            ..SessionConfig::default()
        };
        Admin::new(
            store,
            Arc::new(config),
            Arc::new(ManualClock::new(NOW)),
            Passwords::new().unwrap(),
        )
    }

    fn token(jti: Uuid, exp: i64) -> Revocation {
        Revocation::Token {
            jti,
            exp: Timestamp::from_secs(exp),
        }
    }

    #[tokio::test]
    async fn an_import_past_refresh_ttl_plus_leeway_is_refused_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir).await;
        let now = NOW.as_secs();
        let ok = [token(Uuid::new_v4(), now + 1_010)];
        assert_eq!(admin.prepare_import(&ok, NOW).unwrap(), ok);
        let late = [
            token(Uuid::new_v4(), now),
            token(Uuid::new_v4(), now + 1_011),
            token(Uuid::new_v4(), i64::MAX),
        ];
        match admin.prepare_import(&late, NOW) {
            Err(ImportError::TooLate { position, .. }) => assert_eq!(position, 1),
            other => panic!("{other:?}"),
        }
        assert!(admin.import(&late).await.is_err());
        let live = admin
            .store()
            .load_live_revocations(NOW, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(live.revocations.is_empty(), "nothing was recorded");
    }

    #[tokio::test]
    async fn repeated_ids_are_kept_once_with_the_latest_exp_in_first_order() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir).await;
        let now = NOW.as_secs();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let revocations = [
            token(a, now + 5),
            token(b, now + 9),
            token(a, now + 7),
            token(a, now + 6),
            Revocation::Session {
                sid: a,
                exp: Timestamp::from_secs(now + 1),
            },
        ];
        let unique = admin.prepare_import(&revocations, NOW).unwrap();
        assert_eq!(
            unique,
            [
                token(a, now + 7),
                token(b, now + 9),
                Revocation::Session {
                    sid: a,
                    exp: Timestamp::from_secs(now + 1)
                }
            ]
        );
    }

    #[tokio::test]
    async fn issued_before_in_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir).await;
        assert!(matches!(
            admin
                .revoke_issued_before(None, NOW.plus(Duration::from_secs(1)))
                .await,
            Err(IssuedBeforeError::InTheFuture { .. })
        ));
        assert!(matches!(
            admin.revoke_issued_before(Some(Uuid::new_v4()), NOW).await,
            Err(IssuedBeforeError::Admin(AdminError::NotFound))
        ));
        let revocation = admin.revoke_issued_before(None, NOW).await.unwrap();
        assert_eq!(revocation.issued_before(), Some(NOW));
        assert!(revocation.exp() > NOW);
    }
}
