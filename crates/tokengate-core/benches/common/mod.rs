//! What the benches share: the clock their timings read and the criterion sampling that suits
//! it, the system clock's now, deterministic ids, the resident set's size, and the claims
//! fixtures (`fixtures.rs`, which the cache's unit tests include too).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode};
use tokengate_core::Timestamp;
use uuid::Uuid;

pub mod fixtures;

/// The clock the timings read. Wall time also counts the time this thread waited for a core,
/// which on a machine busy with other work is most of it; the thread's on-CPU time
/// (`/proc/thread-self/schedstat`, in nanoseconds) does not. On-CPU time is the default where
/// the kernel provides it; `TOKENGATE_BENCH_CLOCK=wall` picks wall time. The kernel updates
/// that figure at scheduler ticks (4 ms here), so the groups use flat sampling with samples
/// of about 200 ms (see `flat`): the error is a few percent per sample and averages out over
/// the samples.
pub fn timed(f: impl FnOnce()) -> Duration {
    static USE_CPU: OnceLock<bool> = OnceLock::new();
    let use_cpu = *USE_CPU.get_or_init(|| {
        let cpu = std::env::var("TOKENGATE_BENCH_CLOCK").map_or(true, |v| v != "wall")
            && on_cpu().is_some();
        eprintln!(
            "timing clock: {}",
            if cpu { "thread on-CPU time" } else { "wall" }
        );
        cpu
    });
    if use_cpu {
        let start = on_cpu().unwrap();
        f();
        on_cpu().unwrap().saturating_sub(start)
    } else {
        let start = Instant::now();
        f();
        start.elapsed()
    }
}

fn on_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// 20 samples of about 200 ms each (see `timed`).
pub fn flat(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

/// Now, from the system clock, in whole seconds.
pub fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_secs(i64::try_from(secs).unwrap())
}

/// splitmix64: a counter scrambled into a random-looking `u64`.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic distinct ids (splitmix64 of a counter), so an index or cache holds
/// random-looking keys without keeping a list of them.
pub fn id(n: u64) -> Uuid {
    Uuid::from_u64_pair(mix(2 * n), mix(2 * n + 1))
}

/// This process's resident set (`VmRSS` in `/proc/self/status`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
