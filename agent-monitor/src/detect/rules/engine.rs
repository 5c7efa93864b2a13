//! The rule engine: event in, findings out. Evaluation borrows from the event and allocates
//! only when a rule fires (summary, finding) or a rate window is first used.

use std::{collections::HashMap, sync::Arc};

use super::{
    field::Ctx,
    index::{Index, Scratch},
    kind::Kind,
    rate::Rates,
    set::RuleSet,
    template::Extra,
};
use crate::{
    detect::{Finding, Source},
    event::{Body, Event},
};

/// Identity used for events whose cgroup no identity source knows, so rules still apply.
pub const UNIDENTIFIED: &str = "unidentified";

pub struct RuleEngine {
    set: RuleSet,
    index: Index,
    rates: Rates,
    scratch: Scratch,
    unidentified: Arc<str>,
}

impl RuleEngine {
    pub fn new(set: RuleSet) -> RuleEngine {
        RuleEngine {
            index: Index::build(&set.rules),
            set,
            rates: Rates::default(),
            scratch: Scratch::default(),
            unidentified: UNIDENTIFIED.into(),
        }
    }

    /// Evaluates one event; findings of the rules that fire are appended to `out`, in rule
    /// order.
    pub fn on_event(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let (agent, class) = match &event.agent {
            Some(a) => (&a.id, &a.class),
            None => (&self.unidentified, &self.unidentified),
        };
        let cx = Ctx {
            event,
            agent,
            class,
        };
        let kind = Kind::of(&event.body);
        self.index.candidates(kind, class, &cx, &mut self.scratch);
        for &i in &self.scratch.candidates {
            let Some(rule) = self.set.rules.get(i as usize) else {
                continue;
            };
            let proven = self.scratch.proven.binary_search(&i).is_ok();
            debug_assert!(!proven || rule.cond.eval(&cx), "rule {} proven", rule.name);
            if !proven && !rule.cond.eval(&cx) {
                continue;
            }
            let count = match &rule.rate {
                Some(spec) => {
                    let value = spec.distinct.map(|f| cx.get(f).stable_hash());
                    match self.rates.record(agent, i, spec, event.ts_ns, value) {
                        Some(n) => n,
                        None => continue,
                    }
                }
                None => 1,
            };
            let extra = Extra {
                rule: &rule.name,
                count,
                window: rule.rate.map(|r| r.within),
            };
            out.push(Finding {
                ts_ns: event.ts_ns,
                agent_id: agent.clone(),
                class: class.clone(),
                cgroup_id: event.cgroup_id,
                source: Source::Rule {
                    name: rule.name.to_string(),
                    file: rule.file.to_string(),
                },
                score: 1.0,
                tier: Some(rule.tier),
                summary: rule.summary.render(&cx, &extra),
                top_features: Vec::new(),
                lossy: false,
            });
        }
        // After the rules, so that a rule on agent_removed still sees the agent's windows.
        if let Body::AgentRemoved(a) = &event.body {
            self.rates.remove_agent(&a.id);
        }
    }

    /// Swaps in a new, already validated set. Rate windows are kept for rules whose name and
    /// definition (kinds, classes, condition, rate) are unchanged; the others start afresh.
    pub fn reload(&mut self, set: RuleSet) {
        let old: HashMap<(&str, &str), u32> = self
            .set
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some(((&*r.name, r.fingerprint.as_str()), u32::try_from(i).ok()?)))
            .collect();
        let mut old_to_new = HashMap::new();
        for (i, r) in set.rules.iter().enumerate() {
            if let (Some(o), Ok(n)) = (
                old.get(&(&*r.name, r.fingerprint.as_str())),
                u32::try_from(i),
            ) {
                old_to_new.insert(*o, n);
            }
        }
        self.rates.remap(&old_to_new);
        self.index = Index::build(&set.rules);
        self.set = set;
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Agents that currently hold rate state.
    pub fn tracked_agents(&self) -> usize {
        self.rates.agent_count()
    }
}
