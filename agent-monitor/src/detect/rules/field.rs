//! Event fields that conditions, rates and summaries can name, and how to read them from an
//! event without allocating.

use std::{
    fmt,
    hash::{Hash, Hasher},
    net::IpAddr,
};

use super::kind::Kind;
use crate::event::{Body, Event};

/// What a field holds; decides which operators apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldType {
    Str,
    Int,
    Bool,
    Addr,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Int => "number",
            FieldType::Bool => "boolean",
            FieldType::Addr => "address",
        }
    }
}

macro_rules! fields {
    ($($variant:ident = $name:literal : $ty:ident),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Field { $($variant),* }

        const FIELD_TABLE: &[(Field, &str, FieldType)] = &[$((Field::$variant, $name, FieldType::$ty)),*];
    };
}

fields! {
    // Every kind.
    Kind = "kind": Str,
    Agent = "agent": Str,
    Class = "class": Str,
    Pid = "pid": Int,
    Tid = "tid": Int,
    CgroupId = "cgroup_id": Int,
    Truncated = "truncated": Bool,
    // exec
    Filename = "filename": Str,
    Exe = "exe": Str,
    Argv = "argv": Str,
    Uid = "uid": Int,
    Gid = "gid": Int,
    Ret = "ret": Int,
    // fork, exit
    Child = "child": Int,
    Thread = "thread": Bool,
    CloneFlags = "clone_flags": Int,
    Code = "code": Int,
    // files
    Path = "path": Str,
    Dirfd = "dirfd": Int,
    Flags = "flags": Int,
    Mode = "mode": Int,
    Access = "access": Str,
    OldPath = "old_path": Str,
    NewPath = "new_path": Str,
    // sockets, DNS, flows
    Addr = "addr": Addr,
    Port = "port": Int,
    Family = "family": Int,
    SockType = "sock_type": Int,
    Cookie = "cookie": Int,
    Name = "name": Str,
    ServerAddr = "server_addr": Addr,
    ServerPort = "server_port": Int,
    BytesOut = "bytes_out": Int,
    BytesIn = "bytes_in": Int,
    PacketsOut = "packets_out": Int,
    PacketsIn = "packets_in": Int,
    // counters, loss, agents
    Ids = "ids": Int,
    Nr = "nr": Int,
    Count = "count": Int,
    Cpu = "cpu": Int,
    CgroupPath = "cgroup_path": Str,
    Slot = "slot": Int,
}

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        FIELD_TABLE
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, _)| *f)
    }

    pub fn name(self) -> &'static str {
        FIELD_TABLE
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("?", |(_, n, _)| n)
    }

    pub fn ty(self) -> FieldType {
        FIELD_TABLE
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or(FieldType::Str, |(_, _, t)| *t)
    }

    /// Whether events of `kind` carry this field.
    pub fn available(self, kind: Kind) -> bool {
        use Field as F;
        use Kind as K;
        match self {
            F::Kind | F::Agent | F::Class | F::Pid | F::Tid | F::CgroupId | F::Truncated => true,
            F::Filename | F::Exe | F::Argv => kind == K::Exec,
            F::Uid | F::Gid => matches!(kind, K::Exec | K::Chown),
            F::Ret => matches!(
                kind,
                K::Exec
                    | K::Open
                    | K::Unlink
                    | K::Rename
                    | K::Chmod
                    | K::Chown
                    | K::Connect
                    | K::Accept
                    | K::Bind
                    | K::UdpSend
            ),
            F::Child | F::Thread | F::CloneFlags => kind == K::Fork,
            F::Code => kind == K::Exit,
            F::Path | F::Dirfd => matches!(kind, K::Open | K::Unlink | K::Chmod | K::Chown),
            F::Flags => matches!(kind, K::Open | K::Unlink),
            F::Mode => matches!(kind, K::Open | K::Chmod),
            F::Access => kind == K::Open,
            F::OldPath | F::NewPath => kind == K::Rename,
            F::Addr | F::Port | F::Family | F::SockType => is_sock(kind),
            F::Cookie => is_sock(kind) || matches!(kind, K::DnsQuery | K::FlowBytes),
            F::Name => matches!(kind, K::DnsQuery | K::SyscallCount),
            F::ServerAddr | F::ServerPort => kind == K::DnsQuery,
            F::BytesOut | F::BytesIn | F::PacketsOut | F::PacketsIn => kind == K::FlowBytes,
            F::Ids => kind == K::Syscalls,
            F::Nr => kind == K::SyscallCount,
            F::Count => matches!(kind, K::SyscallCount | K::Lost),
            F::Cpu => kind == K::Lost,
            F::CgroupPath | F::Slot => matches!(kind, K::AgentAdded | K::AgentRemoved),
        }
    }

    /// All field names, for error messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FIELD_TABLE.iter().map(|(_, n, _)| *n)
    }
}

