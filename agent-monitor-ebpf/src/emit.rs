//! Sending records to userspace, with loss accounting and batched wakeups.

use agent_monitor_common::{EventHeader, RING_BUF_WAKEUP_BYTES, WAKE_NOW};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_boot_ns,
};

use crate::{
    filter::Current,
    maps::{EVENTS, LOST, WAKE_KINDS, cpu_row},
};

/// Fills a header for the current task.
#[inline(always)]
pub fn header(kind: u16, cur: &Current) -> EventHeader {
    EventHeader {
        kind,
        flags: 0,
        slot: cur.agent.slot,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: cur.cgroup_id,
        tgid: cur.tgid(),
        tid: cur.tid(),
    }
}

/// Copies `event` (of kind `kind`) into the ring buffer; a full buffer counts a loss for `slot`
/// on this CPU.
///
/// Only events that can change a decision wake the consumer at once: the kinds the daemon marked
/// in `WAKE_KINDS` because a loaded rule at the rate-limit or containment tier (or one that can
/// escalate there) reads them. Everything else is batched: it waits for the consumer's periodic
/// poll, or wakes it once `RING_BUF_WAKEUP_BYTES` are waiting. A forced wakeup costs the
/// producer a few hundred nanoseconds; a batched event costs up to one poll interval of latency.
#[inline(always)]
pub fn output<T>(event: &T, slot: u32, kind: u16) {
    let urgent = WAKE_KINDS
        .get(u32::from(kind))
        .is_some_and(|w| *w == WAKE_NOW);
    let flags = if urgent || EVENTS.query(BPF_RB_AVAIL_DATA.into()) > RING_BUF_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<T>(event, flags.into()).is_err() {
        count_lost(slot);
    }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(lost) = LOST.get_ptr_mut(cpu_row(slot)) {
        // SAFETY: this CPU's row, no concurrent writer (programs are not preempted here).
        unsafe { *lost += 1 };
    }
}
