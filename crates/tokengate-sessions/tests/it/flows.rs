//! Sign-up, sign-in, refresh, sign-out, password change and the admin operations.

use tokengate_core::Role;
use tokengate_sessions::{
    AdminError, EndSessionError, PasswordChangeError, RefreshError, SigninError, SignupError,
    WeakPassword,
};

use crate::{client, config, Fixture, PASSWORD};

#[tokio::test]
async fn the_first_user_is_admin_and_emails_are_normalised_and_unique() {
    let f = Fixture::start().await;
    let first = f.signup(" Ada@Example.com ", "192.0.2.1").await;
    assert_eq!(first.email, "ada@example.com");
    assert_eq!(first.role, Role::Admin);
    let second = f.signup("bob@example.com", "192.0.2.1").await;
    assert_eq!(second.role, Role::User);
    assert!(matches!(
        f.service
            .signup("ADA@example.com", PASSWORD.into(), &client("192.0.2.1"))
            .await,
        Err(SignupError::Exists)
    ));
    assert!(matches!(
        f.service
            .signup("not-an-email", PASSWORD.into(), &client("192.0.2.1"))
            .await,
        Err(SignupError::InvalidEmail(_))
    ));
    assert!(matches!(
        f.service
            .signup("carol@example.com", "short".into(), &client("192.0.2.1"))
            .await,
        Err(SignupError::WeakPassword(WeakPassword::TooShort))
    ));

    let closed = Fixture::start_with(tokengate_sessions::SessionConfig {
        allow_signup: false,
        ..config()
    })
    .await;
    assert!(matches!(
        closed
            .service
            .signup("ada@example.com", PASSWORD.into(), &client("192.0.2.1"))
            .await,
        Err(SignupError::Closed)
    ));
}

#[tokio::test]
async fn signin_mints_a_verifiable_token_and_failures_are_throttled() {
    let f = Fixture::start().await;
    let user = f.signup("ada@example.com", "192.0.2.1").await;
    let issued = f.signin("ADA@example.com", "192.0.2.1").await;
    assert_eq!(issued.expires_in(), 900);
    let claims = f
        .accepted(&issued.access_token)
        .expect("the token verifies");
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.sid, issued.session_id);
    assert_eq!(claims.iss, "https://tokengate.test");

    let attacker = client("192.0.2.66");
    for _ in 0..3 {
        assert!(matches!(
            f.service
                .signin("ada@example.com", "wrong password!".into(), &attacker)
                .await,
            Err(SigninError::Invalid)
        ));
    }
    assert!(matches!(
        f.service
            .signin("ada@example.com", PASSWORD.into(), &attacker)
            .await,
        Err(SigninError::Throttled { retry_after: 900 })
    ));
    // Another client is not slowed; an unknown email is refused like a wrong password.
    f.signin("ada@example.com", "192.0.2.2").await;
    assert!(matches!(
        f.service
            .signin("nobody@example.com", PASSWORD.into(), &client("192.0.2.3"))
            .await,
        Err(SigninError::Invalid)
    ));
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let f = Fixture::start().await;
    let (_, first) = f.signed_in("ada@example.com", "192.0.2.1").await;
    let second = f.service.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(f.accepted(&second.access_token).is_some());

    assert!(matches!(
        f.service.refresh(&first.refresh_token).await,
        Err(RefreshError::Reused)
    ));
    assert!(
        f.accepted(&second.access_token).is_none(),
        "the session is revoked"
    );
    assert!(matches!(
        f.service.refresh(&second.refresh_token).await,
        Err(RefreshError::SessionEnded | RefreshError::Reused)
    ));
    assert!(matches!(
        f.service.refresh("tgr_nope").await,
        Err(RefreshError::Malformed)
    ));
}

