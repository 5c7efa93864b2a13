//! Forensic snapshot: freezes an agent's cgroup (optionally), records what every process in
//! it is (tree, command line, executable and its SHA-256, open files, sockets, memory maps,
//! environment names with hashed values, uid/gid) and the agent's last events, writes a signed
//! bundle, then thaws or keeps the cgroup frozen as asked.
//!
//! A snapshot is evidence, so each call writes a new bundle; freezing an already frozen cgroup
//! is a no-op, and a cgroup that was frozen before the snapshot (by containment, say) is never
//! thawed by it. Undo: [`Snapshotter::thaw`]. The response stage runs snapshots on their own
//! thread ([`SnapshotWorker`]), never on the event pipeline's.

mod bundle;
mod freeze;
mod procfs;
mod sockets;
mod worker;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub use bundle::{
    BundleError, FORMAT, MANIFEST, Manifest, ManifestFile, SIGNATURE, load_signing_key,
    parse_verifying_key, verify_bundle,
};
pub use procfs::{EnvVar, FdInfo, MapEntry, ProcessInfo};
pub use sockets::SocketInfo;
pub use worker::{NotQueued, QUEUE, SnapshotWorker};

use crate::respond::flight::FlightRecorder;

/// Snapshot configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Directory the bundles are written under (created 0700).
    pub output_dir: PathBuf,
    /// Ed25519 signing key: 32 raw bytes or 64 hex digits.
    pub signing_key_file: PathBuf,
    /// Last events of the agent put in the bundle, from the flight recorder.
    #[serde(default = "default_events")]
    pub events: usize,
    /// Time allowed for `cgroup.events` to confirm a freeze or a thaw.
    #[serde(default = "default_freeze_timeout_ms")]
    pub freeze_timeout_ms: u64,
}

fn default_events() -> usize {
    256
}
fn default_freeze_timeout_ms() -> u64 {
    5_000
}

/// One snapshot to take.
#[derive(Clone, Debug)]
pub struct SnapshotRequest<'a> {
    pub agent_id: &'a str,
    /// The agent's cgroup v2 directory (e.g. `/sys/fs/cgroup/agents/fraud/fraud-1`).
    pub cgroup_dir: &'a Path,
    /// Freeze the cgroup while collecting.
    pub freeze: bool,
    /// Leave it frozen afterwards (containment); otherwise thaw it if this snapshot froze it.
    pub keep_frozen: bool,
}

/// What a snapshot did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// `forensic_snapshot`.
    pub action: String,
    pub agent: String,
    /// The cgroup directory.
    pub target: String,
    pub ok: bool,
    pub detail: String,
    pub undo: String,
    pub bundle: Option<PathBuf>,
    pub manifest_sha256: Option<String>,
    /// `cgroup.events` said frozen both before and after collection.
    pub frozen_during_collection: bool,
    /// Frozen when the snapshot returned.
    pub frozen_now: bool,
    pub processes: usize,
    /// Processes that exited during collection.
    pub gone: usize,
}

