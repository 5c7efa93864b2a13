//! Raw record bytes -> [`Event`]. Dispatch is by the stable kind number in the header.
//!
//! The pipeline decodes every record into one reused [`Event`] through a [`Decoder`], which
//! keeps the text and id buffers of earlier events for the next ones: in steady state a record
//! costs no allocation, and the event's agent reference stays in place while consecutive events
//! come from the same agent (most do).

use std::{
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_monitor_common::{
    AgentRecord, DnsEvent, EventHeader, ExecEvent, ExitEvent, FlowBytes, ForkEvent,
    HDR_FLAG_NO_EXIT_CODE, HDR_FLAG_TRUNCATED, LostEvent, PATH_LEN, PathEvent, RenameEvent,
    SYSCALL_BATCH_LEN, SockEvent, SyscallBatch, SyscallCount, kind, record_len,
};

use super::{AgentBody, Body, Endpoint, Event, SockBody, wire};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than an event header")]
    Short { len: usize },
    #[error("unknown event kind {kind}")]
    UnknownKind { kind: u16 },
    #[error("event kind {kind} needs {want} bytes, record has {len}")]
    Length { kind: u16, want: usize, len: usize },
}

const CLONE_THREAD: u64 = 0x10000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// Spare text and id buffers a [`Decoder`] keeps of each (a rename or an agent record needs up
/// to three texts).
const SPARE_BUFFERS: usize = 4;

/// Decodes one raw record. The agent is left `None`: the identity stage fills it.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let mut event = Event::blank();
    Decoder::default().decode_into(bytes, &mut event)?;
    Ok(event)
}

/// Decodes records into a reused event, recycling the buffers of the event it overwrites.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Cleared text buffers of earlier events, for the next paths and names.
    strings: Vec<String>,
    /// Cleared id buffers of earlier syscall batches.
    ids: Vec<Vec<u16>>,
}

