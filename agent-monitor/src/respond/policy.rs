//! The decision policy: a pure function from an agent's findings and its current state to a tier.
//! No I/O and no clock of its own (time is the findings'), so a replay decides exactly what the
//! live run decided, and the policy is tested in isolation.
//!
//! - Rules name their tier directly; a window score maps to a tier through the class's
//!   thresholds (bank playbook defaults: > 0.5 log as suspicious, > 0.7 rate-limit with enhanced
//!   monitoring, > 0.9 contain).
//! - Escalation: findings that keep coming at the current tier (`escalate_after` of them within
//!   the cooldown) raise it one step.
//! - Hysteresis and cooldown: a tier below containment is lowered one step only after a full
//!   cooldown without any finding scoring above its threshold minus the hysteresis margin.
//!   Containment is never lifted by the policy: only a release with two approvers lifts it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::detect::{Finding, Tier};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub log: f64,
    pub rate_limit: f64,
    pub contain: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            log: 0.5,
            rate_limit: 0.7,
            contain: 0.9,
        }
    }
}

impl Thresholds {
    /// The tier a score reaches (strictly above the threshold).
    pub fn tier_of(&self, score: f64) -> Option<Tier> {
        if score > self.contain {
            Some(Tier::Contain)
        } else if score > self.rate_limit {
            Some(Tier::RateLimit)
        } else if score > self.log {
            Some(Tier::Log)
        } else {
            None
        }
    }

    fn of(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Log => self.log,
            Tier::RateLimit => self.rate_limit,
            Tier::Contain => self.contain,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub thresholds: Thresholds,
    /// Per-class overrides of the thresholds.
    pub classes: HashMap<String, Thresholds>,
    /// Margin below a threshold that findings must stay under before the tier is lowered.
    pub hysteresis: f64,
    /// Findings at the current tier, within one cooldown, that escalate it one step (0: never).
    pub escalate_after: u32,
    /// Quiet time (no finding above threshold - hysteresis) before a tier is lowered one step.
    pub cooldown_secs: u64,
    /// What the rate-limit tier allows the agent.
    pub rate_limit: RateLimit,
    /// After the forensic snapshot of a containment, keep the agent frozen until release.
    pub keep_frozen: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub connects_per_s: u32,
    pub bytes_per_s: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            connects_per_s: 5,
            bytes_per_s: 1 << 20,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            classes: HashMap::new(),
            hysteresis: 0.1,
            escalate_after: 3,
            cooldown_secs: 300,
            rate_limit: RateLimit::default(),
            keep_frozen: true,
        }
    }
}

impl PolicyConfig {
    pub fn thresholds(&self, class: &str) -> &Thresholds {
        self.classes.get(class).unwrap_or(&self.thresholds)
    }
}

/// What the policy remembers about one agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub tier: Option<Tier>,
    /// When the current tier was entered.
    pub since_ns: u64,
    /// Last finding that kept the current tier alive (above threshold - hysteresis).
    pub last_active_ns: u64,
    /// Findings at the current tier since it was entered or last escalated.
    pub persisting: u32,
}

/// A change of tier, with why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub from: Option<Tier>,
    pub to: Option<Tier>,
    pub reason: Reason,
    pub ts_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A finding reached a higher tier (a rule's tier or a score over a threshold).
    Finding,
    /// Findings persisted at the current tier.
    Escalation,
    /// A cooldown passed without findings.
    Cooldown,
    /// The agent's cgroup no longer exists: what was in force for it is dropped.
    CgroupGone,
}

impl Reason {
    /// The name used in tickets, metrics, OTLP and the API (the serde name).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Finding => "finding",
            Reason::Escalation => "escalation",
            Reason::Cooldown => "cooldown",
            Reason::CgroupGone => "cgroup_gone",
        }
    }
}

fn step_up(tier: Tier) -> Tier {
    match tier {
        Tier::Log => Tier::RateLimit,
        Tier::RateLimit | Tier::Contain => Tier::Contain,
    }
}

fn step_down(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::Contain => Some(Tier::Contain),
        Tier::RateLimit => Some(Tier::Log),
        Tier::Log => None,
    }
}

