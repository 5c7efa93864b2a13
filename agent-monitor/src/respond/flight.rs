//! Flight recorder: the last events of every agent, kept in a bounded ring per agent so that a
//! forensic snapshot can say what the agent did just before it was taken.
//!
//! Memory is bounded three ways: at most `per_agent` events per agent, at most `per_agent_bytes`
//! (estimated) per agent, and at most `max_agents` rings; when a new agent would exceed
//! `max_agents`, the ring that was written to longest ago is dropped. Events without an agent (an
//! unidentified cgroup) are kept under the key `cgroup:<id>`. An `agent_removed` event forgets
//! the agent's ring.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};

use crate::event::{Body, Event};

/// Bounds of a [`FlightRecorder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlightConfig {
    /// Events kept per agent (the `N` of "the last N events").
    pub per_agent: usize,
    /// Estimated bytes kept per agent; the oldest events go first when over.
    pub per_agent_bytes: usize,
    /// Agents (rings) kept; the least recently written ring goes first when over.
    pub max_agents: usize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            per_agent: 256,
            per_agent_bytes: 16 << 10,
            max_agents: 1024,
        }
    }
}

#[derive(Default)]
struct Ring {
    events: VecDeque<(Event, usize)>,
    bytes: usize,
    /// Value of the recorder's write counter at this ring's last push.
    last_write: u64,
}

#[derive(Default)]
struct State {
    rings: HashMap<String, Ring>,
    writes: u64,
}

/// Per-agent rings of recent events. Shared by reference: every method takes `&self`.
pub struct FlightRecorder {
    config: FlightConfig,
    state: Mutex<State>,
}

impl FlightRecorder {
    pub fn new(config: FlightConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> FlightConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the rings consistent (every update is
        // complete before the next), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one event. An `agent_removed` event forgets its agent instead; an `agent_added`
    /// one is not kept (it says nothing the agent did), so an agent that has done nothing yet
    /// has no ring: thousands of idle agents cost nothing here (PERF-ANCHORS row 7).
    pub fn push(&self, event: &Event) {
        match &event.body {
            Body::AgentRemoved(body) => {
                self.forget(&body.id);
                return;
            }
            Body::AgentAdded(_) => return,
            _ => {}
        }
        let key = key_of(event);
        if self.config.per_agent == 0 || self.config.max_agents == 0 {
            return;
        }
        let size = approx_size(event);
        let mut state = self.lock();
        state.writes += 1;
        let now = state.writes;
        if !state.rings.contains_key(&key) && state.rings.len() >= self.config.max_agents {
            let oldest = state
                .rings
                .iter()
                .min_by_key(|(_, ring)| ring.last_write)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                state.rings.remove(&oldest);
            }
        }
        let ring = state.rings.entry(key).or_default();
        ring.last_write = now;
        ring.events.push_back((event.clone(), size));
        ring.bytes += size;
        while ring.events.len() > self.config.per_agent
            || (ring.bytes > self.config.per_agent_bytes && ring.events.len() > 1)
        {
            match ring.events.pop_front() {
                Some((_, s)) => ring.bytes -= s,
                None => break,
            }
        }
    }

    /// The last `n` events of an agent (or of `cgroup:<id>`), oldest first.
    pub fn last(&self, agent_id: &str, n: usize) -> Vec<Event> {
        let state = self.lock();
        let Some(ring) = state.rings.get(agent_id) else {
            return Vec::new();
        };
        let skip = ring.events.len().saturating_sub(n);
        ring.events
            .iter()
            .skip(skip)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Drops an agent's ring. Returns whether there was one.
    pub fn forget(&self, agent_id: &str) -> bool {
        self.lock().rings.remove(agent_id).is_some()
    }

    /// Agents with a ring.
    pub fn agents(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().rings.keys().cloned().collect();
        v.sort();
        v
    }

    /// Estimated bytes held over all rings.
    pub fn bytes(&self) -> usize {
        self.lock().rings.values().map(|r| r.bytes).sum()
    }
}

fn key_of(event: &Event) -> String {
    match &event.agent {
        Some(agent) => agent.id.to_string(),
        None => format!("cgroup:{}", event.cgroup_id),
    }
}

/// Heap plus inline size of an event, near enough to bound memory.
fn approx_size(event: &Event) -> usize {
    let heap = match &event.body {
        Body::Syscalls { ids } => ids.len() * 2,
        Body::SyscallCount { name, .. } => name.as_ref().map_or(0, String::len),
        Body::Exec { filename, argv, .. } => {
            filename.len() + argv.iter().map(|a| a.len() + 24).sum::<usize>()
        }
        Body::Open { path, .. } | Body::Unlink { path, .. } | Body::Chmod { path, .. } => {
            path.len()
        }
        Body::Chown { path, .. } => path.len(),
        Body::Rename {
            old_path, new_path, ..
        } => old_path.len() + new_path.len(),
        Body::DnsQuery { name, .. } => name.len(),
        Body::AgentAdded(b) | Body::AgentRemoved(b) => {
            b.id.len() + b.class.len() + b.cgroup_path.len()
        }
        Body::Fork { .. }
        | Body::Exit { .. }
        | Body::Connect(_)
        | Body::Accept(_)
        | Body::Bind(_)
        | Body::UdpSend(_)
        | Body::FlowBytes { .. }
        | Body::Lost { .. } => 0,
    };
    std::mem::size_of::<Event>() + heap
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{AgentBody, AgentRef};

    fn ev(agent: Option<&str>, ts: u64, body: Body) -> Event {
        Event {
            ts_ns: ts,
            kind_id: 0,
            cgroup_id: 7,
            pid: 1,
            tid: 1,
            agent: agent.map(|id| AgentRef::new(Arc::from(id), Arc::from("fraud"))),
            truncated: false,
            body,
        }
    }

    fn exit(agent: &str, ts: u64) -> Event {
        ev(Some(agent), ts, Body::Exit { code: Some(0) })
    }

    fn recorder(per_agent: usize, per_agent_bytes: usize, max_agents: usize) -> FlightRecorder {
        FlightRecorder::new(FlightConfig {
            per_agent,
            per_agent_bytes,
            max_agents,
        })
    }

    #[test]
    fn keeps_the_last_n_per_agent_oldest_first() {
        let fr = recorder(3, usize::MAX, 10);
        for ts in 0..5 {
            fr.push(&exit("a", ts));
            fr.push(&exit("b", 100 + ts));
        }
        let ts: Vec<u64> = fr.last("a", 10).iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, vec![2, 3, 4]);
        let ts: Vec<u64> = fr.last("b", 2).iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, vec![103, 104]);
        assert!(fr.last("nobody", 3).is_empty());
        assert!(fr.last("a", 0).is_empty());
    }

