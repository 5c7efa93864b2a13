//! Actuators that act on the agent's credentials and processes: token revocation and the
//! forensic snapshot (freeze, collect, sign, on its own worker thread; thaw is the undo).

use std::time::Duration;

use super::{
    actuator::{ActionOutcome, Actuator, Completed, Target},
    revoke::Revoker,
    snapshot::{NotQueued, QUEUE, SnapshotRecord, SnapshotWorker, Snapshotter},
    webhook::Evidence,
};

pub struct Revoke(pub Revoker);

impl Actuator for Revoke {
    fn name(&self) -> &'static str {
        "revoke_tokens"
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        let records = self.0.revoke_agent(&target.agent_id);
        let ok = records.iter().all(|r| r.ok);
        ActionOutcome {
            action: self.name().into(),
            ok,
            detail: serde_json::to_string(&records).unwrap_or_default(),
            undo: Some("revocation cannot be undone: re-issue the agent's credentials".into()),
        }
    }

    fn undo(&mut self, _: &Target) -> ActionOutcome {
        ActionOutcome {
            action: "revoke_tokens:undo".into(),
            ok: true,
            detail: "nothing to undo: re-issue the agent's credentials through their issuer".into(),
            undo: None,
        }
    }
}

/// The forensic snapshot, taken on its own worker thread: `apply` queues it and returns a
/// `queued` outcome at once (the in-kernel containment is already in force by then), and the
/// bundle's outcome comes later through [`Actuator::completed`].
pub struct Snapshot {
    worker: SnapshotWorker<Target>,
    /// Leave the agent frozen after the snapshot (until release).
    keep_frozen: bool,
}

impl Snapshot {
    pub fn new(snapshotter: Snapshotter, keep_frozen: bool) -> std::io::Result<Self> {
        Ok(Self {
            worker: SnapshotWorker::start(snapshotter)?,
            keep_frozen,
        })
    }
}

/// A finished snapshot as the action's outcome, and its bundle as evidence.
fn finished(record: &SnapshotRecord) -> (ActionOutcome, Option<Evidence>) {
    let evidence = match (&record.bundle, &record.manifest_sha256) {
        (Some(path), Some(digest)) => Some(Evidence {
            digest: format!("sha256:{digest}"),
            path: path.display().to_string(),
        }),
        _ => None,
    };
    let outcome = ActionOutcome {
        action: "forensic_snapshot".into(),
        ok: record.ok,
        detail: format!(
            "{}; bundle {} (manifest sha256 {})",
            record.detail,
            record
                .bundle
                .as_ref()
                .map_or("-".into(), |b| b.display().to_string()),
            record.manifest_sha256.as_deref().unwrap_or("-")
        ),
        undo: Some(record.undo.clone()),
    };
    (outcome, evidence)
}

impl Actuator for Snapshot {
    fn name(&self) -> &'static str {
        "forensic_snapshot"
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        let outcome = |ok: bool, detail: String, undo: Option<String>| ActionOutcome {
            action: "forensic_snapshot".into(),
            ok,
            detail,
            undo,
        };
        let Some(dir) = &target.cgroup_path else {
            return outcome(
                false,
                "the agent's cgroup directory is not known".into(),
                None,
            );
        };
        let thaw = format!(
            "thaw: write 0 to {}/cgroup.freeze (done by the release)",
            dir.display()
        );
        match self
            .worker
            .submit(target.clone(), &target.agent_id, dir, self.keep_frozen)
        {
            Ok(()) => outcome(
                true,
                format!(
                    "queued: freeze, collection and the signed bundle run on the snapshot \
                     worker; the bundle's path and digest follow when it is written{}",
                    if self.keep_frozen {
                        " (the agent stays frozen until released)"
                    } else {
                        ""
                    }
                ),
                Some(thaw),
            ),
            Err(NotQueued::AlreadyRunning) => outcome(
                true,
                "a snapshot of this agent is already queued or running".into(),
                Some(thaw),
            ),
            Err(NotQueued::QueueFull) => outcome(
                false,
                format!("not taken: {QUEUE} snapshots are already waiting for the worker"),
                None,
            ),
            Err(NotQueued::Stopped) => {
                outcome(false, "not taken: the snapshot worker stopped".into(), None)
            }
        }
    }

    fn undo(&mut self, target: &Target) -> ActionOutcome {
        let Some(dir) = &target.cgroup_path else {
            return ActionOutcome {
                action: "forensic_snapshot:undo".into(),
                ok: true,
                detail: "no cgroup known: nothing frozen".into(),
                undo: None,
            };
        };
        let r = self.worker.thaw(dir);
        ActionOutcome {
            action: "thaw".into(),
            ok: r.ok,
            detail: r.detail,
            undo: None,
        }
    }

    fn completed(&mut self, wait: Option<Duration>) -> Vec<Completed> {
        self.worker
            .completed(wait)
            .into_iter()
            .map(|(target, record)| {
                let (outcome, evidence) = finished(&record);
                Completed {
                    target,
                    tier: None,
                    outcome,
                    evidence,
                }
            })
            .collect()
    }
}
