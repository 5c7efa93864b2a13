//! Flight recorder: the last events of every agent, kept in a bounded ring per agent so that a
//! forensic snapshot can say what the agent did just before it was taken.
//!
//! Memory is bounded four ways: at most `per_agent` events and `per_agent_bytes` (estimated) per
//! agent, at most `max_agents` rings (when a new agent would exceed it, the ring written to
//! longest ago is dropped), and at most `max_bytes` over all rings (when over, the oldest events
//! of the whole recorder go first, whichever agent they belong to). A few busy agents each keep
//! their full ring; thousands of agents active at once share `max_bytes` and each keeps its most
//! recent events (PERF-ANCHORS row 7). Events without an agent (an unidentified cgroup) are kept
//! under the key `cgroup:<id>`. An `agent_removed` event forgets the agent's ring.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
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
    /// Estimated bytes kept over all agents; the recorder's oldest events go first when over.
    pub max_bytes: usize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            per_agent: 256,
            per_agent_bytes: 16 << 10,
            max_agents: 1024,
            max_bytes: 1 << 20,
        }
    }
}

struct Recorded {
    event: Event,
    size: usize,
    /// The recorder's write counter at this push: matches the entry of [`State::order`].
    seq: u64,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Recorded>,
    bytes: usize,
}

impl Ring {
    fn pop_oldest(&mut self) -> usize {
        let size = self.events.pop_front().map_or(0, |r| r.size);
        self.bytes -= size;
        shrink_spare(&mut self.events, 8);
        size
    }
}

/// Gives back a queue's spare room once it holds under a quarter of it: a burst grows the queues,
/// then the bounds keep few events in them, and `max_bytes` counts events, not the room around
/// them (1,000 agents active at once left 3.6 MiB for 2 MiB of events).
fn shrink_spare<T>(queue: &mut VecDeque<T>, slack: usize) {
    if queue.capacity() > 4 * queue.len() + slack {
        queue.shrink_to(2 * queue.len());
    }
}

#[derive(Default)]
struct State {
    rings: HashMap<Arc<str>, Ring>,
    /// Every push in order, as (ring, seq): the front is the recorder's oldest event, unless
    /// it was already dropped by its ring's own bounds or with its ring (a stale entry).
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    writes: u64,
}

impl State {
    /// Whether `(key, seq)` of [`State::order`] is still the oldest event of its ring. Entries of
    /// one ring are in the ring's order, so an entry older than its ring's front is stale.
    fn is_front(&self, key: &str, seq: u64) -> bool {
        self.rings
            .get(key)
            .and_then(|r| r.events.front())
            .is_some_and(|r| r.seq == seq)
    }

    fn drop_ring(&mut self, key: &str) -> bool {
        match self.rings.remove(key) {
            Some(ring) => {
                self.bytes -= ring.bytes;
                true
            }
            None => false,
        }
    }

