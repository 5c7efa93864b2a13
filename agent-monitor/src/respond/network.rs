//! The in-kernel network actions as actuators: DENY_ALL and rate-limit of an agent's cgroup,
//! through [`Containment`] (pinned maps, so they outlive the daemon).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{
    actuator::{ActionOutcome, Actuator, Target},
    contain::{ActionResult, Containment},
};

/// The containment maps, shared by the network actuators of one daemon.
pub type SharedContainment = Arc<Mutex<Containment>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkAction {
    DenyAll,
    RateLimit {
        connects_per_s: u32,
        bytes_per_s: u64,
    },
}

pub struct Network {
    containment: SharedContainment,
    action: NetworkAction,
    /// What apply did per cgroup, so undo sets back exactly the policy before it.
    applied: HashMap<u64, ActionResult>,
}

impl Network {
    pub fn new(containment: SharedContainment, action: NetworkAction) -> Self {
        Self {
            containment,
            action,
            applied: HashMap::new(),
        }
    }

    fn outcome(
        &self,
        verb: &str,
        result: Result<ActionResult, String>,
        undo: Option<String>,
    ) -> ActionOutcome {
        match result {
            Ok(r) => ActionOutcome {
                action: format!("{}{verb}", self.name()),
                ok: true,
                detail: serde_json::to_string(&r).unwrap_or_default(),
                undo,
            },
            Err(e) => ActionOutcome {
                action: format!("{}{verb}", self.name()),
                ok: false,
                detail: e,
                undo: None,
            },
        }
    }
}

impl Actuator for Network {
    fn name(&self) -> &'static str {
        match self.action {
            NetworkAction::DenyAll => "deny_all",
            NetworkAction::RateLimit { .. } => "rate_limit",
        }
    }

    /// A map update in force at the agent's next syscall: it goes before every other action.
    fn urgent(&self) -> bool {
        true
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        let result = match self.containment.lock() {
            Ok(mut c) => match self.action {
                NetworkAction::DenyAll => c.deny_all(target.cgroup_id, Some(&target.agent_id)),
                NetworkAction::RateLimit {
                    connects_per_s,
                    bytes_per_s,
                } => c.rate_limit(target.cgroup_id, connects_per_s, bytes_per_s),
            }
            .map_err(|e| e.to_string()),
            Err(_) => Err("containment state poisoned".into()),
        };
        if let Ok(r) = &result {
            self.applied
                .entry(target.cgroup_id)
                .or_insert_with(|| r.clone());
        }
        let undo = Some(format!(
            "agent-monitor release {} --approver <name> (a containment needs two approvers)",
            target.agent_id
        ));
        self.outcome("", result, undo)
    }

    fn forget_gone(&mut self, exists: &dyn Fn(u64) -> bool) -> Vec<(u64, ActionOutcome)> {
        self.applied.retain(|cgroup_id, _| exists(*cgroup_id));
        let released = match self.containment.lock() {
            Ok(mut c) => c.release_gone(exists).map_err(|e| e.to_string()),
            Err(_) => Err("containment state poisoned".into()),
        };
        match released {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    let detail = format!(
                        "cgroup {} no longer exists: its containment entry was removed ({})",
                        r.cgroup_id,
                        serde_json::to_string(&r).unwrap_or_default()
                    );
                    let outcome = ActionOutcome {
                        action: "release_gone".into(),
                        ok: true,
                        detail,
                        undo: None,
                    };
                    (r.cgroup_id, outcome)
                })
                .collect(),
            Err(e) => {
                log::error!("containment entries of removed cgroups not dropped: {e}");
                Vec::new()
            }
        }
    }

    fn undo(&mut self, target: &Target) -> ActionOutcome {
        let done = self.applied.remove(&target.cgroup_id);
        let result = match self.containment.lock() {
            Ok(mut c) => match &done {
                // Only this action's own part: the deny and the rate limit may be undone in
                // either order (see `urgent`).
                Some(done) => c.undo_own(done),
                // Applied by an earlier daemon (pinned state): lift everything.
                None => c.release(target.cgroup_id),
            }
            .map_err(|e| e.to_string()),
            Err(_) => Err("containment state poisoned".into()),
        };
        self.outcome(":undo", result, None)
    }
}
