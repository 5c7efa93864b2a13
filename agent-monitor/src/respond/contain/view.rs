//! What a containment action did, in a form fit for an audit log: the policy before and after,
//! as plain serde values.

use std::fmt;

use agent_monitor_common::{
    CONTAIN_DENY_ALL, CONTAIN_RATE_LIMIT, ContainPolicy, Denials, MAX_BYTES_PER_SEC, TokenBucket,
};
use serde::{Deserialize, Serialize};

/// A containment policy without its kernel-side bucket state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Every connect and UDP send refused (EPERM), every egress packet dropped.
    pub deny_all: bool,
    /// Connects per second (burst: one second's worth); None: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects_per_s: Option<u32>,
    /// Egress bytes per second; None: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_s: Option<u64>,
    /// When the policy was last changed (Unix milliseconds).
    pub applied_unix_ms: u64,
}

impl From<&ContainPolicy> for PolicyView {
    fn from(p: &ContainPolicy) -> Self {
        let limited = p.flags & CONTAIN_RATE_LIMIT != 0;
        Self {
            deny_all: p.flags & CONTAIN_DENY_ALL != 0,
            connects_per_s: (limited && p.connects_per_s != 0).then_some(p.connects_per_s),
            bytes_per_s: (limited && p.bytes_per_s != 0).then_some(p.bytes_per_s),
            applied_unix_ms: p.applied_unix_ms,
        }
    }
}

impl PolicyView {
    /// The kernel value for this view, with full buckets.
    pub fn to_policy(&self) -> ContainPolicy {
        let connects = self.connects_per_s.unwrap_or(0);
        let bytes = self.bytes_per_s.unwrap_or(0).min(MAX_BYTES_PER_SEC);
        let mut flags = 0;
        if self.deny_all {
            flags |= CONTAIN_DENY_ALL;
        }
        if connects != 0 || bytes != 0 {
            flags |= CONTAIN_RATE_LIMIT;
        }
        let mut p = ContainPolicy {
            flags,
            connects_per_s: connects,
            bytes_per_s: bytes,
            applied_unix_ms: self.applied_unix_ms,
            ..Default::default()
        };
        p.connect_bucket = TokenBucket::full(u64::from(connects));
        p.byte_bucket = TokenBucket::full(p.byte_burst());
        p
    }

    /// Whether it restricts anything (a policy that does not is removed from the map).
    pub fn restricts(&self) -> bool {
        self.deny_all || self.connects_per_s.is_some() || self.bytes_per_s.is_some()
    }

    /// Same enforcement (ignoring when it was applied).
    pub fn same_rules(&self, other: &Self) -> bool {
        self.deny_all == other.deny_all
            && self.connects_per_s == other.connects_per_s
            && self.bytes_per_s == other.bytes_per_s
    }
}

impl fmt::Display for PolicyView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.deny_all {
            parts.push("deny_all".to_owned());
        }
        if let Some(c) = self.connects_per_s {
            parts.push(format!("{c} connects/s"));
        }
        if let Some(b) = self.bytes_per_s {
            parts.push(format!("{b} bytes/s"));
        }
        if parts.is_empty() {
            parts.push("no restriction".to_owned());
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// Which action was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    DenyAll,
    RateLimit,
    Release,
    /// An earlier action undone: the policy set back to its `before`.
    Restore,
}

/// What one action did: enough to audit it and to undo it ([`super::Containment::undo`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub action: Action,
    pub cgroup_id: u64,
    /// The agent the action was taken for, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Policy before (None: not contained).
    pub before: Option<PolicyView>,
    /// Policy after (None: not contained).
    pub after: Option<PolicyView>,
    /// False when the action found the policy already in that state (idempotent repeat).
    pub changed: bool,
}

/// Denial counters of one cgroup (cumulative; see `Denials` in agent-monitor-common).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialsView {
    pub connects: u64,
    pub connects_rate_limited: u64,
    pub sends: u64,
    pub packets: u64,
    pub bytes: u64,
    pub packets_rate_limited: u64,
}

impl From<Denials> for DenialsView {
    fn from(d: Denials) -> Self {
        Self {
            connects: d.connects,
            connects_rate_limited: d.connects_rate_limited,
            sends: d.sends,
            packets: d.packets,
            bytes: d.bytes,
            packets_rate_limited: d.packets_rate_limited,
        }
    }
}