    #[test]
    fn bytes_bound_drops_oldest_but_keeps_the_newest() {
        let one = approx_size(&exit("a", 0));
        let fr = recorder(100, one * 2, 10);
        for ts in 0..10 {
            fr.push(&exit("a", ts));
        }
        assert_eq!(fr.last("a", 100).len(), 2);
        assert!(fr.bytes() <= one * 2);
        // A single event larger than the budget is still kept (the newest is never dropped).
        let big = ev(
            Some("a"),
            99,
            Body::DnsQuery {
                name: "x".repeat(one * 4),
                server: crate::event::Endpoint {
                    addr: None,
                    port: 53,
                },
                cookie: 0,
            },
        );
        fr.push(&big);
        let last = fr.last("a", 100);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].ts_ns, 99);
    }

    #[test]
    fn agent_count_is_bounded_dropping_the_least_recently_written() {
        let fr = recorder(4, usize::MAX, 2);
        fr.push(&exit("a", 1));
        fr.push(&exit("b", 2));
        fr.push(&exit("a", 3));
        fr.push(&exit("c", 4));
        assert_eq!(fr.agents(), vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn agent_removal_forgets_and_unidentified_events_are_keyed_by_cgroup() {
        let fr = recorder(4, usize::MAX, 10);
        fr.push(&exit("a", 1));
        fr.push(&ev(None, 2, Body::Exit { code: None }));
        assert_eq!(fr.last("cgroup:7", 5).len(), 1);
        fr.push(&ev(
            Some("a"),
            3,
            Body::AgentRemoved(AgentBody {
                id: "a".into(),
                class: "fraud".into(),
                cgroup_path: "/x".into(),
                slot: 0,
            }),
        ));
        assert!(fr.last("a", 5).is_empty());
        assert!(!fr.forget("a"));
        assert!(fr.forget("cgroup:7"));
    }

    #[test]
    fn zero_bounds_keep_nothing() {
        let fr = recorder(0, 0, 0);
        fr.push(&exit("a", 1));
        assert!(fr.agents().is_empty());
    }
}
