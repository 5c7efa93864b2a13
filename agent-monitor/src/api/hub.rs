//! What the API serves from the running daemon: the agents with their tiers (kept by a
//! [`ResponseSink`] in the response stage) and a broadcast of findings, decisions and releases.
//! The pipeline thread writes, the API thread reads; neither waits for the other (a slow
//! watcher skips items and is told how many).

use std::{
    collections::{BTreeMap, btree_map::Entry},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::broadcast;

use super::{convert, pb};
use crate::{
    detect::{Finding, Tier},
    respond::{
        actuator::{ActionOutcome, Target},
        engine::{Response, ResponseSink},
        state::now_rfc3339,
    },
};

/// Items a watcher may fall behind by before it skips some.
const WATCH_CAPACITY: usize = 4096;

/// One agent as the response stage knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentEntry {
    pub target: Target,
    /// Its cgroup exists.
    pub present: bool,
    pub tier: Option<Tier>,
    /// When the tier was entered (RFC 3339).
    pub since: Option<String>,
}

/// One watch item and the agent it is about (for the per-agent filter).
#[derive(Clone, Debug)]
pub struct WatchItem {
    pub agent_id: String,
    pub event: pb::watch_event::Event,
}

pub struct Hub {
    agents: Mutex<BTreeMap<std::sync::Arc<str>, AgentEntry>>,
    /// `None` once the daemon stops: every watch stream then ends. Items are shared so that
    /// the channel's slots, all allocated up front, are a pointer each (PERF-ANCHORS row 7).
    tx: Mutex<Option<broadcast::Sender<std::sync::Arc<WatchItem>>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            agents: Mutex::new(BTreeMap::new()),
            tx: Mutex::new(Some(broadcast::channel(WATCH_CAPACITY).0)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves the data consistent (every update is a single insert).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    pub fn agents(&self) -> Vec<AgentEntry> {
        lock(&self.agents).values().cloned().collect()
    }

    pub fn agent(&self, id: &str) -> Option<AgentEntry> {
        lock(&self.agents).get(id).cloned()
    }

    /// A new watcher; `None` once the daemon is stopping.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<std::sync::Arc<WatchItem>>> {
        lock(&self.tx).as_ref().map(broadcast::Sender::subscribe)
    }

    /// Ends every watch stream (the server's graceful shutdown waits for open streams).
    pub fn close(&self) {
        lock(&self.tx).take();
    }

    fn publish(&self, agent_id: &str, event: pb::watch_event::Event) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            // No receiver is not an error: nobody is watching.
            let _ = tx.send(std::sync::Arc::new(WatchItem {
                agent_id: agent_id.to_owned(),
                event,
            }));
        }
    }

    fn set_tier(&self, target: &Target, tier: Option<Tier>) {
        let mut agents = lock(&self.agents);
        let entry = agents
            .entry(target.agent_id.clone())
            .or_insert_with(|| AgentEntry {
                target: target.clone(),
                present: true,
                tier: None,
                since: None,
            });
        if entry.tier != tier {
            entry.since = tier.map(|_| now_rfc3339());
        }
        entry.tier = tier;
        // A decision about an agent whose cgroup is gone keeps it listed; without a tier,
        // nothing is left to show.
        if !entry.present && tier.is_none() {
            agents.remove(&target.agent_id);
        }
    }
}

/// The response stage's side of the hub.
pub struct ApiSink {
    pub hub: Arc<Hub>,
    /// Keeps the server running for as long as the response stage (stops it when dropped).
    pub _server: Option<super::server::ApiServer>,
}