fn is_sock(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Connect | Kind::Accept | Kind::Bind | Kind::UdpSend
    )
}

/// One field's value in one event, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Int(i128),
    Bool(bool),
    Addr(IpAddr),
    StrList(&'a [String]),
    IntList(&'a [u16]),
    /// Optional field not present in this event (no peer address, killed by a signal, ...).
    Missing,
}

/// The event plus the identity the engine settled on (events without an agent get
/// "unidentified").
pub(crate) struct Ctx<'a> {
    pub event: &'a Event,
    pub agent: &'a str,
    pub class: &'a str,
}

impl<'a> Ctx<'a> {
    pub fn get(&self, field: Field) -> Value<'a> {
        use Field as F;
        let ev = self.event;
        let int = |v: i128| Value::Int(v);
        match field {
            F::Kind => return Value::Str(ev.body.name()),
            F::Agent => return Value::Str(self.agent),
            F::Class => return Value::Str(self.class),
            F::Pid => return int(ev.pid.into()),
            F::Tid => return int(ev.tid.into()),
            F::CgroupId => return int(ev.cgroup_id.into()),
            F::Truncated => return Value::Bool(ev.truncated),
            _ => {}
        }
        match (&ev.body, field) {
            (Body::Exec { filename, .. }, F::Filename) => Value::Str(filename),
            (Body::Exec { filename, .. }, F::Exe) => {
                Value::Str(filename.rsplit('/').next().unwrap_or(filename))
            }
            (Body::Exec { argv, .. }, F::Argv) => Value::StrList(argv),
            (Body::Exec { uid, .. } | Body::Chown { uid, .. }, F::Uid) => int((*uid).into()),
            (Body::Exec { gid, .. } | Body::Chown { gid, .. }, F::Gid) => int((*gid).into()),
            (
                Body::Exec { ret, .. }
                | Body::Open { ret, .. }
                | Body::Unlink { ret, .. }
                | Body::Rename { ret, .. }
                | Body::Chmod { ret, .. }
                | Body::Chown { ret, .. },
                F::Ret,
            ) => int((*ret).into()),
            (Body::Fork { child, .. }, F::Child) => int((*child).into()),
            (Body::Fork { thread, .. }, F::Thread) => Value::Bool(*thread),
            (Body::Fork { clone_flags, .. }, F::CloneFlags) => int((*clone_flags).into()),
            (Body::Exit { code }, F::Code) => code.map_or(Value::Missing, |c| int(c.into())),
            (
                Body::Open { path, .. }
                | Body::Unlink { path, .. }
                | Body::Chmod { path, .. }
                | Body::Chown { path, .. },
                F::Path,
            ) => Value::Str(path),
            (
                Body::Open { dirfd, .. }
                | Body::Unlink { dirfd, .. }
                | Body::Chmod { dirfd, .. }
                | Body::Chown { dirfd, .. },
                F::Dirfd,
            ) => int((*dirfd).into()),
            (Body::Open { flags, .. } | Body::Unlink { flags, .. }, F::Flags) => {
                int((*flags).into())
            }
            (Body::Open { mode, .. } | Body::Chmod { mode, .. }, F::Mode) => int((*mode).into()),
            (Body::Open { flags, .. }, F::Access) => Value::Str(access(*flags)),
            (Body::Rename { old_path, .. }, F::OldPath) => Value::Str(old_path),
            (Body::Rename { new_path, .. }, F::NewPath) => Value::Str(new_path),
            (
                Body::Connect(s) | Body::Accept(s) | Body::Bind(s) | Body::UdpSend(s),
                F::Addr | F::Port | F::Family | F::SockType | F::Cookie | F::Ret,
            ) => match field {
                F::Addr => s.peer.addr.map_or(Value::Missing, Value::Addr),
                F::Port => int(s.peer.port.into()),
                F::Family => int(s.family.into()),
                F::SockType => int(s.sock_type.into()),
                F::Cookie => int(s.cookie.into()),
                _ => int(s.ret.into()),
            },
            (Body::DnsQuery { name, .. }, F::Name) => Value::Str(name),
            (Body::DnsQuery { server, .. }, F::ServerAddr) => {
                server.addr.map_or(Value::Missing, Value::Addr)
            }
            (Body::DnsQuery { server, .. }, F::ServerPort) => int(server.port.into()),
            (Body::DnsQuery { cookie, .. } | Body::FlowBytes { cookie, .. }, F::Cookie) => {
                int((*cookie).into())
            }
            (Body::FlowBytes { bytes_out, .. }, F::BytesOut) => int((*bytes_out).into()),
            (Body::FlowBytes { bytes_in, .. }, F::BytesIn) => int((*bytes_in).into()),
            (Body::FlowBytes { packets_out, .. }, F::PacketsOut) => int((*packets_out).into()),
            (Body::FlowBytes { packets_in, .. }, F::PacketsIn) => int((*packets_in).into()),
            (Body::Syscalls { ids }, F::Ids) => Value::IntList(ids),
            (Body::SyscallCount { nr, .. }, F::Nr) => int((*nr).into()),
            (Body::SyscallCount { name, .. }, F::Name) => {
                name.as_deref().map_or(Value::Missing, Value::Str)
            }
            (Body::SyscallCount { count, .. } | Body::Lost { count, .. }, F::Count) => {
                int((*count).into())
            }
            (Body::Lost { cpu, .. }, F::Cpu) => int((*cpu).into()),
            (Body::AgentAdded(a) | Body::AgentRemoved(a), F::CgroupPath) => {
                Value::Str(&a.cgroup_path)
            }
            (Body::AgentAdded(a) | Body::AgentRemoved(a), F::Slot) => int(a.slot.into()),
            _ => Value::Missing,
        }
    }
}

