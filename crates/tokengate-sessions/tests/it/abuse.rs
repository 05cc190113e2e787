//! Guessing from many addresses of one IPv6 network: the throttle keys the network, not
//! the address.

use tokengate_sessions::SigninError;

use crate::{client, Fixture};

#[tokio::test]
async fn guesses_from_many_addresses_of_one_ipv6_64_are_throttled_together() {
    let f = Fixture::start().await;
    f.signup("ada@example.com", "192.0.2.1").await;
    let mut throttled = 0;
    for n in 0..100 {
        // 20 addresses of 2001:db8:1:2::/64, five guesses each.
        let from = client(&format!("2001:db8:1:2::{:x}", n % 20 + 1));
        match f
            .service
            .signin("ada@example.com", format!("guess {n}"), &from)
            .await
        {
            Err(SigninError::Throttled { .. }) => throttled += 1,
            Err(SigninError::Invalid) => {}
            other => panic!("guess {n}: {other:?}"),
        }
    }
    // The test config allows 3 failures per account and client: the rest are refused
    // before any password work.
    assert_eq!(throttled, 97);
    // Another network is a different client.
    f.signin("ada@example.com", "2001:db8:1:3::1").await;
}
