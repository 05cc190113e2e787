//! The claims of another issuer's token, read through the issuer's claim mapping.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use tokengate_core::cache::allocation_cost;
use tokengate_core::{Timestamp, TokenIds};

use crate::config::ClaimNames;
use crate::ids::{digest, email_id, IdKind};

/// A verified token of a gate issuer, with what the proxy and the revocations need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateToken {
    /// The issuer's configured `name`.
    pub issuer: String,
    /// The mapped subject (a string, or a number written as one).
    pub subject: String,
    /// The mapped session, where the token has one.
    pub session: Option<String>,
    /// The mapped token id, where the token has one.
    pub token_id: Option<String>,
    /// The mapped email, where the token has one.
    pub email: Option<String>,
    /// The mapped role or roles (a list joined with commas), where the token has them.
    pub role: Option<String>,
    /// `iat`, where the token has one.
    pub iat: Option<Timestamp>,
    /// When the token stops being accepted: `exp`, or `iat + max_token_age` if that is
    /// earlier (or the only one there is).
    pub expires: Timestamp,
    /// The ids the index checks, digests scoped by the issuer.
    pub ids: TokenIds,
    /// The id of its email, checked as a user cutoff too, where the issuer takes Shared
    /// Signals events that may name a user by email ([`crate::Issuer::email_revocable`]).
    pub email_id: Option<uuid::Uuid>,
}

impl GateToken {
    /// The heap bytes this token's strings hold, as the verified-token cache counts them.
    pub fn heap_bytes(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, |s| allocation_cost(s.capacity()));
        allocation_cost(self.issuer.capacity())
            + allocation_cost(self.subject.capacity())
            + optional(&self.session)
            + optional(&self.token_id)
            + optional(&self.email)
            + optional(&self.role)
    }
}

/// Why the claims of a token whose signature verified are not accepted. The text is
/// fixed (never repeats token content) and is sent as the RFC 6750 `error_description`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not a JSON object, or one claim given twice.
    #[error("token payload is not a JSON object with unique claims")]
    NotAnObject,
    /// A required claim is missing or of the wrong type; names the claim's role.
    #[error("token has no usable {0} claim")]
    Missing(&'static str),
    /// A claim is of the wrong type; names the claim's role.
    #[error("token {0} claim has the wrong type")]
    WrongType(&'static str),
    /// Past `exp` (plus leeway).
    #[error("token is expired")]
    Expired,
    /// Before `nbf` (minus leeway), or `iat` in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Older than the issuer's `max_token_age`, or without `iat` and expiring later than it.
    #[error("token is older than this issuer allows")]
    TooOld,
    /// No `exp` and no `iat`: nothing bounds its life.
    #[error("token has neither exp nor iat")]
    Unbounded,
    /// `aud` names none of the configured audiences, or is missing where required.
    #[error("token audience is not accepted")]
    WrongAudience,
}

/// What the claims are checked against.
pub(crate) struct ClaimRules<'a> {
    pub issuer_name: &'a str,
    pub names: &'a ClaimNames,
    pub audiences: &'a [String],
    pub audience_optional: bool,
    pub max_token_age: Duration,
    pub leeway: Duration,
    /// Compute the token's [`GateToken::email_id`].
    pub email_revocable: bool,
}

