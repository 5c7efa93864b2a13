//! The detection stage of the pipeline: every attributed event goes to the rules and into its
//! agent's feature window; every closed window is scored against its class baseline and learned
//! from when healthy. Time is the events' own, so a replay finds exactly what the live run found.

use std::{path::Path, sync::Arc, time::Duration};

use foldhash::HashSet;

use super::{
    Contribution, Finding, Source,
    baseline::{Baselines, LearningPolicy, ModelError, State},
    rules::{RuleEngine, RuleSet},
    window::{PathClassifier, Window, Windower},
};
use crate::{config::Detection as DetectionConfig, event::Event};

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
    closed: Vec<Window>,
    /// Latest event time seen: the clock that closes idle windows in replay.
    now_ns: u64,
    pub stats: DetectionStats,
}

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

    pub fn class_state(&self, class: &str) -> State {
        self.baselines.state(class)
    }

    pub fn on_event(&mut self, event: &Event, out: &mut Vec<Finding>) {
        self.now_ns = self.now_ns.max(event.ts_ns);
        if event.agent.is_none() && self.unidentified.insert(event.cgroup_id) {
            self.push(out, unidentified(event));
        }
        if let Some(rules) = &mut self.rules {
            let before = out.len();
            rules.on_event(event, out);
            self.stats.findings += (out.len() - before) as u64;
        }
        self.windower.add(event, &mut self.closed);
        self.score_closed(out);
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

fn unidentified(event: &Event) -> Finding {
    Finding {
        ts_ns: event.ts_ns,
        agent_id: Arc::from("unidentified"),
        class: Arc::from("unidentified"),
        cgroup_id: event.cgroup_id,
        source: Source::Unidentified,
        score: 1.0,
        tier: None,
        summary: format!(
            "events from cgroup {} (pid {}) that no identity source knows",
            event.cgroup_id, event.pid
        ),
        top_features: vec![],
        lossy: false,
    }
}
