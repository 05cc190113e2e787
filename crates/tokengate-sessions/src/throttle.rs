//! Sign-in throttling: a limit on FAILED password attempts, per (account email, client IP)
//! and per client IP across accounts, over a sliding window.
//!
//! - The key is the normalised email string (trimmed, lower-cased), hashed, whether or not
//!   an account exists: unknown and known emails throttle identically, and no email address
//!   is held in memory.
//! - The client IP is part of the per-account key, so a client that has not failed is not
//!   slowed, and a success only clears the succeeding client's own counter.
//! - [`SigninThrottle::begin`] checks and counts an attempt in one step, before any
//!   password work, so a burst of concurrent guesses cannot all slip in before the first
//!   failure is recorded; [`SigninThrottle::record_success`] takes the count back.
//! - Memory is bounded: each key keeps at most its limit of timestamps, expired entries are
//!   dropped incrementally (a few per call, oldest first), and past [`MAX_ENTRIES`] the
//!   oldest entries are evicted. Evicting a throttle counter only forgets some failures; it
//!   never lets a revoked token back in.
//! - Time is a parameter: every method takes `now`.
//!
//! - An IPv6 client is keyed by its network (`/64` by default, [`ThrottleLimits::ipv6_prefix`]):
//!   one subscriber holds a whole /64 and can send from any of its 2^64 addresses, so per
//!   address it could never be throttled. IPv4-mapped IPv6 addresses count as IPv4.
//!
//! [`SignupThrottle`] limits account creation per client network the same way, counting
//! every attempt.
//!
//! The client IP is the TCP peer: behind a reverse proxy every client shares the proxy's
//! address (a `trusted_proxy` setting to read `X-Forwarded-For` is future work).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokengate_core::Timestamp;

/// Most (timestamp, key) entries each of the two windows holds before evicting the oldest.
pub const MAX_ENTRIES: usize = 200_000;
/// How many expired entries one call drops at most (incremental expiry).
const PRUNE_BUDGET: usize = 64;

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failed attempts allowed per (email, client IP) within `window`; 0 = no limit.
    pub max_failures: u32,
    /// Failed attempts allowed per client IP, across accounts, within `window`; 0 = no limit.
    pub max_failures_per_ip: u32,
    /// The sliding window.
    pub window: Duration,
    /// How many leading bits of an IPv6 address name one client (0-128; 64 by default).
    pub ipv6_prefix: u8,
}

/// The client network an address belongs to, as the throttles key it: an IPv4 address
/// itself, an IPv6 address masked to its first `ipv6_prefix` bits.
pub fn client_network(ip: Option<IpAddr>, ipv6_prefix: u8) -> Option<IpAddr> {
    Some(match ip? {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    })
}

/// A refused attempt: how many seconds until the window lets the client try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

type AccountKey = ([u8; 32], Option<IpAddr>);

