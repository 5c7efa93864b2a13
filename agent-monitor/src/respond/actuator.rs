//! The actuator seam: every response action is applied and undone through this trait, and a
//! recording wrapper lets drills and replays assert what would have run without touching
//! anything.

use std::{path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::webhook::Evidence;

/// The agent an action is aimed at. Kept per agent by the response stage and its sinks (the
/// API lists them): the names are shared, so a copy costs no allocation (PERF-ANCHORS row 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub agent_id: Arc<str>,
    pub class: Arc<str>,
    pub cgroup_id: u64,
    /// The agent's cgroup directory, when known (freeze, snapshot).
    pub cgroup_path: Option<Arc<Path>>,
}

/// What an action did: recorded in the audit log and the SOC ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub action: String,
    pub ok: bool,
    pub detail: String,
    /// How to undo it (a command or what must be re-issued), when it can be undone.
    pub undo: Option<String>,
}

/// An action whose work finished off the pipeline thread (the forensic snapshot): its real
/// outcome, which replaces the `queued` outcome its apply returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Completed {
    pub target: Target,
    /// The agent's tier when the action finished (filled by the response stage).
    pub tier: Option<crate::detect::Tier>,
    pub outcome: ActionOutcome,
    /// The evidence bundle the action wrote, when it wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

pub trait Actuator: Send {
    /// Stable name used in records and configuration (`deny_all`, `rate_limit`, ...).
    fn name(&self) -> &'static str;
    /// Applies the action; idempotent (applying twice leaves the same state).
    fn apply(&mut self, target: &Target) -> ActionOutcome;
    /// Undoes the action where that is possible; idempotent too.
    fn undo(&mut self, target: &Target) -> ActionOutcome;
    /// Applied before every other action of a decision, highest tier first: an in-kernel
    /// change that takes effect at the agent's next syscall and costs microseconds, which must
    /// not wait for actions that go over the network (revocation) or read the file system
    /// (snapshot). Its undo must not depend on the order of undos.
    fn urgent(&self) -> bool {
        false
    }
    /// Drops what this action keeps in force for cgroups that no longer exist (`exists` says
    /// which do): a removed agent's entry in a pinned map would otherwise outlive it. Returns
    /// each cgroup dropped with what was done. Called when an agent is removed, at start and at
    /// exit.
    fn forget_gone(&mut self, _exists: &dyn Fn(u64) -> bool) -> Vec<(u64, ActionOutcome)> {
        Vec::new()
    }
    /// Work that finished on the actuator's own thread since the last call (an action that
    /// does file-system work too slow for the event pipeline hands it to a worker and its
    /// apply returns at once). `wait`: at exit, how long to wait for work still in flight.
    fn completed(&mut self, _wait: Option<Duration>) -> Vec<Completed> {
        Vec::new()
    }
}

/// Dry-run wrapper: records every call and reports success without acting.
pub struct Recording<A> {
    inner: A,
    pub calls: Vec<(String, Target)>,
}

impl<A: Actuator> Recording<A> {
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            calls: Vec::new(),
        }
    }

    fn record(&mut self, verb: &str, target: &Target) -> ActionOutcome {
        let action = format!("{}:{verb}", self.inner.name());
        self.calls.push((action.clone(), target.clone()));
        ActionOutcome {
            action,
            ok: true,
            detail: "dry run: recorded, not applied".into(),
            undo: None,
        }
    }
}

impl<A: Actuator> Actuator for Recording<A> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        self.record("apply", target)
    }

    fn undo(&mut self, target: &Target) -> ActionOutcome {
        self.record("undo", target)
    }

    fn urgent(&self) -> bool {
        self.inner.urgent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;

    impl Actuator for Panics {
        fn name(&self) -> &'static str {
            "deny_all"
        }
        fn apply(&mut self, _: &Target) -> ActionOutcome {
            unreachable!("a dry run never reaches the real actuator")
        }
        fn undo(&mut self, _: &Target) -> ActionOutcome {
            unreachable!("a dry run never reaches the real actuator")
        }
    }

    #[test]
    fn a_dry_run_records_and_never_acts() {
        let mut a = Recording::new(Panics);
        let t = Target {
            agent_id: "fraud-1".into(),
            class: "fraud".into(),
            cgroup_id: 7,
            cgroup_path: None,
        };
        assert!(a.apply(&t).ok);
        assert!(a.undo(&t).ok);
        let names: Vec<&str> = a.calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["deny_all:apply", "deny_all:undo"]);
    }
}
