//! The response stage: findings of each agent go through the decision policy; a change of tier
//! runs the actuators of the new tier and hands the decision, the findings and what each action
//! did to the sinks (audit log, SOC webhook). Everything it does is also returned, so a drill or a
//! replay can assert it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use super::{
    actuator::{ActionOutcome, Actuator, Completed, Target},
    policy::{AgentState, Decision, PolicyConfig, decide},
    release::Release,
};
use crate::{
    detect::{Finding, Tier},
    event::{Body, Event},
};

mod gone;

/// One decision with its context: what a ticket and an audit entry are made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Response {
    pub target: Target,
    pub decision: Decision,
    pub findings: Vec<Finding>,
    pub actions: Vec<ActionOutcome>,
}

/// Where responses go (audit log, webhook). A sink error is reported, never fatal to the others.
pub trait ResponseSink: Send {
    fn name(&self) -> &'static str;
    fn on_response(&mut self, response: &Response) -> anyhow::Result<()>;
    fn on_release(
        &mut self,
        target: &Target,
        approvers: &[String],
        actions: &[ActionOutcome],
    ) -> anyhow::Result<()>;
    /// Every finding handed to the response stage, before the policy decides (most change no
    /// tier and so make no [`Response`]). For sinks that show findings as they come.
    fn on_findings(&mut self, _findings: &[Finding]) {}
    /// An agent was announced (`present`) or its cgroup went away, with the tier it is in; also
    /// called for a containment restored from before this start.
    fn on_agent(&mut self, _target: &Target, _present: bool, _tier: Option<Tier>) {}
    /// A release with its whole context (tier lifted, reasons); by default the same as
    /// [`ResponseSink::on_release`].
    fn on_released(&mut self, release: &Release) -> anyhow::Result<()> {
        self.on_release(&release.target, &release.approvers, &release.actions)
    }
    /// An action that ran off the pipeline thread finished (the forensic snapshot): its real
    /// outcome, after the [`Response`] that carried its `queued` outcome.
    fn on_completed(&mut self, _done: &Completed) -> anyhow::Result<()> {
        Ok(())
    }
}

pub struct Responder {
    policy: PolicyConfig,
    states: HashMap<Arc<str>, AgentState>,
    targets: HashMap<Arc<str>, Target>,
    /// Actuators and the lowest tier at which each runs.
    actuators: Vec<(Tier, Box<dyn Actuator>)>,
    sinks: Vec<Box<dyn ResponseSink>>,
    /// cgroup v2 mount, to turn announced cgroup paths into directories.
    cgroup_root: Option<PathBuf>,
    /// The events' cgroups are this host's (live, not a replay of another host's recording),
    /// so a decision may ask whether its cgroup still exists.
    live_cgroups: bool,
    /// Responses made outside a decision (a removed agent's cgroup), already given to the
    /// sinks, returned by the next [`Responder::tick`] for the output.
    pending: Vec<Response>,
}

impl Responder {
    pub fn new(policy: PolicyConfig) -> Self {
        Self {
            policy,
            states: HashMap::new(),
            targets: HashMap::new(),
            actuators: Vec::new(),
            sinks: Vec::new(),
            cgroup_root: None,
            live_cgroups: false,
            pending: Vec::new(),
        }
    }

    pub fn with_cgroup_root(mut self, root: PathBuf) -> Self {
        self.cgroup_root = Some(root);
        self
    }

    /// Live: the events' cgroups are this host's, under the cgroup root.
    pub fn with_live_cgroups(mut self) -> Self {
        self.live_cgroups = true;
        self
    }

    /// Runs `actuator` whenever an agent enters `tier` (or a higher one).
    pub fn with_actuator(mut self, tier: Tier, actuator: Box<dyn Actuator>) -> Self {
        self.add_actuator(tier, actuator);
        self
    }

    pub fn add_actuator(&mut self, tier: Tier, actuator: Box<dyn Actuator>) {
        self.actuators.push((tier, actuator));
        // Lowest tier first: entering a tier applies them in this order, leaving undoes in reverse.
        self.actuators.sort_by_key(|(t, _)| *t);
    }

