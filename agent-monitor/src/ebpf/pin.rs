//! bpffs pinning of the enforcing cgroup links, through the raw `bpf(2)` commands aya 0.14 does
//! not expose for cgroup links (create a link we own, pin it, reopen it, swap its program).
//!
//! Layout under the pin directory (default `/sys/fs/bpf/agent-monitor`):
//!
//! ```text
//! CONTAINMENT          map: cgroup id -> policy
//! DENIALS              map: cgroup id -> denial counters
//! links/connect4       cgroup links on the cgroup v2 root (connect4, connect6, sendmsg4,
//! links/...            sendmsg6, skb_egress)
//! ```

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// `enum bpf_cmd` values (UAPI, stable).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `enum bpf_attach_type` values (UAPI, stable) of the hooks that enforce containment.
pub const ATTACH_INET_EGRESS: u32 = 1;
pub const ATTACH_INET4_CONNECT: u32 = 10;
pub const ATTACH_INET6_CONNECT: u32 = 11;
pub const ATTACH_UDP4_SENDMSG: u32 = 14;
pub const ATTACH_UDP6_SENDMSG: u32 = 15;

/// The pinned enforcing hooks: program name and attach type.
pub const PINNED_HOOKS: &[(&str, u32)] = &[
    ("connect4", ATTACH_INET4_CONNECT),
    ("connect6", ATTACH_INET6_CONNECT),
    ("sendmsg4", ATTACH_UDP4_SENDMSG),
    ("sendmsg6", ATTACH_UDP6_SENDMSG),
    ("skb_egress", ATTACH_INET_EGRESS),
];

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a properly sized, zero-padded prefix of `union bpf_attr` for `cmd`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned object (map or link).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: p.as_ptr() as u64,
        ..Default::default()
    };
    sys_bpf(BPF_OBJ_GET, &mut attr).map(fd_from)
}

/// Pins an object at `path` (which must not exist).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: p.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    // Zeroed tail of the union member (target_btf_id / iter info), checked by the kernel.
    _rest: [u64; 4],
}

/// Attaches a program to a cgroup through a new bpf_link (coexists with other programs).
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Swaps the program of a link atomically: the hook never runs neither or both.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// What the kernel says about a cgroup link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkInfo {
    pub link_id: u32,
    pub prog_id: u32,
    /// The cgroup the link is attached to; 0 when the cgroup is gone (defunct link).
    pub cgroup_id: u64,
    pub attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    type_: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 9],
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: size_of::<RawLinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo {
        link_id: info.id,
        prog_id: info.prog_id,
        cgroup_id: info.cgroup_id,
        attach_type: info.attach_type,
    })
}

/// Attaches `prog` at `attach_type` to `cgroup` through the link pinned at `path`: the pinned
/// link is given the new program atomically when it exists and still points at `cgroup` with the
/// same attach type; otherwise any stale pin is removed and a new link is created and pinned.
/// Returns whether an existing link was reused.
pub fn attach_pinned(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    cgroup_id: u64,
    attach_type: u32,
    path: &Path,
) -> io::Result<bool> {
    if let Ok(link) = obj_get(path) {
        let same = link_info(link.as_fd())
            .is_ok_and(|i| i.cgroup_id == cgroup_id && i.attach_type == attach_type);
        if same && link_update(link.as_fd(), prog).is_ok() {
            return Ok(true);
        }
        log::warn!("replacing stale pinned link {}", path.display());
        std::fs::remove_file(path)?;
    }
    let link = link_create(prog, cgroup, attach_type)?;
    obj_pin(link.as_fd(), path)?;
    Ok(false)
}
