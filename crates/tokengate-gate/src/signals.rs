//! Logout signals from an issuer: OpenID Connect Back-Channel Logout 1.0 logout tokens and
//! Shared Signals (RFC 8417 Security Event Tokens with CAEP and RISC events, delivered by
//! RFC 8935 push).
//!
//! [`Issuer::read_logout_token`] and [`Issuer::read_security_event`] check a signal
//! completely (signature with the issuer's keys and allowed algorithms, then every claim)
//! and turn it into a [`Signal`]: the revocations it asks for, and the id under which it
//! is remembered so that a replay is refused. Nothing here records anything: the
//! [`GateService`](crate::GateService) records the revocations and the id in one step
//! (`Store::record_revocations_once`), so a signal that fails any check, or was seen
//! before, revokes nothing.
//!
//! Time bounds (both kinds): `iat` is required, at most `leeway` in the future and at most
//! [`MAX_SIGNAL_AGE`] (plus `leeway`) in the past; an `exp`, where present, must not have
//! passed (plus `leeway`). So a signal is accepted only until
//! `min(exp, iat + MAX_SIGNAL_AGE) + leeway`, and its replay record is kept exactly that
//! long: the set of seen signals is bounded by what arrives in [`MAX_SIGNAL_AGE`].

use std::time::Duration;

use serde_json::{Map, Value};
use tokengate_core::verify::TypCheck;
use tokengate_core::{Revocation, Timestamp, VerifyError};
use uuid::Uuid;

use crate::gate::{GateError, Issuer};
use crate::ids::{digest, IdKind};
use crate::token::{claims_object, instant, text, ClaimsError};

/// The `events` member of a logout token (Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// CAEP: a session was revoked.
pub const CAEP_SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP: a credential (password, key) of the user changed.
pub const CAEP_CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// RISC: the account was disabled.
pub const RISC_ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// RISC: every session of the account was revoked.
pub const RISC_SESSIONS_REVOKED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked";

/// The oldest signal accepted, by `iat`: a logout token usually lives two minutes, and a
/// transmitter retrying a push delivery gives up well within an hour.
pub const MAX_SIGNAL_AGE: Duration = Duration::from_secs(3600);

/// The `typ` a logout token may carry: `logout+jwt` (Back-Channel Logout 1.0 §2.4:
/// recommended), or the generic `JWT` that Keycloak before 25 and Authentik before 2025.12
/// send. Another specific type (`at+jwt`, `secevent+jwt`) is refused; an ID token, which
/// also says `JWT`, cannot pass for a logout token: it has no back-channel logout event
/// (§4.1).
const LOGOUT_TYP: &[&str] = &["logout+jwt", "JWT"];
/// The `typ` a Security Event Token may carry (RFC 8417 §2.3: recommended).
const SET_TYP: &[&str] = &["secevent+jwt"];

/// Where a signal came from: the endpoint it was delivered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalChannel {
    /// `POST /v1/gate/{issuer}/backchannel-logout`.
    BackchannelLogout,
    /// `POST /v1/gate/{issuer}/ssf`.
    SharedSignals,
}

impl SignalChannel {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalChannel::BackchannelLogout => "backchannel_logout",
            SignalChannel::SharedSignals => "ssf",
        }
    }
}

/// An event a signal carried, as tokengate understood it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalEvent {
    /// A back-channel logout.
    BackchannelLogout,
    /// CAEP `session-revoked`.
    SessionRevoked,
    /// CAEP `credential-change`.
    CredentialChange,
    /// RISC `account-disabled`.
    AccountDisabled,
    /// RISC `sessions-revoked`.
    SessionsRevoked,
    /// An event type tokengate does not act on (accepted and ignored, RFC 8935 §2.2).
    Ignored,
}

impl SignalEvent {
    /// Every event, for metrics.
    pub const ALL: [SignalEvent; 6] = [
        SignalEvent::BackchannelLogout,
        SignalEvent::SessionRevoked,
        SignalEvent::CredentialChange,
        SignalEvent::AccountDisabled,
        SignalEvent::SessionsRevoked,
        SignalEvent::Ignored,
    ];

    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalEvent::BackchannelLogout => "backchannel_logout",
            SignalEvent::SessionRevoked => "session_revoked",
            SignalEvent::CredentialChange => "credential_change",
            SignalEvent::AccountDisabled => "account_disabled",
            SignalEvent::SessionsRevoked => "sessions_revoked",
            SignalEvent::Ignored => "ignored",
        }
    }

    fn of_type(event_type: &str) -> SignalEvent {
        match event_type {
            CAEP_SESSION_REVOKED => SignalEvent::SessionRevoked,
            CAEP_CREDENTIAL_CHANGE => SignalEvent::CredentialChange,
            RISC_ACCOUNT_DISABLED => SignalEvent::AccountDisabled,
            RISC_SESSIONS_REVOKED => SignalEvent::SessionsRevoked,
            _ => SignalEvent::Ignored,
        }
    }
}

