//! What `/proc` says about one process. A process that exits while it is read is marked `gone`
//! with what was read before; other read failures are listed in `errors`.

use std::{
    collections::HashMap,
    fs,
    io::{self, Read as _},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::sockets::SocketInfo;

/// One process of the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The cgroup it was listed in, relative to the agent's cgroup (`""` for the agent's own).
    pub cgroup: String,
    /// It exited before or while it was read: the fields read before are kept.
    pub gone: bool,
    pub ppid: Option<u32>,
    pub name: Option<String>,
    pub state: Option<String>,
    /// Real, effective, saved and filesystem uid.
    pub uid: Option<[u32; 4]>,
    pub gid: Option<[u32; 4]>,
    pub cmdline: Option<Vec<String>>,
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    pub fds: Vec<FdInfo>,
    pub maps: Vec<MapEntry>,
    /// Names only: every value is replaced by its SHA-256.
    pub environ: Vec<EnvVar>,
    pub errors: Vec<String>,
}

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdInfo {
    pub fd: u32,
    /// The link target: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:...`.
    pub target: String,
    /// `flags` of `/proc/<pid>/fdinfo/<fd>` (octal open flags).
    pub flags: Option<String>,
    pub pos: Option<u64>,
    /// The socket behind a `socket:[inode]` target, when the namespace's tables list it.
    pub socket: Option<SocketInfo>,
}

/// One line of `/proc/<pid>/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub range: String,
    pub perms: String,
    pub offset: String,
    pub dev: String,
    pub inode: u64,
    pub path: String,
}

/// An environment variable: its name and the SHA-256 of its value, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value_sha256: String,
}

/// The process exited (its `/proc` entry or a part of it vanished).
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// What one snapshot reads once and shares between processes: socket tables per network
/// namespace, and executable hashes per file (identity, size and modification time).
#[derive(Default)]
pub(super) struct Cache {
    by_netns: HashMap<String, HashMap<u64, SocketInfo>>,
    exe_hashes: HashMap<(u64, u64, u64, i64, i64), String>,
}

impl Cache {
    fn sockets(&mut self, pid: u32) -> &HashMap<u64, SocketInfo> {
        let ns = fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("pid:{pid}"));
        self.by_netns
            .entry(ns)
            .or_insert_with(|| super::sockets::read_tables(pid))
    }
}

/// One part of the collection: `Err` only when the process is gone.
type Step = fn(&Path, &mut ProcessInfo, &mut Cache) -> Result<(), io::Error>;

/// Reads what `/proc/<pid>` holds about one process.
pub(super) fn collect(pid: u32, cgroup: String, cache: &mut Cache) -> ProcessInfo {
    let mut p = ProcessInfo {
        pid,
        cgroup,
        ..ProcessInfo::default()
    };
    let dir = PathBuf::from(format!("/proc/{pid}"));
    // Each step returns Err only when the process is gone; other failures are noted and the
    // next step runs.
    let steps: [Step; 6] = [status, cmdline, exe, fds, maps, environ];
    for step in steps {
        if let Err(e) = step(&dir, &mut p, cache) {
            if is_gone(&e) {
                p.gone = true;
                break;
            }
            p.errors.push(e.to_string());
        }
    }
    p
}

/// Reads a file under the process directory, naming it in errors that are not "gone".
fn read(dir: &Path, name: &str) -> Result<Vec<u8>, io::Error> {
    fs::read(dir.join(name)).map_err(|e| named(e, dir, name))
}

fn named(e: io::Error, dir: &Path, name: &str) -> io::Error {
    if is_gone(&e) {
        e
    } else {
        io::Error::new(e.kind(), format!("{}: {e}", dir.join(name).display()))
    }
}

fn status(dir: &Path, p: &mut ProcessInfo, _: &mut Cache) -> Result<(), io::Error> {
    let text = String::from_utf8_lossy(&read(dir, "status")?).into_owned();
    let ids = |v: &str| -> Option<[u32; 4]> {
        let n: Vec<u32> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        n.try_into().ok()
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => p.name = Some(value.to_owned()),
            "State" => p.state = Some(value.to_owned()),
            "PPid" => p.ppid = value.parse().ok(),
            "Uid" => p.uid = ids(value),
            "Gid" => p.gid = ids(value),
            _ => {}
        }
    }
    Ok(())
}

fn cmdline(dir: &Path, p: &mut ProcessInfo, _: &mut Cache) -> Result<(), io::Error> {
    let raw = read(dir, "cmdline")?;
    p.cmdline = Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    );
    Ok(())
}

