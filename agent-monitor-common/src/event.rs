//! Events as the kernel writes them into the ring buffer and as trace files store them.
//!
//! Every record starts with [`EventHeader`]; its `kind` selects the struct that follows. Records
//! whose kind is marked "synthesized" are built by the daemon from map snapshots (counters, flow
//! bytes, lost events) in the same layout, so that recording and replay cover them too.

/// Longest path or file name kept per event, NUL included; longer ones are cut and flagged.
pub const PATH_LEN: usize = 256;
/// Bytes kept of an exec's argument vector (NUL-separated arguments).
pub const ARGV_LEN: usize = 256;
/// Arguments read per exec.
pub const ARGV_MAX: usize = 8;
/// Syscall ids carried by one [`SyscallBatch`].
pub const SYSCALL_BATCH_LEN: usize = 64;
/// Bytes of a DNS question kept (wire-format labels).
pub const DNS_QUERY_LEN: usize = 128;

/// Stable event kind numbers. Never renumber: recorded traces store them.
pub mod kind {
    /// Per-thread syscall id sequence, batched (kernel).
    pub const SYSCALL_BATCH: u16 = 1;
    /// Per-agent syscall counter delta (synthesized from the per-CPU counters).
    pub const SYSCALL_COUNT: u16 = 2;
    pub const EXEC: u16 = 10;
    pub const FORK: u16 = 11;
    pub const EXIT: u16 = 12;
    pub const OPEN: u16 = 20;
    pub const UNLINK: u16 = 21;
    pub const RENAME: u16 = 22;
    pub const CHMOD: u16 = 23;
    pub const CHOWN: u16 = 24;
    pub const CONNECT: u16 = 30;
    pub const ACCEPT: u16 = 31;
    pub const BIND: u16 = 32;
    pub const UDP_SEND: u16 = 33;
    pub const DNS_QUERY: u16 = 34;
    /// Per-flow byte counter delta (synthesized from the `FLOWS` map).
    pub const FLOW_BYTES: u16 = 35;
    /// Events the kernel could not deliver (synthesized from the per-CPU `LOST` counters).
    pub const LOST: u16 = 50;
    /// A cgroup became a monitored agent (synthesized by the agent registry).
    pub const AGENT_ADDED: u16 = 60;
    /// A monitored agent's cgroup went away or was removed from the configuration (synthesized).
    pub const AGENT_REMOVED: u16 = 61;
}

/// `EventHeader::flags`: a string field was longer than its buffer and was cut.
pub const HDR_FLAG_TRUNCATED: u16 = 1;
/// `EventHeader::flags` of an exit: the process left without an exit syscall (killed by a signal),
/// so `exit_code` is unknown.
pub const HDR_FLAG_NO_EXIT_CODE: u16 = 2;

/// Common prefix of every record (32 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub flags: u16,
    /// Agent slot the cgroup was mapped to when the event happened.
    pub slot: u32,
    /// `bpf_ktime_get_boot_ns()`: monotonic including suspend.
    pub ts_ns: u64,
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// `kind::SYSCALL_BATCH`: up to [`SYSCALL_BATCH_LEN`] consecutive syscall ids of one thread;
/// `header.ts_ns` is the time of the first one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallBatch {
    pub header: EventHeader,
    pub count: u32,
    pub _pad: u32,
    pub ids: [u16; SYSCALL_BATCH_LEN],
}

/// `kind::SYSCALL_COUNT` (synthesized): syscalls of one agent since the previous snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallCount {
    pub header: EventHeader,
    pub nr: u32,
    pub _pad: u32,
    pub count: u64,
}

/// `kind::EXEC`: an execve/execveat, reported when it returns (`ret` 0 on success).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ret: i64,
    pub uid: u32,
    pub gid: u32,
    /// Arguments read (at most [`ARGV_MAX`]).
    pub argc: u32,
    /// Bytes used in `argv`.
    pub argv_len: u32,
    pub filename: [u8; PATH_LEN],
    pub argv: [u8; ARGV_LEN],
}

/// `kind::FORK`: fork, vfork, clone or clone3, reported in the parent when it returns; the header
/// names the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    /// The child's thread id, or a negative errno.
    pub ret: i64,
    /// Clone flags (`CLONE_THREAD` set: a new thread, not a new process).
    pub clone_flags: u64,
}

/// `kind::EXIT`: a process (thread group leader) ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The code given to exit/exit_group (see `HDR_FLAG_NO_EXIT_CODE`).
    pub exit_code: i32,
    pub _pad: u32,
}

/// `kind::OPEN`, `UNLINK`, `CHMOD`, `CHOWN`: a path operation, reported when it returns.
///
/// `arg0`/`arg1`: open flags/mode; unlinkat flags; chmod mode; chown uid/gid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathEvent {
    pub header: EventHeader,
    pub ret: i64,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100 for plain calls).
    pub dirfd: i32,
    pub arg0: u32,
    pub arg1: u32,
    pub _pad: u32,
    pub path: [u8; PATH_LEN],
}

