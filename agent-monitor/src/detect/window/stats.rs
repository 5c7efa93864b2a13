//! What one agent did during one window: counts and the sets behind "distinct" and "new for the
//! class" features. Sets are capped so that a flood cannot grow memory without bound; a capped set
//! still counts as "at least this many", which is what an anomaly model needs.
//!
//! This fold runs for every event, so it allocates only for a value the window has not seen yet
//! (a repeated path or binary is a hash probe), keeps peers as addresses rather than text, and
//! hashes with foldhash rather than SipHash.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use foldhash::HashSet;

use super::compact::{KeySet, Sequences, SyscallCounts};
use crate::event::{Body, Event, SockBody};

/// Largest distinct set kept per window and feature.
pub const MAX_DISTINCT: usize = 4096;
/// Largest syscall-id sequence kept per thread and window for sequence scoring.
pub const MAX_SEQUENCE: usize = 16 * 1024;

/// Open flags that make an open a write (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND).
const WRITE_FLAGS: u32 = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000;

/// Path classes that the caller decides (sensitive patterns, shells): kept out of this file so
/// that accumulation stays a plain fold over events.
pub trait Classifier {
    fn is_sensitive_path(&mut self, path: &str) -> bool;
    fn is_shell_or_interpreter(&mut self, binary: &str) -> bool;
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub events: u64,
    /// Kernel-lost events attributed to this agent in the window.
    pub lost: u64,
    /// Syscall counts by number, from the kernel counters.
    pub syscalls: SyscallCounts,
    /// Syscall ids per thread, from the stream, in order.
    pub sequences: Sequences,
    pub file_reads: u64,
    pub file_writes: u64,
    pub file_failures: u64,
    /// unlink, rename, chmod, chown.
    pub file_mutations: u64,
    pub sensitive_hits: u64,
    /// Distinct paths, by [`text_key`], each with whether it matched a sensitive pattern (so a
    /// repeated path is classified once per window). Only counted, so keys rather than text: a
    /// thousand busy agents' open windows would otherwise hold every path they opened (PERF-
    /// ANCHORS row 7).
    pub paths: KeySet,
    /// Distinct parent directories of those paths, by [`text_key`].
    pub dirs: KeySet,
    pub connects: u64,
    pub connect_failures: u64,
    pub accepts: u64,
    pub binds: u64,
    pub udp_sends: u64,
    /// Peers of connects and UDP sends (shown as `addr:port`).
    pub destinations: HashSet<Destination>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub dns_queries: u64,
    pub dns_names: HashSet<String>,
    pub execs: u64,
    pub binaries: HashSet<String>,
    pub shells: u64,
    pub forks: u64,
    pub exits_nonzero: u64,
}

