//! Detection: feature windows, per-class baselines, anomaly models and rules, all producing
//! [`Finding`]s that the decision policy turns into a tier.

pub mod anomaly;
pub mod baseline;
pub mod engine;
pub mod recent;
pub mod rules;
pub mod sequence;
pub mod training;
pub mod window;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Response tiers, ordered by severity. Rules name one directly; anomaly scores map to one
/// through per-class thresholds in the decision policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Logged as suspicious, no action.
    Log = 1,
    /// Rate-limit the agent's network and watch it more closely.
    RateLimit = 2,
    /// Revoke tokens, DENY_ALL network, forensic snapshot, incident.
    Contain = 3,
}

/// Which detector produced a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    /// A deterministic rule from `rules/`.
    Rule { name: String, file: String },
    /// The per-class window model.
    Window,
    /// The per-class syscall-sequence model.
    Sequence,
    /// An event of a cgroup that no identity source knows.
    Unidentified,
}

/// One named feature and how much it pushed the score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    pub value: f64,
    /// Share of the anomaly attributed to this feature, in [0, 1].
    pub weight: f64,
}

/// Something a detector found about one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Boot-time (live) or trace-time (replay) nanoseconds of the event or window end.
    pub ts_ns: u64,
    pub agent_id: Arc<str>,
    pub class: Arc<str>,
    pub cgroup_id: u64,
    pub source: Source,
    /// Anomaly score in [0, 1]; rules report 1.0.
    pub score: f64,
    /// The tier a rule maps to; `None` for model scores (the policy decides).
    pub tier: Option<Tier>,
    /// One line an analyst can read.
    pub summary: String,
    /// The features that contributed most, largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<Contribution>,
    /// The window behind this finding lost events in the kernel: it may be incomplete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossy: bool,
}