impl ClaimRules<'_> {
    /// Read and check the verified `payload`; `signature` identifies a token with no
    /// token id.
    pub(crate) fn read(
        &self,
        payload: &[u8],
        signature: &[u8],
        now: Timestamp,
    ) -> Result<GateToken, ClaimsError> {
        let claims = claims_object(payload)?;
        let subject = text(&claims, &self.names.subject, "subject")?
            .ok_or(ClaimsError::Missing("subject"))?;
        if subject.is_empty() {
            return Err(ClaimsError::Missing("subject"));
        }
        let session = text(&claims, &self.names.session, "session")?.filter(|s| !s.is_empty());
        let token_id = text(&claims, &self.names.token_id, "token id")?.filter(|s| !s.is_empty());
        let email = text(&claims, &self.names.email, "email")?;
        let role = roles(&claims, &self.names.role)?;
        let iat = instant(&claims, "iat")?;
        let exp = instant(&claims, "exp")?;
        let nbf = instant(&claims, "nbf")?;

        let leeway = self.leeway;
        if exp.is_some_and(|exp| now > exp.plus(leeway)) {
            return Err(ClaimsError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.plus(leeway))
            || iat.is_some_and(|iat| iat > now.plus(leeway))
        {
            return Err(ClaimsError::NotYetValid);
        }
        let expires = match (exp, iat) {
            (Some(exp), Some(iat)) => exp.min(iat.plus(self.max_token_age)),
            (None, Some(iat)) => iat.plus(self.max_token_age),
            // Without `iat` the age is unknown: the token must at least expire in time.
            (Some(exp), None) if exp <= now.plus(self.max_token_age) => exp,
            (Some(_), None) => return Err(ClaimsError::TooOld),
            (None, None) => return Err(ClaimsError::Unbounded),
        };
        if now > expires.plus(leeway) {
            return Err(match exp {
                Some(exp) if exp == expires => ClaimsError::Expired,
                _ => ClaimsError::TooOld,
            });
        }
        self.check_audience(claims.get("aud"))?;

        let issuer = self.issuer_name;
        let jti = match &token_id {
            Some(id) => digest(issuer, IdKind::TokenId, id.as_bytes()),
            None => digest(issuer, IdKind::Signature, signature),
        };
        let ids = TokenIds {
            jti,
            // A token without a session is its own session: that id is never revoked.
            sid: match &session {
                Some(sid) => digest(issuer, IdKind::Session, sid.as_bytes()),
                None => jti,
            },
            sub: digest(issuer, IdKind::Subject, subject.as_bytes()),
            // No `iat`: older than any cutoff, so "revoke the user" refuses it.
            iat: iat.unwrap_or(Timestamp::MIN),
            scope: Some(digest(issuer, IdKind::Issuer, b"")),
        };
        let email_id = match &email {
            Some(email) if self.email_revocable => Some(email_id(issuer, email)),
            _ => None,
        };
        Ok(GateToken {
            email_id,
            issuer: issuer.to_owned(),
            subject,
            session,
            token_id,
            email,
            role,
            iat,
            expires,
            ids,
        })
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), ClaimsError> {
        let accepted = |value: &Value| match value {
            Value::String(aud) => self.audiences.iter().any(|a| a == aud),
            _ => false,
        };
        match aud {
            None | Some(Value::Null) if self.audience_optional => Ok(()),
            None | Some(Value::Null) => Err(ClaimsError::WrongAudience),
            // Configured with no audience at all: any `aud` will do.
            Some(_) if self.audiences.is_empty() => Ok(()),
            Some(value @ Value::String(_)) if accepted(value) => Ok(()),
            Some(Value::Array(values)) if values.iter().any(accepted) => Ok(()),
            Some(_) => Err(ClaimsError::WrongAudience),
        }
    }
}

/// A verified payload as a JSON object whose every member name is given once.
pub(crate) fn claims_object(payload: &[u8]) -> Result<Map<String, Value>, ClaimsError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let claims = de
        .deserialize_map(UniqueObject)
        .map_err(|_| ClaimsError::NotAnObject)?;
    de.end().map_err(|_| ClaimsError::NotAnObject)?;
    Ok(claims)
}

/// The claim at `path` (a name, or dotted names into nested objects).
fn lookup<'v>(claims: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A string claim (a number is taken as its decimal text: some apps use numeric ids).
pub(crate) fn text(
    claims: &Map<String, Value>,
    path: &str,
    role: &'static str,
) -> Result<Option<String>, ClaimsError> {
    match lookup(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(ClaimsError::WrongType(role)),
    }
}

/// A role claim: a string, or a list of strings joined with commas.
fn roles(claims: &Map<String, Value>, path: &str) -> Result<Option<String>, ClaimsError> {
    match lookup(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or(ClaimsError::WrongType("role")))
            .collect::<Result<Vec<_>, _>>()
            .map(|names| Some(names.join(","))),
        Some(_) => Err(ClaimsError::WrongType("role")),
    }
}

/// A NumericDate claim (RFC 7519 §2): whole seconds; fractions are cut off.
pub(crate) fn instant(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<Timestamp>, ClaimsError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(Timestamp::from_secs(secs))),
            (None, Some(secs)) if secs.is_finite() && secs.abs() < 1e15 => {
                Ok(Some(Timestamp::from_secs(secs as i64)))
            }
            _ => Err(ClaimsError::WrongType(name)),
        },
        Some(_) => Err(ClaimsError::WrongType(name)),
    }
}

/// Deserializes a JSON object, refusing a member name given twice (a payload whose claims
/// could be read two ways is not accepted, RFC 8725 §3.x spirit, RFC 7519 §4).
struct UniqueObject;

