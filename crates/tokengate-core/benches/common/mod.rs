//! What the criterion benches share: the clock their timings read.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The clock the timings read. Wall time also counts the time this thread waited for a core,
/// which on a machine busy with other work is most of it; the thread's on-CPU time
/// (`/proc/thread-self/schedstat`, in nanoseconds) does not. On-CPU time is the default where
/// the kernel provides it; `TOKENGATE_BENCH_CLOCK=wall` picks wall time. The kernel updates
/// that figure at scheduler ticks (4 ms here), so the groups use flat sampling with samples
/// of about 200 ms: the error is a few percent per sample and averages out over the samples.
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
