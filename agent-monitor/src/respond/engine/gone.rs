//! Removed agents: what the actuators keep in force for a cgroup that no longer exists is
//! dropped (a pinned map entry would otherwise outlive the agent for ever), with a response for
//! the sinks and the output.

use std::path::Path;

use super::{Responder, Response, gone};
use crate::respond::{
    actuator::{ActionOutcome, Target},
    policy::{Decision, Reason},
};

impl Responder {
    /// Drops what the actuators keep in force for cgroups that no longer exist (a contained
    /// agent's cgroup removed: its pinned map entry would otherwise stay for ever). Each cgroup
    /// dropped becomes a response (its tier to none, reason `cgroup_gone`) for the sinks (an
    /// audit record) and for the next [`Responder::tick`]. When an agent is removed, at start
    /// (before restoring) and at exit; live only. A cgroup whose existence cannot be checked is
    /// kept.
    pub fn forget_gone(&mut self, now_ns: u64) -> Vec<Response> {
        let Some(root) = self.live_root().map(Path::to_owned) else {
            return Vec::new();
        };
        let exists = |id: u64| !gone(&root, id);
        let mut gone: Vec<(u64, Vec<ActionOutcome>)> = Vec::new();
        for (_, actuator) in self.actuators.iter_mut().rev() {
            for (cgroup_id, outcome) in actuator.forget_gone(&exists) {
                match gone.iter_mut().find(|(c, _)| *c == cgroup_id) {
                    Some((_, actions)) => actions.push(outcome),
                    None => gone.push((cgroup_id, vec![outcome])),
                }
            }
        }
        let mut out = Vec::new();
        for (cgroup_id, actions) in gone {
            let agent = self
                .targets
                .iter()
                .find(|(_, t)| t.cgroup_id == cgroup_id)
                .map(|(a, _)| a.clone());
            let from = agent
                .as_ref()
                .and_then(|a| self.states.remove(a))
                .and_then(|s| s.tier);
            let target = agent
                .and_then(|a| self.targets.get(&a).cloned())
                .unwrap_or_else(|| Target {
                    agent_id: format!("cgroup-{cgroup_id}").into(),
                    class: "unknown".into(),
                    cgroup_id,
                    cgroup_path: None,
                });
            log::warn!(
                "{}: cgroup {cgroup_id} no longer exists; its containment is dropped",
                target.agent_id
            );
            let response = Response {
                target,
                decision: Decision {
                    from,
                    to: None,
                    reason: Reason::CgroupGone,
                    ts_ns: now_ns,
                },
                findings: vec![],
                actions,
            };
            for sink in &mut self.sinks {
                if let Err(e) = sink.on_response(&response) {
                    log::error!("{}: dropped containment not recorded: {e:#}", sink.name());
                }
            }
            self.pending.push(response.clone());
            out.push(response);
        }
        out
    }
}