impl Decoder {
    /// Decodes `bytes` into `event`, replacing everything but `event.agent`, which the identity
    /// stage then confirms or replaces. On error `event` is unchanged.
    pub fn decode_into(&mut self, bytes: &[u8], event: &mut Event) -> Result<(), DecodeError> {
        let header: EventHeader =
            wire::read(bytes).ok_or(DecodeError::Short { len: bytes.len() })?;
        let want = record_len(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
        if bytes.len() < want {
            return Err(DecodeError::Length {
                kind: header.kind,
                want,
                len: bytes.len(),
            });
        }
        // Lengths were checked above, so every `read` below succeeds.
        let body = match header.kind {
            kind::SYSCALL_BATCH => self.syscall_batch(bytes),
            kind::SYSCALL_COUNT => {
                let e: SyscallCount = read(bytes);
                Body::SyscallCount {
                    nr: e.nr,
                    name: syscalls::Sysno::new(e.nr as usize).map(|s| {
                        let mut name = self.string();
                        name.push_str(s.name());
                        name
                    }),
                    count: e.count,
                }
            }
            kind::EXEC => self.exec(&read(bytes)),
            kind::FORK => {
                let e: ForkEvent = read(bytes);
                Body::Fork {
                    child: e.ret,
                    thread: e.clone_flags & CLONE_THREAD != 0,
                    clone_flags: e.clone_flags,
                }
            }
            kind::EXIT => {
                let e: ExitEvent = read(bytes);
                Body::Exit {
                    code: (header.flags & HDR_FLAG_NO_EXIT_CODE == 0).then_some(e.exit_code),
                }
            }
            kind::OPEN | kind::UNLINK | kind::CHMOD | kind::CHOWN => {
                self.path_op(header.kind, bytes)
            }
            kind::RENAME => {
                let e: RenameEvent = read(bytes);
                Body::Rename {
                    old_path: self.text(&e.old_path),
                    new_path: self.text(&e.new_path),
                    ret: e.ret,
                }
            }
            kind::CONNECT | kind::ACCEPT | kind::BIND | kind::UDP_SEND => sock(read(bytes)),
            kind::DNS_QUERY => {
                let e: DnsEvent = read(bytes);
                let len = usize::from(e.query_len).min(e.query.len());
                Body::DnsQuery {
                    name: dns_name(&e.query[..len]),
                    server: endpoint(e.family, e.addr, e.port),
                    cookie: e.cookie,
                }
            }
            kind::FLOW_BYTES => {
                let e: FlowBytes = read(bytes);
                Body::FlowBytes {
                    cookie: e.cookie,
                    bytes_out: e.bytes_out,
                    bytes_in: e.bytes_in,
                    packets_out: e.packets_out,
                    packets_in: e.packets_in,
                }
            }
            kind::LOST => {
                let e: LostEvent = read(bytes);
                Body::Lost {
                    cpu: e.cpu,
                    count: e.count,
                }
            }
            kind::AGENT_ADDED | kind::AGENT_REMOVED => {
                let e: AgentRecord = read(bytes);
                let agent = AgentBody {
                    id: self.text(&e.id),
                    class: self.text(&e.class),
                    cgroup_path: self.text(&e.cgroup_path),
                    slot: header.slot,
                };
                if header.kind == kind::AGENT_ADDED {
                    Body::AgentAdded(agent)
                } else {
                    Body::AgentRemoved(agent)
                }
            }
            other => return Err(DecodeError::UnknownKind { kind: other }),
        };
        self.recycle(std::mem::replace(&mut event.body, body));
        event.ts_ns = header.ts_ns;
        event.kind_id = header.kind;
        event.cgroup_id = header.cgroup_id;
        event.pid = header.tgid;
        event.tid = header.tid;
        event.truncated = header.flags & HDR_FLAG_TRUNCATED != 0;
        Ok(())
    }

    /// A cleared text buffer. New ones hold a whole kernel text buffer, so that a spare one
    /// that held a short name never has to grow for the next path.
    fn string(&mut self) -> String {
        self.strings
            .pop()
            .unwrap_or_else(|| String::with_capacity(PATH_LEN))
    }

    /// The text before the first NUL of a fixed-size buffer, in a recycled buffer.
    fn text(&mut self, bytes: &[u8]) -> String {
        let mut s = self.string();
        wire::push_c_str(&mut s, bytes);
        s
    }

    /// Keeps the buffers of a body that is being overwritten.
    fn recycle(&mut self, body: Body) {
        match body {
            Body::Open { path, .. }
            | Body::Unlink { path, .. }
            | Body::Chmod { path, .. }
            | Body::Chown { path, .. } => self.keep(path),
            Body::Rename {
                old_path, new_path, ..
            } => {
                self.keep(old_path);
                self.keep(new_path);
            }
            Body::Exec { filename, .. } => self.keep(filename),
            Body::SyscallCount {
                name: Some(name), ..
            }
            | Body::DnsQuery { name, .. } => self.keep(name),
            Body::AgentAdded(a) | Body::AgentRemoved(a) => {
                self.keep(a.id);
                self.keep(a.class);
                self.keep(a.cgroup_path);
            }
            Body::Syscalls { mut ids } if self.ids.len() < SPARE_BUFFERS => {
                ids.clear();
                self.ids.push(ids);
            }
            _ => {}
        }
    }

    fn keep(&mut self, mut s: String) {
        if self.strings.len() < SPARE_BUFFERS {
            s.clear();
            self.strings.push(s);
        }
    }

    /// Copies only the ids the batch holds, not its whole buffer.
    fn syscall_batch(&mut self, bytes: &[u8]) -> Body {
        let count: u32 = field(bytes, offset_of!(SyscallBatch, count));
        let at = offset_of!(SyscallBatch, ids);
        let n = (count as usize).min(SYSCALL_BATCH_LEN);
        let mut ids = self
            .ids
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SYSCALL_BATCH_LEN));
        ids.extend(
            bytes[at..at + 2 * n]
                .chunks_exact(2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]])),
        );
        Body::Syscalls { ids }
    }

    fn exec(&mut self, e: &ExecEvent) -> Body {
        let used = (e.argv_len as usize).min(e.argv.len());
        let argv = e.argv[..used]
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .take(e.argc as usize)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Body::Exec {
            filename: self.text(&e.filename),
            argv,
            uid: e.uid,
            gid: e.gid,
            ret: e.ret,
        }
    }

    /// Reads the path where it lies rather than copying the whole record first (opens are
    /// most of the records).
    fn path_op(&mut self, kind: u16, bytes: &[u8]) -> Body {
        let ret: i64 = field(bytes, offset_of!(PathEvent, ret));
        let dirfd: i32 = field(bytes, offset_of!(PathEvent, dirfd));
        let arg0: u32 = field(bytes, offset_of!(PathEvent, arg0));
        let arg1: u32 = field(bytes, offset_of!(PathEvent, arg1));
        let at = offset_of!(PathEvent, path);
        let path = self.text(&bytes[at..at + PATH_LEN]);
        match kind {
            kind::OPEN => Body::Open {
                path,
                dirfd,
                flags: arg0,
                mode: arg1,
                ret,
            },
            kind::UNLINK => Body::Unlink {
                path,
                dirfd,
                flags: arg0,
                ret,
            },
            kind::CHMOD => Body::Chmod {
                path,
                dirfd,
                mode: arg0,
                ret,
            },
            _ => Body::Chown {
                path,
                dirfd,
                uid: arg0,
                gid: arg1,
                ret,
            },
        }
    }
}

