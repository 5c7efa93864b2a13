//! Time bases. Kernel events carry boot-time nanoseconds; records the daemon synthesizes use the
//! same clock so that a trace has one time line.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds since boot, the clock of `bpf_ktime_get_boot_ns()`.
pub fn boot_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Unix time minus boot time, in ns: turns boot-time stamps into wall-clock time.
pub fn wall_offset_ns() -> i128 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    unix - i128::from(boot_ns())
}
