//! An issuer's logout signals through [`GateService::signal`]: back-channel logout tokens
//! and Shared Signals SETs from a stand-in provider's keys, recorded in a SQLite store,
//! applied to the index. Every defective signal is refused with the reason and revokes
//! nothing; a replay is refused; each event revokes what it says.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokengate_core::{Algorithm, ManualClock, RevocationKind, SigningKey, Timestamp, VerifyError};
use tokengate_gate::signals::{
    BACKCHANNEL_LOGOUT_EVENT, CAEP_CREDENTIAL_CHANGE, CAEP_SESSION_REVOKED, MAX_SIGNAL_AGE,
    RISC_ACCOUNT_DISABLED, RISC_SESSIONS_REVOKED,
};
use tokengate_gate::testing::{provider_jwks, sign, TestProvider};
use tokengate_gate::{
    ClaimsError, GateError, GateService, Issuers, SignalChannel, SignalError, SignalEvent,
    SignalRefusal,
};
use tokengate_sessions::{SessionConfig, SessionService};
use tokengate_store::{SqliteStore, Store};

use super::{config, NOW};

const CLIENT_ID: &str = "my-app";
const SSF_AUDIENCE: &str = "https://gate.example.com";
const BACKCHANNEL: SignalChannel = SignalChannel::BackchannelLogout;
const SSF: SignalChannel = SignalChannel::SharedSignals;

/// A gate over a stand-in provider whose issuer takes logout tokens and SETs, with its
/// keys fetched, on an in-memory store, at [`NOW`] on a manual clock.
struct Fixture {
    key: SigningKey,
    provider: TestProvider,
    service: GateService,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(json!({})).await
    }

    /// With `patch` merged into the issuer entry.
    async fn start_with(patch: Value) -> Fixture {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let provider = TestProvider::start(provider_jwks(&[&key])).await;
        let iss = provider.issuer();
        let mut entry = json!({
            "name": "sso", "issuer": iss, "jwks_uri": provider.url("/jwks"),
            "audiences": ["api"],
            "backchannel_logout": {"client_id": CLIENT_ID},
            "ssf": {"audience": SSF_AUDIENCE},
        });
        for (k, v) in patch.as_object().unwrap() {
            entry[k] = v.clone();
        }
        let leeway = Duration::from_secs(30);
        let issuers = Issuers::new(&[config(entry)], leeway).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap());
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(NOW)));
        let (sessions, _maintenance) =
            SessionService::start(store.clone(), SessionConfig::default(), clock.clone(), None)
                .await
                .unwrap();
        let service = GateService::new(issuers, sessions);
        assert_eq!(service.refresh_keys().await, 0);
        Fixture {
            key,
            provider,
            service,
            store,
            clock,
        }
    }

    fn iss(&self) -> String {
        self.provider.issuer()
    }

    /// An access token of the provider for `sub` in session `sid`, issued 10 s ago.
    fn access_token(&self, sub: &str, sid: &str) -> String {
        sign(
            &self.key,
            json!({"alg": "ES256", "typ": "at+jwt", "kid": self.key.kid()}),
            json!({
                "iss": self.iss(), "aud": "api", "sub": sub, "sid": sid,
                "email": format!("{sub}@example.com"), "jti": format!("{sub}-{sid}"),
                "iat": NOW - 10, "exp": NOW + 600,
            }),
        )
    }

    /// Whether the gate accepts `token` now.
    async fn accepts(&self, token: &str) -> Result<(), GateError> {
        let issuer = self.service.issuers().by_name("sso").unwrap();
        self.service
            .authenticate(issuer, token)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                tokengate_gate::AuthenticateError::Gate(e) => e,
                other => panic!("{other}"),
            })
    }

    /// `token` is refused because a revocation of `kind` covers it.
    async fn assert_revoked(&self, token: &str, kind: RevocationKind) {
        assert_eq!(
            self.accepts(token).await,
            Err(GateError::Revoked(kind)),
            "{token}"
        );
    }

    /// A valid logout token's claims (sid `s-1`, sub `alice`), issued now.
    fn logout_claims(&self) -> Value {
        json!({
            "iss": self.iss(), "aud": CLIENT_ID, "iat": NOW, "exp": NOW + 120,
            "jti": uuid::Uuid::new_v4().to_string(), "sid": "s-1", "sub": "alice",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        })
    }

    fn logout_header(&self) -> Value {
        json!({"alg": "ES256", "typ": "logout+jwt", "kid": self.key.kid()})
    }

    /// A valid SET's claims carrying `events`, issued now.
    fn set_claims(&self, events: Value) -> Value {
        json!({
            "iss": self.iss(), "aud": SSF_AUDIENCE, "iat": NOW,
            "jti": uuid::Uuid::new_v4().to_string(), "events": events,
        })
    }

    fn set_header(&self) -> Value {
        json!({"alg": "ES256", "typ": "secevent+jwt", "kid": self.key.kid()})
    }

    async fn signal(
        &self,
        channel: SignalChannel,
        token: &str,
    ) -> Result<Vec<SignalEvent>, SignalRefusal> {
        let issuer = self.service.signal_receiver("sso", channel)?;
        self.service
            .signal(issuer, channel, token)
            .await
            .map(|signal| signal.events)
    }

    async fn stored(&self) -> usize {
        self.store
            .revocations_after(0, u32::MAX)
            .await
            .unwrap()
            .len()
    }
}

