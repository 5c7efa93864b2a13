//! Syscall numbers of the tracked syscalls (x86_64 table).

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!("agent-monitor's tracked syscall table is only written for x86_64 so far");

pub const OPEN: i32 = 2;
pub const ACCEPT: i32 = 43;
pub const CONNECT: i32 = 42;
pub const BIND: i32 = 49;
pub const CLONE: i32 = 56;
pub const FORK: i32 = 57;
pub const VFORK: i32 = 58;
pub const EXECVE: i32 = 59;
pub const EXIT: i32 = 60;
pub const RENAME: i32 = 82;
pub const UNLINK: i32 = 87;
pub const CHMOD: i32 = 90;
pub const CHOWN: i32 = 92;
pub const LCHOWN: i32 = 94;
pub const EXIT_GROUP: i32 = 231;
pub const OPENAT: i32 = 257;
pub const FCHOWNAT: i32 = 260;
pub const UNLINKAT: i32 = 263;
pub const RENAMEAT: i32 = 264;
pub const FCHMODAT: i32 = 268;
pub const ACCEPT4: i32 = 288;
pub const RENAMEAT2: i32 = 316;
pub const EXECVEAT: i32 = 322;
pub const CLONE3: i32 = 435;
pub const OPENAT2: i32 = 437;
pub const FCHMODAT2: i32 = 452;

pub const AT_FDCWD: i32 = -100;
