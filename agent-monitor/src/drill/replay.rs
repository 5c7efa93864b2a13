//! Replay drills: a scenario's recorded trace goes through the real pipeline (decode, identity,
//! rules, class models, decision policy) in trace time, with every actuator wrapped in
//! [`Recording`], so nothing is touched and the run is deterministic. After the trace, the
//! release a SOC would file (two approvers) is carried out the same dry way and checked.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use serde_json::Value;

use super::{
    outcome::{Mode, ScenarioResult, score},
    scenario::Scenario,
};
use crate::{
    config::Config,
    detect::{
        Tier,
        engine::Detection,
        rules::{RuleEngine, RuleSet},
    },
    pipeline::Pipeline,
    respond::{
        actuator::{ActionOutcome, Actuator, Recording, Target},
        engine::Responder,
    },
    source::ReplaySource,
};

/// The approvers of a drill's release.
pub const APPROVERS: [&str; 2] = ["drill-approver-1", "drill-approver-2"];

/// Stands for an actuator in a dry run: [`Recording`] never calls it.
struct Planned(&'static str);

impl Actuator for Planned {
    fn name(&self) -> &'static str {
        self.0
    }

    fn apply(&mut self, _: &Target) -> ActionOutcome {
        unreachable!("dry run: the recording wrapper never applies")
    }

    fn undo(&mut self, _: &Target) -> ActionOutcome {
        unreachable!("dry run: the recording wrapper never undoes")
    }
}

/// The actuators a live drill runs, per tier; replay records them instead.
pub fn dry_run_responder(config: &Config) -> Responder {
    let mut r = Responder::new(config.policy.clone());
    r.add_actuator(
        Tier::RateLimit,
        Box::new(Recording::new(Planned("rate_limit"))),
    );
    // The order live: DENY_ALL first, then the snapshot.
    r.add_actuator(Tier::Contain, Box::new(Recording::new(Planned("deny_all"))));
    r.add_actuator(
        Tier::Contain,
        Box::new(Recording::new(Planned("forensic_snapshot"))),
    );
    r
}

/// The detection stage as the daemon builds it: the configured rules and class models.
pub fn detection(config: &Config) -> anyhow::Result<Detection> {
    let mut d = Detection::new(&config.detection)?;
    let rules = RuleSet::load_dir(&config.detection.rules_dir)?;
    d.set_rules(RuleEngine::new(rules));
    let models = &config.detection.models_dir;
    if models.is_dir() {
        d.load_models(models)
            .with_context(|| format!("loading class models from {}", models.display()))?;
    }
    Ok(d)
}

/// JSON lines written by the pipeline, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("capture poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses JSON lines; a bad line is an error naming its number.
pub fn parse_lines(text: &str, what: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{what}: line {} is not JSON", i + 1))
        })
        .collect()
}

/// Replays the scenario's trace and scores it.
pub fn run(scenario: &Scenario, config: &Config) -> anyhow::Result<ScenarioResult> {
    let trace = scenario.trace_path();
    let mut source = ReplaySource::open(&trace).with_context(|| {
        format!(
            "{}: no usable trace (record it: agent-monitor drill record {})",
            trace.display(),
            scenario.name
        )
    })?;
    let created_ms = source.header().created_unix_ms;
    let mut detection = detection(config)?;
    detection.set_wall_anchor(i128::from(created_ms) * 1_000_000);
    let out = Captured::default();
    let mut pipeline = Pipeline::default()
        .with_json(Box::new(out.clone()))
        .with_detection(detection)
        .with_responder(dry_run_responder(config));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(pipeline.run(&mut source, std::future::pending()))
        .with_context(|| format!("replaying {}", trace.display()))?;
    pipeline.finish()?;

    let agent = scenario.agent_id();
    let release = pipeline.responder_mut().and_then(|r| {
        r.tier(&agent).map(|tier| {
            let approvers: Vec<String> = APPROVERS.iter().map(|a| (*a).to_owned()).collect();
            let actions = r.release(&agent, &approvers);
            let undone = actions.iter().all(|a| a.ok && a.action.ends_with(":undo"));
            (tier, actions, undone && r.tier(&agent).is_none())
        })
    });
    let text = String::from_utf8(std::mem::take(
        &mut *out
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("capture poisoned"))?,
    ))?;
    let mut lines = parse_lines(&text, &trace.display().to_string())?;
    if let Some((_, actions, _)) = &release {
        lines.push(serde_json::json!({"release": {
            "request": {"agent_id": agent, "approvers": APPROVERS},
            "actions": actions,
        }}));
    }
    let mut result = score(scenario, Mode::Replay, &lines, &config.policy);
    if let Some((tier, actions, ok)) = release {
        result.release_verified = Some(ok);
        result.notes.push(format!(
            "dry-run release of {} by {}: {} action(s) undone",
            super::outcome::tier_name(tier),
            APPROVERS.join(" and "),
            actions.len()
        ));
    }
    result.finish(scenario);
    Ok(result)
}