fn exe(dir: &Path, p: &mut ProcessInfo, cache: &mut Cache) -> Result<(), io::Error> {
    let link = dir.join("exe");
    match fs::read_link(&link) {
        Ok(target) => p.exe = Some(target.to_string_lossy().into_owned()),
        // Kernel threads have no exe; that is not an error worth more than a note.
        Err(e) if !is_gone(&e) => {
            p.errors.push(format!("{}: {e}", link.display()));
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    // Hash through the /proc link: it reaches the very file mapped, even if deleted or replaced.
    let mut file = fs::File::open(&link).map_err(|e| named(e, dir, "exe"))?;
    let meta = file.metadata().map_err(|e| named(e, dir, "exe"))?;
    let id = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    if let Some(hash) = cache.exe_hashes.get(&id) {
        p.exe_sha256 = Some(hash.clone());
        return Ok(());
    }
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| named(e, dir, "exe"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash = hex::encode(hasher.finalize());
    cache.exe_hashes.insert(id, hash.clone());
    p.exe_sha256 = Some(hash);
    Ok(())
}

fn fds(dir: &Path, p: &mut ProcessInfo, cache: &mut Cache) -> Result<(), io::Error> {
    let fd_dir = dir.join("fd");
    let entries = fs::read_dir(&fd_dir).map_err(|e| named(e, dir, "fd"))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| named(e, dir, "fd"))?;
        let Some(fd) = std::str::from_utf8(entry.file_name().as_bytes())
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A descriptor closed between listing and reading is simply no longer open.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let (flags, pos) = fdinfo(dir, fd);
        let socket = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|inode| cache.sockets(p.pid).get(&inode).cloned());
        out.push(FdInfo {
            fd,
            target,
            flags,
            pos,
            socket,
        });
    }
    out.sort_by_key(|f| f.fd);
    p.fds = out;
    Ok(())
}

fn fdinfo(dir: &Path, fd: u32) -> (Option<String>, Option<u64>) {
    let Ok(text) = fs::read_to_string(dir.join("fdinfo").join(fd.to_string())) else {
        return (None, None);
    };
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()))
    };
    (field("flags:"), field("pos:").and_then(|v| v.parse().ok()))
}

fn maps(dir: &Path, p: &mut ProcessInfo, _: &mut Cache) -> Result<(), io::Error> {
    let text = String::from_utf8_lossy(&read(dir, "maps")?).into_owned();
    p.maps = text.lines().filter_map(parse_map_line).collect();
    Ok(())
}

pub(super) fn parse_map_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut next = || {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let (field, tail) = r.split_at(end);
        rest = tail;
        (!field.is_empty()).then_some(field)
    };
    let range = next()?.to_owned();
    let perms = next()?.to_owned();
    let offset = next()?.to_owned();
    let dev = next()?.to_owned();
    let inode = next()?.parse().ok()?;
    Some(MapEntry {
        range,
        perms,
        offset,
        dev,
        inode,
        path: rest.trim().to_owned(),
    })
}

fn environ(dir: &Path, p: &mut ProcessInfo, _: &mut Cache) -> Result<(), io::Error> {
    let raw = read(dir, "environ")?;
    p.environ = hash_environ(&raw);
    Ok(())
}

/// `NAME=value\0...` -> names with the SHA-256 of each value.
pub(super) fn hash_environ(raw: &[u8]) -> Vec<EnvVar> {
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, value) = match entry.iter().position(|b| *b == b'=') {
                Some(i) => (&entry[..i], &entry[i + 1..]),
                None => (entry, &[][..]),
            };
            EnvVar {
                name: String::from_utf8_lossy(name).into_owned(),
                value_sha256: hex::encode(sha2::Sha256::digest(value)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_keeps_names_and_hashes_values() {
        let env = hash_environ(b"SECRET=xyz\0PATH=/bin\0ODD\0\0");
        assert_eq!(env.len(), 3);
        assert_eq!(env[0].name, "SECRET");
        assert_eq!(
            env[0].value_sha256,
            "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"
        );
        assert_eq!(env[2].name, "ODD");
    }

    #[test]
    fn parses_maps_lines_with_and_without_paths() {
        let m = parse_map_line(
            "7f00aa000000-7f00aa021000 r-xp 00000000 08:01 1234   /usr/lib/my lib.so",
        )
        .expect("line");
        assert_eq!(m.perms, "r-xp");
        assert_eq!(m.inode, 1234);
        assert_eq!(m.path, "/usr/lib/my lib.so");
        let anon = parse_map_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0").expect("line");
        assert_eq!(anon.path, "");
        assert!(parse_map_line("garbage").is_none());
    }

    #[test]
    fn a_live_process_is_read_and_a_missing_one_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        // Before its exec the child is still this (large) test binary.
        let start = std::time::Instant::now();
        while !fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "sleep"))
            && start.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut cache = Cache::default();
        let p = collect(pid, String::new(), &mut cache);
        let again = collect(pid, String::new(), &mut cache);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!p.gone, "{:?}", p.errors);
        assert_eq!(p.ppid, Some(std::process::id()));
        assert!(p.exe_sha256.as_ref().is_some_and(|h| h.len() == 64));
        assert_eq!(again.exe_sha256, p.exe_sha256);
        assert!(!p.fds.is_empty());
        assert!(!p.maps.is_empty());
        // Pid numbers are at most 2^22: this one is never in use.
        let gone = collect(u32::MAX - 1, String::new(), &mut cache);
        assert!(gone.gone);
        assert!(gone.errors.is_empty());
    }
}