    /// Marks the known agents of these cgroups as contained: a containment an earlier daemon
    /// left in force (pinned state). Returns the agents restored.
    pub fn restore_contained(&mut self, cgroups: &[u64], now_ns: u64) -> Vec<String> {
        let agents: Vec<Arc<str>> = self
            .targets
            .iter()
            .filter(|(_, t)| cgroups.contains(&t.cgroup_id))
            .map(|(a, _)| a.clone())
            .collect();
        for agent in &agents {
            self.states.insert(
                agent.clone(),
                AgentState {
                    tier: Some(Tier::Contain),
                    since_ns: now_ns,
                    last_active_ns: now_ns,
                    persisting: 0,
                },
            );
            if let Some(target) = self.targets.get(agent) {
                for sink in &mut self.sinks {
                    sink.on_agent(target, true, Some(Tier::Contain));
                }
            }
        }
        agents.iter().map(|a| a.to_string()).collect()
    }

    pub fn with_sink(mut self, sink: Box<dyn ResponseSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    pub fn add_sink(&mut self, sink: Box<dyn ResponseSink>) {
        self.sinks.push(sink);
    }

    pub fn tier(&self, agent_id: &str) -> Option<Tier> {
        self.states.get(agent_id).and_then(|s| s.tier)
    }

    /// Agents at the containment tier: detection must not learn from them.
    pub fn contained(&self) -> impl Iterator<Item = &str> {
        self.states
            .iter()
            .filter(|(_, s)| s.tier == Some(Tier::Contain))
            .map(|(a, _)| &**a)
    }

    /// Learns agents' cgroups from their announcements (and tells the sinks); when an agent goes
    /// away, drops what is in force for cgroups that no longer exist.
    pub fn on_event(&mut self, event: &Event) {
        match (&event.body, &event.agent) {
            (Body::AgentAdded(a), Some(agent)) => {
                let path = self
                    .cgroup_root
                    .as_ref()
                    .map(|root| Arc::from(root.join(a.cgroup_path.trim_start_matches('/'))));
                let target = Target {
                    agent_id: agent.id.clone(),
                    class: agent.class.clone(),
                    cgroup_id: event.cgroup_id,
                    cgroup_path: path,
                };
                let tier = self.tier(&agent.id);
                for sink in &mut self.sinks {
                    sink.on_agent(&target, true, tier);
                }
                self.targets.insert(agent.id.clone(), target);
            }
            (Body::AgentRemoved(_), Some(agent)) => {
                if let Some(target) = self.targets.get(&agent.id) {
                    let tier = self.tier(&agent.id);
                    for sink in &mut self.sinks {
                        sink.on_agent(target, false, tier);
                    }
                }
            }
            _ => {}
        }
        if let (Body::AgentRemoved(_), Some(agent)) = (&event.body, &event.agent) {
            self.forget_gone(event.ts_ns);
            if self.is_gone(event.cgroup_id) {
                self.targets.remove(&agent.id);
                self.states.remove(&agent.id);
            }
        }
    }

    /// Decides on a batch of findings (any agents) at time `now_ns`; returns the responses.
    pub fn on_findings(&mut self, findings: &[Finding], now_ns: u64) -> Vec<Response> {
        for sink in &mut self.sinks {
            sink.on_findings(findings);
        }
        let mut by_agent: Vec<(Arc<str>, Vec<Finding>)> = Vec::new();
        for f in findings {
            match by_agent.iter_mut().find(|(a, _)| *a == f.agent_id) {
                Some((_, fs)) => fs.push(f.clone()),
                None => by_agent.push((f.agent_id.clone(), vec![f.clone()])),
            }
        }
        let mut out = Vec::new();
        for (agent, fs) in by_agent {
            let class = fs.first().map(|f| f.class.clone()).unwrap_or_default();
            let state = self.states.get(&agent).cloned().unwrap_or_default();
            let (next, decision) = decide(&self.policy, &class, &state, &fs, now_ns);
            let Some(decision) = decision else {
                self.states.insert(agent, next);
                continue;
            };
            // Latency metrics (a no-op unless the live daemon installed them).
            let decided_ns = crate::clock::boot_ns();
            let target = self.target(&agent, &class, &fs);
            // Findings can outlive their cgroup: the window its removal closed is scored after
            // the removal, and events still in the ring buffer arrive unattributed. What they
            // would put in force would stay for ever, as no removal follows any more.
            if decision.to > decision.from && self.is_gone(target.cgroup_id) {
                log::info!(
                    "{agent}: cgroup {} no longer exists; {:?} not put in force",
                    target.cgroup_id,
                    decision.to
                );
                continue;
            }
            self.states.insert(agent.clone(), next);
            let actions = self.act(&decision, &target);
            crate::observe::latency::decided(&fs, &decision, decided_ns);
            let response = Response {
                target,
                decision,
                findings: fs,
                actions,
            };
            for sink in &mut self.sinks {
                if let Err(e) = sink.on_response(&response) {
                    log::error!(
                        "{}: response for {} not recorded: {e:#}",
                        sink.name(),
                        agent
                    );
                }
            }
            out.push(response);
        }
        out
    }

    /// Lets time pass without findings (cooldowns).
    pub fn tick(&mut self, now_ns: u64) -> Vec<Response> {
        let agents: Vec<Arc<str>> = self.states.keys().cloned().collect();
        let mut out = Vec::new();
        for agent in agents {
            let Some(state) = self.states.get(&agent).cloned() else {
                continue;
            };
            let class = self
                .targets
                .get(&agent)
                .map(|t| t.class.clone())
                .unwrap_or_default();
            let (next, decision) = decide(&self.policy, &class, &state, &[], now_ns);
            self.states.insert(agent.clone(), next);
            if let Some(decision) = decision {
                let target = self.target(&agent, &class, &[]);
                let actions = self.undo_between(decision.to, decision.from, &target);
                out.push(Response {
                    target,
                    decision,
                    findings: vec![],
                    actions,
                });
            }
        }
        for r in &out {
            for sink in &mut self.sinks {
                if let Err(e) = sink.on_response(r) {
                    log::error!("{}: response not recorded: {e:#}", sink.name());
                }
            }
        }
        out.append(&mut self.pending);
        out
    }

    /// The actions that finished on their actuators' own threads since the last call, given to
    /// the sinks; `wait`: at exit, how long to wait for those still running.
    pub fn completed(&mut self, wait: Option<std::time::Duration>) -> Vec<Completed> {
        let mut out = Vec::new();
        for (_, a) in &mut self.actuators {
            out.extend(a.completed(wait));
        }
        for done in &mut out {
            done.tier = self.tier(&done.target.agent_id);
        }
        for done in &out {
            for sink in &mut self.sinks {
                if let Err(e) = sink.on_completed(done) {
                    log::error!(
                        "{}: {} of {} not recorded: {e:#}",
                        sink.name(),
                        done.outcome.action,
                        done.target.agent_id
                    );
                }
            }
        }
        out
    }

    /// Undoes every action of the agent and forgets its tier. The approvals were checked by the
    /// caller (two distinct approvers for a containment).
    pub fn release(&mut self, agent_id: &str, approvers: &[String]) -> Vec<ActionOutcome> {
        self.release_with(agent_id, approvers, &[])
    }

    /// [`Responder::release`] with the approvers' reasons, for the sinks (SOC ticket).
    pub fn release_with(
        &mut self,
        agent_id: &str,
        approvers: &[String],
        reasons: &[String],
    ) -> Vec<ActionOutcome> {
        let class = self
            .targets
            .get(agent_id)
            .map(|t| t.class.clone())
            .unwrap_or_default();
        let target = self.target(agent_id, &class, &[]);
        let from = self.tier(agent_id);
        let actions = self.undo_between(None, from, &target);
        self.states.remove(agent_id);
        let release = Release {
            target,
            tier: from,
            approvers: approvers.to_vec(),
            reasons: reasons.to_vec(),
            actions,
        };
        for sink in &mut self.sinks {
            if let Err(e) = sink.on_released(&release) {
                log::error!("{}: release of {agent_id} not recorded: {e:#}", sink.name());
            }
        }
        release.actions
    }

    /// The cgroup v2 mount to ask whether a cgroup still exists: live only, as a replay's
    /// cgroups were the recording host's.
    fn live_root(&self) -> Option<&Path> {
        self.cgroup_root.as_deref().filter(|_| self.live_cgroups)
    }

    /// Whether this cgroup no longer exists; every cgroup of a replay counts as present.
    fn is_gone(&self, cgroup_id: u64) -> bool {
        self.live_root().is_some_and(|root| gone(root, cgroup_id))
    }

    fn target(&self, agent: &str, class: &str, findings: &[Finding]) -> Target {
        self.targets.get(agent).cloned().unwrap_or_else(|| Target {
            agent_id: agent.into(),
            class: class.into(),
            cgroup_id: findings.first().map_or(0, |f| f.cgroup_id),
            cgroup_path: None,
        })
    }

    /// Applies the actuators of the tiers entered (from the old tier up to the new one): the
    /// urgent ones (in-kernel network containment) first, highest tier first, so DENY_ALL is in
    /// force before anything else runs; then the others, lowest tier first.
    fn act(&mut self, decision: &Decision, target: &Target) -> Vec<ActionOutcome> {
        if decision.to < decision.from {
            return self.undo_between(decision.to, decision.from, target);
        }
        let mut order: Vec<(bool, i8, usize)> = self
            .actuators
            .iter()
            .enumerate()
            .filter(|(_, (tier, _))| Some(*tier) > decision.from && Some(*tier) <= decision.to)
            .map(|(i, (tier, a))| {
                let t = *tier as i8;
                if a.urgent() {
                    (false, -t, i)
                } else {
                    (true, t, i)
                }
            })
            .collect();
        order.sort_unstable();
        order
            .into_iter()
            .map(|(_, _, i)| self.actuators[i].1.apply(target))
            .collect()
    }

    /// Undoes the actuators of the tiers left (above `to`, up to `from`), highest first.
    fn undo_between(
        &mut self,
        to: Option<Tier>,
        from: Option<Tier>,
        target: &Target,
    ) -> Vec<ActionOutcome> {
        self.actuators
            .iter_mut()
            .rev()
            .filter(|(t, _)| Some(*t) > to && Some(*t) <= from)
            .map(|(_, a)| a.undo(target))
            .collect()
    }
}

/// Whether the kernel says the cgroup no longer exists under `root` (one `open_by_handle_at`);
/// a cgroup whose existence cannot be checked counts as present.
fn gone(root: &Path, cgroup_id: u64) -> bool {
    crate::cgroup::exists(root, cgroup_id).is_ok_and(|found| !found)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::detect::Source;

    const S: u64 = 1_000_000_000;

    type Log = Arc<Mutex<Vec<String>>>;

    struct Noted(&'static str, Log);

    impl Actuator for Noted {
        fn name(&self) -> &'static str {
            self.0
        }
        fn apply(&mut self, t: &Target) -> ActionOutcome {
            self.1
                .lock()
                .unwrap()
                .push(format!("{}+{}", self.0, t.agent_id));
            ActionOutcome {
                action: self.0.into(),
                ok: true,
                detail: String::new(),
                undo: Some(format!("undo {}", self.0)),
            }
        }
        fn undo(&mut self, t: &Target) -> ActionOutcome {
            self.1
                .lock()
                .unwrap()
                .push(format!("{}-{}", self.0, t.agent_id));
            ActionOutcome {
                action: format!("undo {}", self.0),
                ok: true,
                detail: String::new(),
                undo: None,
            }
        }
    }

    /// An in-kernel action: applied before the others.
    struct Urgent(Noted);

    impl Actuator for Urgent {
        fn name(&self) -> &'static str {
            self.0.name()
        }
        fn apply(&mut self, t: &Target) -> ActionOutcome {
            self.0.apply(t)
        }
        fn undo(&mut self, t: &Target) -> ActionOutcome {
            self.0.undo(t)
        }
        fn urgent(&self) -> bool {
            true
        }
    }

