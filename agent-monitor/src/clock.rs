//! Time bases. Kernel events carry boot-time nanoseconds; records the daemon synthesizes use the
//! same clock so that a trace has one time line.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds since boot, the clock of `bpf_ktime_get_boot_ns()`.
pub fn boot_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
