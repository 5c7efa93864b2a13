//! The detection stage of the pipeline: every attributed event goes to the rules and into its
//! agent's feature window; every closed window is scored against its class baseline and learned
//! from when healthy. Time is the events' own, so a replay finds exactly what the live run found.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::Arc,
    time::Duration,
};

use foldhash::HashSet;

use super::Tier;
use super::{
    Contribution, Finding, Source,
    baseline::{Baselines, LearningPolicy, ModelError, State},
    rules::{RuleEngine, RuleSet},
    window::{PathClassifier, Window, Windower},
};
use crate::{
    config::Detection as DetectionConfig,
    event::{Body, Event},
};

/// How long after a window's end its late records (counter snapshots) may still arrive.
const WINDOW_GRACE: Duration = Duration::from_secs(2);
/// Window findings are reported at or above this score unless the class model says otherwise.
pub const DEFAULT_REPORT_THRESHOLD: f64 = 0.5;
/// Contributions named in a finding.
const TOP_FEATURES: usize = 5;

pub struct Detection {
    rules: Option<RuleEngine>,
    windower: Windower<PathClassifier>,
    pub baselines: Baselines,
    /// Agents under containment: their windows are scored but never learned from.
    contained: HashSet<Arc<str>>,
    /// Cgroups already reported as unidentified.
    unidentified: HashSet<u64>,
    /// When each unidentified cgroup's first unattributed event happened.
    unidentified_since: HashMap<u64, u64>,
    /// Cgroups of the agents removed last: events still in the ring buffer when a cgroup went
    /// arrive after its removal, unattributed, and are no unknown workload.
    removed: VecDeque<u64>,
    unidentified_policy: UnidentifiedPolicy,
    closed: Vec<Window>,
    /// Latest event time seen: the clock that closes idle windows in replay.
    now_ns: u64,
    pub stats: DetectionStats,
}

/// When events nobody can attribute become a finding, and at which tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnidentifiedPolicy {
    /// Unattributed this long after the cgroup's first unattributed event (zero: at once). An
    /// identity source that resolves the cgroup in time (its `agent_added`) prevents it.
    pub after: Duration,
    /// `None`: the policy maps the score (1.0) to a tier.
    pub tier: Option<Tier>,
}

/// Unidentified cgroups followed at most (beyond, the oldest is reported at once).
const MAX_UNIDENTIFIED_TRACKED: usize = 65_536;
/// Removed cgroups remembered (their late events come within one drain of the ring buffer).
const REMOVED_REMEMBERED: usize = 256;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetectionStats {
    pub windows: u64,
    pub lossy_windows: u64,
    pub scored_windows: u64,
    pub findings: u64,
}

impl Detection {
    pub fn new(config: &DetectionConfig) -> Result<Self, globset::Error> {
        let policy = LearningPolicy {
            min_windows: config.min_learning_windows as usize,
            ..LearningPolicy::default()
        };
        Ok(Self {
            rules: None,
            windower: Windower::new(
                Duration::from_secs(config.window_secs),
                WINDOW_GRACE,
                PathClassifier::new(config)?,
            ),
            baselines: Baselines::new(policy),
            contained: HashSet::default(),
            unidentified: HashSet::default(),
            unidentified_since: HashMap::new(),
            removed: VecDeque::new(),
            unidentified_policy: UnidentifiedPolicy::default(),
            closed: Vec::new(),
            now_ns: 0,
            stats: DetectionStats::default(),
        })
    }

    /// Loads the class models under `dir` (a missing directory means every class learns).
    pub fn load_models(&mut self, dir: &Path) -> Result<Vec<String>, ModelError> {
        self.baselines.load_dir(dir)
    }

    pub fn set_rules(&mut self, engine: RuleEngine) {
        self.rules = Some(engine);
    }

    /// Swaps in a validated rule set; rate windows of unchanged rules carry over.
    pub fn reload_rules(&mut self, set: RuleSet) {
        match &mut self.rules {
            Some(engine) => engine.reload(set),
            None => self.rules = Some(RuleEngine::new(set)),
        }
    }

    pub fn rules(&self) -> Option<&RuleSet> {
        self.rules.as_ref().map(RuleEngine::rules)
    }

    /// Unix minus boot time in ns, so that windows know their hour of day.
    pub fn set_wall_offset(&mut self, offset_ns: i128) {
        self.windower.set_wall_offset(offset_ns);
    }

    /// Replay: the next event happened at this Unix time (the trace's creation).
    pub fn set_wall_anchor(&mut self, unix_ns: i128) {
        self.windower.set_wall_anchor(unix_ns);
    }

    pub fn set_contained(&mut self, agent_id: &str, contained: bool) {
        if contained {
            self.contained.insert(Arc::from(agent_id));
        } else {
            self.contained.remove(agent_id);
        }
    }