fn read<T: aya::Pod>(bytes: &[u8]) -> T {
    // The caller checked the length against `record_len`; a zeroed value is unreachable.
    wire::read(bytes).unwrap_or_else(|| unreachable!("length checked by decode"))
}

/// The field at `offset` of a record whose length was checked.
fn field<T: aya::Pod>(bytes: &[u8], offset: usize) -> T {
    read(&bytes[offset..])
}

fn sock(e: SockEvent) -> Body {
    let body = SockBody {
        peer: endpoint(e.family, e.addr, e.port),
        family: e.family,
        sock_type: e.sock_type,
        cookie: e.cookie,
        ret: e.ret,
    };
    match e.header.kind {
        kind::CONNECT => Body::Connect(body),
        kind::ACCEPT => Body::Accept(body),
        kind::BIND => Body::Bind(body),
        _ => Body::UdpSend(body),
    }
}

fn endpoint(family: u16, addr: [u8; 16], port: u16) -> Endpoint {
    let addr = match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(addr))),
        _ => None,
    };
    Endpoint { addr, port }
}

/// The name of an x86_64 syscall number.
pub fn syscall_name(nr: u32) -> Option<String> {
    syscalls::Sysno::new(nr as usize).map(|s| s.name().to_owned())
}

/// Decodes the first question name of a DNS message question section (length-prefixed labels).
fn dns_name(mut q: &[u8]) -> String {
    let mut labels = Vec::new();
    while let Some((&len, rest)) = q.split_first() {
        let len = usize::from(len);
        if len == 0 || len > 63 || len > rest.len() {
            break;
        }
        labels.push(String::from_utf8_lossy(&rest[..len]).into_owned());
        q = &rest[len..];
    }
    labels.join(".")
}

#[cfg(test)]
mod tests {
    use agent_monitor_common::{ARGV_LEN, DNS_QUERY_LEN, PATH_LEN};

    use super::*;
    use crate::event::wire::{bytes_of, put_c_str};

    fn header(kind: u16) -> EventHeader {
        EventHeader {
            kind,
            flags: 0,
            slot: 3,
            ts_ns: 42,
            cgroup_id: 7,
            tgid: 100,
            tid: 101,
        }
    }

    fn path(s: &str) -> [u8; PATH_LEN] {
        let mut p = [0; PATH_LEN];
        put_c_str(&mut p, s);
        p
    }

    #[test]
    fn header_fields_survive() {
        let e = ExitEvent {
            header: header(kind::EXIT),
            exit_code: 7,
            _pad: 0,
        };
        let ev = decode(bytes_of(&e)).unwrap();
        assert_eq!((ev.ts_ns, ev.kind_id, ev.cgroup_id), (42, kind::EXIT, 7));
        assert_eq!((ev.pid, ev.tid, ev.truncated), (100, 101, false));
        assert_eq!(ev.body, Body::Exit { code: Some(7) });
    }

