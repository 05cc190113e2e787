//! `[[issuers]]`: the issuers whose tokens the gate verifies and revokes (GATE.md).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokengate_core::Algorithm;

use crate::duration;

/// Longest accepted `max_token_age`: an entry of a session or user revocation lives this
/// long, so it bounds the index's memory.
pub const MAX_TOKEN_AGE_LIMIT: Duration = Duration::from_secs(365 * 86_400);

/// One issuer whose tokens the gate accepts, as written in the configuration.
///
/// Its [`Debug`](fmt::Debug) form redacts the HS256 secret and the clients' secret hashes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// `[a-z0-9-]{1,32}`: used in paths, metrics, headers and the CLI.
    pub name: String,
    /// The exact `iss` of the tokens; `None` only for an HS256 app whose tokens carry no
    /// `iss` (at most one such entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// An OpenID Provider's discovery document, which names the `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// The JWK Set URL, when there is no discovery document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The HS256 secret of an app that signs its own tokens (at least 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// A file holding the HS256 secret (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<PathBuf>,
    /// `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accept tokens that carry no `aud` at all (apps that put none in their tokens).
    #[serde(default)]
    pub audience_optional: bool,
    /// The algorithms accepted; empty means every asymmetric algorithm for a key set, and
    /// `HS256` for a shared secret.
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// Where the claims tokengate needs are found in this issuer's tokens.
    #[serde(default)]
    pub claims: ClaimNames,
    /// Also take the credential from this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Refuse tokens older than this (by `iat`), whatever their `exp`; a token without
    /// `exp` must have `iat`, and one without `iat` must expire within this.
    #[serde(default = "default_max_token_age", with = "duration")]
    pub max_token_age: Duration,
    /// The required `typ` header, when the issuer sets one (e.g. `at+jwt`); unchecked
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Clients that may revoke this issuer's tokens (HTTP Basic).
    #[serde(default)]
    pub clients: Vec<RevokeClient>,
    /// Accept OpenID Connect Back-Channel Logout 1.0 logout tokens from this issuer at
    /// `POST /v1/gate/{name}/backchannel-logout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_logout: Option<BackchannelLogout>,
    /// Accept Shared Signals (CAEP, RISC) Security Event Tokens from this issuer at
    /// `POST /v1/gate/{name}/ssf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssf: Option<SharedSignals>,
}

/// `backchannel_logout = { client_id = "..." }`: the logout tokens' `aud` must contain
/// this client id (the one the app is registered under at the provider).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackchannelLogout {
    /// The client id the provider puts in the logout token's `aud`.
    pub client_id: String,
}

/// `ssf = { audience = "..." }`: the Security Event Tokens' `aud` must contain this
/// (the audience the transmitter's stream was configured with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSignals {
    /// The `aud` of the stream's SETs.
    pub audience: String,
}

fn default_max_token_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}

/// Where each claim tokengate needs is found: a claim name, or a dotted path into nested
/// objects (`realm_access.roles`). A partial table merges with the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    /// The user (required in every token). Default `sub`; Open WebUI: `id`.
    pub subject: String,
    /// The session, where the issuer has one. Default `sid`.
    pub session: String,
    /// The token's own id. Default `jti`; a token without one is revoked by a digest of
    /// its signature.
    pub token_id: String,
    /// The email, sent to the app in `X-Auth-Email`. Default `email`.
    pub email: String,
    /// The role or roles, sent in `X-Auth-Role` (a list joined with commas). Default `role`.
    pub role: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            subject: "sub".into(),
            session: "sid".into(),
            token_id: "jti".into(),
            email: "email".into(),
            role: "role".into(),
        }
    }
}

/// A client allowed to revoke an issuer's tokens, authenticated with HTTP Basic.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeClient {
    /// The client id (the Basic user name).
    pub id: String,
    /// Lower-case hex SHA-256 of the client secret: the configuration never holds it.
    pub secret_sha256: String,
}

impl fmt::Debug for IssuerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "[redacted]");
        f.debug_struct("IssuerConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("discovery", &self.discovery)
            .field("jwks_uri", &self.jwks_uri)
            .field("hs256_secret", &redacted(&self.hs256_secret))
            .field("hs256_secret_file", &self.hs256_secret_file)
            .field("audiences", &self.audiences)
            .field("audience_optional", &self.audience_optional)
            .field("algorithms", &self.algorithms)
            .field("claims", &self.claims)
            .field("cookie", &self.cookie)
            .field("max_token_age", &self.max_token_age)
            .field("typ", &self.typ)
            .field(
                "clients",
                &self.clients.iter().map(|c| &c.id).collect::<Vec<_>>(),
            )
            .field("backchannel_logout", &self.backchannel_logout)
            .field("ssf", &self.ssf)
            .finish()
    }
}

