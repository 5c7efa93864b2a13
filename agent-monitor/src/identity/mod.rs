//! Agent identity: which agent and class a cgroup belongs to.
//!
//! [`AgentRegistry`] decides which cgroups are agents and announces each one with an
//! `agent_added` record in the event stream; [`Identities`] follows those records and attributes
//! events. Because the announcements travel with the events, a replay attributes exactly as the
//! live run did, with no access to the host's cgroups.

pub mod kubepods;
mod registry;

use std::sync::Arc;

use foldhash::HashMap;

pub use kubepods::{PodLookup, PodResolution};
pub use registry::{AgentRegistry, DiscoveredAgent, PendingOutcome, SlotTable};

use crate::event::{AgentRef, Body, Event};

/// Class names shared between agents, at most.
const MAX_INTERNED_CLASSES: usize = 64;

#[derive(Default)]
pub struct Identities {
    by_cgroup: HashMap<u64, AgentRef>,
    /// Class names, one allocation each however many agents share them.
    classes: Vec<Arc<str>>,
}

impl Identities {
    /// Updates the table from agent announcements and sets `event.agent`.
    pub fn attribute(&mut self, event: &mut Event) {
        match &event.body {
            Body::AgentAdded(a) => {
                let class = match self.classes.iter().find(|c| ***c == *a.class) {
                    Some(c) => c.clone(),
                    None => {
                        let c: Arc<str> = Arc::from(a.class.as_str());
                        // A few classes are the norm; past that, a copy per agent.
                        if self.classes.len() < MAX_INTERNED_CLASSES {
                            self.classes.push(c.clone());
                        }
                        c
                    }
                };
                self.by_cgroup.insert(
                    event.cgroup_id,
                    AgentRef::new(Arc::from(a.id.as_str()), class),
                );
            }
            Body::AgentRemoved(_) => {
                // The removal itself is still attributed below.
                event.agent = self.by_cgroup.remove(&event.cgroup_id);
                return;
            }
            _ => {}
        }
        let known = self.by_cgroup.get(&event.cgroup_id);
        // A reused event usually still holds this agent (consecutive events mostly come from
        // the same one): keep the reference rather than swap it for a copy of itself.
        let held = match (&event.agent, known) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        };
        if !held {
            event.agent = known.cloned();
        }
    }

    pub fn len(&self) -> usize {
        self.by_cgroup.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cgroup.is_empty()
    }
}