/// A signal that passed every check, ready to be recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// The id it is remembered under (a digest of the issuer and its `jti`).
    pub id: Uuid,
    /// Until when the id must be remembered: after this the signal is refused anyway.
    pub remember_until: Timestamp,
    /// The events it carried, in its order.
    pub events: Vec<SignalEvent>,
    /// What it revokes (nothing when every event is ignored).
    pub revocations: Vec<Revocation>,
}

/// Why a signal is refused. Nothing is revoked. The text never repeats token content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The JOSE layer, the issuer's readiness, or a claim shared with access tokens.
    #[error(transparent)]
    Token(#[from] GateError),
    /// `iss` is not the issuer's.
    #[error("token iss is not this issuer")]
    WrongIssuer,
    /// A logout token with a `nonce` (§2.6 step 7: it could be an ID token).
    #[error("a logout token must not contain nonce")]
    Nonce,
    /// No `events` member naming the back-channel logout event with an object value.
    #[error("events claim has no back-channel logout event object")]
    NoLogoutEvent,
    /// `events` is not an object of event objects, or holds none.
    #[error("events claim must be an object holding at least one event object")]
    BadEvents,
    /// A logout token with neither `sid` nor `sub`.
    #[error("a logout token needs sid or sub")]
    NoSubject,
    /// A subject tokengate cannot map to this issuer's tokens; says why.
    #[error("subject: {0}")]
    Subject(&'static str),
    /// The `jti` was acted on before (by any node): a replay.
    #[error("this token was received before (jti replayed)")]
    Replayed,
}

impl From<ClaimsError> for SignalError {
    fn from(error: ClaimsError) -> Self {
        SignalError::Token(GateError::Claims(error))
    }
}

impl SignalError {
    /// The RFC 8935 §2.3 error code of this refusal (`err`).
    pub fn set_error_code(&self) -> &'static str {
        match self {
            SignalError::Token(GateError::Jose(
                VerifyError::UnknownKey
                | VerifyError::BadSignature
                | VerifyError::AlgorithmMismatch
                | VerifyError::UnsupportedAlgorithm,
            )) => "invalid_key",
            SignalError::WrongIssuer => "invalid_issuer",
            SignalError::Token(GateError::Claims(ClaimsError::WrongAudience)) => "invalid_audience",
            _ => "invalid_request",
        }
    }

    /// Whether the token named a `kid` the issuer's key set lacks (worth one refetch).
    pub fn is_unknown_kid(&self) -> bool {
        matches!(
            self,
            SignalError::Token(GateError::Jose(VerifyError::UnknownKey))
        )
    }
}

/// The claims every signal has: checked `iss`, `aud`, `iat`, `exp`, `jti`.
struct Envelope {
    claims: Map<String, Value>,
    iat: Timestamp,
    id: Uuid,
    remember_until: Timestamp,
}

