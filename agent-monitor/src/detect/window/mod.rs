//! Feature windows: each agent's events folded into fixed-length windows aligned to multiples of
//! the window length in event time, so that a replay cuts exactly the windows the live run cut.

mod classify;
mod stats;

use std::collections::hash_map::Entry;

use foldhash::HashMap;

pub use classify::PathClassifier;
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
    /// Boxed: an open window is large, and a map of them inline would keep room for as many as
    /// were ever open at once (every agent) long after they closed.
    open: HashMap<u64, Box<Window>>,
    /// The earliest end of an open window (`u64::MAX`: none), so that a tick with nothing due
    /// does not look at every open window.
    earliest_end_ns: u64,
    /// Per agent cgroup: boot-time ns of its first activity (its first event other than an
    /// announcement), `None` while it has only been announced.
    active_since: HashMap<u64, Option<u64>>,
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
            open: HashMap::default(),
            earliest_end_ns: u64::MAX,
            active_since: HashMap::default(),
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
        let since = self.active_since.entry(event.cgroup_id).or_insert(None);
        if since.is_none() && !announcement {
            *since = Some(event.ts_ns);
        }
        // The agent's start-up is its first STARTUP_NS of activity, counted from its first
        // event rather than from its announcement (the daemon announces a cgroup before its
        // process runs): every window that holds part of it is a start-up window.
        let startup = since.is_none_or(|t| start < t.saturating_add(STARTUP_NS));
        // A new window is built only when one starts: most events land in the open one.
        let new_window = |first: bool| Window {
            agent: agent.clone(),
            cgroup_id: event.cgroup_id,
            start_ns: start,
            end_ns: start + self.length_ns,
            unix_end_s: self.wall_offset_ns.and_then(|o| {
                u64::try_from((i128::from(start + self.length_ns) + o) / 1_000_000_000).ok()
            }),
            first,
            partial: false,
            stats: WindowStats::default(),
        };
        let window = match self.open.entry(event.cgroup_id) {
            Entry::Occupied(open) => {
                let window = open.into_mut();
                if start > window.start_ns {
                    out.push(*std::mem::replace(window, Box::new(new_window(startup))));
                }
                window
            }
            // An announcement opens no window: an idle agent costs none.
            Entry::Vacant(_) if announcement => {
                if matches!(event.body, Body::AgentRemoved(_)) {
                    self.active_since.remove(&event.cgroup_id);
                }
                return;
            }
            Entry::Vacant(slot) => slot.insert(Box::new(new_window(startup))),
        };
        self.earliest_end_ns = self.earliest_end_ns.min(window.end_ns);
        // A record stamped before the open window (a late snapshot) counts in the open one.
        window.stats.add(event, &mut self.classifier);
        if matches!(event.body, Body::AgentRemoved(_)) {
            self.active_since.remove(&event.cgroup_id);
            if let Some(mut w) = self.open.remove(&event.cgroup_id) {
                w.partial = true;
                out.push(*w);
            }
        }
    }

    /// Closes the windows that ended more than the grace period before `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Window>) {
        if self.earliest_end_ns.saturating_add(self.grace_ns) > now_ns {
            return;
        }
        let mut due = Vec::new();
        let mut earliest = u64::MAX;
        for (cg, w) in &self.open {
            if w.end_ns.saturating_add(self.grace_ns) <= now_ns {
                due.push(*cg);
            } else {
                earliest = earliest.min(w.end_ns);
            }
        }
        for cg in due {
            if let Some(w) = self.open.remove(&cg) {
                out.push(*w);
            }
        }
        self.earliest_end_ns = earliest;
        out.sort_by_key(|w| (w.end_ns, w.cgroup_id));
    }

    /// Closes every open window (end of a replay or shutdown).
    pub fn flush(&mut self, out: &mut Vec<Window>) {
        out.extend(self.open.drain().map(|(_, mut w)| {
            w.partial = true;
            *w
        }));
        self.earliest_end_ns = u64::MAX;
        out.sort_by_key(|w| (w.end_ns, w.cgroup_id));
    }
}

#[cfg(test)]
mod tests;
