//! Kernel maps. Sizes marked "set at load" are overridden by the daemon from its configuration.

use agent_monitor_common::{
    AgentSlot, DEFAULT_MAX_AGENTS, FlowCounters, MAX_EVENT_LEN, RING_BUF_BYTES, SyscallBatch,
    SyscallRow, WAKE_KINDS_LEN,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// cgroup v2 id -> agent slot. Written by the daemon's agent registry.
#[map]
pub static MONITORED: HashMap<u64, AgentSlot> = HashMap::with_max_entries(DEFAULT_MAX_AGENTS, 0);

/// Per-CPU syscall counters, index slot (set at load).
#[map]
pub static SYSCALL_COUNTS: PerCpuArray<SyscallRow> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_AGENTS, 0);

/// Per-CPU count of events the ring buffer refused, index slot (set at load).
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(DEFAULT_MAX_AGENTS, 0);

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
