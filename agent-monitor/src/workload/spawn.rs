//! Starting an agent process the way a pod would run it: in its own cgroup and with its own view
//! of the filesystem (private bind mounts such as its data under `/srv`).

use std::{
    ffi::{CString, OsString},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
};

use anyhow::Context as _;

use crate::cgroup;

/// The environment an agent starts with: a Debian image's `PATH` and the UTF-8 C locale that
/// language images set (the shipped class models were recorded with it).
const AGENT_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LANG", "C.UTF-8"),
];

#[derive(Clone, Default)]
pub struct AgentSpawn {
    binds: Vec<(PathBuf, PathBuf)>,
}

impl AgentSpawn {
    /// Shows the host directory or file `source` at `target` to the agent only.
    pub fn bind(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.binds.push((source.into(), target.into()));
        self
    }

    /// Spawns `cmd` in the cgroup `dir`. The mount namespace is set up before the child joins the
    /// cgroup, so the agent's monitored life starts with its exec.
    ///
    /// The agent gets only [`AGENT_ENV`] and the variables set on `cmd`, as a container gets its
    /// image's environment rather than the node's. Inherited variables change what an agent
    /// does, and its class model would see another agent: under `cargo run`, `LD_LIBRARY_PATH`
    /// names the Rust sysroot and every exec probes a dozen library directories; without `LANG`,
    /// the compliance agent's `sha256sum` loads no locale files.
    pub fn spawn(&self, dir: &Path, cmd: &mut Command) -> anyhow::Result<Child> {
        let explicit: Vec<(OsString, Option<OsString>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        cmd.env_clear().envs(AGENT_ENV);
        for (key, value) in explicit {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        if !self.binds.is_empty() {
            let binds = self
                .binds
                .iter()
                .map(|(s, t)| Ok((cstring(s)?, cstring(t)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // SAFETY: only raw syscalls on strings prepared before the fork run in the child.
            unsafe {
                cmd.pre_exec(move || private_mounts(&binds));
            }
        }
        cgroup::spawn_in(dir, cmd)
            .with_context(|| format!("starting an agent in {}", dir.display()))
    }
}

fn cstring(p: &Path) -> anyhow::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", p.display()))
}

/// In the child between fork and exec: a new mount namespace, private so nothing propagates back
/// to the host, then the bind mounts.
fn private_mounts(binds: &[(CString, CString)]) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls with valid NUL-terminated strings or nulls where the kernel allows.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for (source, target) in binds {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
    }
    Ok(())
}
