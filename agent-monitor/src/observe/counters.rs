//! What the pipeline reports to the metrics: events by kind and class, kernel and userspace
//! drops, findings by tier and source, and agents by class and state. Events are counted in
//! plain integers per batch and added to the metric handles once per batch, so the per-event
//! cost is an array increment, not a metrics registry lookup.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use metrics::Counter;

use super::{Health, names};
use crate::{
    detect::{Finding, Source, Tier},
    event::{Body, Event},
    respond::{engine::Responder, policy::PolicyConfig},
};

/// How often the agents gauge is recomputed.
const AGENTS_EVERY: Duration = Duration::from_secs(1);
/// After a finding, the agents gauge is republished at the first flush this long after the
/// last (see [`Observer::on_finding`]).
const AGENTS_AFTER_FINDING: Duration = Duration::from_millis(100);

/// The tier label: `log`, `rate_limit`, `contain`, or `none`.
pub fn tier_label(tier: Option<Tier>) -> &'static str {
    match tier {
        Some(Tier::Log) => "log",
        Some(Tier::RateLimit) => "rate_limit",
        Some(Tier::Contain) => "contain",
        None => names::NO_TIER,
    }
}

/// The source label of a finding.
pub fn source_label(source: &Source) -> &'static str {
    match source {
        Source::Rule { .. } => "rule",
        Source::Window => "window",
        Source::Sequence => "sequence",
        Source::Unidentified => "unidentified",
    }
}

#[derive(Default)]
struct KindCount {
    pending: u64,
    name: &'static str,
    counter: Option<Counter>,
}

struct ClassCounts {
    /// `None`: events no identity source attributed.
    class: Option<Arc<str>>,
    /// Indexed by kind id (stable numbers below 64).
    kinds: Vec<KindCount>,
    lost: u64,
    lost_counter: Option<Counter>,
}

impl ClassCounts {
    fn label(&self) -> String {
        self.class
            .as_deref()
            .unwrap_or(names::UNATTRIBUTED)
            .to_owned()
    }
}

/// The pipeline's observability hook (see [`crate::pipeline::Pipeline::with_observer`]).
pub struct Observer {
    policy: PolicyConfig,
    health: Option<Health>,
    classes: Vec<ClassCounts>,
    last: usize,
    decode_errors: u64,
    decode_counter: Counter,
    /// Agent id -> class, from the agent announcements.
    agents: HashMap<Arc<str>, Arc<str>>,
    agents_published: HashSet<(Arc<str>, &'static str)>,
    agents_at: Option<Instant>,
    /// A finding came since the gauge was last published.
    agents_dirty: bool,
}

impl Observer {
    /// `policy` maps model scores to the tier label of their findings; `health` is handed to
    /// the live source.
    pub fn new(policy: PolicyConfig, health: Option<Health>) -> Self {
        let decode_counter = metrics::counter!(names::USERSPACE_DROPS, "reason" => "decode_error");
        // Registered at zero, so the series exists before the first drop.
        decode_counter.increment(0);
        Self {
            policy,
            health,
            classes: Vec::new(),
            last: 0,
            decode_errors: 0,
            decode_counter,
            agents: HashMap::new(),
            agents_published: HashSet::new(),
            agents_at: None,
            agents_dirty: false,
        }
    }

    pub fn health(&self) -> Option<&Health> {
        self.health.as_ref()
    }

    fn class_index(&mut self, class: Option<&Arc<str>>) -> usize {
        let same = |c: &Option<Arc<str>>| match (c, class) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if self.classes.get(self.last).is_some_and(|c| same(&c.class)) {
            return self.last;
        }
        let i = match self.classes.iter().position(|c| same(&c.class)) {
            Some(i) => i,
            None => {
                self.classes.push(ClassCounts {
                    class: class.cloned(),
                    kinds: Vec::new(),
                    lost: 0,
                    lost_counter: None,
                });
                self.classes.len() - 1
            }
        };
        self.last = i;
        i
    }