/// Where an issuer's keys come from, once its configuration is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A discovery document (`.../.well-known/openid-configuration`) naming `jwks_uri`.
    Discovery(String),
    /// A JWK Set URL.
    Jwks(String),
    /// A shared HS256 secret (read from the file when configured so).
    Hs256,
}

/// A configuration that cannot be used; the text says which issuer and why.
#[derive(Debug, thiserror::Error)]
#[error("issuer {name:?}: {why}")]
pub struct ConfigError {
    name: String,
    why: String,
}

impl IssuerConfig {
    fn error(&self, why: impl Into<String>) -> ConfigError {
        ConfigError {
            name: self.name.clone(),
            why: why.into(),
        }
    }

    /// Check one entry; returns where its keys come from.
    pub fn key_source(&self) -> Result<KeySource, ConfigError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(self.error("`name` must match [a-z0-9-]{1,32}"));
        }
        if self.name == "tokengate" {
            return Err(self.error("`tokengate` names tokengate's own tokens"));
        }
        let secret = self.hs256_secret.is_some() || self.hs256_secret_file.is_some();
        let source = match (&self.discovery, &self.jwks_uri, secret) {
            (Some(url), None, false) => KeySource::Discovery(self.checked_url(url)?),
            (None, Some(url), false) => KeySource::Jwks(self.checked_url(url)?),
            (None, None, true) => {
                if self.hs256_secret.is_some() && self.hs256_secret_file.is_some() {
                    return Err(self.error("give `hs256_secret` or `hs256_secret_file`, not both"));
                }
                KeySource::Hs256
            }
            _ => {
                return Err(
                    self.error("give exactly one of `discovery`, `jwks_uri` or an HS256 secret")
                )
            }
        };
        let hs256 = source == KeySource::Hs256;
        if self.issuer.is_none() && !hs256 {
            return Err(self.error("`issuer` may be left out only for an HS256 secret"));
        }
        if self.algorithms.contains(&Algorithm::HS256) != hs256 && !self.algorithms.is_empty() {
            return Err(self.error(if hs256 {
                "a shared secret verifies HS256 only"
            } else {
                "HS256 is accepted only with a shared secret"
            }));
        }
        if self.audiences.is_empty() && !self.audience_optional {
            return Err(self.error("give `audiences`, or set `audience_optional = true`"));
        }
        if self.max_token_age.is_zero() || self.max_token_age > MAX_TOKEN_AGE_LIMIT {
            return Err(self.error("`max_token_age` must be between 1s and 365d"));
        }
        if self.claims.subject.is_empty() {
            return Err(self.error("`claims.subject` must name a claim"));
        }
        for client in &self.clients {
            let hex_ok = client.secret_sha256.len() == 64
                && client
                    .secret_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if client.id.is_empty() || client.id.contains(':') || !hex_ok {
                return Err(self.error(
                    "each client needs an `id` without `:` and a lower-case hex `secret_sha256`",
                ));
            }
        }
        let signals = self.backchannel_logout.is_some() || self.ssf.is_some();
        if signals && self.issuer.is_none() {
            return Err(self.error(
                "`backchannel_logout` and `ssf` need `issuer`: their tokens' `iss` must equal it",
            ));
        }
        if self
            .backchannel_logout
            .as_ref()
            .is_some_and(|b| b.client_id.is_empty())
        {
            return Err(self.error("`backchannel_logout.client_id` must not be empty"));
        }
        if self.ssf.as_ref().is_some_and(|s| s.audience.is_empty()) {
            return Err(self.error("`ssf.audience` must not be empty"));
        }
        Ok(source)
    }

    /// The algorithms this issuer's keys may verify.
    pub fn allowed_algorithms(&self, source: &KeySource) -> Vec<Algorithm> {
        match (source, self.algorithms.is_empty()) {
            (KeySource::Hs256, _) => vec![Algorithm::HS256],
            (_, true) => vec![
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
            (_, false) => self.algorithms.clone(),
        }
    }

    /// `url` if it is HTTPS, or plain HTTP to a loopback address.
    fn checked_url(&self, url: &str) -> Result<String, ConfigError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| self.error(format!("bad URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(url.to_owned()),
            "http" if is_loopback(&parsed) => Ok(url.to_owned()),
            _ => Err(self.error(format!(
                "{url:?}: keys are fetched over HTTPS only (plain HTTP only from a loopback address)"
            ))),
        }
    }
}