/// `read`, `write` or `read_write` from open(2) flags (the O_ACCMODE bits).
fn access(flags: u32) -> &'static str {
    match flags & 0o3 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    }
}

impl Value<'_> {
    /// A stable hash of the value, for distinct counts: fixed seeds, so a replay counts the
    /// same way as the live run (and foldhash, which costs a fraction of SipHash per event).
    pub fn stable_hash(&self) -> u64 {
        use std::hash::BuildHasher as _;
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        match self {
            Value::Str(s) => (0u8, s).hash(&mut h),
            Value::Int(i) => (1u8, i).hash(&mut h),
            Value::Bool(b) => (2u8, b).hash(&mut h),
            Value::Addr(a) => (3u8, a).hash(&mut h),
            Value::StrList(l) => (4u8, l).hash(&mut h),
            Value::IntList(l) => (5u8, l).hash(&mut h),
            Value::Missing => 6u8.hash(&mut h),
        }
        h.finish()
    }
}

/// How a field is shown in a summary: modes in octal, flag words in hex, lists space-joined.
pub(crate) struct Shown<'a>(pub Field, pub Value<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Field::Mode, Value::Int(i)) => write!(f, "0o{i:o}"),
            (Field::Flags | Field::CloneFlags, Value::Int(i)) => write!(f, "{i:#x}"),
            (_, Value::Str(s)) => f.write_str(s),
            (_, Value::Int(i)) => write!(f, "{i}"),
            (_, Value::Bool(b)) => write!(f, "{b}"),
            (_, Value::Addr(a)) => write!(f, "{a}"),
            (_, Value::StrList(l)) => f.write_str(&l.join(" ")),
            (_, Value::IntList(l)) => {
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            (_, Value::Missing) => f.write_str("-"),
        }
    }
}