    pub fn on_event(&mut self, event: &Event) {
        let i = self.class_index(event.agent.as_ref().map(|a| &a.class));
        let c = &mut self.classes[i];
        let k = usize::from(event.kind_id);
        if k >= c.kinds.len() {
            c.kinds.resize_with(k + 1, KindCount::default);
        }
        let kind = &mut c.kinds[k];
        kind.pending += 1;
        kind.name = event.body.name();
        match &event.body {
            Body::Lost { count, .. } => c.lost += count,
            Body::AgentAdded(a) => {
                // The identity stage's names, shared rather than copied per agent.
                let (id, class) = match &event.agent {
                    Some(r) => (r.id.clone(), r.class.clone()),
                    None => (Arc::from(a.id.as_str()), Arc::from(a.class.as_str())),
                };
                self.agents.insert(id, class);
            }
            Body::AgentRemoved(a) => {
                self.agents.remove(a.id.as_str());
            }
            _ => {}
        }
    }

    pub fn on_decode_error(&mut self) {
        self.decode_errors += 1;
    }

    pub fn on_finding(&mut self, f: &Finding) {
        // A finding may have moved its agent to another tier: the agents gauge is republished
        // within about 100 ms (the daemon flushes at least that often, batch or not), not up to
        // a second later. Not at every batch: with findings for thousands of agents, recounting
        // every agent per batch would be quadratic.
        self.agents_dirty = true;
        let tier = f
            .tier
            .or_else(|| self.policy.thresholds(&f.class).tier_of(f.score));
        metrics::counter!(
            names::FINDINGS,
            "tier" => tier_label(tier),
            "source" => source_label(&f.source)
        )
        .increment(1);
    }

    /// Adds the batch's counts to the metrics; recomputes the agents gauge at most once a
    /// second, or at once after a finding (with the tiers the response stage holds now).
    pub fn flush(&mut self, responder: Option<&Responder>) {
        for c in &mut self.classes {
            for (kind_id, k) in c.kinds.iter_mut().enumerate() {
                if k.pending == 0 {
                    continue;
                }
                let counter = k.counter.get_or_insert_with(|| {
                    let class = c.class.as_deref().unwrap_or(names::UNATTRIBUTED).to_owned();
                    let kind = if k.name.is_empty() {
                        kind_id.to_string()
                    } else {
                        k.name.to_owned()
                    };
                    metrics::counter!(names::EVENTS, "kind" => kind, "class" => class)
                });
                counter.increment(std::mem::take(&mut k.pending));
            }
            if c.lost > 0 {
                let label = c.label();
                let counter = c.lost_counter.get_or_insert_with(
                    || metrics::counter!(names::KERNEL_DROPS, "class" => label),
                );
                counter.increment(std::mem::take(&mut c.lost));
            }
        }
        if self.decode_errors > 0 {
            self.decode_counter
                .increment(std::mem::take(&mut self.decode_errors));
        }
        let now = Instant::now();
        let due = |after| {
            self.agents_at
                .is_none_or(|t| now.duration_since(t) >= after)
        };
        if due(AGENTS_EVERY) || (self.agents_dirty && due(AGENTS_AFTER_FINDING)) {
            self.agents_at = Some(now);
            self.agents_dirty = false;
            self.publish_agents(responder);
        }
    }

