//! Containment: the per-cgroup policy the kernel enforces at the socket hooks, its token buckets,
//! and the per-cgroup denial counters.
//!
//! The daemon (or `agent-monitor contain`) writes a [`ContainPolicy`] into `CONTAINMENT` (key:
//! cgroup v2 id); `connect4/6`, `sendmsg4/6` and `cgroup_skb/egress` look the caller's cgroup up
//! there before anything else and refuse (connect/sendmsg: EPERM) or drop (egress) what the
//! policy forbids. Every refusal is counted in `DENIALS` (key: cgroup v2 id).

/// Refuse every connect and unconnected UDP send and drop every egress packet.
pub const CONTAIN_DENY_ALL: u32 = 1;
/// Apply the token buckets (`connects_per_s`, `bytes_per_s`; 0 leaves that dimension free).
pub const CONTAIN_RATE_LIMIT: u32 = 2;

/// Entries of `CONTAINMENT`: contained cgroups at once.
pub const MAX_CONTAINED: u32 = 1024;
/// Entries of `DENIALS` (LRU: the counters of long-released cgroups are evicted first).
pub const MAX_DENIAL_ROWS: u32 = 4096;

/// Token buckets count in nano-tokens: one token per second of rate per nanosecond elapsed, so a
/// refill never needs a division and never loses a fraction.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;
/// The byte bucket holds at least this many bytes, so that one full-size (GSO) packet can pass
/// even under a rate below it; the long-run rate is still `bytes_per_s`.
pub const MIN_BYTE_BURST: u64 = 65_536;
/// Largest accepted byte rate: keeps `rate * NANOS_PER_SEC` inside a `u64`.
pub const MAX_BYTES_PER_SEC: u64 = 16_000_000_000;

/// A token bucket of `burst` tokens refilled at `rate` tokens per second. `tokens` is in
/// nano-tokens; `last_ns` is the kernel's monotonic clock at the last refill (0: never used).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub const fn full(burst: u64) -> Self {
        Self {
            tokens: clamp(burst) * NANOS_PER_SEC,
            last_ns: 0,
        }
    }

    /// Refills for the time since the last call, then takes `cost` tokens if there are enough.
    /// Returns whether they were taken. Not atomic: two CPUs taking at the same instant may both
    /// succeed on the last token (the kernel accepts that approximation).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate: u64, burst: u64, cost: u64) -> bool {
        // Every factor is clamped so that each product fits a u64 (no 128-bit multiply, which
        // the bpf target lacks): tokens, rate and burst stay below MAX_BYTES_PER_SEC * 1e9.
        let cap = clamp(burst) * NANOS_PER_SEC;
        // More than a second idle refills the bucket anyway.
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let elapsed = if elapsed > NANOS_PER_SEC {
            NANOS_PER_SEC
        } else {
            elapsed
        };
        let refill = elapsed * clamp(rate);
        let mut tokens = self.tokens.saturating_add(refill);
        if tokens > cap {
            tokens = cap;
        }
        self.last_ns = now_ns;
        let need = clamp(cost) * NANOS_PER_SEC;
        if tokens >= need {
            self.tokens = tokens - need;
            true
        } else {
            self.tokens = tokens;
            false
        }
    }
}

#[inline(always)]
const fn clamp(v: u64) -> u64 {
    if v > MAX_BYTES_PER_SEC {
        MAX_BYTES_PER_SEC
    } else {
        v
    }
}

/// Value of the `CONTAINMENT` map (key: cgroup v2 id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainPolicy {
    /// `CONTAIN_*` bits.
    pub flags: u32,
    /// Connects (connect4/6) allowed per second, burst of one second's worth; 0: unlimited.
    pub connects_per_s: u32,
    /// Egress bytes (whole packets, headers included) per second; 0: unlimited.
    pub bytes_per_s: u64,
    /// Wall-clock time the policy was last changed, in Unix milliseconds (for audit; the kernel
    /// never reads it).
    pub applied_unix_ms: u64,
    pub connect_bucket: TokenBucket,
    pub byte_bucket: TokenBucket,
}

impl ContainPolicy {
    /// Burst of the byte bucket, in bytes.
    pub const fn byte_burst(&self) -> u64 {
        if self.bytes_per_s > MIN_BYTE_BURST {
            self.bytes_per_s
        } else {
            MIN_BYTE_BURST
        }
    }
}

/// Value of the `DENIALS` map (key: cgroup v2 id): what containment refused, cumulative since the
/// row was created. Updated without atomics (counts are exact on one CPU, approximate under
/// concurrent refusals on several).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denials {
    /// connect4/6 refused (EPERM), for any reason.
    pub connects: u64,
    /// Of `connects`, refused by the connect token bucket.
    pub connects_rate_limited: u64,
    /// Unconnected UDP sends (sendmsg4/6) refused (EPERM).
    pub sends: u64,
    /// Egress packets dropped, for any reason.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Of `packets`, dropped by the byte token bucket.
    pub packets_rate_limited: u64,
}

const _: () = assert!(size_of::<TokenBucket>() == 16);
const _: () = assert!(size_of::<ContainPolicy>() == 56);
const _: () = assert!(size_of::<Denials>() == 48);
// The product the refill computes must fit: see `MAX_BYTES_PER_SEC`.
const _: () = assert!(MAX_BYTES_PER_SEC.checked_mul(NANOS_PER_SEC).is_some());