/// Counters of failed sign-ins; shared by the JSON sign-in and the sign-in page.
///
/// ```
/// use std::time::Duration;
/// use tokengate_core::Timestamp;
/// use tokengate_sessions::throttle::{SigninThrottle, ThrottleLimits};
///
/// let throttle = SigninThrottle::new(ThrottleLimits {
///     max_failures: 2,
///     max_failures_per_ip: 10,
///     window: Duration::from_secs(60),
///     ipv6_prefix: 64,
/// });
/// let ip = Some("192.0.2.1".parse().unwrap());
/// let now = Timestamp::from_secs(1_000);
/// // Each attempt counts as a failure until the password turns out right.
/// assert!(throttle.begin("ada@example.com", ip, now).is_ok());
/// assert!(throttle.begin("ada@example.com", ip, now).is_ok());
/// assert_eq!(throttle.check("ADA@example.com ", ip, now).unwrap_err().0, 60);
/// assert!(throttle.check("ada@example.com", ip, now.plus(Duration::from_secs(60))).is_ok());
/// ```
pub struct SigninThrottle {
    limits: ThrottleLimits,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SigninThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigninThrottle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

struct Inner {
    accounts: Windows<AccountKey>,
    ips: Windows<Option<IpAddr>>,
}

impl SigninThrottle {
    /// A throttle with these limits and nothing counted.
    pub fn new(limits: ThrottleLimits) -> Self {
        let window = i64::try_from(limits.window.as_secs()).unwrap_or(i64::MAX);
        SigninThrottle {
            limits,
            inner: Mutex::new(Inner {
                accounts: Windows::new(limits.max_failures, window),
                ips: Windows::new(limits.max_failures_per_ip, window),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters more than refusing every sign-in would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `email` may be tried from `ip` now, without counting anything.
    pub fn check(&self, email: &str, ip: Option<IpAddr>, now: Timestamp) -> Result<(), RetryAfter> {
        let ip = client_network(ip, self.limits.ipv6_prefix);
        let key = (email_key(email), ip);
        let mut inner = self.lock();
        inner.check(&key, now.as_secs())
    }

    /// Check, and if allowed count this attempt as a failure right away (call
    /// [`SigninThrottle::record_success`] when the password turns out right). Counting
    /// before the password check means concurrent guesses cannot exceed the limit.
    pub fn begin(&self, email: &str, ip: Option<IpAddr>, now: Timestamp) -> Result<(), RetryAfter> {
        let ip = client_network(ip, self.limits.ipv6_prefix);
        let key = (email_key(email), ip);
        let now = now.as_secs();
        let mut inner = self.lock();
        inner.check(&key, now)?;
        inner.accounts.record(key, now);
        inner.ips.record(ip, now);
        Ok(())
    }

    /// A successful sign-in of `email` from `ip`: clear this client's counter for this
    /// account, and take back the one attempt [`SigninThrottle::begin`] counted against the
    /// IP. Other clients' counters for the account are untouched.
    pub fn record_success(&self, email: &str, ip: Option<IpAddr>, now: Timestamp) {
        let ip = client_network(ip, self.limits.ipv6_prefix);
        let key = (email_key(email), ip);
        let mut inner = self.lock();
        inner.accounts.clear(&key);
        inner.ips.forget_latest(&ip);
        inner.accounts.prune(now.as_secs(), PRUNE_BUDGET);
    }

    /// How many keys are tracked (both windows).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        let inner = self.lock();
        inner.accounts.entries.len() + inner.ips.entries.len()
    }
}

impl Inner {
    fn check(&mut self, key: &AccountKey, now: i64) -> Result<(), RetryAfter> {
        self.accounts.prune(now, PRUNE_BUDGET);
        self.ips.prune(now, PRUNE_BUDGET);
        let account = self.accounts.retry_after(key, now);
        let ip = self.ips.retry_after(&key.1, now);
        match account.max(ip) {
            Some(secs) => Err(RetryAfter(secs)),
            None => Ok(()),
        }
    }
}

/// Account creation attempts per client network over a sliding window: past the limit,
/// sign-up answers 429 before any work, so one client cannot mint accounts by the
/// thousand.
pub struct SignupThrottle {
    ipv6_prefix: u8,
    attempts: Mutex<Windows<Option<IpAddr>>>,
}

impl std::fmt::Debug for SignupThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignupThrottle").finish_non_exhaustive()
    }
}

/// How many sign-ups one client network may make, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignupLimits {
    /// Sign-up attempts allowed per client network within `window`; 0 = no limit.
    pub max_per_network: u32,
    /// The sliding window.
    pub window: Duration,
}

impl SignupThrottle {
    /// At most `limits.max_per_network` sign-ups per client network (IPv6 masked to
    /// `ipv6_prefix` bits) per window.
    pub fn new(limits: SignupLimits, ipv6_prefix: u8) -> Self {
        let window = i64::try_from(limits.window.as_secs()).unwrap_or(i64::MAX);
        SignupThrottle {
            ipv6_prefix,
            attempts: Mutex::new(Windows::new(limits.max_per_network, window)),
        }
    }

