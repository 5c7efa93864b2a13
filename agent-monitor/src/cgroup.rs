//! cgroup v2: finding the mount, naming cgroups, creating them and moving processes into them.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 mount found in /proc/self/mountinfo (mount one: mount -t cgroup2 none <dir>)"
    )]
    NoV2Mount,
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cgroup v2 mount point, read from mountinfo (hybrid hosts have it at
/// `/sys/fs/cgroup/unified`, unified hosts at `/sys/fs/cgroup`).
pub fn v2_mount() -> Result<PathBuf, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse_v2_mount(&text).ok_or(CgroupError::NoV2Mount)
}

/// Finds the first cgroup2 mount in mountinfo text.
pub fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ..."
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` returns for tasks in it.
pub fn id_of(dir: &Path) -> Result<u64, CgroupError> {
    Ok(fs::metadata(dir).map_err(io(dir))?.ino())
}

/// Creates a cgroup directory (and parents).
pub fn create(dir: &Path) -> Result<u64, CgroupError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    id_of(dir)
}

/// Moves a process into a cgroup.
pub fn add_process(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).map_err(io(&procs))
}

/// Removes a cgroup tree, deepest first; cgroups still holding processes are left in place.
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Whether a cgroup with this v2 id exists under the v2 mount `mount`. Asks the kernel for the
/// cgroup by its id (`open_by_handle_at` with a kernfs handle: an 8-byte id; ESTALE when no
/// such cgroup exists), and falls back to walking the hierarchy where file handles are not
/// available (older kernels, no CAP_DAC_READ_SEARCH).
pub fn exists(mount: &Path, id: u64) -> Result<bool, CgroupError> {
    match exists_by_handle(mount, id) {
        Ok(found) => Ok(found),
        Err(e) => {
            log::debug!("cgroup {id} by handle: {e}; walking {}", mount.display());
            Ok(find_id(mount, id))
        }
    }
}

fn exists_by_handle(mount: &Path, id: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;

    /// `struct file_handle` with the 8 bytes of a kernfs (cgroup) handle.
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    /// `FILEID_KERNFS`: the handle type cgroupfs gives out (`name_to_handle_at` on a cgroup).
    const FILEID_KERNFS: i32 = 0xfe;

    let dir = fs::File::open(mount)?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a valid file_handle with `handle_bytes` bytes of payload after its
    // header; the returned descriptor is closed below.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            (&raw mut handle).cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor this function owns.
        unsafe { libc::close(fd) };
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESTALE | libc::ENOENT) => Ok(false),
        _ => Err(err),
    }
}

/// Walks the hierarchy under `dir` for a cgroup directory whose inode number is `id`.
fn find_id(dir: &Path, id: u64) -> bool {
    if fs::metadata(dir).is_ok_and(|m| m.ino() == id) {
        return true;
    }
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .any(|e| find_id(&e.path(), id))
    })
}

/// Makes `cmd` start inside the cgroup `dir`: the child moves itself in between fork and exec,
/// so everything it does, its exec included, happens in that cgroup.
pub fn spawn_in(
    dir: &Path,
    cmd: &mut std::process::Command,
) -> Result<std::process::Child, CgroupError> {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};

    let procs_path = dir.join("cgroup.procs");
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(io(&procs_path))?;
    let fd = procs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (write) run between fork and exec; "0" means "the
    // writing process" to cgroup v2.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().map_err(io(&procs_path));
    drop(procs);
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      35 30 0:31 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_v2_mount(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_v2_mount(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(parse_v2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn the_walk_finds_a_directory_by_inode_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        fs::create_dir_all(&deep).expect("mkdir");
        let id = id_of(&deep).expect("id");
        assert!(find_id(dir.path(), id));
        fs::remove_dir(&deep).expect("rmdir");
        assert!(!find_id(dir.path(), id));
    }

    #[test]
    fn unescapes_spaces_in_mount_points() {
        let line = "35 30 0:31 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(parse_v2_mount(line), Some("/mnt/my cgroups".into()));
    }
}