fn refused(result: Result<Vec<SignalEvent>, SignalRefusal>) -> SignalError {
    match result {
        Err(SignalRefusal::Invalid(error)) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

#[tokio::test]
async fn a_logout_token_with_sid_ends_that_session_and_a_replay_is_refused() {
    let f = Fixture::start().await;
    let laptop = f.access_token("alice", "s-1");
    let phone = f.access_token("alice", "s-2");
    f.accepts(&laptop).await.unwrap();

    let logout = sign(&f.key, f.logout_header(), f.logout_claims());
    assert_eq!(
        f.signal(BACKCHANNEL, &logout).await.unwrap(),
        vec![SignalEvent::BackchannelLogout]
    );
    f.assert_revoked(&laptop, RevocationKind::Session).await;
    f.accepts(&phone)
        .await
        .expect("sid and sub: that session only, not the user");
    assert_eq!(f.stored().await, 1);

    assert_eq!(
        refused(f.signal(BACKCHANNEL, &logout).await),
        SignalError::Replayed
    );
    assert_eq!(f.stored().await, 1, "a replay records nothing");
    // Also a minute later, without `typ` (which is only recommended), and with the generic
    // `JWT` that Keycloak before 25 sends.
    f.clock.advance(Duration::from_secs(60));
    for header in [
        json!({"alg": "ES256", "kid": f.key.kid()}),
        json!({"alg": "ES256", "typ": "JWT", "kid": f.key.kid()}),
    ] {
        let again = sign(&f.key, header, f.logout_claims());
        f.signal(BACKCHANNEL, &again).await.unwrap();
    }
}

#[tokio::test]
async fn a_logout_token_with_sub_alone_ends_every_earlier_token_of_the_user() {
    let f = Fixture::start().await;
    let (alice1, alice2) = (
        f.access_token("alice", "s-1"),
        f.access_token("alice", "s-2"),
    );
    let bob = f.access_token("bob", "s-3");
    let logout = sign(&f.key, f.logout_header(), without(f.logout_claims(), "sid"));
    f.signal(BACKCHANNEL, &logout).await.unwrap();
    for token in [&alice1, &alice2] {
        f.assert_revoked(token, RevocationKind::User).await;
    }
    f.accepts(&bob).await.unwrap();
}

#[tokio::test]
async fn every_defective_logout_token_is_refused_and_revokes_nothing() {
    let f = Fixture::start().await;
    let token = f.access_token("alice", "s-1");
    let claims = || f.logout_claims();
    let header = || f.logout_header();
    let other_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let wrong_type =
        |name: &'static str| SignalError::Token(GateError::Claims(ClaimsError::WrongType(name)));
    let claims_error = |e: ClaimsError| SignalError::Token(GateError::Claims(e));
    let forged = {
        // Signed by another key under the provider's kid.
        sign(&other_key, header(), claims())
    };
    let cases: Vec<(&str, String, SignalError)> = vec![
        (
            "bad signature",
            forged,
            SignalError::Token(GateError::Jose(VerifyError::BadSignature)),
        ),
        (
            "unknown kid",
            sign(
                &other_key,
                json!({"alg": "ES256", "kid": other_key.kid()}),
                claims(),
            ),
            SignalError::Token(GateError::Jose(VerifyError::UnknownKey)),
        ),
        (
            "typ of an access token",
            sign(
                &f.key,
                json!({"alg": "ES256", "typ": "at+jwt", "kid": f.key.kid()}),
                claims(),
            ),
            SignalError::Token(GateError::Jose(VerifyError::WrongType)),
        ),
        (
            "wrong iss",
            sign(
                &f.key,
                header(),
                with(claims(), "iss", json!("https://other.example")),
            ),
            SignalError::WrongIssuer,
        ),
        (
            "wrong aud",
            sign(
                &f.key,
                header(),
                with(claims(), "aud", json!(["api", "other"])),
            ),
            claims_error(ClaimsError::WrongAudience),
        ),
        (
            "no aud",
            sign(&f.key, header(), without(claims(), "aud")),
            claims_error(ClaimsError::WrongAudience),
        ),
        (
            "expired",
            sign(&f.key, header(), with(claims(), "exp", json!(NOW - 31))),
            claims_error(ClaimsError::Expired),
        ),
        (
            "no exp",
            sign(&f.key, header(), without(claims(), "exp")),
            claims_error(ClaimsError::Missing("exp")),
        ),
        (
            "no iat",
            sign(&f.key, header(), without(claims(), "iat")),
            claims_error(ClaimsError::Missing("iat")),
        ),
        (
            "iat in the future",
            sign(&f.key, header(), with(claims(), "iat", json!(NOW + 31))),
            claims_error(ClaimsError::NotYetValid),
        ),
        (
            "older than the longest signal age",
            sign(
                &f.key,
                header(),
                with(
                    claims(),
                    "iat",
                    json!(NOW - MAX_SIGNAL_AGE.as_secs() as i64 - 31),
                ),
            ),
            claims_error(ClaimsError::TooOld),
        ),
        (
            "no jti",
            sign(&f.key, header(), without(claims(), "jti")),
            claims_error(ClaimsError::Missing("jti")),
        ),
        (
            "nonce present",
            sign(&f.key, header(), with(claims(), "nonce", json!("n-0S6"))),
            SignalError::Nonce,
        ),
        (
            "no events",
            sign(&f.key, header(), without(claims(), "events")),
            SignalError::NoLogoutEvent,
        ),
        (
            "events without the logout event",
            sign(
                &f.key,
                header(),
                with(claims(), "events", json!({"https://example.com/other": {}})),
            ),
            SignalError::NoLogoutEvent,
        ),
        (
            "the logout event is not an object",
            sign(
                &f.key,
                header(),
                with(claims(), "events", json!({BACKCHANNEL_LOGOUT_EVENT: true})),
            ),
            SignalError::NoLogoutEvent,
        ),
        (
            "neither sid nor sub",
            sign(&f.key, header(), without(without(claims(), "sid"), "sub")),
            SignalError::NoSubject,
        ),
        (
            "sid of the wrong type",
            sign(&f.key, header(), with(claims(), "sid", json!({"id": 1}))),
            wrong_type("sid"),
        ),
    ];
    for (what, logout, expected) in cases {
        assert_eq!(
            refused(f.signal(BACKCHANNEL, &logout).await),
            expected,
            "{what}"
        );
        assert_eq!(f.stored().await, 0, "{what}: something was recorded");
        f.accepts(&token)
            .await
            .unwrap_or_else(|e| panic!("{what}: the session was revoked: {e}"));
    }
    // HS256 is not among a key set's algorithms.
    let hs = SigningKey::hs256(b"a shared secret of at least 32 bytes!!").unwrap();
    let hs_token = sign(&hs, json!({"alg": "HS256", "kid": f.key.kid()}), claims());
    assert!(matches!(
        refused(f.signal(BACKCHANNEL, &hs_token).await),
        SignalError::Token(GateError::Jose(_))
    ));
    // A SET is not a logout token, and a logout token is not a SET.
    let set = sign(
        &f.key,
        f.set_header(),
        f.set_claims(
            json!({RISC_SESSIONS_REVOKED: {"subject": {"format": "opaque", "id": "alice"}}}),
        ),
    );
    assert!(f.signal(BACKCHANNEL, &set).await.is_err());
    let logout = sign(&f.key, f.logout_header(), claims());
    assert!(f.signal(SSF, &logout).await.is_err());
    assert_eq!(f.stored().await, 0);
}

#[tokio::test]
async fn a_signal_signed_by_a_key_published_since_is_accepted_after_one_refetch() {
    let f = Fixture::start().await;
    let rotated = SigningKey::generate(Algorithm::ES256).unwrap();
    f.provider.set_jwks(provider_jwks(&[&rotated, &f.key]));
    let logout = sign(
        &rotated,
        json!({"alg": "ES256", "typ": "logout+jwt", "kid": rotated.kid()}),
        f.logout_claims(),
    );
    f.signal(BACKCHANNEL, &logout).await.unwrap();
    assert_eq!(f.stored().await, 1);
}

#[tokio::test]
async fn each_security_event_revokes_what_it_says_about_its_subject() {
    let f = Fixture::start().await;
    let iss = f.iss();
    let opaque = |id: &str| json!({"format": "opaque", "id": id});

    // CAEP session-revoked with a complex subject naming the session: that session only.
    let s1 = f.access_token("alice", "s-1");
    let s2 = f.access_token("alice", "s-2");
    let event = json!({CAEP_SESSION_REVOKED: {
        "subject": {"session": opaque("s-1"), "user": {"format": "iss_sub", "iss": iss, "sub": "alice"}},
        "event_timestamp": NOW,
    }});
    let set = sign(&f.key, f.set_header(), f.set_claims(event));
    assert_eq!(
        f.signal(SSF, &set).await.unwrap(),
        vec![SignalEvent::SessionRevoked]
    );
    f.assert_revoked(&s1, RevocationKind::Session).await;
    f.accepts(&s2).await.unwrap();

    // Each user-wide event, with its subject in each accepted place and format.
    let cases = [
        (
            CAEP_SESSION_REVOKED,
            "bob",
            json!({"subject": {"format": "iss_sub", "iss": iss, "sub": "bob"}}),
            None,
        ),
        (
            CAEP_CREDENTIAL_CHANGE,
            "carol",
            json!({"subject": opaque("carol"), "credential_type": "password", "change_type": "update"}),
            None,
        ),
        (
            RISC_ACCOUNT_DISABLED,
            "dave",
            json!({}),
            Some(json!({"format": "iss_sub", "iss": iss, "sub": "dave"})),
        ),
        (
            RISC_SESSIONS_REVOKED,
            "erin",
            json!({"subject": {"format": "email", "email": "Erin@Example.com"}}),
            None,
        ),
    ];
    for (event_type, user, payload, sub_id) in cases {
        let token = f.access_token(user, "s-9");
        let other = f.access_token("frank", "s-8");
        f.accepts(&token).await.unwrap();
        let mut claims = f.set_claims(json!({ event_type: payload }));
        if let Some(sub_id) = sub_id {
            claims["sub_id"] = sub_id;
        }
        f.signal(SSF, &sign(&f.key, f.set_header(), claims))
            .await
            .unwrap_or_else(|e| panic!("{event_type}: {e}"));
        assert_eq!(
            f.accepts(&token).await,
            Err(GateError::Revoked(RevocationKind::User)),
            "{event_type}"
        );
        f.accepts(&other).await.unwrap();
    }

    // A sign-in after the event is not touched: the cutoff is the event's time.
    f.clock.advance(Duration::from_secs(5));
    let later = sign(
        &f.key,
        json!({"alg": "ES256", "kid": f.key.kid()}),
        json!({"iss": iss, "aud": "api", "sub": "carol", "sid": "s-10", "jti": "late",
               "iat": NOW + 5, "exp": NOW + 600}),
    );
    f.accepts(&later).await.unwrap();
}

#[tokio::test]
async fn unknown_events_are_accepted_and_ignored_but_remembered() {
    let f = Fixture::start().await;
    let before = f.stored().await;
    let set = sign(
        &f.key,
        f.set_header(),
        f.set_claims(
            json!({"https://schemas.openid.net/secevent/caep/event-type/token-claims-change": {
                "subject": {"format": "opaque", "id": "alice"}
            }}),
        ),
    );
    assert_eq!(
        f.signal(SSF, &set).await.unwrap(),
        vec![SignalEvent::Ignored]
    );
    assert_eq!(f.stored().await, before);
    assert_eq!(refused(f.signal(SSF, &set).await), SignalError::Replayed);
    f.accepts(&f.access_token("alice", "s-1")).await.unwrap();
}

#[tokio::test]
async fn every_defective_security_event_is_refused_with_its_rfc_8935_code_and_revokes_nothing() {
    let f = Fixture::start().await;
    let token = f.access_token("alice", "s-1");
    let good_event =
        || json!({RISC_ACCOUNT_DISABLED: {"subject": {"format": "opaque", "id": "alice"}}});
    let claims = || f.set_claims(good_event());
    let header = || f.set_header();
    let other_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad signature",
            sign(&other_key, header(), claims()),
            "invalid_key",
        ),
        (
            "unknown kid",
            sign(
                &other_key,
                json!({"alg": "ES256", "kid": other_key.kid()}),
                claims(),
            ),
            "invalid_key",
        ),
        (
            "wrong typ",
            sign(
                &f.key,
                json!({"alg": "ES256", "typ": "JWT", "kid": f.key.kid()}),
                claims(),
            ),
            "invalid_request",
        ),
        (
            "wrong iss",
            sign(
                &f.key,
                header(),
                with(claims(), "iss", json!("https://evil.example")),
            ),
            "invalid_issuer",
        ),
        (
            "wrong aud",
            sign(&f.key, header(), with(claims(), "aud", json!(CLIENT_ID))),
            "invalid_audience",
        ),
        (
            "expired",
            sign(&f.key, header(), with(claims(), "exp", json!(NOW - 31))),
            "invalid_request",
        ),
        (
            "no iat",
            sign(&f.key, header(), without(claims(), "iat")),
            "invalid_request",
        ),
        (
            "no jti",
            sign(&f.key, header(), without(claims(), "jti")),
            "invalid_request",
        ),
        (
            "no events",
            sign(&f.key, header(), without(claims(), "events")),
            "invalid_request",
        ),
        (
            "empty events",
            sign(&f.key, header(), with(claims(), "events", json!({}))),
            "invalid_request",
        ),
        (
            "an event that is not an object",
            sign(
                &f.key,
                header(),
                with(claims(), "events", json!({RISC_ACCOUNT_DISABLED: "alice"})),
            ),
            "invalid_request",
        ),
        (
            "no subject",
            sign(
                &f.key,
                header(),
                with(claims(), "events", json!({RISC_ACCOUNT_DISABLED: {}})),
            ),
            "invalid_request",
        ),
        (
            "iss_sub of another issuer",
            sign(
                &f.key,
                header(),
                with(
                    claims(),
                    "events",
                    json!({RISC_ACCOUNT_DISABLED: {
                "subject": {"format": "iss_sub", "iss": "https://evil.example", "sub": "alice"}}}),
                ),
            ),
            "invalid_request",
        ),
        (
            "an unsupported subject format",
            sign(
                &f.key,
                header(),
                with(
                    claims(),
                    "events",
                    json!({RISC_ACCOUNT_DISABLED: {
                "subject": {"format": "phone_number", "phone_number": "+12065550100"}}}),
                ),
            ),
            "invalid_request",
        ),
        (
            "a known event beside one it cannot map",
            sign(
                &f.key,
                header(),
                with(
                    claims(),
                    "events",
                    json!({
                        RISC_ACCOUNT_DISABLED: {"subject": {"format": "opaque", "id": "alice"}},
                        CAEP_CREDENTIAL_CHANGE: {"subject": {"format": "did", "url": "did:example:1"}},
                    }),
                ),
            ),
            "invalid_request",
        ),
    ];
    for (what, set, code) in cases {
        let error = refused(f.signal(SSF, &set).await);
        assert_eq!(error.set_error_code(), code, "{what}: {error}");
        assert_eq!(f.stored().await, 0, "{what}: something was recorded");
        f.accepts(&token)
            .await
            .unwrap_or_else(|e| panic!("{what}: the user was revoked: {e}"));
    }
    // Sanity: the same SET, well formed, is accepted once and then refused as a replay.
    let set = sign(&f.key, header(), claims());
    f.signal(SSF, &set).await.unwrap();
    let replay = refused(f.signal(SSF, &set).await);
    assert_eq!(
        (replay.clone(), replay.set_error_code()),
        (SignalError::Replayed, "invalid_request")
    );
}

#[tokio::test]
async fn an_email_subject_needs_an_issuer_that_maps_email() {
    let f = Fixture::start_with(json!({"claims": {"email": ""}})).await;
    let set = sign(
        &f.key,
        f.set_header(),
        f.set_claims(json!({RISC_ACCOUNT_DISABLED: {"subject": {"format": "email", "email": "alice@example.com"}}})),
    );
    assert_eq!(
        refused(f.signal(SSF, &set).await),
        SignalError::Subject("this issuer maps no email claim")
    );
    assert_eq!(f.stored().await, 0);
}

#[tokio::test]
async fn an_issuer_without_the_table_takes_no_signal_of_that_kind() {
    let f = Fixture::start_with(json!({"ssf": null})).await;
    assert!(matches!(
        f.service.signal_receiver("sso", SSF),
        Err(SignalRefusal::NotConfigured(name)) if name == "sso"
    ));
    assert!(f.service.signal_receiver("sso", BACKCHANNEL).is_ok());
    assert!(matches!(
        f.service.signal_receiver("nobody", BACKCHANNEL),
        Err(SignalRefusal::UnknownIssuer(_))
    ));
}
