//! Map names, limits and the values the daemon writes into kernel maps.

/// Value of the `MONITORED` map (key: cgroup v2 id). Only cgroups with an entry are observed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSlot {
    /// Index of the agent in the per-agent arrays (`SYSCALL_COUNTS`, `LOST`, see [`cpu_row`]);
    /// below `max_agents`.
    pub slot: u32,
    /// `SLOT_FLAG_*` bits.
    pub flags: u32,
}

/// Stream the per-thread syscall id sequence (costs a per-CPU buffer write per syscall).
pub const SLOT_FLAG_SYSCALL_STREAM: u32 = 1;

/// Syscall numbers at or above this are counted in the last bucket.
pub const SYSCALL_BUCKETS: u32 = 512;

/// Per-agent syscall counters of one CPU, indexed by syscall number.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRow(pub [u32; SYSCALL_BUCKETS as usize]);

/// Index of CPU `cpu`'s row of agent `slot` in the per-agent arrays (`SYSCALL_COUNTS`,
/// `LOST`): an agent's rows are side by side, `nr_cpus` (the possible CPUs) of them.
pub const fn cpu_row(slot: u32, cpu: u32, nr_cpus: u32) -> u32 {
    slot * nr_cpus + cpu
}

/// Default number of agent slots; the daemon may raise it at load time.
pub const DEFAULT_MAX_AGENTS: u32 = 1024;

/// Default ring buffer size (the daemon may change it at load time, config `ring_buffer_mib`):
/// about 3 times what 5 ms of a 4 M events/s burst of small records needs, 16 times the unread
/// data that forces a wakeup, and 13 ms of 1 M path events/s (320 bytes each). The reader maps
/// its pages once, so it shows once in the daemon's RSS (PERF-ANCHORS row 7: 25 MiB in all).
pub const RING_BUF_BYTES: u32 = 4 << 20;

/// Above this much unread data the kernel forces a consumer wakeup even for batched events.
pub const RING_BUF_WAKEUP_BYTES: u64 = 256 << 10;

/// Entries of `WAKE_KINDS` (index: event kind number; every kernel-made kind is below this).
pub const WAKE_KINDS_LEN: u32 = 64;
/// `WAKE_KINDS` value: events of this kind wake the reader at once (`BPF_RB_FORCE_WAKEUP`)
/// because a loaded rule can turn one into a rate-limit or a containment. Other kinds (value 0)
/// are batched and read at the consumer's next poll.
pub const WAKE_NOW: u32 = 1;

/// Per-flow byte counters in `FLOWS` (key: socket cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub cgroup_id: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u32,
    pub packets_in: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are `#[repr(C)]` plain-old-data with explicit padding fields, valid for any
    // bit pattern.
    unsafe impl aya::Pod for super::AgentSlot {}
    unsafe impl aya::Pod for crate::ContainPolicy {}
    unsafe impl aya::Pod for crate::Denials {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::SyscallRow {}
    unsafe impl aya::Pod for crate::EventHeader {}
    unsafe impl aya::Pod for crate::SyscallBatch {}
    unsafe impl aya::Pod for crate::SyscallCount {}
    unsafe impl aya::Pod for crate::ExecEvent {}
    unsafe impl aya::Pod for crate::ForkEvent {}
    unsafe impl aya::Pod for crate::ExitEvent {}
    unsafe impl aya::Pod for crate::PathEvent {}
    unsafe impl aya::Pod for crate::RenameEvent {}
    unsafe impl aya::Pod for crate::SockEvent {}
    unsafe impl aya::Pod for crate::DnsEvent {}
    unsafe impl aya::Pod for crate::FlowBytes {}
    unsafe impl aya::Pod for crate::LostEvent {}
    unsafe impl aya::Pod for crate::AgentRecord {}
}

const _: () = assert!(size_of::<AgentSlot>() == 8);
const _: () = assert!(size_of::<FlowCounters>() == 32);
// Every kind number indexes `WAKE_KINDS`; a new kind at or above its length needs a larger map.
const _: () = assert!((crate::event::kind::AGENT_REMOVED as u32) < WAKE_KINDS_LEN);