    pub fn set_unidentified_policy(&mut self, policy: UnidentifiedPolicy) {
        self.unidentified_policy = policy;
    }

    pub fn class_state(&self, class: &str) -> State {
        self.baselines.state(class)
    }

    /// What can be decided from an event alone (rules, an agent left unidentified), so that a
    /// containment need not wait for [`Detection::on_event_windows`].
    pub fn on_event_rules(&mut self, event: &Event, out: &mut Vec<Finding>) {
        self.now_ns = self.now_ns.max(event.ts_ns);
        self.check_unidentified(event, out);
        if let Some(rules) = &mut self.rules {
            let before = out.len();
            rules.on_event(event, out);
            self.stats.findings += (out.len() - before) as u64;
        }
    }

    /// After [`Detection::on_event_rules`]: the event joins its window, and windows that
    /// closed are scored.
    pub fn on_event_windows(&mut self, event: &Event, out: &mut Vec<Finding>) {
        self.windower.add(event, &mut self.closed);
        self.score_closed(out);
    }

    /// A cgroup whose events stay unattributed for `after` is a finding, at its next event: a
    /// cgroup that vanished meanwhile (a pod torn down) sends none and is not reported, and the
    /// late events of an agent just removed are not an unknown workload's.
    fn check_unidentified(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let cg = event.cgroup_id;
        match event.body {
            Body::AgentAdded(_) => {
                self.unidentified_since.remove(&cg);
                self.unidentified.remove(&cg);
                return;
            }
            Body::AgentRemoved(_) => {
                if self.removed.len() == REMOVED_REMEMBERED {
                    self.removed.pop_front();
                }
                self.removed.push_back(cg);
                return;
            }
            _ => {}
        }
        if event.agent.is_some() || self.unidentified.contains(&cg) || self.removed.contains(&cg) {
            return;
        }
        if self.unidentified_since.len() >= MAX_UNIDENTIFIED_TRACKED
            && !self.unidentified_since.contains_key(&cg)
            && let Some((&oldest, _)) = self.unidentified_since.iter().min_by_key(|(_, t)| **t)
        {
            self.unidentified_since.remove(&oldest);
        }
        let since = *self.unidentified_since.entry(cg).or_insert(event.ts_ns);
        let after = u64::try_from(self.unidentified_policy.after.as_nanos()).unwrap_or(u64::MAX);
        if event.ts_ns.saturating_sub(since) >= after {
            self.unidentified_since.remove(&cg);
            self.unidentified.insert(cg);
            let finding = unidentified(event, since, self.unidentified_policy.tier);
            self.push(out, finding);
        }
    }

    /// Closes idle windows; `now_ns` is the live boot clock, or `None` in replay (event time).
    pub fn tick(&mut self, now_ns: Option<u64>, out: &mut Vec<Finding>) {
        let now = now_ns.unwrap_or(self.now_ns).max(self.now_ns);
        self.windower.tick(now, &mut self.closed);
        self.score_closed(out);
    }

    /// Closes and scores every open window (end of a replay, shutdown).
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        self.windower.flush(&mut self.closed);
        self.score_closed(out);
    }

    fn score_closed(&mut self, out: &mut Vec<Finding>) {
        let closed = std::mem::take(&mut self.closed);
        for window in &closed {
            self.stats.windows += 1;
            if window.lossy() {
                self.stats.lossy_windows += 1;
            }
            let contained = self.contained.contains(&window.agent.id);
            let Some(score) = self.baselines.observe(window, contained) else {
                continue;
            };
            self.stats.scored_windows += 1;
            let threshold = self
                .baselines
                .get(&window.agent.class)
                .and_then(|b| b.meta.as_ref())
                .map_or(DEFAULT_REPORT_THRESHOLD, |m| m.report_threshold);
            if score.score >= threshold {
                let top: Vec<Contribution> =
                    score.top_features.into_iter().take(TOP_FEATURES).collect();
                let finding = window_finding(window, score.score, top);
                self.push(out, finding);
            }
        }
        self.closed = closed;
        self.closed.clear();
    }

    fn push(&mut self, out: &mut Vec<Finding>, finding: Finding) {
        self.stats.findings += 1;
        out.push(finding);
    }
}

fn window_finding(window: &Window, score: f64, top_features: Vec<Contribution>) -> Finding {
    let named: Vec<String> = top_features
        .iter()
        .take(3)
        .map(|c| format!("{}={:.2}", c.feature, c.value))
        .collect();
    Finding {
        ts_ns: window.end_ns,
        agent_id: window.agent.id.clone(),
        class: window.agent.class.clone(),
        cgroup_id: window.cgroup_id,
        source: Source::Window,
        score,
        tier: None,
        summary: format!(
            "{} behaves unlike its class {} (window score {score:.2}{}): {}",
            window.agent.id,
            window.agent.class,
            if window.lossy() {
                ", events lost in this window"
            } else {
                ""
            },
            named.join(", ")
        ),
        top_features,
        lossy: window.lossy(),
    }
}

