//! Kernel maps. Sizes marked "set at load" are overridden by the daemon from its configuration.

use agent_monitor_common::{
    AgentSlot, DEFAULT_MAX_AGENTS, FlowCounters, MAX_EVENT_LEN, RING_BUF_BYTES, SyscallBatch,
    SyscallRow, WAKE_KINDS_LEN,
};
use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// cgroup v2 id -> agent slot. Written by the daemon's agent registry.
#[map]
pub static MONITORED: HashMap<u64, AgentSlot> = HashMap::with_max_entries(DEFAULT_MAX_AGENTS, 0);

/// Syscall counters, one row per agent slot and CPU at [`cpu_row`] (size set at load).
///
/// A plain array rather than a per-CPU one: the kernel makes a per-CPU array with one per-CPU
/// allocation per entry, 30 ms for 10,000 agents, against 10 ms for one area of the same size
/// (PERF-ANCHORS row 8). Each row is a whole number of cache lines, so CPUs never share one.
#[map]
pub static SYSCALL_COUNTS: Array<SyscallRow> = Array::with_max_entries(DEFAULT_MAX_AGENTS, 0);

/// Count of events the ring buffer refused, one per agent slot and CPU at [`cpu_row`] (size set
/// at load).
#[map]
pub static LOST: Array<u64> = Array::with_max_entries(DEFAULT_MAX_AGENTS, 0);

/// Possible CPUs of the machine, set at load (see [`cpu_row`]).
#[unsafe(no_mangle)]
static NR_CPUS: u32 = 1;

/// Index of this CPU's row of agent `slot` in the per-agent arrays.
#[inline(always)]
pub fn cpu_row(slot: u32) -> u32 {
    // SAFETY: a read-only global patched at load time; the helper has no arguments.
    let (nr_cpus, cpu) = unsafe {
        (
            core::ptr::read_volatile(&NR_CPUS),
            bpf_get_smp_processor_id(),
        )
    };
    agent_monitor_common::cpu_row(slot, cpu, nr_cpus)
}

/// All events to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUF_BYTES, 0);

/// Event kind -> `WAKE_NOW` when an event of that kind must wake the reader at once (a loaded
/// rule can turn it into a rate-limit or containment). Written by the daemon from its rules.
#[map]
pub static WAKE_KINDS: Array<u32> = Array::with_max_entries(WAKE_KINDS_LEN, 0);

/// The syscall batch being filled on this CPU.
#[map]
pub static STREAM: PerCpuArray<SyscallBatch> = PerCpuArray::with_max_entries(1, 0);

/// An event started at syscall entry, finished and sent at syscall exit.
#[repr(C)]
pub struct Pending {
    /// Syscall number the exit must match (guards against a stale entry).
    pub nr: i32,
    pub _pad: u32,
    /// User memory to read at exit, or 0: accept's peer address, or a path (a rename's old
    /// path) that could not be read at entry.
    pub user_ptr: u64,
    /// A rename's new path that could not be read at entry, or 0.
    pub user_ptr2: u64,
    pub data: [u8; MAX_EVENT_LEN],
}

/// Pending events by pid_tgid. LRU: a syscall that never returns (exit) cannot leak an entry.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU scratch where an event is built (the BPF stack is only 512 bytes).
#[map]
pub static SCRATCH: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// tgid -> code given to exit_group/exit, read when the process exits.
#[map]
pub static EXIT_CODES: LruHashMap<u32, i32> = LruHashMap::with_max_entries(16384, 0);

/// Socket cookie -> byte counters of monitored flows.
#[map]
pub static FLOWS: LruHashMap<u64, FlowCounters> = LruHashMap::with_max_entries(65536, 0);