/// `kind::RENAME`: rename/renameat/renameat2, reported when it returns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RenameEvent {
    pub header: EventHeader,
    pub ret: i64,
    pub old_path: [u8; PATH_LEN],
    pub new_path: [u8; PATH_LEN],
}

/// `kind::CONNECT`, `ACCEPT`, `BIND`, `UDP_SEND`: a socket operation with its peer (or local, for
/// bind) address. Connect, accept and bind are reported when the syscall returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockEvent {
    pub header: EventHeader,
    pub ret: i64,
    /// Socket cookie: joins this event with `FLOW_BYTES` and `DNS_QUERY` of the same socket.
    pub cookie: u64,
    /// `AF_INET` (2) or `AF_INET6` (10); 0 when the address was not available.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2), ...
    pub sock_type: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub addr: [u8; 16],
}

/// `kind::DNS_QUERY`: the question of a DNS query sent to port 53. The sending task is not known
/// at the packet hook (`tgid`/`tid` are 0); `cookie` joins it to the socket's connect or send.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    pub header: EventHeader,
    pub cookie: u64,
    pub family: u16,
    pub port: u16,
    /// Bytes used in `query`.
    pub query_len: u16,
    pub _pad: u16,
    pub addr: [u8; 16],
    /// Question section in DNS wire format (length-prefixed labels).
    pub query: [u8; DNS_QUERY_LEN],
}

/// `kind::FLOW_BYTES` (synthesized): bytes and packets of one socket since the previous snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowBytes {
    pub header: EventHeader,
    pub cookie: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u32,
    pub packets_in: u32,
}

/// `kind::LOST` (synthesized): events of one agent the kernel dropped on one CPU since the previous
/// snapshot because the ring buffer was full. `header.slot` names the agent (`u32::MAX`: unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LostEvent {
    pub header: EventHeader,
    pub cpu: u32,
    pub _pad: u32,
    pub count: u64,
}

/// Bytes kept of an agent id and of an agent class name.
pub const AGENT_ID_LEN: usize = 64;
pub const AGENT_CLASS_LEN: usize = 32;

/// `kind::AGENT_ADDED`, `AGENT_REMOVED` (synthesized): the identity behind `header.cgroup_id` and
/// `header.slot`. Carried in the event stream so that a replay attributes events exactly as the
/// live run did.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AgentRecord {
    pub header: EventHeader,
    pub id: [u8; AGENT_ID_LEN],
    pub class: [u8; AGENT_CLASS_LEN],
    /// cgroup path relative to the cgroup v2 mount.
    pub cgroup_path: [u8; PATH_LEN],
}

/// Largest record any kind produces; bounds the kernel's scratch buffers.
pub const MAX_EVENT_LEN: usize = size_of::<ExecEvent>();

const _: () = assert!(size_of::<EventHeader>() == 32);
const _: () = assert!(size_of::<SyscallBatch>() == 40 + 2 * SYSCALL_BATCH_LEN);
const _: () = assert!(size_of::<SyscallCount>() == 48);
const _: () = assert!(size_of::<ExecEvent>() == 56 + PATH_LEN + ARGV_LEN);
const _: () = assert!(size_of::<ForkEvent>() == 48);
const _: () = assert!(size_of::<ExitEvent>() == 40);
const _: () = assert!(size_of::<PathEvent>() == 56 + PATH_LEN);
const _: () = assert!(size_of::<RenameEvent>() == 40 + 2 * PATH_LEN);
const _: () = assert!(size_of::<SockEvent>() == 72);
const _: () = assert!(size_of::<DnsEvent>() == 64 + DNS_QUERY_LEN);
const _: () = assert!(size_of::<FlowBytes>() == 64);
const _: () = assert!(size_of::<LostEvent>() == 48);
const _: () = assert!(size_of::<AgentRecord>() == 32 + AGENT_ID_LEN + AGENT_CLASS_LEN + PATH_LEN);
const _: () = assert!(size_of::<RenameEvent>() <= MAX_EVENT_LEN);

/// Size of the record of `kind`, or `None` for a kind this version does not know.
pub const fn record_len(kind: u16) -> Option<usize> {
    Some(match kind {
        kind::SYSCALL_BATCH => size_of::<SyscallBatch>(),
        kind::SYSCALL_COUNT => size_of::<SyscallCount>(),
        kind::EXEC => size_of::<ExecEvent>(),
        kind::FORK => size_of::<ForkEvent>(),
        kind::EXIT => size_of::<ExitEvent>(),
        kind::OPEN | kind::UNLINK | kind::CHMOD | kind::CHOWN => size_of::<PathEvent>(),
        kind::RENAME => size_of::<RenameEvent>(),
        kind::CONNECT | kind::ACCEPT | kind::BIND | kind::UDP_SEND => size_of::<SockEvent>(),
        kind::DNS_QUERY => size_of::<DnsEvent>(),
        kind::FLOW_BYTES => size_of::<FlowBytes>(),
        kind::LOST => size_of::<LostEvent>(),
        kind::AGENT_ADDED | kind::AGENT_REMOVED => size_of::<AgentRecord>(),
        _ => return None,
    })
}
