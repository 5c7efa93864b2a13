//! Feature windows: each agent's events folded into fixed-length windows aligned to multiples of
//! the window length in event time, so that a replay cuts exactly the windows the live run cut.

mod classify;
mod compact;
mod stats;

use foldhash::HashMap;

pub use classify::PathClassifier;
pub use compact::{KeySet, Sequences, SyscallCounts};
pub use stats::{Classifier, Destination, MAX_DISTINCT, MAX_SEQUENCE, WindowStats, parent_dir};

use crate::event::{AgentRef, Body, Event};

/// How long an agent's start-up lasts, from its first event that is not an announcement. Its
/// syscall sequences (exec, loader, first configuration reads) are unlike the steady state; a
/// window boundary that falls inside it must not put part of it into a scored window.
pub const STARTUP_NS: u64 = 2_000_000_000;

/// One agent's closed window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub agent: AgentRef,
    pub cgroup_id: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Wall-clock Unix seconds at the window's end, when the boot-to-wall offset is known.
    pub unix_end_s: Option<u64>,
    /// A start-up window: it holds part of the agent's first [`STARTUP_NS`] of activity
    /// (namespace set-up, loader, libraries, configuration, first requests), unlike any
    /// steady-state window. That is the agent's first window, and also the next one when the
    /// agent started less than that before the first window's end.
    pub first: bool,
    /// Closed before its end (agent removed, end of input): its counts cover part of the time.
    pub partial: bool,
    pub stats: WindowStats,
}

impl Window {
    /// Events were lost in the kernel during this window: never learn from it, and say so.
    pub fn lossy(&self) -> bool {
        self.stats.lossy()
    }

    pub fn seconds(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// A steady-state window, comparable with the windows a class model is fitted on. The
    /// others are left to the rules: a model fitted on a handful of start-ups would flag every
    /// new agent.
    pub fn steady(&self) -> bool {
        !self.first && !self.partial
    }
}

/// Cuts windows per agent cgroup.
pub struct Windower<C> {
    length_ns: u64,
    /// How long after a window's end its records may still arrive (counter snapshots are read
    /// periodically); an idle agent's window is closed by [`Windower::tick`] after this.
    grace_ns: u64,
    /// Per agent cgroup seen: one map, so that an event costs one lookup.
    agents: HashMap<u64, AgentWindows>,
    /// The earliest end of an open window (`u64::MAX`: none), so that a tick with nothing due
    /// does not look at every open window.
    earliest_end_ns: u64,
    classifier: C,
    /// Unix time minus boot time, in ns: live from the clocks, in replay from the trace header.
    wall_offset_ns: Option<i128>,
    /// Unix ns of the first event to come (a trace's creation time): fixes the offset then.
    wall_anchor_ns: Option<i128>,
}

impl<C: Classifier> Windower<C> {
    pub fn new(length: std::time::Duration, grace: std::time::Duration, classifier: C) -> Self {
        Self {
            length_ns: (length.as_nanos() as u64).max(1),
            grace_ns: grace.as_nanos() as u64,
            agents: HashMap::default(),
            earliest_end_ns: u64::MAX,
            classifier,
            wall_offset_ns: None,
            wall_anchor_ns: None,
        }
    }

    /// The next event happened at `unix_ns` (a trace header's creation time, written as the
    /// recording started): dates the windows of a replay.
    pub fn set_wall_anchor(&mut self, unix_ns: i128) {
        self.wall_anchor_ns = Some(unix_ns);
    }

    pub fn set_wall_offset(&mut self, offset_ns: i128) {
        self.wall_offset_ns = Some(offset_ns);
    }

    pub fn length_ns(&self) -> u64 {
        self.length_ns
    }

    /// Folds an attributed event into its agent's window, closing the previous window into `out`
    /// when the event starts a later one. Unattributed events have no window.
    pub fn add(&mut self, event: &Event, out: &mut Vec<Window>) {
        if let Some(anchor) = self.wall_anchor_ns.take() {
            self.wall_offset_ns = Some(anchor - i128::from(event.ts_ns));
        }
        let Some(agent) = &event.agent else { return };
        let start = event.ts_ns - event.ts_ns % self.length_ns;
        let announcement = matches!(event.body, Body::AgentAdded(_) | Body::AgentRemoved(_));
        let state = self.agents.entry(event.cgroup_id).or_default();
        if state.since.is_none() && !announcement {
            state.since = Some(event.ts_ns);
        }
        // The agent's start-up is its first STARTUP_NS of activity, counted from its first
        // event rather than from its announcement (the daemon announces a cgroup before its
        // process runs): every window that holds part of it is a start-up window.
        let startup = state
            .since
            .is_none_or(|t| start < t.saturating_add(STARTUP_NS));
        let (length_ns, wall_offset_ns) = (self.length_ns, self.wall_offset_ns);
        // A new window is built only when one starts: most events land in the open one.
        let new_window = |first: bool| {
            Box::new(Window {
                agent: agent.clone(),
                cgroup_id: event.cgroup_id,
                start_ns: start,
                end_ns: start + length_ns,
                unix_end_s: wall_offset_ns.and_then(|o| {
                    u64::try_from((i128::from(start + length_ns) + o) / 1_000_000_000).ok()
                }),
                first,
                partial: false,
                stats: WindowStats::default(),
            })
        };
        let removed = matches!(event.body, Body::AgentRemoved(_));
        let window = match &mut state.window {
            Some(window) => {
                if start > window.start_ns {
                    out.push(*std::mem::replace(window, new_window(startup)));
                }
                window
            }
            // An announcement opens no window: an idle agent costs none.
            None if announcement => {
                if removed {
                    self.agents.remove(&event.cgroup_id);
                }
                return;
            }
            None => state.window.insert(new_window(startup)),
        };
        self.earliest_end_ns = self.earliest_end_ns.min(window.end_ns);
        // A record stamped before the open window (a late snapshot) counts in the open one.
        window.stats.add(event, &mut self.classifier);
        if removed && let Some(mut w) = self.agents.remove(&event.cgroup_id).and_then(|a| a.window)
        {
            w.partial = true;
            out.push(*w);
        }
    }

    /// Closes the windows that ended more than the grace period before `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Window>) {
        if self.earliest_end_ns.saturating_add(self.grace_ns) > now_ns {
            return;
        }
        let mut earliest = u64::MAX;
        for state in self.agents.values_mut() {
            match &state.window {
                Some(w) if w.end_ns.saturating_add(self.grace_ns) > now_ns => {
                    earliest = earliest.min(w.end_ns);
                }
                Some(_) => out.extend(state.window.take().map(|w| *w)),
                None => {}
            }
        }
        self.earliest_end_ns = earliest;
        out.sort_by_key(|w| (w.end_ns, w.cgroup_id));
    }

    /// Closes every open window (end of a replay or shutdown).
    pub fn flush(&mut self, out: &mut Vec<Window>) {
        out.extend(self.agents.values_mut().filter_map(|a| {
            let mut w = a.window.take()?;
            w.partial = true;
            Some(*w)
        }));
        self.earliest_end_ns = u64::MAX;
        out.sort_by_key(|w| (w.end_ns, w.cgroup_id));
    }
}

/// One agent cgroup's place in the [`Windower`].
#[derive(Default)]
struct AgentWindows {
    /// Boot-time ns of its first activity (its first event other than an announcement), `None`
    /// while it has only been announced.
    since: Option<u64>,
    /// Its open window. Boxed: a window is large, and a map of them inline would keep room
    /// for as many as were ever open at once (every agent) long after they closed.
    window: Option<Box<Window>>,
}

#[cfg(test)]
mod tests;
