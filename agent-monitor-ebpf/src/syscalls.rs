//! The hottest path: every syscall entry on the machine.
//!
//! Unmonitored tasks pay the cgroup id helper and one hash lookup. Monitored ones add a per-CPU
//! counter increment and, when their class asks for sequences, a write into the per-CPU batch
//! that goes to the ring buffer once every `SYSCALL_BATCH_LEN` syscalls, or earlier when its
//! thread leaves the CPU (`sched_switch`).

use agent_monitor_common::{
    SLOT_FLAG_SYSCALL_STREAM, SYSCALL_BATCH_LEN, SYSCALL_BUCKETS, SyscallBatch, kind,
};
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    emit,
    filter::{self, Current},
    maps::{STREAM, SYSCALL_COUNTS, cpu_row},
};

/// Preferred hook (tp_btf, the cheapest per-syscall hook).
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    // sys_enter(struct pt_regs *regs, long id)
    on_sys_enter(ctx.arg(1))
}

/// Fallback when tp_btf cannot be loaded (raw_tp, same arguments).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(ctx: RawTracePointContext) -> i32 {
    on_sys_enter(ctx.arg(1))
}

/// A thread's unsent ids leave the CPU with it. Otherwise a thread that migrates starts a new
/// batch on its new CPU while its older ids wait here, and appends to this stale batch when it
/// comes back: its ids would reach userspace out of order, and the sequence models would see
/// syscall n-grams the thread never made (on an idle machine, where one agent's thread hops
/// between CPUs, about 1% of its 6-grams).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(_ctx: BtfTracePointContext) -> i32 {
    on_sched_switch()
}

/// Fallback when tp_btf cannot be loaded (raw_tp).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch_raw(_ctx: RawTracePointContext) -> i32 {
    on_sched_switch()
}

#[inline(always)]
fn on_sched_switch() -> i32 {
    // Every context switch on the machine passes here: one per-CPU lookup and a compare when
    // no monitored thread ran since the last switch. The batch can only belong to the thread
    // being switched out, since any other thread's batch went out at its own switch.
    if let Some(batch) = STREAM.get_ptr_mut(0) {
        // SAFETY: per-CPU buffer, see `push_stream`; sched_switch runs with preemption off.
        flush_stream(unsafe { &mut *batch });
    }
    0
}

#[inline(always)]
fn on_sys_enter(nr: i64) -> i32 {
    let Some(cur) = filter::current_agent() else {
        return 0;
    };
    let bucket = if (0..SYSCALL_BUCKETS as i64).contains(&nr) {
        nr as u32
    } else {
        SYSCALL_BUCKETS - 1
    };
    if let Some(row) = SYSCALL_COUNTS.get_ptr_mut(cpu_row(cur.agent.slot)) {
        // SAFETY: this CPU's row, no concurrent writer (programs are not preempted here).
        // `get_mut` rather than indexing: a panic path would leave the verifier a program that
        // does not end in exit.
        if let Some(counter) = unsafe { (*row).0.get_mut(bucket as usize) } {
            *counter = counter.wrapping_add(1);
        }
    }
    if cur.agent.flags & SLOT_FLAG_SYSCALL_STREAM != 0 {
        push_stream(&cur, bucket as u16);
    }
    0
}

#[inline(always)]
fn push_stream(cur: &Current, nr: u16) {
    let Some(batch) = STREAM.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU buffer; a program runs to completion on its CPU without preemption by
    // another program instance on the same CPU for this hook.
    let batch = unsafe { &mut *batch };
    if batch.count != 0 && batch.header.tid != cur.tid() {
        flush_stream(batch);
    }
    if batch.count == 0 {
        batch.header = emit::header(kind::SYSCALL_BATCH, cur);
    }
    if let Some(id) = batch.ids.get_mut(batch.count as usize) {
        *id = nr;
        batch.count += 1;
    }
    if batch.count as usize >= SYSCALL_BATCH_LEN {
        flush_stream(batch);
    }
}

/// Sends the batch (if any) and empties it.
#[inline(always)]
pub fn flush_stream(batch: &mut SyscallBatch) {
    if batch.count != 0 {
        emit::output(batch, batch.header.slot, kind::SYSCALL_BATCH);
        batch.count = 0;
    }
}

/// Flushes this CPU's batch if it belongs to thread `tid` (called when the thread exits).
#[inline(always)]
pub fn flush_stream_of(tid: u32) {
    if let Some(batch) = STREAM.get_ptr_mut(0) {
        // SAFETY: per-CPU buffer, see `push_stream`.
        let batch = unsafe { &mut *batch };
        if batch.header.tid == tid {
            flush_stream(batch);
        }
    }
}