    /// `agent_monitor_agents{class, state}`: state is the agent's response tier (`normal`
    /// without one); series that emptied are set to zero, not left at their last value.
    fn publish_agents(&mut self, responder: Option<&Responder>) {
        let mut counts: HashMap<(Arc<str>, &'static str), u64> = HashMap::new();
        for (id, class) in &self.agents {
            let state = match responder.and_then(|r| r.tier(id)) {
                None => "normal",
                tier => tier_label(tier),
            };
            *counts.entry((class.clone(), state)).or_default() += 1;
        }
        for key in self.agents_published.drain() {
            if !counts.contains_key(&key) {
                metrics::gauge!(names::AGENTS, "class" => key.0.to_string(), "state" => key.1)
                    .set(0.0);
            }
        }
        for ((class, state), n) in counts {
            metrics::gauge!(names::AGENTS, "class" => class.to_string(), "state" => state)
                .set(n as f64);
            self.agents_published.insert((class, state));
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::{
        detect::Tier,
        event::{AgentBody, AgentRef},
    };

    fn event(kind_id: u16, agent: Option<(&str, &str)>, body: Body) -> Event {
        Event {
            ts_ns: 1,
            kind_id,
            cgroup_id: 7,
            pid: 1,
            tid: 1,
            agent: agent.map(|(id, class)| AgentRef::new(id.into(), class.into())),
            truncated: false,
            body,
        }
    }

    fn open() -> Body {
        Body::Open {
            path: "/x".into(),
            dirfd: -100,
            flags: 0,
            mode: 0,
            ret: 3,
        }
    }

    fn added(id: &str, class: &str) -> Body {
        Body::AgentAdded(AgentBody {
            id: id.into(),
            class: class.into(),
            cgroup_path: "/a".into(),
            slot: 0,
        })
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn events_drops_findings_and_agents_reach_the_exporter() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut o = Observer::new(PolicyConfig::default(), None);
            o.on_event(&event(60, Some(("f-1", "fraud")), added("f-1", "fraud")));
            o.on_event(&event(60, Some(("o-1", "onb")), added("o-1", "onb")));
            for _ in 0..5 {
                o.on_event(&event(20, Some(("f-1", "fraud")), open()));
            }
            o.on_event(&event(20, Some(("o-1", "onb")), open()));
            o.on_event(&event(20, None, open()));
            o.on_event(&event(
                50,
                Some(("f-1", "fraud")),
                Body::Lost { cpu: 0, count: 9 },
            ));
            o.on_decode_error();
            let finding = |tier: Option<Tier>, score| Finding {
                ts_ns: 1,
                agent_id: "f-1".into(),
                class: "fraud".into(),
                cgroup_id: 7,
                source: if tier.is_some() {
                    Source::Rule {
                        name: "r".into(),
                        file: "f".into(),
                    }
                } else {
                    Source::Window
                },
                score,
                tier,
                summary: String::new(),
                top_features: vec![],
                lossy: false,
            };
            o.on_finding(&finding(Some(Tier::Contain), 1.0));
            o.on_finding(&finding(None, 0.75));
            o.on_finding(&finding(None, 0.1));
            o.flush(None);
            // A second batch adds to the same series.
            o.on_event(&event(20, Some(("f-1", "fraud")), open()));
            o.flush(None);
        });
        let text = handle.render();
        let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("{s} in\n{text}"));
        assert_eq!(
            v(r#"agent_monitor_events_total{kind="open",class="fraud"}"#),
            6.0
        );
        assert_eq!(
            v(r#"agent_monitor_events_total{kind="open",class="onb"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_events_total{kind="open",class="unattributed"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_events_total{kind="agent_added",class="fraud"}"#),
            1.0
        );
        assert_eq!(v(r#"agent_monitor_kernel_drops_total{class="fraud"}"#), 9.0);
        assert_eq!(
            v(r#"agent_monitor_userspace_drops_total{reason="decode_error"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_findings_total{tier="contain",source="rule"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_findings_total{tier="rate_limit",source="window"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_findings_total{tier="none",source="window"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_agents{class="fraud",state="normal"}"#),
            1.0
        );
        assert_eq!(
            v(r#"agent_monitor_agents{class="onb",state="normal"}"#),
            1.0
        );
    }

    #[test]
    fn agents_take_the_responders_tier_and_emptied_series_go_to_zero() {
        use crate::respond::engine::Responder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut r = Responder::new(PolicyConfig::default());
            let mut o = Observer::new(PolicyConfig::default(), None);
            let add = event(60, Some(("f-1", "fraud")), added("f-1", "fraud"));
            r.on_event(&add);
            o.on_event(&add);
            o.flush(Some(&r));
            let f = Finding {
                ts_ns: 1,
                agent_id: "f-1".into(),
                class: "fraud".into(),
                cgroup_id: 7,
                source: Source::Rule {
                    name: "r".into(),
                    file: "f".into(),
                },
                score: 1.0,
                tier: Some(Tier::Contain),
                summary: String::new(),
                top_features: vec![],
                lossy: false,
            };
            r.on_findings(&[f], 1);
            o.agents_at = None;
            o.flush(Some(&r));
        });
        let text = handle.render();
        assert_eq!(
            value(
                &text,
                r#"agent_monitor_agents{class="fraud",state="contain"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"agent_monitor_agents{class="fraud",state="normal"}"#
            ),
            Some(0.0),
            "{text}"
        );
    }
}