impl Issuer {
    /// Check an OpenID Connect Back-Channel Logout 1.0 logout token as its §2.6 says, at
    /// `now`: the signature with this issuer's keys and algorithms (`typ`, if present,
    /// `logout+jwt` or `JWT`), `iss`, `aud` containing the configured `client_id`, `iat`, `exp`
    /// (required), `jti`, the back-channel logout event, `sid` and/or `sub`, no `nonce`.
    ///
    /// With `sid` it revokes that session (also when `sub` is given too); with `sub` alone,
    /// every token of the user issued before the logout token (its `iat`, from the same
    /// clock as the user's tokens). Errors with [`SignalError::Subject`] when this issuer
    /// takes no logout tokens.
    pub fn read_logout_token(
        &self,
        token: &str,
        leeway: Duration,
        now: Timestamp,
    ) -> Result<Signal, SignalError> {
        let Some(backchannel) = &self.config().backchannel_logout else {
            return Err(SignalError::Subject("this issuer takes no logout tokens"));
        };
        let audience = backchannel.client_id.as_str();
        self.with_verified(token, TypCheck::IfPresent(LOGOUT_TYP), |jws| {
            let claims = claims_object(jws.payload)?;
            let envelope = self.envelope(claims, audience, true, leeway, now)?;
            let claims = &envelope.claims;
            if claims.contains_key("nonce") {
                return Err(SignalError::Nonce);
            }
            let events = claims.get("events").and_then(Value::as_object);
            if !events
                .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
                .is_some_and(Value::is_object)
            {
                return Err(SignalError::NoLogoutEvent);
            }
            let sid = text(claims, "sid", "sid")?.filter(|s| !s.is_empty());
            let sub = text(claims, "sub", "sub")?.filter(|s| !s.is_empty());
            let revocation = match (sid, sub) {
                (Some(sid), _) => self.revoke_session(&sid, now),
                (None, Some(sub)) => self.revoke_subject(&sub, envelope.iat.min(now)),
                (None, None) => return Err(SignalError::NoSubject),
            };
            Ok(Signal {
                id: envelope.id,
                remember_until: envelope.remember_until,
                events: vec![SignalEvent::BackchannelLogout],
                revocations: vec![revocation],
            })
        })
    }

    /// Check a Security Event Token (RFC 8417) pushed by this issuer's Shared Signals
    /// transmitter, at `now`: the signature with this issuer's keys and algorithms (`typ`,
    /// if present, `secevent+jwt`), `iss`, `aud` containing the configured `ssf.audience`,
    /// `iat`, `exp` where present, `jti`, and `events`.
    ///
    /// Each event of a type tokengate knows revokes, about its subject (the event's
    /// `subject`, else the SET's `sub_id`): CAEP `session-revoked` with a session subject
    /// that session, otherwise (and for CAEP `credential-change`, RISC `account-disabled`
    /// and `sessions-revoked`) every token of the user issued before the event
    /// (`event_timestamp`, else `iat`). Subjects: `iss_sub` (its `iss` must be this
    /// issuer), `opaque` (the user's subject), `email` (where [`Issuer::email_revocable`]),
    /// or a complex subject with `user` and/or `session` members. Events of other types
    /// are ignored. One event tokengate cannot map refuses the whole SET.
    pub fn read_security_event(
        &self,
        token: &str,
        leeway: Duration,
        now: Timestamp,
    ) -> Result<Signal, SignalError> {
        let Some(ssf) = &self.config().ssf else {
            return Err(SignalError::Subject("this issuer takes no security events"));
        };
        let audience = ssf.audience.as_str();
        self.with_verified(token, TypCheck::IfPresent(SET_TYP), |jws| {
            let claims = claims_object(jws.payload)?;
            let envelope = self.envelope(claims, audience, false, leeway, now)?;
            let claims = &envelope.claims;
            let events = match claims.get("events") {
                Some(Value::Object(events)) if !events.is_empty() => events,
                _ => return Err(SignalError::BadEvents),
            };
            let mut signal = Signal {
                id: envelope.id,
                remember_until: envelope.remember_until,
                events: Vec::with_capacity(events.len()),
                revocations: Vec::new(),
            };
            for (event_type, payload) in events {
                let Value::Object(payload) = payload else {
                    return Err(SignalError::BadEvents);
                };
                let event = SignalEvent::of_type(event_type);
                signal.events.push(event);
                if event == SignalEvent::Ignored {
                    continue;
                }
                let subject = payload
                    .get("subject")
                    .or_else(|| claims.get("sub_id"))
                    .ok_or(SignalError::Subject("the event names no subject"))?;
                let subject = self.subject(subject)?;
                let cutoff = instant(payload, "event_timestamp")?
                    .unwrap_or(envelope.iat)
                    .min(now);
                let revocation = match (event, subject) {
                    (
                        SignalEvent::SessionRevoked,
                        Subject {
                            session: Some(s), ..
                        },
                    ) => self.revoke_session(&s, now),
                    (
                        _,
                        Subject {
                            user: Some(user), ..
                        },
                    ) => match user {
                        User::Subject(sub) => self.revoke_subject(&sub, cutoff),
                        User::Email(email) => self.revoke_email(&email, cutoff),
                    },
                    (_, _) => return Err(SignalError::Subject("the event needs a user subject")),
                };
                signal.revocations.push(revocation);
            }
            Ok(signal)
        })
    }