/// Applies one batch of an agent's findings (and the passage of time to `now_ns`).
pub fn decide(
    config: &PolicyConfig,
    class: &str,
    state: &AgentState,
    findings: &[Finding],
    now_ns: u64,
) -> (AgentState, Option<Decision>) {
    let th = config.thresholds(class);
    let mut next = state.clone();
    let mut reason = None;
    for f in findings {
        let reached = f.tier.or_else(|| th.tier_of(f.score));
        let keeps_alive = |tier: Tier| {
            f.tier.is_some_and(|t| t >= tier) || f.score > th.of(tier) - config.hysteresis
        };
        if reached > next.tier {
            next.tier = reached;
            next.since_ns = f.ts_ns;
            next.last_active_ns = f.ts_ns;
            next.persisting = 0;
            reason = Some(Reason::Finding);
            continue;
        }
        let Some(current) = next.tier else { continue };
        if keeps_alive(current) {
            next.last_active_ns = f.ts_ns;
            if reached == Some(current) {
                next.persisting += 1;
                if config.escalate_after > 0
                    && next.persisting >= config.escalate_after
                    && current < Tier::Contain
                {
                    next.tier = Some(step_up(current));
                    next.since_ns = f.ts_ns;
                    next.persisting = 0;
                    reason = Some(Reason::Escalation);
                }
            }
        }
    }
    if reason.is_none()
        && let Some(current) = next.tier
        && current < Tier::Contain
        && now_ns.saturating_sub(next.last_active_ns) >= config.cooldown_secs * 1_000_000_000
    {
        next.tier = step_down(current);
        next.since_ns = now_ns;
        next.last_active_ns = now_ns;
        next.persisting = 0;
        reason = Some(Reason::Cooldown);
    }
    let decision = (next.tier != state.tier).then(|| Decision {
        from: state.tier,
        to: next.tier,
        reason: reason.unwrap_or(Reason::Finding),
        ts_ns: findings.last().map_or(now_ns, |f| f.ts_ns.max(now_ns)),
    });
    (next, decision)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::Source;

    const S: u64 = 1_000_000_000;

    fn score(ts: u64, score: f64) -> Finding {
        Finding {
            ts_ns: ts * S,
            agent_id: Arc::from("a"),
            class: Arc::from("fraud"),
            cgroup_id: 1,
            source: Source::Window,
            score,
            tier: None,
            summary: String::new(),
            top_features: vec![],
            lossy: false,
        }
    }

    fn rule(ts: u64, tier: Tier) -> Finding {
        Finding {
            source: Source::Rule {
                name: "r".into(),
                file: "f.yaml".into(),
            },
            score: 1.0,
            tier: Some(tier),
            ..score(ts, 1.0)
        }
    }

    fn run(config: &PolicyConfig, steps: &[(Vec<Finding>, u64)]) -> Vec<Option<Tier>> {
        let mut state = AgentState::default();
        steps
            .iter()
            .map(|(fs, now)| {
                state = decide(config, "fraud", &state, fs, now * S).0;
                state.tier
            })
            .collect()
    }

    #[test]
    fn scores_map_to_the_playbook_tiers() {
        let c = PolicyConfig::default();
        let t = &c.thresholds;
        assert_eq!(t.tier_of(0.5), None);
        assert_eq!(t.tier_of(0.51), Some(Tier::Log));
        assert_eq!(t.tier_of(0.75), Some(Tier::RateLimit));
        assert_eq!(t.tier_of(0.95), Some(Tier::Contain));
    }

    #[test]
    fn rules_name_their_tier_and_containment_is_sticky() {
        let c = PolicyConfig::default();
        let (s, d) = decide(
            &c,
            "fraud",
            &AgentState::default(),
            &[rule(1, Tier::Contain)],
            S,
        );
        assert_eq!(s.tier, Some(Tier::Contain));
        let d = d.expect("a decision");
        assert_eq!(
            (d.from, d.to, d.reason),
            (None, Some(Tier::Contain), Reason::Finding)
        );
        // Days later, nothing has lifted it.
        let (s2, d2) = decide(&c, "fraud", &s, &[], 86_400 * S);
        assert_eq!((s2.tier, d2), (Some(Tier::Contain), None));
    }

    #[test]
    fn persistent_findings_escalate() {
        let c = PolicyConfig::default();
        let tiers = run(
            &c,
            &[
                (vec![score(1, 0.6)], 1),
                (vec![score(2, 0.6)], 2),
                (vec![score(3, 0.6)], 3),
                (vec![score(4, 0.6)], 4),
            ],
        );
        assert_eq!(
            tiers,
            vec![
                Some(Tier::Log),
                Some(Tier::Log),
                Some(Tier::Log),
                Some(Tier::RateLimit)
            ]
        );
    }

    #[test]
    fn cooldown_lowers_a_tier_and_hysteresis_holds_it() {
        let c = PolicyConfig {
            escalate_after: 0,
            cooldown_secs: 60,
            ..PolicyConfig::default()
        };
        // 0.65 is under the rate-limit threshold but within the hysteresis margin: it holds.
        let tiers = run(
            &c,
            &[
                (vec![score(0, 0.8)], 0),
                (vec![score(50, 0.65)], 50),
                (vec![], 100),
                (vec![], 111),
                (vec![], 200),
            ],
        );
        assert_eq!(
            tiers,
            vec![
                Some(Tier::RateLimit),
                Some(Tier::RateLimit),
                Some(Tier::RateLimit),
                Some(Tier::Log),
                None
            ]
        );
    }

    #[test]
    fn per_class_thresholds() {
        let mut c = PolicyConfig::default();
        c.classes.insert(
            "payments".into(),
            Thresholds {
                log: 0.3,
                rate_limit: 0.4,
                contain: 0.6,
            },
        );
        let (s, _) = decide(&c, "payments", &AgentState::default(), &[score(1, 0.65)], S);
        assert_eq!(s.tier, Some(Tier::Contain));
        let (s, _) = decide(&c, "fraud", &AgentState::default(), &[score(1, 0.65)], S);
        assert_eq!(s.tier, Some(Tier::Log));
    }
}