/// Named `cgroup:<id>` like the flight recorder's key for such events: one policy state per
/// unknown cgroup, and a snapshot of it finds its events.
fn unidentified(event: &Event, since_ns: u64, tier: Option<Tier>) -> Finding {
    let waited = event.ts_ns.saturating_sub(since_ns);
    Finding {
        ts_ns: event.ts_ns,
        agent_id: Arc::from(format!("cgroup:{}", event.cgroup_id)),
        class: Arc::from(super::rules::UNIDENTIFIED),
        cgroup_id: event.cgroup_id,
        source: Source::Unidentified,
        score: 1.0,
        tier,
        summary: if waited == 0 {
            format!(
                "events from cgroup {} (pid {}) that no identity source knows",
                event.cgroup_id, event.pid
            )
        } else {
            format!(
                "events from cgroup {} (pid {}) that no identity source knows, for {:.1} s",
                event.cgroup_id,
                event.pid,
                waited as f64 / 1e9
            )
        },
        top_features: vec![],
        lossy: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentBody, AgentRef};

    const S: u64 = 1_000_000_000;

    fn event(cg: u64, ts: u64, agent: bool) -> Event {
        Event {
            ts_ns: ts,
            kind_id: 12,
            cgroup_id: cg,
            pid: 7,
            tid: 7,
            agent: agent.then(|| AgentRef::new(Arc::from("a"), Arc::from("fraud"))),
            truncated: false,
            body: Body::Exit { code: Some(0) },
        }
    }

    fn detection(after_secs: u64, tier: Option<Tier>) -> Detection {
        let mut d = Detection::new(&DetectionConfig::default()).unwrap();
        d.set_unidentified_policy(UnidentifiedPolicy {
            after: Duration::from_secs(after_secs),
            tier,
        });
        d
    }

    fn unidentified_findings(d: &mut Detection, events: &[Event]) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in events {
            d.on_event_rules(e, &mut out);
            d.on_event_windows(e, &mut out);
        }
        out.retain(|f| f.source == Source::Unidentified);
        out
    }

    #[test]
    fn without_delay_the_first_unattributed_event_is_a_finding_once_per_cgroup() {
        let mut d = detection(0, None);
        let f = unidentified_findings(
            &mut d,
            &[
                event(5, S, false),
                event(5, 2 * S, false),
                event(6, 3 * S, false),
            ],
        );
        assert_eq!(f.len(), 2);
        assert_eq!(
            (&*f[0].agent_id, &*f[0].class),
            ("cgroup:5", "unidentified")
        );
        assert_eq!(f[0].tier, None);
    }

    #[test]
    fn with_a_delay_only_lasting_unattributed_events_are_a_finding_at_the_given_tier() {
        let mut d = detection(30, Some(Tier::Log));
        let f = unidentified_findings(&mut d, &[event(5, S, false), event(5, 30 * S, false)]);
        assert!(f.is_empty(), "29 s is not yet 30");
        let f = unidentified_findings(&mut d, &[event(5, 31 * S, false), event(5, 40 * S, false)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].tier, Some(Tier::Log));
        assert!(f[0].summary.contains("30.0 s"), "{}", f[0].summary);

        // Resolved in time (its announcement arrives): no finding.
        let mut d = detection(30, Some(Tier::Log));
        let mut added = event(9, 10 * S, true);
        added.body = Body::AgentAdded(AgentBody {
            id: "a".into(),
            class: "fraud".into(),
            cgroup_path: "/kubepods.slice/x".into(),
            slot: 0,
        });
        let f = unidentified_findings(&mut d, &[event(9, S, false), added, event(9, 50 * S, true)]);
        assert!(f.is_empty());
    }

    #[test]
    fn late_events_of_a_removed_agent_are_not_an_unidentified_cgroup() {
        let mut d = detection(0, None);
        let mut removed = event(9, S, true);
        removed.body = Body::AgentRemoved(AgentBody {
            id: "a".into(),
            class: "fraud".into(),
            cgroup_path: "/agents/fraud/a".into(),
            slot: 0,
        });
        // Still in the ring buffer when the cgroup went: unattributed once the removal is seen.
        let late = event(9, 2 * S, false);
        assert!(unidentified_findings(&mut d, &[removed, late]).is_empty());
        // Another cgroup's unattributed event still is a finding.
        assert_eq!(
            unidentified_findings(&mut d, &[event(10, 3 * S, false)]).len(),
            1
        );
    }
}
