//! Actuators that act on the agent's credentials and processes: token revocation and the
//! forensic snapshot (freeze, collect, sign; thaw is the undo).

use super::{
    actuator::{ActionOutcome, Actuator, Target},
    revoke::Revoker,
    snapshot::{SnapshotRequest, Snapshotter},
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

pub struct Snapshot {
    pub snapshotter: Snapshotter,
    /// Leave the agent frozen after the snapshot (until release).
    pub keep_frozen: bool,
}

impl Actuator for Snapshot {
    fn name(&self) -> &'static str {
        "forensic_snapshot"
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        let Some(dir) = &target.cgroup_path else {
            return ActionOutcome {
                action: self.name().into(),
                ok: false,
                detail: "the agent's cgroup directory is not known".into(),
                undo: None,
            };
        };
        let r = self.snapshotter.take(&SnapshotRequest {
            agent_id: &target.agent_id,
            cgroup_dir: dir,
            freeze: true,
            keep_frozen: self.keep_frozen,
        });
        ActionOutcome {
            action: self.name().into(),
            ok: r.ok,
            detail: format!(
                "{}; bundle {} (manifest sha256 {})",
                r.detail,
                r.bundle
                    .as_ref()
                    .map_or("-".into(), |b| b.display().to_string()),
                r.manifest_sha256.as_deref().unwrap_or("-")
            ),
            undo: Some(r.undo),
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
        let r = self.snapshotter.thaw(dir);
        ActionOutcome {
            action: "thaw".into(),
            ok: r.ok,
            detail: r.detail,
            undo: None,
        }
    }
}