impl ResponseSink for ApiSink {
    fn name(&self) -> &'static str {
        "api"
    }

    fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
        self.hub.set_tier(&r.target, r.decision.to);
        self.hub.publish(
            &r.target.agent_id,
            pb::watch_event::Event::Decision(convert::decision(r)),
        );
        Ok(())
    }

    fn on_release(
        &mut self,
        target: &Target,
        approvers: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        self.hub.set_tier(target, None);
        self.hub.publish(
            &target.agent_id,
            pb::watch_event::Event::Release(pb::Release {
                agent_id: target.agent_id.to_string(),
                class: target.class.to_string(),
                approvers: approvers.to_vec(),
                actions: actions.iter().map(convert::action).collect(),
            }),
        );
        Ok(())
    }

    fn on_findings(&mut self, findings: &[Finding]) {
        for f in findings {
            self.hub.publish(
                &f.agent_id,
                pb::watch_event::Event::Finding(convert::finding(f)),
            );
        }
    }

    fn on_agent(&mut self, target: &Target, present: bool, tier: Option<Tier>) {
        let mut agents = lock(&self.hub.agents);
        if !present && tier.is_none() {
            agents.remove(&target.agent_id);
            return;
        }
        let entry = AgentEntry {
            target: target.clone(),
            present,
            tier,
            since: None,
        };
        // One search of the map per announcement (10,000 at start-up, PERF-ANCHORS row 8).
        match agents.entry(target.agent_id.clone()) {
            Entry::Occupied(mut e) => {
                let since = if e.get().tier == tier {
                    e.get().since.clone()
                } else {
                    tier.map(|_| now_rfc3339())
                };
                e.insert(AgentEntry { since, ..entry });
            }
            Entry::Vacant(e) => {
                e.insert(AgentEntry {
                    since: tier.map(|_| now_rfc3339()),
                    ..entry
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::Source,
        respond::policy::{Decision, Reason},
    };

    fn target(id: &str) -> Target {
        Target {
            agent_id: id.into(),
            class: "fraud".into(),
            cgroup_id: 7,
            cgroup_path: None,
        }
    }

    fn sink() -> ApiSink {
        ApiSink {
            hub: Arc::new(Hub::default()),
            _server: None,
        }
    }

    #[test]
    fn agents_follow_announcements_decisions_and_releases() {
        let mut s = sink();
        s.on_agent(&target("a"), true, None);
        s.on_agent(&target("b"), true, None);
        let response = Response {
            target: target("a"),
            decision: Decision {
                from: None,
                to: Some(Tier::Contain),
                reason: Reason::Finding,
                ts_ns: 1,
            },
            findings: vec![],
            actions: vec![],
        };
        s.on_response(&response).expect("ok");
        let a = s.hub.agent("a").expect("a");
        assert_eq!(a.tier, Some(Tier::Contain));
        assert!(a.since.is_some());
        // Gone but contained: still listed, as removed.
        s.on_agent(&target("a"), false, Some(Tier::Contain));
        s.on_agent(&target("b"), false, None);
        let listed = s.hub.agents();
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].present);
        s.on_release(&target("a"), &["x".into(), "y".into()], &[])
            .expect("ok");
        assert!(s.hub.agents().is_empty());
    }

    #[test]
    fn watchers_get_findings_and_decisions_and_end_when_closed() {
        let mut s = sink();
        let mut rx = s.hub.subscribe().expect("open");
        let finding = Finding {
            ts_ns: 5,
            agent_id: Arc::from("a"),
            class: Arc::from("fraud"),
            cgroup_id: 7,
            source: Source::Rule {
                name: "r".into(),
                file: "f.yaml".into(),
            },
            score: 1.0,
            tier: Some(Tier::Contain),
            summary: "s".into(),
            top_features: vec![],
            lossy: false,
        };
        s.on_findings(std::slice::from_ref(&finding));
        let item = rx.try_recv().expect("item");
        assert_eq!(item.agent_id, "a");
        let pb::watch_event::Event::Finding(f) = item.event.clone() else {
            panic!("a finding: {item:?}");
        };
        assert_eq!((f.rule.as_str(), f.tier), ("r", pb::Tier::Contain as i32));
        s.hub.close();
        assert!(s.hub.subscribe().is_none());
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }
}
