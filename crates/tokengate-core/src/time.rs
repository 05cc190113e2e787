//! Time as a parameter: every validity decision takes a [`Timestamp`], and the
//! server reads it from a [`Clock`] so that tests can set the time instead of sleeping.
//!
//! Two readings of one clock: [`Clock::now`], whole seconds of the wall clock (the unit of
//! the JWT claims), and [`Clock::now_ms`], [`Millis`] on a timeline that never goes back,
//! for bounds that must hold to the millisecond (the index's `max_staleness`).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, the unit of the JWT `iat`, `nbf` and `exp` claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable instant; useful as "never" for lower bounds.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable instant.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// A timestamp `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_secs(self) -> i64 {
        self.0
    }

    /// This instant moved `d` later, saturating instead of overflowing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::Timestamp;
    /// let t = Timestamp::from_secs(100);
    /// assert_eq!(t.plus(Duration::from_secs(20)).as_secs(), 120);
    /// ```
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(secs_i64(d)))
    }

    /// This instant moved `d` earlier, saturating instead of overflowing.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(secs_i64(d)))
    }
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds on a clock's own timeline, from [`Clock::now_ms`]: for measuring how old
/// something is to the millisecond. Only values read from the same clock compare; the
/// timeline of [`SystemClock`] starts at the wall clock's reading when the process first
/// asks and then follows the monotonic clock, so a step of the wall clock (NTP) neither
/// ages nor rejuvenates anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(i64);

impl Millis {
    /// The earliest representable instant; "never".
    pub const MIN: Millis = Millis(i64::MIN);

    /// The instant `ms` milliseconds after the timeline's origin.
    pub const fn from_millis(ms: i64) -> Self {
        Millis(ms)
    }

    /// Milliseconds since the timeline's origin.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate_core::Millis;
    /// let t = Millis::from_millis(10_250);
    /// assert_eq!(t.since(Millis::from_millis(10_000)), Duration::from_millis(250));
    /// assert_eq!(t.since(Millis::from_millis(11_000)), Duration::ZERO);
    /// ```
    pub fn since(self, earlier: Millis) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// This instant moved `d` later, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        Millis(self.0.saturating_add(millis_i64(d)))
    }

    /// This instant moved `d` earlier, saturating instead of overflowing.
    pub fn minus(self, d: Duration) -> Self {
        Millis(self.0.saturating_sub(millis_i64(d)))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant, in whole seconds of the wall clock.
    fn now(&self) -> Timestamp;

    /// The current instant to the millisecond, on a timeline that never goes back (see
    /// [`Millis`]).
    fn now_ms(&self) -> Millis;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(secs_i64)
            .unwrap_or(0);
        Timestamp(secs)
    }

    fn now_ms(&self) -> Millis {
        // Read once per process: the wall clock then, and the monotonic clock since.
        static ORIGIN: OnceLock<(Instant, i64)> = OnceLock::new();
        let (start, wall_ms) = ORIGIN.get_or_init(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(millis_i64)
                .unwrap_or(0);
            (Instant::now(), wall)
        });
        Millis(wall_ms.saturating_add(millis_i64(start.elapsed())))
    }
}

/// A clock that only moves when told to, to the millisecond; for tests. Its [`Millis`]
/// timeline is the Unix epoch's, and [`Clock::now`] is its reading rounded down to the
/// second.
///
/// ```
/// use std::time::Duration;
/// use tokengate_core::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new(Timestamp::from_secs(1_000));
/// clock.advance(Duration::from_millis(60_900));
/// assert_eq!(clock.now().as_secs(), 1_060);
/// assert_eq!(clock.now_ms().as_millis(), 1_060_900);
/// ```
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicI64::new(start.0.saturating_mul(1000)))
    }

    /// Set the clock to `t` (a whole second).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Move the clock forward by `d`, to the millisecond.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(millis_i64(d), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst).div_euclid(1000))
    }

    fn now_ms(&self) -> Millis {
        Millis(self.0.load(Ordering::SeqCst))
    }
}