impl<'de> Visitor<'de> for UniqueObject {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate claim"));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn rules<'a>(names: &'a ClaimNames, audiences: &'a [String]) -> ClaimRules<'a> {
        ClaimRules {
            issuer_name: "sso",
            names,
            audiences,
            audience_optional: false,
            max_token_age: Duration::from_secs(86_400),
            leeway: Duration::from_secs(30),
            email_revocable: false,
        }
    }

    fn read(rules: &ClaimRules<'_>, payload: Value) -> Result<GateToken, ClaimsError> {
        rules.read(
            &serde_json::to_vec(&payload).unwrap(),
            b"signature",
            Timestamp::from_secs(NOW),
        )
    }

    #[test]
    fn claims_are_read_through_the_mapping() {
        let names = ClaimNames {
            role: "realm_access.roles".into(),
            ..ClaimNames::default()
        };
        let audiences = ["my-app".to_owned()];
        let token = read(
            &rules(&names, &audiences),
            json!({
                "sub": "alice", "sid": "s-1", "jti": "j-1", "email": "a@example.com",
                "realm_access": {"roles": ["admin", "user"]},
                "aud": ["other", "my-app"], "iat": NOW - 10, "exp": NOW + 300,
            }),
        )
        .unwrap();
        assert_eq!(token.subject, "alice");
        assert_eq!(token.session.as_deref(), Some("s-1"));
        assert_eq!(token.role.as_deref(), Some("admin,user"));
        assert_eq!(token.expires, Timestamp::from_secs(NOW + 300));
        assert_eq!(token.ids.sid, digest("sso", IdKind::Session, b"s-1"));
        assert_eq!(token.ids.scope, Some(digest("sso", IdKind::Issuer, b"")));
    }

    #[test]
    fn an_open_webui_token_without_iat_or_session_is_revocable_by_token() {
        let names = ClaimNames {
            subject: "id".into(),
            ..ClaimNames::default()
        };
        let mut rules = rules(&names, &[]);
        rules.audience_optional = true;
        let token = read(&rules, json!({"id": "u-1", "exp": NOW + 600, "jti": "abc"})).unwrap();
        assert_eq!(token.ids.iat, Timestamp::MIN);
        assert_eq!(token.ids.sid, token.ids.jti);
        // Without a token id, the signature names the token.
        let bare = read(&rules, json!({"id": "u-1", "exp": NOW + 600})).unwrap();
        assert_eq!(bare.ids.jti, digest("sso", IdKind::Signature, b"signature"));
    }

    #[test]
    fn bad_claims_are_refused() {
        let names = ClaimNames::default();
        let audiences = ["my-app".to_owned()];
        let rules = rules(&names, &audiences);
        let base = || json!({"sub": "alice", "aud": "my-app", "iat": NOW, "exp": NOW + 60});
        let with = |k: &str, v: Value| {
            let mut p = base();
            p[k] = v;
            p
        };
        let without = |k: &str| {
            let mut p = base();
            p.as_object_mut().unwrap().remove(k);
            p
        };
        assert_eq!(
            read(&rules, without("sub")),
            Err(ClaimsError::Missing("subject"))
        );
        assert_eq!(
            read(&rules, with("sub", json!(""))),
            Err(ClaimsError::Missing("subject"))
        );
        assert_eq!(
            read(&rules, with("sub", json!({}))),
            Err(ClaimsError::WrongType("subject"))
        );
        assert_eq!(
            read(&rules, with("exp", json!(NOW - 31))),
            Err(ClaimsError::Expired)
        );
        assert_eq!(
            read(&rules, with("exp", json!("soon"))),
            Err(ClaimsError::WrongType("exp"))
        );
        assert_eq!(
            read(&rules, with("nbf", json!(NOW + 31))),
            Err(ClaimsError::NotYetValid)
        );
        assert_eq!(
            read(&rules, with("iat", json!(NOW + 31))),
            Err(ClaimsError::NotYetValid)
        );
        assert_eq!(
            read(&rules, with("aud", json!("other"))),
            Err(ClaimsError::WrongAudience)
        );
        assert_eq!(
            read(&rules, without("aud")),
            Err(ClaimsError::WrongAudience)
        );
        // Older than max_token_age, whatever `exp` says.
        let old = json!({"sub": "a", "aud": "my-app", "iat": NOW - 86_400 - 31, "exp": NOW + 60});
        assert_eq!(read(&rules, old), Err(ClaimsError::TooOld));
        // No `iat` and an `exp` beyond max_token_age: its age cannot be bounded.
        let far = json!({"sub": "a", "aud": "my-app", "exp": NOW + 2 * 86_400});
        assert_eq!(read(&rules, far), Err(ClaimsError::TooOld));
        assert_eq!(
            read(&rules, json!({"sub": "a", "aud": "my-app"})),
            Err(ClaimsError::Unbounded)
        );
        let duplicate = br#"{"sub":"alice","sub":"mallory","aud":"my-app","exp":1800000060}"#;
        assert_eq!(
            rules.read(duplicate, b"s", Timestamp::from_secs(NOW)),
            Err(ClaimsError::NotAnObject)
        );
        assert_eq!(
            rules.read(b"[1]", b"s", Timestamp::from_secs(NOW)),
            Err(ClaimsError::NotAnObject)
        );
    }
}
