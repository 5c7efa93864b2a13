//! Syscalls reported with their arguments and result: one entry program and one exit program,
//! each attached to the `syscalls/sys_enter_*` and `sys_exit_*` tracepoints of the tracked set.
//!
//! Entry builds the event in per-CPU scratch and parks it in `PENDING` under the thread's
//! pid_tgid; exit adds the return value and sends it. Syscall tracepoints share one layout
//! (`__syscall_nr` at 8, six 8-byte arguments or `ret` from 16), so one program serves them all.

use agent_monitor_common::{
    ARGV_LEN, ARGV_MAX, ExecEvent, ForkEvent, HDR_FLAG_TRUNCATED, PATH_LEN, PathEvent, RenameEvent,
    SockEvent, kind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    emit,
    filter::{self, Current},
    maps::{EXIT_CODES, PENDING, Pending, SCRATCH},
    net,
    nr::{self, AT_FDCWD},
};

const NR_OFFSET: usize = 8;
const ARGS_OFFSET: usize = 16;
/// Every pending event has `ret: i64` right after its 32-byte header.
const RET_OFFSET: usize = 32;

#[tracepoint]
pub fn sys_enter_tracked(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_tracked(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(cur) = filter::current_agent() else {
        return Ok(());
    };
    // SAFETY: offsets of the common syscall tracepoint layout.
    let nr: i32 = unsafe { ctx.read_at(NR_OFFSET) }.map_err(i64::from)?;
    // SAFETY: as above; a missing argument reads as 0.
    let arg = |i: usize| -> u64 { unsafe { ctx.read_at::<u64>(ARGS_OFFSET + 8 * i) }.unwrap_or(0) };

    if nr == nr::EXIT_GROUP || (nr == nr::EXIT && cur.tid() == cur.tgid()) {
        EXIT_CODES.insert(&cur.tgid(), &(arg(0) as i32), 0)?;
        return Ok(());
    }

    let pending = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch, used only within this program run.
    let pending = unsafe { &mut *pending };
    pending.nr = nr;
    pending.user_ptr = 0;
    pending.user_ptr2 = 0;
    match nr {
        nr::OPEN => path_event(pending, &cur, kind::OPEN, AT_FDCWD, arg(0), arg(1), arg(2)),
        nr::OPENAT => path_event(
            pending,
            &cur,
            kind::OPEN,
            arg(0) as i32,
            arg(1),
            arg(2),
            arg(3),
        ),
        nr::OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = arg(2) as *const u64;
            // SAFETY: user pointers are read with the faulting-safe helper.
            let flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            // SAFETY: as above.
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            path_event(
                pending,
                &cur,
                kind::OPEN,
                arg(0) as i32,
                arg(1),
                flags,
                mode,
            )
        }
        nr::UNLINK => path_event(pending, &cur, kind::UNLINK, AT_FDCWD, arg(0), 0, 0),
        nr::UNLINKAT => path_event(
            pending,
            &cur,
            kind::UNLINK,
            arg(0) as i32,
            arg(1),
            arg(2),
            0,
        ),
        nr::CHMOD => path_event(pending, &cur, kind::CHMOD, AT_FDCWD, arg(0), arg(1), 0),
        nr::FCHMODAT | nr::FCHMODAT2 => {
            path_event(pending, &cur, kind::CHMOD, arg(0) as i32, arg(1), arg(2), 0)
        }
        nr::CHOWN | nr::LCHOWN => {
            path_event(pending, &cur, kind::CHOWN, AT_FDCWD, arg(0), arg(1), arg(2))
        }
        nr::FCHOWNAT => path_event(
            pending,
            &cur,
            kind::CHOWN,
            arg(0) as i32,
            arg(1),
            arg(2),
            arg(3),
        ),
        nr::RENAME => rename_event(pending, &cur, arg(0), arg(1)),
        nr::RENAMEAT | nr::RENAMEAT2 => rename_event(pending, &cur, arg(1), arg(3)),
        nr::EXECVE => exec_event(pending, &cur, arg(0), arg(1)),
        nr::EXECVEAT => exec_event(pending, &cur, arg(1), arg(2)),
        nr::ACCEPT | nr::ACCEPT4 => {
            net::sock_event(pending, &cur, kind::ACCEPT);
            pending.user_ptr = arg(1);
        }
        nr::CLONE => fork_event(pending, &cur, arg(0)),
        nr::FORK => fork_event(pending, &cur, 0),
        nr::VFORK => fork_event(pending, &cur, 0x4100), // CLONE_VFORK | CLONE_VM
        nr::CLONE3 => {
            // struct clone_args { u64 flags; ... }
            // SAFETY: user pointer read with the faulting-safe helper.
            let flags = unsafe { bpf_probe_read_user(arg(0) as *const u64) }.unwrap_or(0);
            fork_event(pending, &cur, flags)
        }
        _ => return Ok(()),
    }
    PENDING.insert(&cur.pid_tgid, pending, 0)?;
    Ok(())
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pending = PENDING.get_ptr_mut(&pid_tgid).ok_or(0i64)?;
    // SAFETY: the entry stays valid until removed below; only this thread uses its key.
    let pending = unsafe { &mut *pending };
    // SAFETY: offsets of the common syscall tracepoint layout.
    let nr: i32 = unsafe { ctx.read_at(NR_OFFSET) }.map_err(i64::from)?;
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(ARGS_OFFSET) }.map_err(i64::from)?;
    if pending.nr == nr {
        send_pending(pending, ret);
    }
    PENDING.remove(&pid_tgid)?;
    Ok(())
}