    #[test]
    fn every_kind_round_trips() {
        let batch = SyscallBatch {
            header: header(kind::SYSCALL_BATCH),
            count: 3,
            _pad: 0,
            ids: {
                let mut ids = [0; 64];
                ids[..3].copy_from_slice(&[0, 1, 39]);
                ids
            },
        };
        assert_eq!(
            decode(bytes_of(&batch)).unwrap().body,
            Body::Syscalls {
                ids: vec![0, 1, 39]
            }
        );

        let count = SyscallCount {
            header: header(kind::SYSCALL_COUNT),
            nr: 110,
            _pad: 0,
            count: 9,
        };
        assert_eq!(
            decode(bytes_of(&count)).unwrap().body,
            Body::SyscallCount {
                nr: 110,
                name: Some("getppid".into()),
                count: 9
            }
        );

        let mut argv = [0u8; ARGV_LEN];
        argv[..12].copy_from_slice(b"/bin/ls\0-la\0");
        let exec = ExecEvent {
            header: header(kind::EXEC),
            ret: 0,
            uid: 1000,
            gid: 1001,
            argc: 2,
            argv_len: 12,
            filename: path("/bin/ls"),
            argv,
        };
        assert_eq!(
            decode(bytes_of(&exec)).unwrap().body,
            Body::Exec {
                filename: "/bin/ls".into(),
                argv: vec!["/bin/ls".into(), "-la".into()],
                uid: 1000,
                gid: 1001,
                ret: 0
            }
        );

        let fork = ForkEvent {
            header: header(kind::FORK),
            ret: 555,
            clone_flags: CLONE_THREAD,
        };
        assert!(matches!(
            decode(bytes_of(&fork)).unwrap().body,
            Body::Fork {
                child: 555,
                thread: true,
                ..
            }
        ));

        for (k, expect) in [
            (kind::OPEN, "open"),
            (kind::UNLINK, "unlink"),
            (kind::CHMOD, "chmod"),
            (kind::CHOWN, "chown"),
        ] {
            let mut e = PathEvent {
                header: header(k),
                ret: -2,
                dirfd: -100,
                arg0: 0o644,
                arg1: 5,
                _pad: 0,
                path: path("/etc/passwd"),
            };
            e.header.flags = HDR_FLAG_TRUNCATED;
            let ev = decode(bytes_of(&e)).unwrap();
            assert_eq!(ev.body.name(), expect);
            assert!(ev.truncated);
            let json = serde_json::to_value(&ev).unwrap();
            assert_eq!(json["path"], "/etc/passwd");
            assert_eq!(json["ret"], -2);
        }

        let rename = RenameEvent {
            header: header(kind::RENAME),
            ret: 0,
            old_path: path("/a"),
            new_path: path("/b"),
        };
        assert_eq!(
            decode(bytes_of(&rename)).unwrap().body,
            Body::Rename {
                old_path: "/a".into(),
                new_path: "/b".into(),
                ret: 0
            }
        );

        for (k, expect) in [
            (kind::CONNECT, "connect"),
            (kind::ACCEPT, "accept"),
            (kind::BIND, "bind"),
            (kind::UDP_SEND, "udp_send"),
        ] {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[127, 0, 0, 1]);
            let e = SockEvent {
                header: header(k),
                ret: 0,
                cookie: 77,
                family: AF_INET,
                port: 8080,
                sock_type: 1,
                _pad: 0,
                addr,
            };
            let ev = decode(bytes_of(&e)).unwrap();
            assert_eq!(ev.body.name(), expect);
            let json = serde_json::to_value(&ev).unwrap();
            assert_eq!(json["addr"], "127.0.0.1");
            assert_eq!(json["port"], 8080);
        }
        let six = SockEvent {
            header: header(kind::CONNECT),
            family: AF_INET6,
            port: 443,
            addr: Ipv6Addr::LOCALHOST.octets(),
            ..Default::default()
        };
        let json = serde_json::to_value(decode(bytes_of(&six)).unwrap()).unwrap();
        assert_eq!(json["addr"], "::1");

