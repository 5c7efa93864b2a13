//! Typed events: what the pipeline, detectors and JSON output work with.

mod decode;
pub mod wire;

use std::{net::IpAddr, sync::Arc};

use serde::{Deserialize, Serialize};

pub use decode::{DecodeError, Decoder, decode, syscall_name};

/// Who an event belongs to: one shared allocation, so that attributing an event costs a single
/// reference-count increment. Reads as its [`AgentIds`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentRef(Arc<AgentIds>);

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIds {
    pub id: Arc<str>,
    pub class: Arc<str>,
}

impl AgentRef {
    pub fn new(id: Arc<str>, class: Arc<str>) -> Self {
        Self(Arc::new(AgentIds { id, class }))
    }

    /// The same reference (not merely equal names).
    pub fn same(&self, other: &AgentRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for AgentRef {
    type Target = AgentIds;

    fn deref(&self) -> &AgentIds {
        &self.0
    }
}

/// One decoded event. Serialised as one JSON object per line, the body's fields inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Boot-time nanoseconds.
    pub ts_ns: u64,
    /// Stable numeric kind (see `agent_monitor_common::kind`).
    pub kind_id: u16,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// `None` only for an agent the identity stage does not know: itself worth a look.
    pub agent: Option<AgentRef>,
    /// A path, argument or name was longer than its kernel buffer and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(flatten)]
    pub body: Body,
}

impl Event {
    /// An empty event for a [`Decoder`] to decode into.
    pub fn blank() -> Event {
        Event {
            ts_ns: 0,
            kind_id: 0,
            cgroup_id: 0,
            pid: 0,
            tid: 0,
            agent: None,
            truncated: false,
            body: Body::Exit { code: None },
        }
    }
}

/// A network endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// Kind-specific fields; `kind` is the snake_case name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Syscalls {
        ids: Vec<u16>,
    },
    SyscallCount {
        nr: u32,
        name: Option<String>,
        count: u64,
    },
    Exec {
        filename: String,
        argv: Vec<String>,
        uid: u32,
        gid: u32,
        ret: i64,
    },
    Fork {
        child: i64,
        thread: bool,
        clone_flags: u64,
    },
    Exit {
        /// `None`: the process was killed by a signal.
        code: Option<i32>,
    },
    Open {
        path: String,
        dirfd: i32,
        flags: u32,
        mode: u32,
        ret: i64,
    },
    Unlink {
        path: String,
        dirfd: i32,
        flags: u32,
        ret: i64,
    },
    Rename {
        old_path: String,
        new_path: String,
        ret: i64,
    },
    Chmod {
        path: String,
        dirfd: i32,
        mode: u32,
        ret: i64,
    },
    Chown {
        path: String,
        dirfd: i32,
        uid: u32,
        gid: u32,
        ret: i64,
    },
    Connect(SockBody),
    Accept(SockBody),
    Bind(SockBody),
    UdpSend(SockBody),
    DnsQuery {
        name: String,
        server: Endpoint,
        cookie: u64,
    },
    FlowBytes {
        cookie: u64,
        bytes_out: u64,
        bytes_in: u64,
        packets_out: u32,
        packets_in: u32,
    },
    Lost {
        cpu: u32,
        count: u64,
    },
    AgentAdded(AgentBody),
    AgentRemoved(AgentBody),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockBody {
    #[serde(flatten)]
    pub peer: Endpoint,
    pub family: u16,
    pub sock_type: u16,
    pub cookie: u64,
    pub ret: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBody {
    pub id: String,
    pub class: String,
    pub cgroup_path: String,
    pub slot: u32,
}

impl Body {
    /// The snake_case kind name used in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Syscalls { .. } => "syscalls",
            Body::SyscallCount { .. } => "syscall_count",
            Body::Exec { .. } => "exec",
            Body::Fork { .. } => "fork",
            Body::Exit { .. } => "exit",
            Body::Open { .. } => "open",
            Body::Unlink { .. } => "unlink",
            Body::Rename { .. } => "rename",
            Body::Chmod { .. } => "chmod",
            Body::Chown { .. } => "chown",
            Body::Connect(_) => "connect",
            Body::Accept(_) => "accept",
            Body::Bind(_) => "bind",
            Body::UdpSend(_) => "udp_send",
            Body::DnsQuery { .. } => "dns_query",
            Body::FlowBytes { .. } => "flow_bytes",
            Body::Lost { .. } => "lost",
            Body::AgentAdded(_) => "agent_added",
            Body::AgentRemoved(_) => "agent_removed",
        }
    }
}