#[inline(always)]
fn send_pending(pending: &mut Pending, ret: i64) {
    let data = pending.data.as_mut_ptr();
    // SAFETY: every pending event starts with a header followed by `ret` (see RET_OFFSET).
    unsafe { *(data.add(RET_OFFSET) as *mut i64) = ret };
    // SAFETY: the header was written at entry.
    let header = unsafe { &*(data as *const agent_monitor_common::EventHeader) };
    let (slot, k) = (header.slot, header.kind);
    match k {
        kind::OPEN | kind::UNLINK | kind::CHMOD | kind::CHOWN => {
            // SAFETY: kind selects the layout written at entry.
            let ev = unsafe { &mut *(data as *mut PathEvent) };
            reread(&mut ev.path, pending.user_ptr, &mut ev.header.flags);
            emit::output(ev, slot, k)
        }
        kind::RENAME => {
            // SAFETY: as above.
            let ev = unsafe { &mut *(data as *mut RenameEvent) };
            reread(&mut ev.old_path, pending.user_ptr, &mut ev.header.flags);
            reread(&mut ev.new_path, pending.user_ptr2, &mut ev.header.flags);
            emit::output(ev, slot, k)
        }
        // SAFETY: as above.
        kind::EXEC => emit::output(unsafe { &*(data as *const ExecEvent) }, slot, k),
        // SAFETY: as above.
        kind::FORK => emit::output(unsafe { &*(data as *const ForkEvent) }, slot, k),
        kind::CONNECT | kind::BIND | kind::ACCEPT => {
            // SAFETY: as above.
            let ev = unsafe { &mut *(data as *mut SockEvent) };
            if k == kind::ACCEPT && ret >= 0 && pending.user_ptr != 0 {
                net::read_user_sockaddr(ev, pending.user_ptr);
            }
            emit::output(ev, slot, k)
        }
        _ => {}
    }
}

#[inline(always)]
fn path_event(p: &mut Pending, cur: &Current, kind: u16, dirfd: i32, path: u64, a0: u64, a1: u64) {
    // SAFETY: `data` is large and aligned enough for every event (MAX_EVENT_LEN, 8-aligned).
    let ev = unsafe { &mut *(p.data.as_mut_ptr() as *mut PathEvent) };
    ev.header = emit::header(kind, cur);
    ev.ret = 0;
    ev.dirfd = dirfd;
    ev.arg0 = a0 as u32;
    ev.arg1 = a1 as u32;
    p.user_ptr = unread(read_str(&mut ev.path, path, &mut ev.header.flags), path);
}