#[tokio::test]
async fn sign_out_one_own_or_every_session() {
    let f = Fixture::start().await;
    let ada = f.signup("ada@example.com", "192.0.2.1").await;
    let bob = f.signup("bob@example.com", "192.0.2.1").await;
    let one = f.signin("ada@example.com", "192.0.2.1").await;
    let two = f.signin("ada@example.com", "192.0.2.1").await;
    let three = f.signin("ada@example.com", "192.0.2.1").await;
    let bobs = f.signin("bob@example.com", "192.0.2.1").await;

    f.service.sign_out(ada.id, one.session_id).await.unwrap();
    assert!(f.accepted(&one.access_token).is_none());
    assert!(f.accepted(&two.access_token).is_some());

    let live = f
        .service
        .live_sessions(ada.id, two.session_id)
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(live.iter().filter(|s| s.current).count(), 1);

    // Another user's session, or an ended one, is not found and nothing is revoked.
    assert!(matches!(
        f.service.end_own_session(ada.id, bobs.session_id).await,
        Err(EndSessionError::NotFound)
    ));
    assert!(f.accepted(&bobs.access_token).is_some());
    assert!(matches!(
        f.service.end_own_session(ada.id, one.session_id).await,
        Err(EndSessionError::NotFound)
    ));
    f.service
        .end_own_session(ada.id, two.session_id)
        .await
        .unwrap();
    assert!(f.accepted(&two.access_token).is_none());

    assert_eq!(f.service.sign_out_everywhere(ada.id).await.unwrap(), 1);
    assert!(f.accepted(&three.access_token).is_none());
    assert!(f.accepted(&bobs.access_token).is_some());
    assert_eq!(bob.role, Role::User);
}

#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let f = Fixture::start().await;
    let (ada, here) = f.signed_in("ada@example.com", "192.0.2.1").await;
    let elsewhere = f.signin("ada@example.com", "192.0.2.2").await;
    let from = client("192.0.2.1");
    let change = |current: &str, new: &str| {
        f.service
            .change_password(ada.id, here.session_id, current.into(), new.into(), &from)
    };
    assert!(matches!(
        change("not the password", "a brand new passphrase").await,
        Err(PasswordChangeError::WrongPassword)
    ));
    assert!(matches!(
        change(PASSWORD, "password").await,
        Err(PasswordChangeError::WeakPassword(_))
    ));
    assert_eq!(change(PASSWORD, "a brand new passphrase").await.unwrap(), 1);
    assert!(f.accepted(&here.access_token).is_some());
    assert!(f.accepted(&elsewhere.access_token).is_none());
    assert!(matches!(
        f.service
            .signin("ada@example.com", PASSWORD.into(), &client("192.0.2.3"))
            .await,
        Err(SigninError::Invalid)
    ));
}

#[tokio::test]
async fn admins_disable_others_but_never_themselves() {
    let f = Fixture::start().await;
    let admin = f.signup("root@example.com", "192.0.2.1").await;
    let ada = f.signup("ada@example.com", "192.0.2.1").await;
    let session = f.signin("ada@example.com", "192.0.2.1").await;
    assert!(matches!(
        f.service.disable_user(admin.id, admin.id).await,
        Err(AdminError::SelfDisable)
    ));
    assert!(matches!(
        f.service.disable_user(admin.id, uuid::Uuid::now_v7()).await,
        Err(AdminError::NotFound)
    ));
    assert_eq!(f.service.disable_user(admin.id, ada.id).await.unwrap(), 1);
    assert!(f.accepted(&session.access_token).is_none());
    assert!(matches!(
        f.service
            .signin("ada@example.com", PASSWORD.into(), &client("192.0.2.1"))
            .await,
        Err(SigninError::Disabled)
    ));
    assert!(matches!(
        f.service.refresh(&session.refresh_token).await,
        Err(RefreshError::Disabled | RefreshError::SessionEnded)
    ));
}

#[tokio::test]
async fn holding_a_token_is_the_right_to_revoke_it() {
    let f = Fixture::start().await;
    f.signup("ada@example.com", "192.0.2.1").await;
    let by_access = f.signin("ada@example.com", "192.0.2.1").await;
    let by_refresh = f.signin("ada@example.com", "192.0.2.1").await;
    f.service
        .revoke_token(&by_access.access_token)
        .await
        .unwrap();
    assert!(f.accepted(&by_access.access_token).is_none());
    f.service
        .revoke_token(&by_refresh.refresh_token)
        .await
        .unwrap();
    assert!(f.accepted(&by_refresh.access_token).is_none());
    // Garbage is accepted silently and revokes nothing.
    f.service.revoke_token("garbage").await.unwrap();
    // Every revocation is durable.
    let live = f
        .store
        .load_live_revocations(f.service.now(), config().leeway)
        .await
        .unwrap();
    assert_eq!(live.revocations.len(), 2);
}
