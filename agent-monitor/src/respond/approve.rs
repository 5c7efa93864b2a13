//! One approval towards lifting an agent's responses, shared by `agent-monitor release` and the
//! API's Release call: it is recorded in the state directory and the audit log, and once enough
//! distinct approvers agree (two for a containment, one below), the release request that the
//! daemon carries out is filed.

use std::path::PathBuf;

use super::{
    audit::{AuditError, AuditLog, Kind},
    state::{ReleaseRequest, StateDir, StateError, now_rfc3339},
};
use crate::detect::Tier;

/// Distinct approvers a release of `tier` needs.
pub fn needed(tier: Tier) -> usize {
    if tier == Tier::Contain { 2 } else { 1 }
}

/// What one approval led to.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub class: String,
    /// The tier in force (`None`: nothing to release, nothing was recorded).
    pub tier: Option<Tier>,
    /// Every distinct approver so far.
    pub approvers: Vec<String>,
    pub needed: usize,
    /// The approver had approved already and the caller asked to refuse that: nothing recorded.
    pub repeated: bool,
    /// Enough approvers: the request the daemon will carry out.
    pub requested: Option<ReleaseRequest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("no response is recorded for agent {agent:?} in {dir}")]
    Unknown { agent: String, dir: PathBuf },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Records `approver`'s approval of releasing `agent`. With `refuse_repeat`, an approver who
/// already approved is refused (`repeated`, nothing written) instead of counted once again; the
/// API uses it because its approver is an authenticated principal.
pub fn approve(
    state: &StateDir,
    audit: Option<&mut AuditLog>,
    agent: &str,
    approver: &str,
    reason: &str,
    refuse_repeat: bool,
) -> Result<Outcome, ApproveError> {
    // Check, count and file under the directory's lock: two approvers at once both count.
    let _lock = state.lock()?;
    let Some(record) = state.agent(agent)? else {
        return Err(ApproveError::Unknown {
            agent: agent.to_owned(),
            dir: state.root().to_owned(),
        });
    };
    let mut outcome = Outcome {
        class: record.target.class.to_string(),
        tier: record.tier,
        approvers: Vec::new(),
        needed: 0,
        repeated: false,
        requested: None,
    };
    let Some(tier) = record.tier else {
        return Ok(outcome);
    };
    outcome.needed = needed(tier);
    let before = state.approvals(agent)?;
    if refuse_repeat && before.approvers.contains(approver) {
        outcome.approvers = before.approvers.into_iter().collect();
        outcome.repeated = true;
        return Ok(outcome);
    }
    let approvals = state.approve(agent, approver, reason)?;
    let have = approvals.approvers.len();
    if let Some(log) = audit {
        // The daemon may be appending too: the log's own lock keeps the chain whole.
        let token = log.token(approver);
        log.append(
            Kind::Approval,
            Some(agent),
            Some(&record.target.class),
            serde_json::json!({
                "approver": token,
                "tier": tier,
                "approvals": have,
                "needed": outcome.needed,
                "reason": reason,
            }),
        )?;
    }
    outcome.approvers = approvals.approvers.into_iter().collect();
    if have >= outcome.needed {
        let request = ReleaseRequest {
            agent_id: agent.to_owned(),
            approvers: outcome.approvers.clone(),
            requested: now_rfc3339(),
            reasons: approvals.reason,
        };
        state.request_release(&request)?;
        outcome.requested = Some(request);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::{actuator::Target, state::AgentRecord};

    fn contained(state: &StateDir, agent: &str) {
        state
            .write_agent(&AgentRecord {
                target: Target {
                    agent_id: agent.into(),
                    class: "fraud".into(),
                    cgroup_id: 1,
                    cgroup_path: None,
                },
                tier: Some(Tier::Contain),
                since: now_rfc3339(),
            })
            .expect("write");
    }

    #[test]
    fn a_containment_needs_two_distinct_approvers_and_a_repeat_can_be_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        contained(&state, "fraud-1");
        let one = approve(&state, None, "fraud-1", "alice", "fp", true).expect("approve");
        assert_eq!((one.approvers.len(), one.needed), (1, 2));
        assert!(one.requested.is_none() && !one.repeated);
        let again = approve(&state, None, "fraud-1", "alice", "", true).expect("approve");
        assert!(again.repeated && again.requested.is_none());
        // The CLI's way: the same name counts once, without refusal.
        let counted = approve(&state, None, "fraud-1", "alice", "", false).expect("approve");
        assert!(!counted.repeated && counted.requested.is_none());
        let two = approve(&state, None, "fraud-1", "bob", "", true).expect("approve");
        let request = two.requested.expect("requested");
        assert_eq!(request.approvers, ["alice", "bob"]);
        assert_eq!(state.pending_releases(), vec![request]);
    }

    #[test]
    fn unknown_agents_and_agents_without_a_tier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        assert!(matches!(
            approve(&state, None, "ghost", "alice", "", true),
            Err(ApproveError::Unknown { .. })
        ));
        state
            .write_agent(&AgentRecord {
                target: Target {
                    agent_id: "calm".into(),
                    class: "fraud".into(),
                    cgroup_id: 1,
                    cgroup_path: None,
                },
                tier: None,
                since: now_rfc3339(),
            })
            .expect("write");
        let out = approve(&state, None, "calm", "alice", "", true).expect("approve");
        assert_eq!(out.tier, None);
        assert!(state.approvals("calm").expect("read").approvers.is_empty());
    }
}
