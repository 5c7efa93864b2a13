//! Sending records to userspace, with loss accounting and batched wakeups.

use agent_monitor_common::{EventHeader, RING_BUF_WAKEUP_BYTES};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_boot_ns,
};

use crate::{
    filter::Current,
    maps::{EVENTS, LOST},
};

/// Whether the consumer must be woken now. Bulk telemetry (syscall batches, file events) waits for
/// the consumer's periodic poll; events that can change a decision (process and network) wake it.
#[derive(Clone, Copy)]
pub enum Wake {
    Batched,
    Now,
}

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

/// Copies `event` into the ring buffer; a full buffer counts a loss for `slot` on this CPU.
#[inline(always)]
pub fn output<T>(event: &T, slot: u32, wake: Wake) {
    let flags = match wake {
        Wake::Now => BPF_RB_FORCE_WAKEUP,
        Wake::Batched if EVENTS.query(BPF_RB_AVAIL_DATA.into()) > RING_BUF_WAKEUP_BYTES => {
            BPF_RB_FORCE_WAKEUP
        }
        Wake::Batched => BPF_RB_NO_WAKEUP,
    };
    if EVENTS.output::<T>(event, flags.into()).is_err() {
        count_lost(slot);
    }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(lost) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *lost += 1 };
    }
}