    /// Drops the recorder's oldest events until it is within `max_bytes` (the newest event,
    /// the last of `order`, is always kept), and sheds stale entries of `order`.
    fn shed(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes && self.order.len() > 1 {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.is_front(&key, seq) {
                let ring = self.rings.get_mut(&key).expect("is_front found it");
                self.bytes -= ring.pop_oldest();
                if ring.events.is_empty() {
                    self.rings.remove(&key);
                }
            }
        }
        // Entries left behind by per-ring drops: bounded to as many again as live events.
        let live: usize = self.rings.values().map(|r| r.events.len()).sum();
        if self.order.len() > 2 * live + 64 {
            let rings = &self.rings;
            self.order.retain(|(key, seq)| {
                rings
                    .get(key)
                    .and_then(|r| r.events.front())
                    .is_some_and(|front| *seq >= front.seq)
            });
        }
        shrink_spare(&mut self.order, 64);
    }
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
        let c = self.config;
        if c.per_agent == 0 || c.max_agents == 0 || c.max_bytes == 0 {
            return;
        }
        let key: Arc<str> = match &event.agent {
            Some(agent) => agent.id.clone(),
            None => format!("cgroup:{}", event.cgroup_id).into(),
        };
        let size = approx_size(event);
        let mut guard = self.lock();
        let state = &mut *guard;
        state.writes += 1;
        let seq = state.writes;
        if !state.rings.contains_key(&key) && state.rings.len() >= c.max_agents {
            let oldest = state
                .rings
                .iter()
                .min_by_key(|(_, ring)| ring.events.back().map_or(0, |r| r.seq))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                state.drop_ring(&oldest);
            }
        }
        let ring = state.rings.entry(key.clone()).or_default();
        // A quarter more room when full rather than double: a thousand agents' rings grow at
        // once, and the bounds count events, not the room around them.
        if ring.events.len() == ring.events.capacity() {
            ring.events.reserve_exact((ring.events.len() / 4).max(4));
        }
        ring.events.push_back(Recorded {
            event: event.clone(),
            size,
            seq,
        });
        ring.bytes += size;
        state.bytes += size;
        while ring.events.len() > c.per_agent
            || (ring.bytes > c.per_agent_bytes && ring.events.len() > 1)
        {
            state.bytes -= ring.pop_oldest();
        }
        state.order.push_back((key, seq));
        state.shed(c.max_bytes);
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
            .map(|r| r.event.clone())
            .collect()
    }

    /// Drops an agent's ring. Returns whether there was one.
    pub fn forget(&self, agent_id: &str) -> bool {
        self.lock().drop_ring(agent_id)
    }

    /// Agents with a ring.
    pub fn agents(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().rings.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Estimated bytes held over all rings.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Heap plus inline size of an event as kept (its slot, its entry in the order, one allocator
/// header per heap block), near enough to bound memory.
fn approx_size(event: &Event) -> usize {
    const BLOCK: usize = 16;
    let heap = match &event.body {
        Body::Syscalls { ids } => BLOCK + ids.len() * 2,
        Body::SyscallCount { name, .. } => name.as_ref().map_or(0, |n| BLOCK + n.len()),
        Body::Exec { filename, argv, .. } => {
            2 * BLOCK + filename.len() + argv.iter().map(|a| BLOCK + a.len() + 24).sum::<usize>()
        }
        Body::Open { path, .. } | Body::Unlink { path, .. } | Body::Chmod { path, .. } => {
            BLOCK + path.len()
        }
        Body::Chown { path, .. } => BLOCK + path.len(),
        Body::Rename {
            old_path, new_path, ..
        } => 2 * BLOCK + old_path.len() + new_path.len(),
        Body::DnsQuery { name, .. } => BLOCK + name.len(),
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
    size_of::<Recorded>() + size_of::<(Arc<str>, u64)>() + heap
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
            max_bytes: usize::MAX,
        })
    }

    /// Bounded in total only (and by `per_agent` events), to `events` exit events.
    fn total_bound(per_agent: usize, max_agents: usize, events: usize) -> FlightRecorder {
        FlightRecorder::new(FlightConfig {
            per_agent,
            per_agent_bytes: usize::MAX,
            max_agents,
            max_bytes: approx_size(&exit("a", 0)) * events,
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
    fn total_bound_drops_the_recorders_oldest_events_whatever_their_agent() {
        let one = approx_size(&exit("a", 0));
        let fr = total_bound(100, 10, 5);
        for ts in 0..4 {
            fr.push(&exit("a", ts));
        }
        for ts in 10..13 {
            fr.push(&exit("b", ts));
        }
        // 7 pushed, room for 5: a's two oldest went.
        let ts = |agent| -> Vec<u64> { fr.last(agent, 100).iter().map(|e| e.ts_ns).collect() };
        assert_eq!(ts("a"), vec![2, 3]);
        assert_eq!(ts("b"), vec![10, 11, 12]);
        assert_eq!(fr.bytes(), one * 5);
        // Stale entries (a's ring forgotten) are skipped: b's oldest goes next.
        fr.forget("a");
        for ts in 13..16 {
            fr.push(&exit("b", ts));
        }
        assert_eq!(ts("b"), vec![11, 12, 13, 14, 15]);
        assert_eq!(fr.agents(), vec!["b".to_string()]);
        assert!(fr.bytes() <= one * 5);
    }

    #[test]
    fn per_agent_drops_leave_no_unbounded_bookkeeping() {
        let fr = FlightRecorder::new(FlightConfig {
            per_agent: 2,
            ..FlightConfig::default()
        });
        for ts in 0..10_000 {
            fr.push(&exit("a", ts));
        }
        assert_eq!(fr.last("a", 10).len(), 2);
        assert!(fr.lock().order.len() <= 2 * 2 + 64 + 1);
    }

    #[test]
    fn a_burst_leaves_no_spare_room_once_the_total_bound_sheds_it() {
        let fr = total_bound(256, 100, 40);
        // One agent's burst fills the recorder, then 15 others take most of it.
        for ts in 0..200 {
            fr.push(&exit("a", ts));
        }
        for ts in 0..30 {
            fr.push(&exit(&format!("b{}", ts % 15), 1_000 + ts));
        }
        let state = fr.lock();
        let a = &state.rings["a"].events;
        assert_eq!(a.len(), 10);
        assert!(
            a.capacity() <= 4 * a.len() + 8,
            "{} for {}",
            a.capacity(),
            a.len()
        );
        assert!(state.order.capacity() <= 4 * state.order.len() + 64);
    }

    #[test]
    fn zero_bounds_keep_nothing() {
        let fr = FlightRecorder::new(FlightConfig {
            per_agent: 0,
            per_agent_bytes: 0,
            max_agents: 0,
            max_bytes: 0,
        });
        fr.push(&exit("a", 1));
        assert!(fr.agents().is_empty());
    }
}