        let mut query = [0u8; DNS_QUERY_LEN];
        query[..15].copy_from_slice(b"\x07example\x03com\x00\x00\x01");
        let dns = DnsEvent {
            header: header(kind::DNS_QUERY),
            cookie: 1,
            family: AF_INET,
            port: 53,
            query_len: 15,
            _pad: 0,
            addr: [127, 0, 0, 53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            query,
        };
        assert!(
            matches!(decode(bytes_of(&dns)).unwrap().body, Body::DnsQuery { ref name, .. } if name == "example.com")
        );

        let flow = FlowBytes {
            header: header(kind::FLOW_BYTES),
            cookie: 9,
            bytes_out: 10,
            bytes_in: 20,
            packets_out: 1,
            packets_in: 2,
        };
        assert!(matches!(
            decode(bytes_of(&flow)).unwrap().body,
            Body::FlowBytes { bytes_in: 20, .. }
        ));

        let lost = LostEvent {
            header: header(kind::LOST),
            cpu: 1,
            _pad: 0,
            count: 12,
        };
        assert_eq!(
            decode(bytes_of(&lost)).unwrap().body,
            Body::Lost { cpu: 1, count: 12 }
        );

        let mut agent = AgentRecord {
            header: header(kind::AGENT_ADDED),
            id: [0; 64],
            class: [0; 32],
            cgroup_path: path("/agents/fraud/a1"),
        };
        put_c_str(&mut agent.id, "a1");
        put_c_str(&mut agent.class, "fraud");
        assert!(
            matches!(decode(bytes_of(&agent)).unwrap().body, Body::AgentAdded(ref a) if a.id == "a1" && a.class == "fraud" && a.slot == 3)
        );
    }

    #[test]
    fn a_reused_decoder_and_event_give_what_a_fresh_decode_gives() {
        let open = |p: &str, k: u16| PathEvent {
            header: header(k),
            ret: 3,
            dirfd: -100,
            arg0: 0,
            arg1: 0,
            _pad: 0,
            path: path(p),
        };
        let batch = |n: u32| SyscallBatch {
            header: header(kind::SYSCALL_BATCH),
            count: n,
            _pad: 0,
            ids: [7; 64],
        };
        let count = SyscallCount {
            header: header(kind::SYSCALL_COUNT),
            nr: 39,
            _pad: 0,
            count: 2,
        };
        let rename = RenameEvent {
            header: header(kind::RENAME),
            ret: 0,
            old_path: path("/a/much/longer/old/name"),
            new_path: path("/b"),
        };
        let mut records: Vec<Vec<u8>> = vec![
            bytes_of(&open("/srv/transactions/batch-001.csv", kind::OPEN)).to_vec(),
            bytes_of(&batch(64)).to_vec(),
            bytes_of(&open("/x", kind::UNLINK)).to_vec(),
            bytes_of(&count).to_vec(),
            bytes_of(&batch(3)).to_vec(),
            bytes_of(&rename).to_vec(),
            bytes_of(&open("/srv/reports/daily.txt", kind::CHMOD)).to_vec(),
        ];
        records.push(vec![1, 2]);
        let mut decoder = Decoder::default();
        let mut event = decode(&records[0]).unwrap();
        let agent = Some(crate::event::AgentRef::new("a1".into(), "fraud".into()));
        event.agent.clone_from(&agent);
        for r in &records {
            let before = event.clone();
            match decode(r) {
                Ok(fresh) => {
                    decoder.decode_into(r, &mut event).unwrap();
                    assert_eq!(event.body, fresh.body);
                    assert_eq!((event.ts_ns, event.kind_id), (fresh.ts_ns, fresh.kind_id));
                    assert_eq!(event.agent, agent, "the agent is the identity stage's");
                }
                Err(e) => {
                    assert_eq!(decoder.decode_into(r, &mut event), Err(e));
                    assert_eq!(event, before, "a bad record changes nothing");
                }
            }
        }
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short { len: 3 }));
        let mut h = header(999);
        assert_eq!(
            decode(bytes_of(&h)),
            Err(DecodeError::UnknownKind { kind: 999 })
        );
        h.kind = kind::EXEC;
        assert!(matches!(
            decode(bytes_of(&h)),
            Err(DecodeError::Length {
                kind: kind::EXEC,
                ..
            })
        ));
    }

    #[test]
    fn exit_without_code_is_none() {
        let mut e = ExitEvent {
            header: header(kind::EXIT),
            exit_code: 0,
            _pad: 0,
        };
        e.header.flags = HDR_FLAG_NO_EXIT_CODE;
        assert_eq!(
            decode(bytes_of(&e)).unwrap().body,
            Body::Exit { code: None }
        );
    }
}
