//! The maintenance task: it keeps the index current and flushes activity on stop; keys
//! rotate through the service.

use std::time::Duration;

use tokengate_core::Millis;
use tokengate_sessions::KeyState;
use tokengate_store::{BusEvent, RedisBus};

use crate::Fixture;

#[tokio::test]
async fn stopping_the_maintenance_flushes_the_activity() {
    let mut f = Fixture::start().await;
    let handle = f.maintenance.take().unwrap().spawn();
    let (ada, issued) = f.signed_in("ada@example.com", "192.0.2.1").await;
    let later = f.service.now().plus(Duration::from_secs(120));
    f.clock.set(later);
    f.service.activity().seen_at(issued.session_id, later);
    handle.stop().await;
    let stored = f.store.session(issued.session_id).await.unwrap().unwrap();
    assert_eq!(stored.last_seen_at, later);
    assert_eq!(stored.user_id, ada.id);
}

#[tokio::test]
async fn the_index_learns_what_another_process_records() {
    let mut f = Fixture::start().await;
    let handle = f.maintenance.take().unwrap().spawn();
    let (_, issued) = f.signed_in("ada@example.com", "192.0.2.1").await;
    // What the admin CLI does: record in the store only.
    f.service
        .admin()
        .end_session(issued.session_id)
        .await
        .unwrap();
    let mut waited = Duration::ZERO;
    while f.accepted(&issued.access_token).is_some() {
        assert!(
            waited < Duration::from_secs(10),
            "the tail never applied it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(!f.service.freshness().is_stale(f.service.clock().now_ms()));
    handle.stop().await;
}

#[tokio::test]
async fn a_rotated_key_verifies_at_once_and_signs_after_the_delay() {
    let f = Fixture::start().await;
    let before = f.service.list_keys().await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].state, KeyState::Current);
    // The first key has had time to reach every node.
    f.clock.advance(tokengate_sessions::KEY_ACTIVATION_DELAY);
    let kid = f.service.rotate_key().await.unwrap();
    let keys = f.service.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let new = keys.iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(new.state, KeyState::Next);
    assert!(f.service.verifier().keys().iter().any(|k| k.kid() == kid));
    f.clock.advance(tokengate_sessions::KEY_ACTIVATION_DELAY);
    let keys = f.service.list_keys().await.unwrap();
    assert_eq!(
        keys.iter().find(|k| k.kid == kid).unwrap().state,
        KeyState::Current
    );
    assert_eq!(f.service.keys().signer(f.service.now()).kid(), kid);
}

/// A sign-out is acknowledged only once its revocation has reached Redis: a heartbeat
/// published right after the acknowledgement reaches a subscriber after the revocation.
/// That order is what makes a node's own heartbeat round trip a proof that it has seen
/// every revocation acknowledged before the heartbeat was sent.
#[tokio::test]
async fn a_sign_out_is_on_the_bus_before_it_is_acknowledged() {
    let namespace = format!("tokengate-test-{}", uuid::Uuid::new_v4().simple());
    let bus = match RedisBus::connect("redis://127.0.0.1:6379", &namespace).await {
        Ok(bus) => bus,
        Err(e) if std::env::var("TOKENGATE_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("TOKENGATE_REQUIRE_SERVICES=1 but no Redis: {e}")
        }
        Err(e) => {
            println!("skipped: no Redis: {e}");
            return;
        }
    };
    let (_subscription, mut events) = bus.subscribe();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("the subscription lives")
    };
    assert_eq!(next().await, BusEvent::Connected);
    let f = Fixture::start_on(crate::config(), Some(bus.clone())).await;
    let (ada, issued) = f.signed_in("ada@example.com", "192.0.2.1").await;

    f.service.sign_out(ada.id, issued.session_id).await.unwrap();
    bus.heartbeat("probe", Millis::from_millis(0))
        .await
        .unwrap();
    match next().await {
        BusEvent::Revocation(revocation) => {
            assert_eq!(revocation.subject_id(), issued.session_id);
        }
        other => panic!("the revocation must come first, got {other:?}"),
    }
    assert!(matches!(next().await, BusEvent::Heartbeat { node_id, .. } if node_id == "probe"));
}
