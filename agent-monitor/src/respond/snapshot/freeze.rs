//! cgroup v2 freezer: `cgroup.freeze` asks, `cgroup.events` (`frozen 0|1`) confirms.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use super::SnapshotError;

/// Whether freezing has been asked for (`cgroup.freeze` holds 1).
pub(super) fn requested(dir: &Path) -> Result<bool, SnapshotError> {
    let path = dir.join("cgroup.freeze");
    let text = fs::read_to_string(&path).map_err(SnapshotError::io(&path))?;
    Ok(text.trim() == "1")
}

/// Whether the cgroup is frozen now (`frozen 1` in `cgroup.events`).
pub(super) fn is_frozen(dir: &Path) -> Result<bool, SnapshotError> {
    let path = dir.join("cgroup.events");
    let text = fs::read_to_string(&path).map_err(SnapshotError::io(&path))?;
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().eq(["frozen", "1"])))
}

/// Writes `want` to `cgroup.freeze` and waits until `cgroup.events` agrees, or `timeout`.
pub(super) fn set(dir: &Path, want: bool, timeout: Duration) -> Result<(), SnapshotError> {
    let path = dir.join("cgroup.freeze");
    fs::write(&path, if want { "1" } else { "0" }).map_err(SnapshotError::io(&path))?;
    let start = Instant::now();
    loop {
        if is_frozen(dir)? == want {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(SnapshotError::FreezeTimeout {
                dir: dir.to_owned(),
                want,
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