    struct Sink(Log);

    impl ResponseSink for Sink {
        fn name(&self) -> &'static str {
            "test"
        }
        fn on_findings(&mut self, findings: &[Finding]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} finding(s)", findings.len()));
        }
        fn on_agent(&mut self, t: &Target, present: bool, tier: Option<Tier>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("agent {} {present} {tier:?}", t.agent_id));
        }
        fn on_response(&mut self, r: &Response) -> anyhow::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{:?}->{:?}", r.decision.from, r.decision.to));
            Ok(())
        }
        fn on_completed(&mut self, done: &Completed) -> anyhow::Result<()> {
            self.0.lock().unwrap().push(format!(
                "completed {} of {} at {:?}",
                done.outcome.action, done.target.agent_id, done.tier
            ));
            Ok(())
        }
        fn on_release(
            &mut self,
            t: &Target,
            approvers: &[String],
            _: &[ActionOutcome],
        ) -> anyhow::Result<()> {
            self.0.lock().unwrap().push(format!(
                "release {} by {}",
                t.agent_id,
                approvers.join("+")
            ));
            Ok(())
        }
    }

    fn finding(agent: &str, ts: u64, score: f64, tier: Option<Tier>) -> Finding {
        Finding {
            ts_ns: ts * S,
            agent_id: Arc::from(agent),
            class: Arc::from("fraud"),
            cgroup_id: 9,
            source: Source::Rule {
                name: "r".into(),
                file: "f.yaml".into(),
            },
            score,
            tier,
            summary: String::new(),
            top_features: vec![],
            lossy: false,
        }
    }

    fn responder(actions: &Log, sink: &Log) -> Responder {
        Responder::new(PolicyConfig::default())
            .with_actuator(
                Tier::RateLimit,
                Box::new(Noted("rate_limit", actions.clone())),
            )
            .with_actuator(Tier::Contain, Box::new(Noted("deny_all", actions.clone())))
            .with_sink(Box::new(Sink(sink.clone())))
    }

    #[test]
    fn a_contain_rule_runs_every_actuator_up_to_containment_and_release_undoes_them() {
        let (actions, sink) = (Log::default(), Log::default());
        let mut r = responder(&actions, &sink);
        let out = r.on_findings(&[finding("a", 1, 1.0, Some(Tier::Contain))], S);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].actions.len(), 2);
        assert_eq!(r.tier("a"), Some(Tier::Contain));
        assert_eq!(r.contained().collect::<Vec<_>>(), ["a"]);
        // Repeated findings at the same tier change nothing and run nothing again.
        assert!(
            r.on_findings(&[finding("a", 2, 1.0, Some(Tier::Contain))], 2 * S)
                .is_empty()
        );
        r.release("a", &["alice".into(), "bob".into()]);
        assert_eq!(r.tier("a"), None);
        assert_eq!(
            *actions.lock().unwrap(),
            ["rate_limit+a", "deny_all+a", "deny_all-a", "rate_limit-a"]
        );
        assert_eq!(
            *sink.lock().unwrap(),
            [
                "1 finding(s)",
                "None->Some(Contain)",
                "1 finding(s)",
                "release a by alice+bob"
            ]
        );
    }

    fn announcement(agent: &str, removed: bool) -> Event {
        let body = crate::event::AgentBody {
            id: agent.into(),
            class: "fraud".into(),
            cgroup_path: format!("/agents/fraud/{agent}"),
            slot: 0,
        };
        Event {
            ts_ns: 1,
            kind_id: 0,
            cgroup_id: 9,
            pid: 0,
            tid: 0,
            agent: Some(crate::event::AgentRef::new(
                Arc::from(agent),
                Arc::from("fraud"),
            )),
            truncated: false,
            body: if removed {
                Body::AgentRemoved(body)
            } else {
                Body::AgentAdded(body)
            },
        }
    }

    #[test]
    fn sinks_hear_of_agents_coming_going_and_restored_containment() {
        let (actions, sink) = (Log::default(), Log::default());
        let mut r = responder(&actions, &sink);
        r.on_event(&announcement("a", false));
        assert_eq!(r.restore_contained(&[9], S), ["a"]);
        r.on_event(&announcement("a", true));
        r.on_event(&announcement("ghost", true));
        assert_eq!(
            *sink.lock().unwrap(),
            [
                "agent a true None",
                "agent a true Some(Contain)",
                "agent a false Some(Contain)"
            ]
        );
    }

    #[test]
    fn findings_about_a_cgroup_that_no_longer_exists_put_nothing_in_force() {
        let (actions, sink) = (Log::default(), Log::default());
        // Not a cgroup mount: no cgroup is found under it, so cgroup 9 is gone.
        let root = tempfile::tempdir().unwrap();
        let mut r = responder(&actions, &sink)
            .with_cgroup_root(root.path().into())
            .with_live_cgroups();
        r.on_event(&announcement("a", false));
        r.on_event(&announcement("a", true));
        // The last window of the removed agent, and a late event of its cgroup, unattributed.
        let last_window = finding("a", 2, 1.0, Some(Tier::Contain));
        let late = finding("cgroup:9", 2, 1.0, Some(Tier::Contain));
        assert!(r.on_findings(&[last_window, late], 2 * S).is_empty());
        assert!(actions.lock().unwrap().is_empty());
        assert_eq!((r.tier("a"), r.tier("cgroup:9")), (None, None));
        // A replay decides as the live run did: its cgroups were the recording host's.
        let mut r = responder(&actions, &sink).with_cgroup_root(root.path().into());
        let out = r.on_findings(&[finding("a", 2, 1.0, Some(Tier::Contain))], 2 * S);
        assert_eq!(out.len(), 1);
        assert_eq!(*actions.lock().unwrap(), ["rate_limit+a", "deny_all+a"]);
    }

    #[test]
    fn a_suspicious_score_is_logged_without_action_and_cooldown_undoes_a_rate_limit() {
        let (actions, sink) = (Log::default(), Log::default());
        let mut r = responder(&actions, &sink);
        let out = r.on_findings(&[finding("b", 1, 0.6, None)], S);
        assert_eq!((out.len(), out[0].actions.len()), (1, 0));
        r.on_findings(&[finding("b", 2, 0.8, None)], 2 * S);
        assert_eq!(*actions.lock().unwrap(), ["rate_limit+b"]);
        let out = r.tick(2 * S + 301 * S);
        assert_eq!(out[0].decision.to, Some(Tier::Log));
        assert_eq!(*actions.lock().unwrap(), ["rate_limit+b", "rate_limit-b"]);
    }

    #[test]
    fn the_containment_map_update_goes_before_every_other_action() {
        let (actions, sink) = (Log::default(), Log::default());
        let noted = |name| Noted(name, actions.clone());
        let mut r = Responder::new(PolicyConfig::default())
            .with_actuator(Tier::Contain, Box::new(noted("revoke")))
            .with_actuator(Tier::RateLimit, Box::new(Urgent(noted("rate_limit"))))
            .with_actuator(Tier::Contain, Box::new(noted("snapshot")))
            .with_actuator(Tier::Contain, Box::new(Urgent(noted("deny_all"))))
            .with_sink(Box::new(Sink(sink.clone())));
        let out = r.on_findings(&[finding("a", 1, 1.0, Some(Tier::Contain))], S);
        let order = ["deny_all+a", "rate_limit+a", "revoke+a", "snapshot+a"];
        assert_eq!(*actions.lock().unwrap(), order);
        let reported: Vec<&str> = out[0].actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(reported, ["deny_all", "rate_limit", "revoke", "snapshot"]);
        // Undone highest tier first, the in-kernel ones among them.
        r.release("a", &["alice".into(), "bob".into()]);
        assert_eq!(
            actions.lock().unwrap()[4..],
            ["deny_all-a", "snapshot-a", "revoke-a", "rate_limit-a"]
        );
    }

    /// An actuator whose work finishes later, on its own thread (like the snapshot).
    struct Deferred(Log, Vec<Target>);

    impl Actuator for Deferred {
        fn name(&self) -> &'static str {
            "forensic_snapshot"
        }
        fn apply(&mut self, t: &Target) -> ActionOutcome {
            self.0
                .lock()
                .unwrap()
                .push(format!("queued+{}", t.agent_id));
            self.1.push(t.clone());
            ActionOutcome {
                action: "forensic_snapshot".into(),
                ok: true,
                detail: "queued".into(),
                undo: Some("thaw".into()),
            }
        }
        fn undo(&mut self, t: &Target) -> ActionOutcome {
            self.0.lock().unwrap().push(format!("thaw-{}", t.agent_id));
            ActionOutcome {
                action: "thaw".into(),
                ok: true,
                detail: String::new(),
                undo: None,
            }
        }
        fn completed(&mut self, _: Option<std::time::Duration>) -> Vec<Completed> {
            self.1
                .drain(..)
                .map(|target| Completed {
                    target,
                    tier: None,
                    outcome: ActionOutcome {
                        action: "forensic_snapshot".into(),
                        ok: true,
                        detail: "bundle".into(),
                        undo: Some("thaw".into()),
                    },
                    evidence: None,
                })
                .collect()
        }
    }

    #[test]
    fn a_deferred_action_reports_queued_then_its_result_to_the_sinks() {
        let (actions, sink) = (Log::default(), Log::default());
        let mut r = Responder::new(PolicyConfig::default())
            .with_actuator(Tier::Contain, Box::new(Deferred(actions.clone(), vec![])))
            .with_actuator(
                Tier::Contain,
                Box::new(Urgent(Noted("deny_all", actions.clone()))),
            )
            .with_sink(Box::new(Sink(sink.clone())));
        assert!(r.completed(None).is_empty(), "nothing ran yet");
        let out = r.on_findings(&[finding("a", 1, 1.0, Some(Tier::Contain))], S);
        assert_eq!(out[0].actions[1].detail, "queued");
        assert_eq!(*actions.lock().unwrap(), ["deny_all+a", "queued+a"]);
        let done = r.completed(None);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tier, Some(Tier::Contain), "the agent's tier now");
        assert!(r.completed(None).is_empty(), "each result once");
        assert_eq!(
            *sink.lock().unwrap(),
            [
                "1 finding(s)",
                "None->Some(Contain)",
                "completed forensic_snapshot of a at Some(Contain)"
            ]
        );
    }
}
