//! Event kinds as a dense index, so that rules can be bucketed per kind in an array.

use crate::event::Body;

/// One per [`Body`] variant; the order is the bucket index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Syscalls,
    SyscallCount,
    Exec,
    Fork,
    Exit,
    Open,
    Unlink,
    Rename,
    Chmod,
    Chown,
    Connect,
    Accept,
    Bind,
    UdpSend,
    DnsQuery,
    FlowBytes,
    Lost,
    AgentAdded,
    AgentRemoved,
}

pub(crate) const KIND_COUNT: usize = 19;

pub(crate) const ALL_KINDS: [Kind; KIND_COUNT] = [
    Kind::Syscalls,
    Kind::SyscallCount,
    Kind::Exec,
    Kind::Fork,
    Kind::Exit,
    Kind::Open,
    Kind::Unlink,
    Kind::Rename,
    Kind::Chmod,
    Kind::Chown,
    Kind::Connect,
    Kind::Accept,
    Kind::Bind,
    Kind::UdpSend,
    Kind::DnsQuery,
    Kind::FlowBytes,
    Kind::Lost,
    Kind::AgentAdded,
    Kind::AgentRemoved,
];

impl Kind {
    pub fn of(body: &Body) -> Kind {
        match body {
            Body::Syscalls { .. } => Kind::Syscalls,
            Body::SyscallCount { .. } => Kind::SyscallCount,
            Body::Exec { .. } => Kind::Exec,
            Body::Fork { .. } => Kind::Fork,
            Body::Exit { .. } => Kind::Exit,
            Body::Open { .. } => Kind::Open,
            Body::Unlink { .. } => Kind::Unlink,
            Body::Rename { .. } => Kind::Rename,
            Body::Chmod { .. } => Kind::Chmod,
            Body::Chown { .. } => Kind::Chown,
            Body::Connect(_) => Kind::Connect,
            Body::Accept(_) => Kind::Accept,
            Body::Bind(_) => Kind::Bind,
            Body::UdpSend(_) => Kind::UdpSend,
            Body::DnsQuery { .. } => Kind::DnsQuery,
            Body::FlowBytes { .. } => Kind::FlowBytes,
            Body::Lost { .. } => Kind::Lost,
            Body::AgentAdded(_) => Kind::AgentAdded,
            Body::AgentRemoved(_) => Kind::AgentRemoved,
        }
    }

    /// The JSON kind name (same as [`Body::name`]).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Syscalls => "syscalls",
            Kind::SyscallCount => "syscall_count",
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Open => "open",
            Kind::Unlink => "unlink",
            Kind::Rename => "rename",
            Kind::Chmod => "chmod",
            Kind::Chown => "chown",
            Kind::Connect => "connect",
            Kind::Accept => "accept",
            Kind::Bind => "bind",
            Kind::UdpSend => "udp_send",
            Kind::DnsQuery => "dns_query",
            Kind::FlowBytes => "flow_bytes",
            Kind::Lost => "lost",
            Kind::AgentAdded => "agent_added",
            Kind::AgentRemoved => "agent_removed",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        ALL_KINDS.into_iter().find(|k| k.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind number of the records the kernel writes for this kind; None for the records the
    /// daemon makes itself (counters, flow bytes, losses, agent announcements).
    pub fn wire(self) -> Option<u16> {
        use agent_monitor_common::kind as k;
        Some(match self {
            Kind::Syscalls => k::SYSCALL_BATCH,
            Kind::Exec => k::EXEC,
            Kind::Fork => k::FORK,
            Kind::Exit => k::EXIT,
            Kind::Open => k::OPEN,
            Kind::Unlink => k::UNLINK,
            Kind::Rename => k::RENAME,
            Kind::Chmod => k::CHMOD,
            Kind::Chown => k::CHOWN,
            Kind::Connect => k::CONNECT,
            Kind::Accept => k::ACCEPT,
            Kind::Bind => k::BIND,
            Kind::UdpSend => k::UDP_SEND,
            Kind::DnsQuery => k::DNS_QUERY,
            Kind::SyscallCount
            | Kind::FlowBytes
            | Kind::Lost
            | Kind::AgentAdded
            | Kind::AgentRemoved => return None,
        })
    }
}