impl WindowStats {
    /// Folds one event of this agent into the window.
    pub fn add(&mut self, event: &Event, classify: &mut impl Classifier) {
        self.events += 1;
        match &event.body {
            Body::SyscallCount { nr, count, .. } => self.syscalls.add(*nr, *count),
            Body::Syscalls { ids } => {
                let seq = self.sequences.entry(event.tid);
                let take = ids.len().min(MAX_SEQUENCE.saturating_sub(seq.len()));
                // A quarter more room (or this batch's) rather than double: every busy
                // agent's window holds its threads' sequences until it closes.
                if seq.capacity() - seq.len() < take {
                    seq.reserve_exact(take.max(seq.len() / 4));
                }
                seq.extend_from_slice(&ids[..take]);
            }
            Body::Open {
                path, flags, ret, ..
            } => {
                if flags & WRITE_FLAGS != 0 {
                    self.file_writes += 1;
                } else {
                    self.file_reads += 1;
                }
                self.path(path, *ret, classify);
            }
            Body::Unlink { path, ret, .. }
            | Body::Chmod { path, ret, .. }
            | Body::Chown { path, ret, .. } => {
                self.file_mutations += 1;
                self.path(path, *ret, classify);
            }
            Body::Rename {
                old_path,
                new_path,
                ret,
            } => {
                self.file_mutations += 1;
                self.path(old_path, *ret, classify);
                self.path(new_path, 0, classify);
            }
            Body::Connect(s) => {
                self.connects += 1;
                if s.ret < 0 {
                    self.connect_failures += 1;
                }
                insert_peer(&mut self.destinations, s);
            }
            Body::UdpSend(s) => {
                self.udp_sends += 1;
                insert_peer(&mut self.destinations, s);
            }
            Body::Accept(_) => self.accepts += 1,
            Body::Bind(_) => self.binds += 1,
            Body::FlowBytes {
                bytes_out,
                bytes_in,
                ..
            } => {
                self.bytes_out += bytes_out;
                self.bytes_in += bytes_in;
            }
            Body::DnsQuery { name, .. } => {
                self.dns_queries += 1;
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    insert_capped(&mut self.dns_names, &name.to_ascii_lowercase());
                } else {
                    insert_capped(&mut self.dns_names, name);
                }
            }
            Body::Exec { filename, .. } => {
                self.execs += 1;
                if classify.is_shell_or_interpreter(filename) {
                    self.shells += 1;
                }
                insert_capped(&mut self.binaries, filename);
            }
            Body::Fork { .. } => self.forks += 1,
            Body::Exit { code } => {
                if *code != Some(0) {
                    self.exits_nonzero += 1;
                }
            }
            Body::Lost { count, .. } => self.lost += count,
            Body::AgentAdded(_) | Body::AgentRemoved(_) => {}
        }
    }

    fn path(&mut self, path: &str, ret: i64, classify: &mut impl Classifier) {
        if ret < 0 {
            self.file_failures += 1;
        }
        // A path seen before in this window was classified then, and its directory counted.
        let key = text_key(path);
        let sensitive = match self.paths.get(key) {
            Some(sensitive) => sensitive,
            None => {
                let sensitive = classify.is_sensitive_path(path);
                self.dirs.insert(text_key(parent_dir(path)), false);
                self.paths.insert(key, sensitive);
                sensitive
            }
        };
        if sensitive {
            self.sensitive_hits += 1;
        }
    }

    pub fn syscall_total(&self) -> u64 {
        self.syscalls.total()
    }

    pub fn lossy(&self) -> bool {
        self.lost > 0
    }
}

/// A 64-bit key standing for a text in a distinct count (two texts sharing one is a miscount of
/// one, about once in 2^64 pairs).
fn text_key(text: &str) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::default().hash_one(text)
}

/// Copies `value` only when the set does not hold it yet.
fn insert_capped(set: &mut HashSet<String>, value: &str) {
    if set.len() < MAX_DISTINCT && !set.contains(value) {
        set.insert(value.to_owned());
    }
}

fn insert_peer(set: &mut HashSet<Destination>, s: &SockBody) {
    if set.len() < MAX_DISTINCT {
        set.insert(Destination {
            addr: s.peer.addr,
            port: s.peer.port,
        });
    }
}

/// A peer of a connect or UDP send. Displayed as `addr:port` (`[v6]:port`), or `?:port` without
/// an address: the text class knowledge stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: Option<IpAddr>,
    pub port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => SocketAddr::new(addr, self.port).fmt(f),
            None => write!(f, "?:{}", self.port),
        }
    }
}

/// The directory part of a path ("/" for top-level entries, "." for relative names).
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_show_as_before() {
        let show = |addr: Option<&str>, port| {
            Destination {
                addr: addr.map(|a| a.parse().expect("address")),
                port,
            }
            .to_string()
        };
        assert_eq!(show(Some("127.0.0.1"), 8080), "127.0.0.1:8080");
        assert_eq!(show(Some("::1"), 443), "[::1]:443");
        assert_eq!(show(None, 53), "?:53");
    }

    #[test]
    fn parent_dirs() {
        assert_eq!(parent_dir("/etc/passwd"), "/etc");
        assert_eq!(parent_dir("/x"), "/");
        assert_eq!(parent_dir("rel"), ".");
        assert_eq!(parent_dir("a/b/c"), "a/b");
    }
}
