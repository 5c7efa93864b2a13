//! A release as the sinks see it: the agent, the tier lifted, who approved it and why, and what
//! undoing each action did (see `agent-monitor release` and docs/RESPONSE.md).

use serde::Serialize;

use super::actuator::{ActionOutcome, Target};
use crate::detect::Tier;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Release {
    pub target: Target,
    /// The tier lifted (None: the daemon knew of no response in force).
    pub tier: Option<Tier>,
    /// Distinct approvers (two for a containment).
    pub approvers: Vec<String>,
    /// Their reasons, as `<approver>: <reason>`.
    pub reasons: Vec<String>,
    /// Each undo and its result, highest tier first.
    pub actions: Vec<ActionOutcome>,
}
