//! What the service is configured with; the embedding program builds it from its own
//! configuration (the server from `tokengate.toml`, flags and environment).

use std::time::Duration;

use tokengate_core::{Algorithm, StalenessPolicy};

use crate::throttle::{SignupLimits, ThrottleLimits};

/// The settings every decision of the service reads.
#[derive(Clone)]
pub struct SessionConfig {
    /// `iss` of minted tokens, and the only issuer the verifier accepts.
    pub issuer: String,
    /// `aud` of minted tokens, and the only audience the verifier accepts.
    pub audience: String,
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (each rotation starts a new one).
    pub refresh_ttl: Duration,
    /// How long after a rotation the previous refresh token is still taken as a retry of
    /// the same rotation rather than as a theft.
    pub refresh_grace: Duration,
    /// Clock skew allowed on `exp`/`nbf`; the index keeps an entry until `exp` plus this.
    pub leeway: Duration,
    /// The algorithm of new signing keys.
    pub signing_alg: Algorithm,
    /// The HS256 secret when `signing_alg` is HS256; never stored, never printed.
    pub hs256_secret: Option<String>,
    /// Whether anyone may sign up (the first user of a store always becomes admin).
    pub allow_signup: bool,
    /// Failed sign-ins (and password changes) allowed per account and client, and per
    /// client network.
    pub throttle: ThrottleLimits,
    /// Sign-ups allowed per client network.
    pub signup: SignupLimits,
    /// How long the revocation index may go unconfirmed before it counts as stale.
    pub max_staleness: Duration,
    /// What a stale index does to requests.
    pub staleness_policy: StalenessPolicy,
}

/// The defaults of the `tokengate` server (`docs/api.md`): issuer and audience
/// `tokengate`, 15-minute access tokens, 30-day refresh tokens with no grace, 30 s leeway,
/// EdDSA keys, sign-up open, 5 failed sign-ins per account and client (50 per IP) in 15
/// minutes (an IPv6 client is its /64), 20 sign-ups per client network in 10 minutes, and a `fail_closed` index that counts as stale after 5 s unconfirmed.
impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            issuer: "tokengate".to_owned(),
            audience: "tokengate".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::ZERO,
            leeway: Duration::from_secs(30),
            signing_alg: Algorithm::EdDSA,
            hs256_secret: None,
            allow_signup: true,
            throttle: ThrottleLimits {
                max_failures: 5,
                max_failures_per_ip: 50,
                window: Duration::from_secs(15 * 60),
                ipv6_prefix: 64,
            },
            signup: SignupLimits {
                max_per_network: 20,
                window: Duration::from_secs(10 * 60),
            },
            max_staleness: Duration::from_secs(5),
            staleness_policy: StalenessPolicy::FailClosed,
        }
    }
}

/// Never shows the HS256 secret.
impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("refresh_grace", &self.refresh_grace)
            .field("leeway", &self.leeway)
            .field("signing_alg", &self.signing_alg)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("allow_signup", &self.allow_signup)
            .field("throttle", &self.throttle)
            .field("signup", &self.signup)
            .field("max_staleness", &self.max_staleness)
            .field("staleness_policy", &self.staleness_policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_hs256_secret() {
        let config = SessionConfig {
            signing_alg: Algorithm::HS256,
            hs256_secret: Some("a secret of at least thirty-two bytes".into()),
            ..SessionConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("thirty-two"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
