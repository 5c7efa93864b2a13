//! The daemon's types as API messages.

use super::pb;
use crate::{
    detect::{Finding, Source, Tier},
    event::Event,
    respond::{actuator::ActionOutcome, engine::Response},
};

pub fn tier(t: Option<Tier>) -> i32 {
    (match t {
        None => pb::Tier::None,
        Some(Tier::Log) => pb::Tier::Log,
        Some(Tier::RateLimit) => pb::Tier::RateLimit,
        Some(Tier::Contain) => pb::Tier::Contain,
    }) as i32
}

pub fn action(a: &ActionOutcome) -> pb::Action {
    pb::Action {
        action: a.action.clone(),
        ok: a.ok,
        detail: a.detail.clone(),
        undo: a.undo.clone().unwrap_or_default(),
    }
}

pub fn finding(f: &Finding) -> pb::Finding {
    let (source, rule, rule_file) = match &f.source {
        Source::Rule { name, file } => ("rule", name.clone(), file.clone()),
        Source::Window => ("window", String::new(), String::new()),
        Source::Sequence => ("sequence", String::new(), String::new()),
        Source::Unidentified => ("unidentified", String::new(), String::new()),
    };
    pb::Finding {
        ts_ns: f.ts_ns,
        agent_id: f.agent_id.to_string(),
        class: f.class.to_string(),
        cgroup_id: f.cgroup_id,
        source: source.into(),
        rule,
        rule_file,
        score: f.score,
        tier: tier(f.tier),
        summary: f.summary.clone(),
        top_features: f
            .top_features
            .iter()
            .map(|c| pb::Contribution {
                feature: c.feature.clone(),
                value: c.value,
                weight: c.weight,
            })
            .collect(),
        lossy: f.lossy,
    }
}

pub fn decision(r: &Response) -> pb::Decision {
    pb::Decision {
        ts_ns: r.decision.ts_ns,
        agent_id: r.target.agent_id.to_string(),
        class: r.target.class.to_string(),
        from: tier(r.decision.from),
        to: tier(r.decision.to),
        reason: r.decision.reason.as_str().into(),
        findings: u32::try_from(r.findings.len()).unwrap_or(u32::MAX),
        actions: r.actions.iter().map(action).collect(),
    }
}

/// An event with its JSON line (the same as the daemon's output).
pub fn event(e: &Event) -> pb::Event {
    pb::Event {
        ts_ns: e.ts_ns,
        kind: e.body.name().into(),
        pid: e.pid,
        tid: e.tid,
        cgroup_id: e.cgroup_id,
        json: serde_json::to_string(e).unwrap_or_default(),
    }
}
