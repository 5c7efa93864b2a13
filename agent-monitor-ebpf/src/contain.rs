//! Containment verdicts for the socket hooks: one `CONTAINMENT` lookup by cgroup id; a miss (the
//! cgroup is not contained) allows at once.

use agent_monitor_common::{
    CONTAIN_DENY_ALL, CONTAIN_RATE_LIMIT, ContainPolicy, Denials, MAX_CONTAINED, MAX_DENIAL_ROWS,
};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, LruHashMap},
};

/// cgroup v2 id -> containment policy. Written by the daemon or `agent-monitor contain`; pinned
/// so that it outlives the daemon.
#[map]
pub static CONTAINMENT: HashMap<u64, ContainPolicy> = HashMap::with_max_entries(MAX_CONTAINED, 0);

/// cgroup v2 id -> what containment refused.
#[map]
pub static DENIALS: LruHashMap<u64, Denials> = LruHashMap::with_max_entries(MAX_DENIAL_ROWS, 0);

/// Return values of the hooks: allow, or refuse (connect/sendmsg fail with EPERM, egress drops).
pub const ALLOW: i32 = 1;
pub const REFUSE: i32 = 0;

/// connect4/6: deny-all, or the connect token bucket.
#[inline(always)]
pub fn connect(cgroup_id: u64) -> i32 {
    let Some(p) = CONTAINMENT.get_ptr_mut(&cgroup_id) else {
        return ALLOW;
    };
    // SAFETY: a map value pointer valid for this program run.
    let p = unsafe { &mut *p };
    if p.flags & CONTAIN_DENY_ALL != 0 {
        count(cgroup_id, |d| d.connects += 1);
        return REFUSE;
    }
    if p.flags & CONTAIN_RATE_LIMIT != 0 && p.connects_per_s != 0 {
        let rate = u64::from(p.connects_per_s);
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        if !p.connect_bucket.take(now, rate, rate, 1) {
            count(cgroup_id, |d| {
                d.connects += 1;
                d.connects_rate_limited += 1;
            });
            return REFUSE;
        }
    }
    ALLOW
}

/// sendmsg4/6 (unconnected UDP): deny-all only; the bytes are limited at egress.
#[inline(always)]
pub fn send(cgroup_id: u64) -> i32 {
    // SAFETY: the flags are copied out at once.
    let Some(p) = (unsafe { CONTAINMENT.get(&cgroup_id) }) else {
        return ALLOW;
    };
    if p.flags & CONTAIN_DENY_ALL != 0 {
        count(cgroup_id, |d| d.sends += 1);
        return REFUSE;
    }
    ALLOW
}

/// cgroup_skb/egress: deny-all drops every packet; the byte bucket drops what exceeds the rate.
#[inline(always)]
pub fn egress(cgroup_id: u64, len: u64) -> i32 {
    let Some(p) = CONTAINMENT.get_ptr_mut(&cgroup_id) else {
        return ALLOW;
    };
    // SAFETY: a map value pointer valid for this program run.
    let p = unsafe { &mut *p };
    if p.flags & CONTAIN_DENY_ALL != 0 {
        count(cgroup_id, |d| {
            d.packets += 1;
            d.bytes += len;
        });
        return REFUSE;
    }
    if p.flags & CONTAIN_RATE_LIMIT != 0 && p.bytes_per_s != 0 {
        let (rate, burst) = (p.bytes_per_s, p.byte_burst());
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        if !p.byte_bucket.take(now, rate, burst, len) {
            count(cgroup_id, |d| {
                d.packets += 1;
                d.bytes += len;
                d.packets_rate_limited += 1;
            });
            return REFUSE;
        }
    }
    ALLOW
}

#[inline(always)]
fn count(cgroup_id: u64, f: impl FnOnce(&mut Denials)) {
    if let Some(d) = DENIALS.get_ptr_mut(&cgroup_id) {
        // SAFETY: a map value pointer valid for this program run.
        f(unsafe { &mut *d });
        return;
    }
    let mut d = Denials::default();
    f(&mut d);
    let _ = DENIALS.insert(&cgroup_id, &d, 0);
}
