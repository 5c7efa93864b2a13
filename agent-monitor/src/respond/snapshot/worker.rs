//! The snapshot worker: forensic snapshots run on their own thread, off the event pipeline.
//!
//! A snapshot freezes the cgroup, walks /proc for every process, hashes executables and writes a
//! signed bundle: tens to hundreds of milliseconds, during which the pipeline would read no
//! event and apply no other containment. The pipeline thread only queues the request (a bounded
//! queue: when it is full the request fails at once and says so, it never blocks) and collects
//! the finished records later ([`SnapshotWorker::completed`]).
//!
//! Release while a snapshot is queued or running: the undo thaws at once and marks the job, so
//! a job that has not started yet does not keep the cgroup frozen, and one that is running
//! thaws what it froze when it ends.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{SnapshotRecord, SnapshotRequest, Snapshotter, ThawRecord};

/// Snapshots waiting for the worker, beyond the one it is taking.
pub const QUEUE: usize = 16;

/// One snapshot to take, and who asked (returned with the record).
struct Job<T> {
    tag: T,
    agent_id: String,
    cgroup_dir: PathBuf,
    keep_frozen: bool,
}

/// Per cgroup: a snapshot is queued or running, and whether a release came meanwhile.
#[derive(Default)]
struct InFlight {
    released: bool,
}

type Jobs = Arc<Mutex<HashMap<PathBuf, InFlight>>>;

/// Why a snapshot was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum NotQueued {
    /// A snapshot of this cgroup is already queued or running (applying twice is one snapshot).
    AlreadyRunning,
    /// The queue is full.
    QueueFull,
    /// The worker thread is gone.
    Stopped,
}

pub struct SnapshotWorker<T> {
    snapshotter: Arc<Snapshotter>,
    jobs: Option<SyncSender<Job<T>>>,
    done: Receiver<(T, SnapshotRecord)>,
    in_flight: Jobs,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> SnapshotWorker<T> {
    pub fn start(snapshotter: Snapshotter) -> std::io::Result<Self> {
        let snapshotter = Arc::new(snapshotter);
        let (jobs, queue) = mpsc::sync_channel::<Job<T>>(QUEUE);
        let (report, done) = mpsc::channel();
        let in_flight = Jobs::default();
        let thread = {
            let (snapshotter, in_flight) = (snapshotter.clone(), in_flight.clone());
            std::thread::Builder::new()
                .name("snapshot".into())
                .spawn(move || {
                    for job in queue {
                        let record = run(&snapshotter, &in_flight, &job);
                        // The pipeline may be gone at exit: nothing left to tell.
                        let _ = report.send((job.tag, record));
                        // Busy until the record is sent, so that `completed`, which waits
                        // while busy, always finds it.
                        in_flight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&job.cgroup_dir);
                    }
                })?
        };
        Ok(Self {
            snapshotter,
            jobs: Some(jobs),
            done,
            in_flight,
            thread: Some(thread),
        })
    }

    /// Queues a snapshot of `cgroup_dir`; returns at once.
    pub fn submit(
        &self,
        tag: T,
        agent_id: &str,
        cgroup_dir: &Path,
        keep_frozen: bool,
    ) -> Result<(), NotQueued> {
        let Some(jobs) = &self.jobs else {
            return Err(NotQueued::Stopped);
        };
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight.contains_key(cgroup_dir) {
            return Err(NotQueued::AlreadyRunning);
        }
        let job = Job {
            tag,
            agent_id: agent_id.to_owned(),
            cgroup_dir: cgroup_dir.to_owned(),
            keep_frozen,
        };
        match jobs.try_send(job) {
            Ok(()) => {
                in_flight.insert(cgroup_dir.to_owned(), InFlight::default());
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(NotQueued::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(NotQueued::Stopped),
        }
    }

    /// Undo: thaws the cgroup now (idempotent) and tells a queued or running snapshot of it not
    /// to leave it frozen.
    pub fn thaw(&self, cgroup_dir: &Path) -> ThawRecord {
        if let Some(job) = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(cgroup_dir)
        {
            job.released = true;
        }
        self.snapshotter.thaw(cgroup_dir)
    }

    /// Whether a snapshot is queued or running.
    pub fn busy(&self) -> bool {
        !self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The snapshots finished since the last call; with `wait`, waits up to that long for the
    /// ones still queued or running.
    pub fn completed(&self, wait: Option<Duration>) -> Vec<(T, SnapshotRecord)> {
        let mut out: Vec<_> = self.done.try_iter().collect();
        if let Some(wait) = wait {
            let deadline = Instant::now() + wait;
            while self.busy() {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.done.recv_timeout(left.min(Duration::from_millis(20))) {
                    Ok(d) => out.push(d),
                    Err(RecvTimeoutError::Timeout) if left.is_zero() => break,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            out.extend(self.done.try_iter());
        }
        out
    }
}

impl<T> Drop for SnapshotWorker<T> {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the snapshot it is taking is written.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes one snapshot; a release that came meanwhile wins over `keep_frozen`.
fn run<T>(snapshotter: &Snapshotter, in_flight: &Jobs, job: &Job<T>) -> SnapshotRecord {
    let released = |jobs: &Jobs| {
        jobs.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job.cgroup_dir)
            .is_some_and(|j| j.released)
    };
    let mut record = snapshotter.take(&SnapshotRequest {
        agent_id: &job.agent_id,
        cgroup_dir: &job.cgroup_dir,
        freeze: true,
        keep_frozen: job.keep_frozen && !released(in_flight),
    });
    if released(in_flight) && record.frozen_now {
        let thaw = snapshotter.thaw(&job.cgroup_dir);
        record.frozen_now = !thaw.ok;
        record
            .detail
            .push_str("; released while the snapshot ran: ");
        record.detail.push_str(&thaw.detail);
        record.undo = "nothing to undo: released, the cgroup was thawed".into();
    }
    record
}
