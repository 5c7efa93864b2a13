//! Wakes the registry as soon as a cgroup appears or goes under a watched parent, its class
//! directories or the kubelet's hierarchies (inotify on cgroupfs reports a `mkdir` by the
//! runtime), so that a new agent is monitored within a moment of its creation, normally before
//! the runtime starts the workload in it. The periodic rescan is then only a safety net and can
//! be rare: with 10,000 agents a rescan every 100 ms cost a quarter of a core (PERF-ANCHORS
//! row 7, BENCHMARKS.md "Memory").

use std::{
    collections::HashSet,
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::PathBuf,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct CgroupWatch {
    fd: AsyncFd<Fd>,
    /// The directories watched at the last sync.
    watched: HashSet<PathBuf>,
    /// An event came since the last sync: watched directories may have been recreated.
    stale: bool,
}

impl CgroupWatch {
    pub fn new() -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the inotify instance owns its fd and lives inside the AsyncFd, so the fd stays
        // open for as long as it is registered.
        let fd = unsafe { AsyncFd::register(Fd(inotify)) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            watched: HashSet::new(),
            stale: false,
        })
    }

    /// Watches exactly `dirs` for subdirectories created or removed. A removed directory's
    /// watch goes with it; one recreated under the same path is watched again. Returns whether
    /// a directory not watched before is now: what was made in it before its watch was not
    /// reported, so the caller looks again.
    pub fn sync(&mut self, dirs: &[PathBuf]) -> bool {
        let same =
            dirs.len() == self.watched.len() && dirs.iter().all(|d| self.watched.contains(d));
        if same && !self.stale {
            return false;
        }
        let before = std::mem::take(&mut self.watched);
        let mut added = false;
        for dir in dirs {
            let mask =
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_ONLYDIR;
            match self.fd.get_ref().0.add_watch(dir.as_path(), mask) {
                Ok(_) => {
                    added |= !before.contains(dir);
                    self.watched.insert(dir.clone());
                }
                // Gone since the scan: the next scan will not list it.
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => log::warn!(
                    "{}: not watched for new cgroups ({e}); found at the next rescan",
                    dir.display()
                ),
            }
        }
        self.stale = false;
        added
    }

    /// Waits for a change and drains the events.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.get_inner().0.read_events() {
                Ok(events) if !events.is_empty() => {
                    self.stale = true;
                    return Ok(());
                }
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // inotify works on any directory; a temporary one stands in for cgroupfs here (the kernel
    // tests exercise the real one).
    #[tokio::test]
    async fn a_new_subdirectory_wakes_the_watch() {
        let root = tempfile::tempdir().unwrap();
        let mut w = CgroupWatch::new().unwrap();
        assert!(
            w.sync(&[root.path().to_owned()]),
            "a new directory to look in"
        );
        assert!(!w.sync(&[root.path().to_owned()]), "nothing new");
        std::fs::create_dir(root.path().join("pod")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("woken")
            .unwrap();
        // Nothing more happened: no wake.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), w.changed())
                .await
                .is_err()
        );
    }
}
