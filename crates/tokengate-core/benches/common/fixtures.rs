//! Claims fixtures: what the core benches use (through `common`) and the cache's unit tests
//! too (`src/cache/tests.rs` includes this file by path, so it names the library
//! `tokengate_core` in both places).

use std::time::Duration;

use tokengate_core::{Claims, Role, Timestamp};
use uuid::Uuid;

/// The instant the fixtures are issued at, in seconds since the epoch.
pub const T0: i64 = 1_700_000_000;

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

/// Claims shaped like the server's: iss/aud `tokengate`, issued at `iat`, 15 min lifetime,
/// random `sub`, `jti` and `sid`.
pub fn claims_at(iat: Timestamp) -> Claims {
    Claims {
        iss: "tokengate".into(),
        sub: Uuid::new_v4(),
        aud: "tokengate".into(),
        iat,
        nbf: iat,
        exp: iat.plus(Duration::from_secs(900)),
        jti: Uuid::new_v4(),
        sid: Uuid::new_v4(),
        email: "ada.lovelace@example.com".into(),
        role: Role::User,
    }
}

/// `claims_at` issued at `T0`.
pub fn claims() -> Claims {
    claims_at(at(T0))
}