/// What a thaw did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThawRecord {
    /// `thaw`.
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub detail: String,
    pub undo: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} is not a cgroup v2 directory (no cgroup.procs)")]
    NotCgroup { dir: PathBuf },
    #[error("{} of {dir} not confirmed by cgroup.events within {waited_ms} ms", if *want { "freeze" } else { "thaw" })]
    FreezeTimeout {
        dir: PathBuf,
        want: bool,
        waited_ms: u64,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

impl SnapshotError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The cgroup part of a bundle (`cgroup.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CgroupState {
    pub dir: String,
    /// Cgroups collected, relative to `dir` (`""` is `dir` itself).
    pub cgroups: Vec<String>,
    pub freeze_requested: bool,
    pub frozen_before: bool,
    pub frozen_at_start: bool,
    pub frozen_at_end: bool,
    pub notes: Vec<String>,
}

/// The process tree of a bundle (`processes.json`): every pid with its parent and children.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessTree {
    pub processes: Vec<TreeNode>,
    /// Pids whose parent is not in the agent.
    pub roots: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeNode {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub name: Option<String>,
    pub cgroup: String,
    pub gone: bool,
    pub children: Vec<u32>,
    /// The file holding this process's details.
    pub file: String,
}

/// Takes snapshots.
pub struct Snapshotter {
    config: SnapshotConfig,
    flight: Option<Arc<FlightRecorder>>,
    seq: AtomicU64,
}

impl Snapshotter {
    pub fn new(config: SnapshotConfig, flight: Option<Arc<FlightRecorder>>) -> Self {
        Self {
            config,
            flight,
            seq: AtomicU64::new(0),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.freeze_timeout_ms)
    }

    /// Takes one snapshot. Failures are in the record, never a panic; the cgroup is thawed if
    /// this snapshot froze it and `keep_frozen` is false, whatever else failed.
    pub fn take(&self, req: &SnapshotRequest<'_>) -> SnapshotRecord {
        let mut record = SnapshotRecord {
            action: "forensic_snapshot".into(),
            agent: req.agent_id.into(),
            target: req.cgroup_dir.display().to_string(),
            ok: false,
            detail: String::new(),
            undo: String::new(),
            bundle: None,
            manifest_sha256: None,
            frozen_during_collection: false,
            frozen_now: false,
            processes: 0,
            gone: 0,
        };
        let mut notes = Vec::new();
        let dir = req.cgroup_dir;
        if !dir.join("cgroup.procs").is_file() {
            record.detail = SnapshotError::NotCgroup {
                dir: dir.to_owned(),
            }
            .to_string();
            record.undo = "nothing to undo".into();
            return record;
        }

        // Freeze.
        let frozen_before = freeze::requested(dir).unwrap_or(false);
        let mut froze_it = false;
        if req.freeze && !frozen_before {
            match freeze::set(dir, true, self.timeout()) {
                Ok(()) => froze_it = true,
                Err(e) => {
                    // Asked but not confirmed: still ours to undo.
                    froze_it = freeze::requested(dir).unwrap_or(false);
                    notes.push(format!("collected without a confirmed freeze: {e}"));
                }
            }
        }

        // Collect and write.
        let result = self.collect_and_write(req, frozen_before, &notes);

        // Thaw if ours and not to be kept.
        if froze_it
            && !req.keep_frozen
            && let Err(e) = freeze::set(dir, false, self.timeout())
        {
            notes.push(format!("thaw failed: {e}"));
        }
        record.frozen_now = freeze::is_frozen(dir).unwrap_or(false);
        record.undo = if record.frozen_now && froze_it {
            format!(
                "thaw: write 0 to {}/cgroup.freeze (Snapshotter::thaw)",
                dir.display()
            )
        } else if record.frozen_now {
            "nothing to undo here: the cgroup was frozen before this snapshot and is left so".into()
        } else {
            "nothing to undo: the cgroup is not frozen; the bundle is evidence, keep it".into()
        };
        match result {
            Ok(done) => {
                record.ok = true;
                record.frozen_during_collection = done.frozen_during_collection;
                record.processes = done.processes;
                record.gone = done.gone;
                record.detail = format!(
                    "bundle of {} processes ({} gone during collection), {} events{}",
                    done.processes,
                    done.gone,
                    done.events,
                    if done.frozen_during_collection {
                        ", collected frozen"
                    } else {
                        ""
                    }
                );
                record.bundle = Some(done.bundle);
                record.manifest_sha256 = Some(done.manifest_sha256);
                log::info!("forensic snapshot of {}: {}", req.agent_id, record.detail);
            }
            Err(e) => {
                record.detail = e.to_string();
                log::warn!("forensic snapshot of {} failed: {e}", req.agent_id);
            }
        }
        for note in notes {
            record.detail.push_str("; ");
            record.detail.push_str(&note);
        }
        record
    }

    /// Undo of a snapshot that kept the cgroup frozen: thaws it (idempotent).
    pub fn thaw(&self, cgroup_dir: &Path) -> ThawRecord {
        let result = freeze::set(cgroup_dir, false, self.timeout());
        ThawRecord {
            action: "thaw".into(),
            target: cgroup_dir.display().to_string(),
            ok: result.is_ok(),
            detail: match result {
                Ok(()) => "cgroup.events reports frozen 0".into(),
                Err(e) => e.to_string(),
            },
            undo: format!("freeze: write 1 to {}/cgroup.freeze", cgroup_dir.display()),
        }
    }

    fn collect_and_write(
        &self,
        req: &SnapshotRequest<'_>,
        frozen_before: bool,
        notes: &[String],
    ) -> Result<Collected, SnapshotError> {
        let dir = req.cgroup_dir;
        let key = load_signing_key(&self.config.signing_key_file)?;
        let frozen_at_start = freeze::is_frozen(dir)?;
        let mut cgroups = Vec::new();
        let mut pids = Vec::new();
        list_pids(dir, dir, &mut cgroups, &mut pids)?;

        let mut cache = procfs::Cache::default();
        let processes: Vec<ProcessInfo> = pids
            .into_iter()
            .map(|(pid, cgroup)| procfs::collect(pid, cgroup, &mut cache))
            .collect();
        let frozen_at_end = freeze::is_frozen(dir)?;
        let events = self
            .flight
            .as_ref()
            .map(|f| f.last(req.agent_id, self.config.events))
            .unwrap_or_default();

        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let name = format!(
            "{}-{created_unix_ms}-{}-{}",
            sanitize(req.agent_id),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut writer = bundle::Writer::create(&self.config.output_dir, &name)?;
        let written = (|| -> Result<(), SnapshotError> {
            writer.json(
                "cgroup.json",
                &CgroupState {
                    dir: dir.display().to_string(),
                    cgroups,
                    freeze_requested: req.freeze,
                    frozen_before,
                    frozen_at_start,
                    frozen_at_end,
                    notes: notes.to_vec(),
                },
            )?;
            writer.json("processes.json", &tree(&processes))?;
            for p in &processes {
                writer.json(&process_file(p.pid), p)?;
            }
            writer.json("events.json", &events)?;
            Ok(())
        })();
        if let Err(e) = written {
            writer.abandon();
            return Err(e);
        }
        let (bundle, manifest_sha256) = writer.finish(&key, req.agent_id, dir, created_unix_ms)?;
        Ok(Collected {
            bundle,
            manifest_sha256,
            frozen_during_collection: frozen_at_start && frozen_at_end,
            processes: processes.len(),
            gone: processes.iter().filter(|p| p.gone).count(),
            events: events.len(),
        })
    }
}

struct Collected {
    bundle: PathBuf,
    manifest_sha256: String,
    frozen_during_collection: bool,
    processes: usize,
    gone: usize,
    events: usize,
}

fn process_file(pid: u32) -> String {
    format!("process-{pid}.json")
}

/// Lists `(pid, cgroup relative to root)` for `dir` and every cgroup below it.
fn list_pids(
    root: &Path,
    dir: &Path,
    cgroups: &mut Vec<String>,
    pids: &mut Vec<(u32, String)>,
) -> Result<(), SnapshotError> {
    let rel = dir
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let procs = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&procs) {
        Ok(t) => t,
        // A child cgroup removed while walking: nothing left in it.
        Err(e) if dir != root && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SnapshotError::io(&procs)(e)),
    };
    cgroups.push(rel.clone());
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        pids.push((pid, rel.clone()));
    }
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(SnapshotError::io(dir))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        list_pids(root, &child, cgroups, pids)?;
    }
    Ok(())
}

fn tree(processes: &[ProcessInfo]) -> ProcessTree {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let pids: std::collections::HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let mut roots = Vec::new();
    for p in processes {
        match p.ppid {
            Some(pp) if pids.contains(&pp) => children.entry(pp).or_default().push(p.pid),
            _ => roots.push(p.pid),
        }
    }
    ProcessTree {
        processes: processes
            .iter()
            .map(|p| TreeNode {
                pid: p.pid,
                ppid: p.ppid,
                name: p.name.clone(),
                cgroup: p.cgroup.clone(),
                gone: p.gone,
                children: children.get(&p.pid).cloned().unwrap_or_default(),
                file: process_file(p.pid),
            })
            .collect(),
        roots,
    }
}

/// Keeps an agent id usable as a directory name.
fn sanitize(id: &str) -> String {
    let s: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("agent{s}")
    } else {
        s
    }
}