    /// Check what logout tokens and SETs have in common; `exp_required` for logout tokens.
    fn envelope(
        &self,
        claims: Map<String, Value>,
        audience: &str,
        exp_required: bool,
        leeway: Duration,
        now: Timestamp,
    ) -> Result<Envelope, SignalError> {
        match claims.get("iss") {
            Some(Value::String(iss)) if Some(iss.as_str()) == self.iss() => {}
            Some(Value::String(_)) => return Err(SignalError::WrongIssuer),
            Some(_) => return Err(ClaimsError::WrongType("iss").into()),
            None => return Err(ClaimsError::Missing("iss").into()),
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(ClaimsError::WrongAudience.into());
        }
        let iat = instant(&claims, "iat")?.ok_or(ClaimsError::Missing("iat"))?;
        let exp = instant(&claims, "exp")?;
        if exp_required && exp.is_none() {
            return Err(ClaimsError::Missing("exp").into());
        }
        if iat > now.plus(leeway) {
            return Err(ClaimsError::NotYetValid.into());
        }
        let oldest = iat.plus(MAX_SIGNAL_AGE);
        if exp.is_some_and(|exp| now > exp.plus(leeway)) {
            return Err(ClaimsError::Expired.into());
        }
        if now > oldest.plus(leeway) {
            return Err(ClaimsError::TooOld.into());
        }
        let jti = text(&claims, "jti", "jti")?
            .filter(|jti| !jti.is_empty())
            .ok_or(ClaimsError::Missing("jti"))?;
        let until = exp.map_or(oldest, |exp| exp.min(oldest));
        Ok(Envelope {
            id: digest(self.name(), IdKind::Signal, jti.as_bytes()),
            remember_until: until.plus(leeway),
            iat,
            claims,
        })
    }

    /// A subject identifier (RFC 9493 formats, or an SSF complex subject) as this
    /// issuer's user and session.
    fn subject(&self, value: &Value) -> Result<Subject, SignalError> {
        let Value::Object(subject) = value else {
            return Err(SignalError::Subject("not an object"));
        };
        if subject.contains_key("format") {
            return Ok(Subject {
                user: Some(self.user(subject)?),
                session: None,
            });
        }
        // A complex subject (SSF 1.0): the members tokengate maps are `user` and `session`.
        let user = match subject.get("user") {
            Some(Value::Object(user)) => Some(self.user(user)?),
            Some(_) => return Err(SignalError::Subject("user is not an object")),
            None => None,
        };
        let session = match subject.get("session") {
            Some(Value::Object(session)) => match member(session, "format")? {
                "opaque" => Some(member(session, "id")?.to_owned()),
                _ => {
                    return Err(SignalError::Subject(
                        "a session must have the opaque format",
                    ))
                }
            },
            Some(_) => return Err(SignalError::Subject("session is not an object")),
            None => None,
        };
        if user.is_none() && session.is_none() {
            return Err(SignalError::Subject(
                "a complex subject needs user or session",
            ));
        }
        Ok(Subject { user, session })
    }

    /// A simple subject identifier naming a user.
    fn user(&self, subject: &Map<String, Value>) -> Result<User, SignalError> {
        match member(subject, "format")? {
            "iss_sub" => {
                if Some(member(subject, "iss")?) != self.iss() {
                    return Err(SignalError::Subject("iss_sub names another issuer"));
                }
                Ok(User::Subject(member(subject, "sub")?.to_owned()))
            }
            "opaque" => Ok(User::Subject(member(subject, "id")?.to_owned())),
            "email" if self.email_revocable() => {
                Ok(User::Email(member(subject, "email")?.to_owned()))
            }
            "email" => Err(SignalError::Subject("this issuer maps no email claim")),
            _ => Err(SignalError::Subject(
                "unsupported format (iss_sub, opaque, email)",
            )),
        }
    }
}

/// A non-empty string member of a subject identifier.
fn member<'v>(object: &'v Map<String, Value>, name: &'static str) -> Result<&'v str, SignalError> {
    match object.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        _ => Err(SignalError::Subject(match name {
            "format" => "missing format",
            "iss" => "iss_sub without iss",
            "sub" => "iss_sub without sub",
            "id" => "opaque without id",
            _ => "email without email",
        })),
    }
}

/// A user as an event names it.
enum User {
    /// By the issuer's subject.
    Subject(String),
    /// By email.
    Email(String),
}

/// What an event's subject names.
struct Subject {
    user: Option<User>,
    session: Option<String>,
}