/// Whether `url` names a loopback host (`localhost`, 127.0.0.0/8 or `::1`).
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Check every entry and that at most one has no `issuer`, and that names and issuers
/// are unique.
pub fn check_all(issuers: &[IssuerConfig]) -> Result<(), ConfigError> {
    for (i, entry) in issuers.iter().enumerate() {
        entry.key_source()?;
        for earlier in &issuers[..i] {
            if earlier.name == entry.name {
                return Err(entry.error("two issuers have this name"));
            }
            if earlier.issuer == entry.issuer {
                return Err(entry.error(match entry.issuer {
                    Some(_) => "two issuers have the same `issuer`",
                    None => "at most one issuer may leave out `issuer`",
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(toml_like: serde_json::Value) -> IssuerConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    fn sso() -> serde_json::Value {
        serde_json::json!({
            "name": "sso",
            "issuer": "https://sso.example.com/realms/main",
            "discovery": "https://sso.example.com/realms/main/.well-known/openid-configuration",
            "audiences": ["my-app"],
        })
    }

    #[test]
    fn a_provider_entry_has_defaults_and_checks() {
        let sso = entry(sso());
        assert_eq!(
            sso.key_source().unwrap(),
            KeySource::Discovery(sso.discovery.clone().unwrap())
        );
        assert_eq!(sso.claims, ClaimNames::default());
        assert_eq!(sso.max_token_age, Duration::from_secs(30 * 86_400));
        assert!(!sso
            .allowed_algorithms(&KeySource::Jwks(String::new()))
            .contains(&Algorithm::HS256));
    }

    #[test]
    fn an_open_webui_entry_needs_no_issuer() {
        let webui = entry(serde_json::json!({
            "name": "webui",
            "hs256_secret": "a shared secret of at least 32 bytes!!",
            "audience_optional": true,
            "claims": {"subject": "id"},
            "cookie": "token",
        }));
        assert_eq!(webui.key_source().unwrap(), KeySource::Hs256);
        assert_eq!(webui.claims.subject, "id");
        assert_eq!(
            webui.claims.token_id, "jti",
            "a partial table keeps the defaults"
        );
        let debug = format!("{webui:?}");
        assert!(!debug.contains("shared secret"), "{debug}");
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let refused = |patch: serde_json::Value, why: &str| {
            let mut value = sso();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    value.as_object_mut().unwrap().remove(k);
                } else {
                    value[k] = v.clone();
                }
            }
            let error = entry(value).key_source().unwrap_err().to_string();
            assert!(error.contains(why), "{error} (expected {why:?})");
        };
        refused(serde_json::json!({"name": "SSO"}), "[a-z0-9-]");
        refused(serde_json::json!({"name": "tokengate"}), "own tokens");
        refused(
            serde_json::json!({"discovery": "http://sso.example.com/x"}),
            "HTTPS only",
        );
        refused(
            serde_json::json!({"jwks_uri": "https://sso.example.com/jwks"}),
            "exactly one",
        );
        refused(
            serde_json::json!({"issuer": null}),
            "`issuer` may be left out",
        );
        refused(
            serde_json::json!({"algorithms": ["HS256"]}),
            "shared secret",
        );
        refused(serde_json::json!({"audiences": []}), "audience_optional");
        refused(serde_json::json!({"max_token_age": 0}), "max_token_age");
        refused(
            serde_json::json!({"clients": [{"id": "a", "secret_sha256": "XYZ"}]}),
            "secret_sha256",
        );
        refused(
            serde_json::json!({"backchannel_logout": {"client_id": ""}}),
            "client_id",
        );
        refused(serde_json::json!({"ssf": {"audience": ""}}), "ssf.audience");
        // Plain HTTP is fine to a loopback provider (tests, sidecars).
        let mut local = sso();
        local["discovery"] = "http://127.0.0.1:9000/.well-known/openid-configuration".into();
        assert!(entry(local).key_source().is_ok());
    }

    #[test]
    fn signal_tables_are_read_and_need_an_issuer() {
        let mut value = sso();
        value["backchannel_logout"] = serde_json::json!({"client_id": "my-app"});
        value["ssf"] = serde_json::json!({"audience": "https://gate.example.com"});
        let sso = entry(value.clone());
        assert!(sso.key_source().is_ok());
        assert_eq!(sso.backchannel_logout.unwrap().client_id, "my-app");
        assert_eq!(sso.ssf.unwrap().audience, "https://gate.example.com");
        value["ssf"] = serde_json::json!({"audience": "a", "aud": "b"});
        assert!(serde_json::from_value::<IssuerConfig>(value).is_err());
        let app = entry(serde_json::json!({
            "name": "app", "hs256_secret": "a shared secret of at least 32 bytes!!",
            "audience_optional": true, "backchannel_logout": {"client_id": "app"},
        }));
        let error = app.key_source().unwrap_err().to_string();
        assert!(error.contains("need `issuer`"), "{error}");
    }

    #[test]
    fn names_and_issuers_are_unique_and_one_entry_at_most_has_no_issuer() {
        let a = entry(sso());
        let mut b = entry(sso());
        b.name = "other".into();
        assert!(check_all(&[a.clone(), b.clone()]).is_err());
        b.issuer = Some("https://other.example.com".into());
        assert!(check_all(&[a, b]).is_ok());
        let app = |name: &str| {
            entry(serde_json::json!({
                "name": name, "hs256_secret": "a shared secret of at least 32 bytes!!",
                "audience_optional": true,
            }))
        };
        let error = check_all(&[app("one"), app("two")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most one"), "{error}");
    }
}