    /// Check and count one sign-up attempt from `ip`.
    pub fn begin(&self, ip: Option<IpAddr>, now: Timestamp) -> Result<(), RetryAfter> {
        let key = client_network(ip, self.ipv6_prefix);
        let now = now.as_secs();
        // See SigninThrottle::lock: a poisoned list of timestamps is still usable.
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.prune(now, PRUNE_BUDGET);
        if let Some(secs) = attempts.retry_after(&key, now) {
            return Err(RetryAfter(secs));
        }
        attempts.record(key, now);
        Ok(())
    }
}

/// The normalised email (trimmed, lower-cased), hashed: the same key whether or not an
/// account exists or the address is even valid.
fn email_key(email: &str) -> [u8; 32] {
    Sha256::digest(email.trim().to_lowercase().as_bytes()).into()
}

/// One sliding window: per key the timestamps (seconds) of its latest failures, and a
/// queue of `(expires_at, key)` in insertion order for incremental expiry and eviction.
struct Windows<K> {
    limit: u32,
    window: i64,
    entries: HashMap<K, VecDeque<i64>>,
    expiry: VecDeque<(i64, K)>,
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new(limit: u32, window: i64) -> Self {
        Windows {
            limit,
            window,
            entries: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    fn record(&mut self, key: K, now: i64) {
        if self.limit == 0 {
            return;
        }
        let times = self.entries.entry(key.clone()).or_default();
        times.push_back(now);
        // Only the latest `limit` failures can decide a refusal.
        while times.len() > self.limit as usize {
            times.pop_front();
        }
        self.expiry
            .push_back((now.saturating_add(self.window), key));
        while self.expiry.len() > MAX_ENTRIES {
            if let Some((_, oldest)) = self.expiry.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Seconds until `key` may try again, or `None` when it is under the limit.
    fn retry_after(&self, key: &K, now: i64) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let times = self.entries.get(key)?;
        let live: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| t.saturating_add(self.window) > now)
            .collect();
        let limit = self.limit as usize;
        if live.len() < limit {
            return None;
        }
        // The window frees when the oldest failure that keeps the count at the limit expires.
        let frees_at = live[live.len() - limit].saturating_add(self.window);
        Some(
            u64::try_from(frees_at.saturating_sub(now))
                .unwrap_or(1)
                .max(1),
        )
    }

    fn clear(&mut self, key: &K) {
        // Its queue entries stay behind and find nothing to remove when they expire.
        self.entries.remove(key);
    }

    fn forget_latest(&mut self, key: &K) {
        if let Some(times) = self.entries.get_mut(key) {
            times.pop_back();
            if times.is_empty() {
                self.entries.remove(key);
            }
        }
    }

    /// Drop up to `budget` expired queue entries, oldest first, and the timestamps (and
    /// keys) they stood for.
    fn prune(&mut self, now: i64, budget: usize) {
        for _ in 0..budget {
            match self.expiry.front() {
                Some((expires_at, _)) if *expires_at <= now => {}
                _ => return,
            }
            let Some((_, key)) = self.expiry.pop_front() else {
                return;
            };
            if let Some(times) = self.entries.get_mut(&key) {
                let window = self.window;
                times.retain(|t| t.saturating_add(window) > now);
                if times.is_empty() {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn throttle(per_account: u32, per_ip: u32) -> SigninThrottle {
        SigninThrottle::new(ThrottleLimits {
            max_failures: per_account,
            max_failures_per_ip: per_ip,
            window: Duration::from_secs(900),
            ipv6_prefix: 64,
        })
    }

    /// Count a failed attempt (an attempt begun whose password was wrong).
    fn record_failure(t: &SigninThrottle, email: &str, ip: Option<IpAddr>, now: Timestamp) {
        let ip = client_network(ip, t.limits.ipv6_prefix);
        let key = (email_key(email), ip);
        let mut inner = t.lock();
        inner.accounts.record(key, now.as_secs());
        inner.ips.record(ip, now.as_secs());
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    #[test]
    fn the_limit_refuses_with_the_seconds_until_the_window_frees() {
        let t = throttle(3, 100);
        for i in 0..3 {
            assert!(t
                .begin("a@example.com", ip("192.0.2.1"), at(i * 10))
                .is_ok());
        }
        assert_eq!(
            t.begin("a@example.com", ip("192.0.2.1"), at(30)),
            Err(RetryAfter(870))
        );
        // The first failure (t=0) leaves the window at t=900: one more attempt is allowed.
        assert!(t.check("a@example.com", ip("192.0.2.1"), at(899)).is_err());
        assert!(t.begin("a@example.com", ip("192.0.2.1"), at(900)).is_ok());
        assert_eq!(
            t.check("a@example.com", ip("192.0.2.1"), at(900)),
            Err(RetryAfter(10))
        );
    }

    #[test]
    fn another_client_and_another_account_are_not_slowed() {
        let t = throttle(2, 100);
        record_failure(&t, "a@example.com", ip("192.0.2.1"), T0);
        record_failure(&t, "a@example.com", ip("192.0.2.1"), T0);
        assert!(t.check("a@example.com", ip("192.0.2.1"), T0).is_err());
        assert!(t.check("a@example.com", ip("192.0.2.2"), T0).is_ok());
        assert!(t.check("b@example.com", ip("192.0.2.1"), T0).is_ok());
    }

    #[test]
    fn a_success_clears_only_its_own_client() {
        let t = throttle(2, 100);
        record_failure(&t, "a@example.com", ip("192.0.2.1"), T0);
        record_failure(&t, "a@example.com", ip("192.0.2.1"), T0);
        record_failure(&t, "a@example.com", ip("192.0.2.2"), T0);
        t.begin("a@example.com", ip("192.0.2.2"), T0).unwrap();
        t.record_success("a@example.com", ip("192.0.2.2"), T0);
        assert!(t.check("a@example.com", ip("192.0.2.2"), T0).is_ok());
        assert!(t.check("a@example.com", ip("192.0.2.1"), T0).is_err());
    }

    #[test]
    fn the_per_ip_limit_spans_accounts() {
        let t = throttle(5, 3);
        for n in 0..3 {
            t.begin(&format!("u{n}@example.com"), ip("192.0.2.1"), T0)
                .unwrap();
        }
        assert!(t.check("fresh@example.com", ip("192.0.2.1"), T0).is_err());
        assert!(t.check("fresh@example.com", ip("192.0.2.9"), T0).is_ok());
    }

    #[test]
    fn emails_are_normalised_and_need_not_exist() {
        let t = throttle(1, 100);
        record_failure(&t, "  Nobody@Example.COM ", ip("192.0.2.1"), T0);
        assert!(t.check("nobody@example.com", ip("192.0.2.1"), T0).is_err());
        record_failure(&t, "not an email", ip("192.0.2.1"), T0);
        assert!(t.check("NOT AN EMAIL", ip("192.0.2.1"), T0).is_err());
    }

    #[test]
    fn a_zero_limit_disables_that_limit() {
        let t = throttle(0, 0);
        for _ in 0..100 {
            t.begin("a@example.com", ip("192.0.2.1"), T0).unwrap();
        }
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn expired_entries_are_dropped_incrementally() {
        let t = throttle(5, 1_000_000);
        for n in 0..500 {
            record_failure(&t, &format!("u{n}@example.com"), ip("192.0.2.1"), T0);
        }
        assert_eq!(t.tracked(), 501);
        // Each call after the window drops a bounded batch; enough calls drop everything.
        for _ in 0..20 {
            let _ = t.check("x@example.com", ip("192.0.2.1"), at(900));
        }
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_their_counters() {
        let t = throttle(3, 100);
        for n in 1..=3 {
            t.begin("a@example.com", ip(&format!("2001:db8:1:2::{n:x}")), T0)
                .unwrap();
        }
        assert!(t
            .check("a@example.com", ip("2001:db8:1:2:ffff::9"), T0)
            .is_err());
        assert!(t.check("a@example.com", ip("2001:db8:1:3::1"), T0).is_ok());
    }

    #[test]
    fn client_networks_follow_the_prefix_and_map_ipv4_in_ipv6() {
        assert_eq!(
            client_network(ip("2001:db8:aaaa:bbbb:1:2:3:4"), 48),
            ip("2001:db8:aaaa::")
        );
        assert_eq!(client_network(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(client_network(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(client_network(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_network(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn sign_ups_are_limited_per_client_network() {
        let t = SignupThrottle::new(
            SignupLimits {
                max_per_network: 2,
                window: Duration::from_secs(60),
            },
            64,
        );
        t.begin(ip("2001:db8::1"), T0).unwrap();
        t.begin(ip("2001:db8::2"), T0).unwrap();
        assert_eq!(t.begin(ip("2001:db8::3"), at(10)), Err(RetryAfter(50)));
        assert!(t.begin(ip("192.0.2.1"), at(10)).is_ok());
        assert!(t.begin(ip("2001:db8::3"), at(60)).is_ok());
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_oldest() {
        let t = throttle(5, 0);
        for n in 0..(MAX_ENTRIES + 10) {
            record_failure(&t, &format!("u{n}@example.com"), ip("192.0.2.1"), T0);
        }
        assert_eq!(t.tracked(), MAX_ENTRIES);
    }
}
