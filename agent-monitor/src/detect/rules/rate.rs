//! Sliding windows for rate rules, per agent and rule, on the events' own timestamps (so a
//! replay fires exactly where the live run did). A window holds at most `more_than + 1`
//! entries and an agent's windows go when the agent does: memory is bounded by live agents.

use std::{
    collections::{HashMap as StdHashMap, VecDeque},
    sync::Arc,
};

use foldhash::HashMap;

use super::rule::RateSpec;

#[derive(Debug, Clone)]
enum Window {
    /// Timestamps of the latest matching events.
    Count(VecDeque<u64>),
    /// The latest distinct values (by hash) and when each was last seen, and a time no later
    /// than the earliest of those (`u64::MAX`: none), so that the values are swept only when
    /// one may have expired.
    Distinct(Vec<(u64, u64)>, u64),
}

/// Rate windows of every agent, keyed by rule number in the current rule set.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    agents: HashMap<Arc<str>, HashMap<u32, Window>>,
}

impl Rates {
    /// Records one matching event. Returns the count (events or distinct values in the window)
    /// when it exceeds the limit; the window then starts again, so a sustained burst fires once
    /// per `more_than + 1` events rather than on every event.
    pub fn record(
        &mut self,
        agent: &Arc<str>,
        rule: u32,
        spec: &RateSpec,
        ts_ns: u64,
        value: Option<u64>,
    ) -> Option<usize> {
        let windows = match self.agents.get_mut(&**agent) {
            Some(w) => w,
            None => self.agents.entry(agent.clone()).or_default(),
        };
        let window = windows.entry(rule).or_insert_with(|| match spec.distinct {
            Some(_) => Window::Distinct(Vec::new(), u64::MAX),
            None => Window::Count(VecDeque::new()),
        });
        let within = u64::try_from(spec.within.as_nanos()).unwrap_or(u64::MAX);
        // Out-of-order timestamps (per-CPU buffers) count as "now".
        let expired = |seen: u64| ts_ns.saturating_sub(seen) >= within;
        let count = match window {
            Window::Count(times) => {
                while times.front().is_some_and(|t| expired(*t)) {
                    times.pop_front();
                }
                times.push_back(ts_ns);
                times.len()
            }
            Window::Distinct(seen, oldest) => {
                if expired(*oldest) {
                    seen.retain(|(_, t)| !expired(*t));
                    *oldest = seen.iter().map(|(_, t)| *t).min().unwrap_or(u64::MAX);
                }
                let v = value.unwrap_or(0);
                match seen.iter_mut().find(|(h, _)| *h == v) {
                    Some(entry) => entry.1 = entry.1.max(ts_ns),
                    None => {
                        seen.push((v, ts_ns));
                        *oldest = (*oldest).min(ts_ns);
                    }
                }
                seen.len()
            }
        };
        if count <= spec.more_than {
            return None;
        }
        match window {
            Window::Count(times) => times.clear(),
            Window::Distinct(seen, oldest) => {
                seen.clear();
                *oldest = u64::MAX;
            }
        }
        Some(count)
    }

    /// Drops an agent's windows (it went away).
    pub fn remove_agent(&mut self, agent: &str) {
        self.agents.remove(agent);
    }

    /// Keeps the windows of rules that survive a reload, renumbered; drops the others.
    pub fn remap(&mut self, old_to_new: &StdHashMap<u32, u32>) {
        for windows in self.agents.values_mut() {
            *windows = std::mem::take(windows)
                .into_iter()
                .filter_map(|(old, w)| old_to_new.get(&old).map(|new| (*new, w)))
                .collect();
        }
        self.agents.retain(|_, w| !w.is_empty());
    }

    /// Agents with rate state, for tests and metrics.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }
}