#[inline(always)]
fn rename_event(p: &mut Pending, cur: &Current, old: u64, new: u64) {
    // SAFETY: see `path_event`.
    let ev = unsafe { &mut *(p.data.as_mut_ptr() as *mut RenameEvent) };
    ev.header = emit::header(kind::RENAME, cur);
    ev.ret = 0;
    p.user_ptr = unread(read_str(&mut ev.old_path, old, &mut ev.header.flags), old);
    p.user_ptr2 = unread(read_str(&mut ev.new_path, new, &mut ev.header.flags), new);
}

#[inline(always)]
fn fork_event(p: &mut Pending, cur: &Current, clone_flags: u64) {
    // SAFETY: see `path_event`.
    let ev = unsafe { &mut *(p.data.as_mut_ptr() as *mut ForkEvent) };
    ev.header = emit::header(kind::FORK, cur);
    ev.ret = 0;
    ev.clone_flags = clone_flags;
}

#[inline(always)]
fn exec_event(p: &mut Pending, cur: &Current, filename: u64, argv: u64) {
    // SAFETY: see `path_event`.
    let ev = unsafe { &mut *(p.data.as_mut_ptr() as *mut ExecEvent) };
    ev.header = emit::header(kind::EXEC, cur);
    ev.ret = 0;
    let uid_gid = bpf_get_current_uid_gid();
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    // Not read again at exit: a successful exec has replaced the memory it pointed into.
    read_str(&mut ev.filename, filename, &mut ev.header.flags);

    // Arguments go NUL-separated into `argv`. Each read may use up to half the buffer and starts
    // in the first half, which keeps every access provably in bounds for the verifier.
    const HALF: usize = ARGV_LEN / 2;
    let mut off = 0usize;
    let mut argc = 0u32;
    let argv = argv as *const u64;
    for i in 0..ARGV_MAX {
        if off >= HALF {
            ev.header.flags |= HDR_FLAG_TRUNCATED;
            break;
        }
        // SAFETY: user pointer read with the faulting-safe helper.
        let Ok(arg) = (unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }) else {
            break;
        };
        if arg == 0 {
            break;
        }
        let start = off & (HALF - 1);
        // SAFETY: `start < HALF` and the read is at most HALF bytes, inside `ev.argv`.
        let n = unsafe {
            bpf_probe_read_user_str(
                ev.argv.as_mut_ptr().add(start).cast(),
                HALF as u32,
                arg as *const _,
            )
        };
        if n <= 0 {
            break;
        }
        off = start + n as usize;
        argc += 1;
    }
    ev.argc = argc;
    ev.argv_len = off as u32;
}

/// Reads a NUL-terminated user string into `dst`, flagging truncation; an unreadable pointer
/// leaves an empty string and returns false.
#[inline(always)]
fn read_str(dst: &mut [u8; PATH_LEN], src: u64, flags: &mut u16) -> bool {
    // SAFETY: the helper writes at most PATH_LEN bytes into `dst` and never faults.
    let n = unsafe {
        bpf_probe_read_user_str(dst.as_mut_ptr().cast(), PATH_LEN as u32, src as *const _)
    };
    if n <= 0 {
        dst[0] = 0;
        return false;
    }
    if n as usize >= PATH_LEN {
        *flags |= HDR_FLAG_TRUNCATED;
    }
    true
}

/// The pointer to read again at exit when the entry could not read it: a string on a page the
/// process has not touched yet is not mapped at entry (a program cannot fault it in), and the
/// syscall itself faults it in before it returns.
#[inline(always)]
fn unread(read: bool, src: u64) -> u64 {
    if read { 0 } else { src }
}

/// At exit, reads a path that entry could not (see [`unread`]); 0: nothing to do.
#[inline(always)]
fn reread(dst: &mut [u8; PATH_LEN], src: u64, flags: &mut u16) {
    if src != 0 {
        read_str(dst, src, flags);
    }
}
