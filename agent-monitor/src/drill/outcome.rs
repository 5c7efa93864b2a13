//! Scoring one drill run. Replay and live both end with the same JSON lines (events,
//! `{"finding": ...}`, `{"response": ...}`, `{"release": ...}`), so one scorer turns either into
//! a [`ScenarioResult`]; a live run then adds what it verified in the kernel.
//!
//! Times are relative to the start of the attack: the exec of the attack process, found by its
//! `mark:<name>` argument (benign runs: the agent's first event). Time to detect is the first
//! expected finding (a rule's offending event, or the end of an anomalous window); time to
//! contain is the containment decision in replay and, live, the moment the harness saw DENY_ALL
//! in the kernel's containment map.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::scenario::{Detector, Scenario};
use crate::{detect::Tier, respond::policy::PolicyConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Replay,
    Live,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Replay => "replay",
            Mode::Live => "live",
        })
    }
}

/// Findings per tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TierCounts {
    pub log: u64,
    pub rate_limit: u64,
    pub contain: u64,
}

impl TierCounts {
    pub fn add(&mut self, tier: Tier) {
        match tier {
            Tier::Log => self.log += 1,
            Tier::RateLimit => self.rate_limit += 1,
            Tier::Contain => self.contain += 1,
        }
    }

    pub fn sum(&mut self, other: &TierCounts) {
        self.log += other.log;
        self.rate_limit += other.rate_limit;
        self.contain += other.contain;
    }
}

/// One action the response stage ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionTaken {
    pub action: String,
    pub ok: bool,
    /// Milliseconds after the attack started.
    pub at_ms: f64,
    pub detail: String,
}

/// One line of a scenario's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Milliseconds after the attack started (negative: before).
    pub t_ms: f64,
    /// `event`, `finding`, `decision`, `action`, `release` or `check`.
    pub what: &'static str,
    /// `attack` (the attack process and its children), `agent` (the benign workload), or
    /// `monitor`.
    pub actor: &'static str,
    pub text: String,
}

/// What one scenario run showed, and whether it met its expectation.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub mode: Mode,
    /// `attack` or `benign`.
    pub kind: &'static str,
    pub class: String,
    pub mitre: Vec<String>,
    pub description: String,
    pub expected: super::scenario::Expect,
    pub passed: bool,
    /// Why it did not pass (empty when it did).
    pub failures: Vec<String>,
    pub detected: bool,
    /// Detectors that fired after the attack started, first firing first.
    pub detectors: Vec<String>,
    /// Highest tier the response reached.
    pub tier: Option<Tier>,
    pub time_to_detect_ms: Option<f64>,
    pub time_to_contain_ms: Option<f64>,
    pub actions: Vec<ActionTaken>,
    /// Live: the agent's cgroup was frozen while contained.
    pub frozen: Option<bool>,
    /// Live: containment was in force when checked (connects refused / frozen).
    pub containment_held: Option<bool>,
    /// The release (two approvers for a containment) lifted everything (live: connect works
    /// and thawed; replay: the dry-run undo of every action).
    pub release_verified: Option<bool>,
    /// Benign runs: every finding; attack runs: findings before the attack started.
    pub false_positives: TierCounts,
    pub events: u64,
    pub findings: u64,
    /// Live: what reached the loopback targets.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<&'static str, u64>,
    /// Live checks and notes.
    pub notes: Vec<String>,
    pub timeline: Vec<TimelineEntry>,
}

/// Timeline events kept per scenario (findings, decisions and actions are always kept).
const TIMELINE_EVENTS: usize = 250;
const NS_PER_MS: f64 = 1_000_000.0;

/// The parsed lines of one run.
pub struct Lines<'a> {
    pub lines: &'a [Value],
}

impl Lines<'_> {
    /// Boot-time ns of the attack's exec (attack scenarios) or the first event.
    pub fn attack_start(&self, scenario: &Scenario) -> Option<(u64, u32)> {
        let mark = format!("mark:{}", scenario.name);
        if scenario.is_attack() {
            self.lines.iter().find_map(|l| {
                (l["kind"] == "exec"
                    && l["argv"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&mark))))
                .then(|| {
                    (
                        l["ts_ns"].as_u64().unwrap_or(0),
                        l["pid"].as_u64().unwrap_or(0) as u32,
                    )
                })
            })
        } else {
            self.lines
                .iter()
                .find_map(|l| l["ts_ns"].as_u64())
                .map(|ts| (ts, 0))
        }
    }
}

/// The label of a finding's detector: `rule:NAME`, `window`, `sequence`, `unidentified`.
pub fn detector_label(finding: &Value) -> String {
    let source = &finding["source"];
    match source["type"].as_str().unwrap_or("?") {
        "rule" => format!("rule:{}", source["name"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

fn matches(expected: &Detector, label: &str) -> bool {
    match expected {
        Detector::Rule(name) => label.strip_prefix("rule:") == Some(name.as_str()),
        Detector::Anomaly => label == "window" || label == "sequence",
    }
}

fn tier_of(v: &Value) -> Option<Tier> {
    serde_json::from_value(v.clone()).ok()
}

/// Scores a run from its JSON lines. `policy` maps anomaly scores to tiers.
pub fn score(
    scenario: &Scenario,
    mode: Mode,
    lines: &[Value],
    policy: &PolicyConfig,
) -> ScenarioResult {
    let view = Lines { lines };
    let start = view.attack_start(scenario);
    let start_ns = start.map_or(0, |(ts, _)| ts);
    let rel = |ts: u64| (ts as f64 - start_ns as f64) / NS_PER_MS;
    let attack = scenario.is_attack();
    let mut failures = Vec::new();
    if attack && start.is_none() {
        failures.push(format!(
            "the attack process (mark:{}) is not in the events: the attack did not start",
            scenario.name
        ));
    }
    let actors = Actors::new(lines, start.map(|(_, pid)| pid));
    let thresholds = policy.thresholds(&scenario.class);

    let mut detectors: Vec<String> = Vec::new();
    let mut fp = TierCounts::default();
    let mut detected_at: Option<u64> = None;
    let mut findings = 0;
    let mut events = 0;
    let mut tier: Option<Tier> = None;
    let mut contain_at: Option<u64> = None;
    let mut actions: Vec<ActionTaken> = Vec::new();
    let mut timeline = Vec::new();
    let mut timeline_events = 0;
    for line in lines {
        if let Some(f) = line.get("finding") {
            findings += 1;
            let ts = f["ts_ns"].as_u64().unwrap_or(0);
            let label = detector_label(f);
            let ftier = tier_of(&f["tier"])
                .or_else(|| thresholds.tier_of(f["score"].as_f64().unwrap_or(0.0)));
            let after = !attack || ts >= start_ns;
            if (!attack || ts < start_ns)
                && let Some(t) = ftier
            {
                fp.add(t);
            }
            if attack && after {
                if !detectors.contains(&label) {
                    detectors.push(label.clone());
                }
                let wanted = scenario.expect.by.is_empty()
                    || scenario.expect.by.iter().any(|d| matches(d, &label));
                if wanted && detected_at.is_none() {
                    detected_at = Some(ts);
                }
            }
            timeline.push(TimelineEntry {
                t_ms: rel(ts),
                what: "finding",
                actor: "monitor",
                text: format!(
                    "{label} [{}] score {:.2}: {}",
                    ftier.map_or("-".into(), tier_name),
                    f["score"].as_f64().unwrap_or(0.0),
                    f["summary"].as_str().unwrap_or("")
                ),
            });
        } else if let Some(r) = line.get("response") {
            let d = &r["decision"];
            let ts = d["ts_ns"].as_u64().unwrap_or(0);
            let to = tier_of(&d["to"]);
            tier = tier.max(to);
            if to == Some(Tier::Contain) && contain_at.is_none() {
                contain_at = Some(ts);
            }
            timeline.push(TimelineEntry {
                t_ms: rel(ts),
                what: "decision",
                actor: "monitor",
                text: format!(
                    "{} -> {} ({})",
                    tier_of(&d["from"]).map_or("none".into(), tier_name),
                    to.map_or("none".into(), tier_name),
                    d["reason"].as_str().unwrap_or("")
                ),
            });
            for a in r["actions"].as_array().into_iter().flatten() {
                let name = a["action"].as_str().unwrap_or("?");
                let name = name.strip_suffix(":apply").unwrap_or(name).to_owned();
                let ok = a["ok"].as_bool().unwrap_or(false);
                let detail = a["detail"].as_str().unwrap_or("").to_owned();
                timeline.push(TimelineEntry {
                    t_ms: rel(ts),
                    what: "action",
                    actor: "monitor",
                    text: format!(
                        "{name}: {} {}",
                        if ok { "ok" } else { "FAILED" },
                        short(&detail)
                    ),
                });
                actions.push(ActionTaken {
                    action: name,
                    ok,
                    at_ms: rel(ts),
                    detail,
                });
            }
        } else if let Some(r) = line.get("release") {
            let approvers: Vec<&str> = r["request"]["approvers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            timeline.push(TimelineEntry {
                t_ms: timeline.last().map_or(0.0, |e: &TimelineEntry| e.t_ms),
                what: "release",
                actor: "monitor",
                text: format!(
                    "released by {}; {} action(s) undone",
                    approvers.join(" and "),
                    r["actions"].as_array().map_or(0, Vec::len)
                ),
            });
        } else if line.get("kind").is_some() {
            events += 1;
            if timeline_events < TIMELINE_EVENTS
                && let Some(text) = describe(line)
            {
                let ts = line["ts_ns"].as_u64().unwrap_or(0);
                // Before the attack, only the second before it: the benign cover is long.
                if !attack || ts + 1_000_000_000 >= start_ns {
                    timeline_events += 1;
                    timeline.push(TimelineEntry {
                        t_ms: rel(ts),
                        what: "event",
                        actor: actors.of(line),
                        text,
                    });
                }
            }
        }
    }

    let detected = attack && detected_at.is_some();
    let e = &scenario.expect;
    if attack {
        if !detected {
            let wanted = if e.by.is_empty() {
                "no finding".to_owned()
            } else {
                format!(
                    "none of {} fired",
                    e.by.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let fired = if detectors.is_empty() {
                String::new()
            } else {
                format!(" (fired: {})", detectors.join(", "))
            };
            failures.push(format!("missed: {wanted} after the attack started{fired}"));
        }
        if let Some(min) = e.min_tier
            && tier < Some(min)
        {
            failures.push(format!(
                "tier {} is below the expected {}",
                tier.map_or("none".into(), tier_name),
                tier_name(min)
            ));
        }
        for want in &e.actions {
            if !actions.iter().any(|a| &a.action == want && a.ok) {
                failures.push(format!("action {want} did not run (or failed)"));
            }
        }
    } else if let Some(t) = tier
        && t > scenario.allowed_tier()
    {
        failures.push(format!(
            "benign run reached {} (allowed: {})",
            tier_name(t),
            tier_name(scenario.allowed_tier())
        ));
    }
    let time_to_detect_ms = detected_at.map(&rel);
    let time_to_contain_ms = contain_at.filter(|_| attack).map(&rel);
    if let (Some(limit), Some(t)) = (e.detect_within, time_to_detect_ms)
        && t > limit.as_secs_f64() * 1000.0
    {
        failures.push(format!(
            "detected after {t:.1} ms, deadline {} ms",
            limit.as_millis()
        ));
    }
    timeline.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    ScenarioResult {
        name: scenario.name.clone(),
        mode,
        kind: if attack { "attack" } else { "benign" },
        class: scenario.class.clone(),
        mitre: scenario.mitre.clone(),
        description: scenario.description.clone(),
        expected: scenario.expect.clone(),
        passed: false,
        failures,
        detected,
        detectors,
        tier,
        time_to_detect_ms,
        time_to_contain_ms,
        actions,
        frozen: None,
        containment_held: None,
        release_verified: None,
        false_positives: fp,
        events,
        findings,
        targets: BTreeMap::new(),
        notes: Vec::new(),
        timeline,
    }
}

impl ScenarioResult {
    /// Checks the containment deadline (after a live run set the kernel-observed time) and
    /// settles `passed`.
    pub fn finish(&mut self, scenario: &Scenario) {
        if scenario.is_attack() && scenario.expects_containment() {
            match (scenario.expect.contain_within, self.time_to_contain_ms) {
                (_, None) => self.failures.push("no containment was decided".into()),
                (Some(limit), Some(t)) if t > limit.as_secs_f64() * 1000.0 => {
                    self.failures.push(format!(
                        "contained after {t:.1} ms, deadline {} ms",
                        limit.as_millis()
                    ));
                }
                _ => {}
            }
        }
        if self.containment_held == Some(false) {
            self.failures.push("containment did not hold".into());
        }
        if self.release_verified == Some(false) {
            self.failures.push("the release was not verified".into());
        }
        if scenario.expect.frozen && self.mode == Mode::Live && self.frozen != Some(true) {
            self.failures
                .push("the agent's cgroup was expected frozen and was not".into());
        }
        self.failures.dedup();
        self.passed = self.failures.is_empty();
    }
}

pub fn tier_name(t: Tier) -> String {
    match t {
        Tier::Log => "log",
        Tier::RateLimit => "rate_limit",
        Tier::Contain => "contain",
    }
    .into()
}

fn short(s: &str) -> String {
    if s.len() <= 160 {
        s.to_owned()
    } else {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// Processes of the attack: its root and every process it forked.
struct Actors {
    attack: HashSet<u64>,
}

impl Actors {
    fn new(lines: &[Value], root: Option<u32>) -> Self {
        let mut attack = HashSet::new();
        if let Some(root) = root.filter(|r| *r != 0) {
            attack.insert(u64::from(root));
            let forks: Vec<(u64, u64)> = lines
                .iter()
                .filter(|l| l["kind"] == "fork" && l["thread"] == false)
                .filter_map(|l| Some((l["pid"].as_u64()?, l["child"].as_u64()?)))
                .collect();
            // Fork records of different CPUs arrive out of order: repeat until nothing is added.
            loop {
                let before = attack.len();
                for (parent, child) in &forks {
                    if attack.contains(parent) {
                        attack.insert(*child);
                    }
                }
                if attack.len() == before {
                    break;
                }
            }
        }
        Self { attack }
    }

    fn of(&self, line: &Value) -> &'static str {
        if line["pid"]
            .as_u64()
            .is_some_and(|p| self.attack.contains(&p))
        {
            "attack"
        } else {
            "agent"
        }
    }
}

/// One line for the events worth showing in a timeline.
fn describe(e: &Value) -> Option<String> {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    let ret = e["ret"].as_i64().unwrap_or(0);
    let result = if ret < 0 {
        format!(" = {ret}")
    } else {
        String::new()
    };
    let peer = || {
        format!(
            "{}:{}",
            e["addr"].as_str().unwrap_or("-"),
            e["port"].as_u64().unwrap_or(0)
        )
    };
    Some(match e["kind"].as_str()? {
        "exec" => {
            let argv: Vec<&str> = e["argv"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("exec {} [{}]{result}", s("filename"), argv.join(" "))
        }
        "open" => {
            let flags = e["flags"].as_u64().unwrap_or(0);
            let access = match flags & 3 {
                0 => "read",
                1 => "write",
                _ => "read_write",
            };
            format!("open {} ({access}){result}", s("path"))
        }
        "unlink" => format!("unlink {}{result}", s("path")),
        "rename" => format!("rename {} -> {}{result}", s("old_path"), s("new_path")),
        "chmod" => format!(
            "chmod {} {:o}{result}",
            s("path"),
            e["mode"].as_u64().unwrap_or(0)
        ),
        "connect" => format!("connect {}{result}", peer()),
        "accept" => format!("accept {}{result}", peer()),
        "bind" => format!("bind {}{result}", peer()),
        "udp_send" => format!("udp send {}{result}", peer()),
        "dns_query" => format!("dns query {}", s("name")),
        "flow_bytes" => {
            let out = e["bytes_out"].as_u64().unwrap_or(0);
            if out < 1 << 20 {
                return None;
            }
            format!(
                "flow {} bytes out, {} in",
                out,
                e["bytes_in"].as_u64().unwrap_or(0)
            )
        }
        "exit" => format!(
            "exit {}",
            e["code"]
                .as_i64()
                .map_or("(killed)".into(), |c| c.to_string())
        ),
        "agent_added" => format!("agent {} ({}) announced", s("id"), s("class")),
        "lost" => format!(
            "{} events lost in the kernel",
            e["count"].as_u64().unwrap_or(0)
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(Path::new("drills/t.yaml"), text).expect("scenario")
    }

    const ATTACK: &str = "version: 1\nname: t\ndescription: d\nmitre: [T1528]\nclass: fraud\n\
        benign: {duration: 5s}\nattack: {at: 1s, steps: ['read:/x']}\n\
        expect: {detected: true, by: ['rule:credential-read'], min_tier: contain, \
        actions: [deny_all], detect_within: 1s, contain_within: 1s}\n";

    fn lines(rule: &str, tier: &str) -> Vec<Value> {
        vec![
            json!({"ts_ns": 1_000_000_000u64, "kind": "agent_added", "pid": 0, "id": "drill-t", "class": "fraud"}),
            json!({"finding": {"ts_ns": 1_500_000_000u64, "source": {"type": "window"}, "score": 0.6, "summary": "early"}}),
            json!({"ts_ns": 2_000_000_000u64, "kind": "exec", "pid": 7, "filename": "/x/agent-monitor", "argv": ["agent-monitor", "workload", "mark:t", "read:/x"], "ret": 0}),
            json!({"ts_ns": 2_000_100_000u64, "kind": "open", "pid": 7, "path": "/x", "flags": 0, "ret": 3}),
            json!({"finding": {"ts_ns": 2_000_100_000u64, "source": {"type": "rule", "name": rule}, "score": 1.0, "tier": tier, "summary": "read"}}),
            json!({"response": {"decision": {"from": null, "to": tier, "reason": "finding", "ts_ns": 2_000_100_000u64},
                "actions": [{"action": "rate_limit:apply", "ok": true, "detail": ""}, {"action": "deny_all:apply", "ok": true, "detail": ""}]}}),
        ]
    }

    #[test]
    fn a_hit_is_scored_with_times_relative_to_the_attack() {
        let s = scenario(ATTACK);
        let mut r = score(
            &s,
            Mode::Replay,
            &lines("credential-read", "contain"),
            &PolicyConfig::default(),
        );
        r.finish(&s);
        assert!(r.passed, "{:?}", r.failures);
        assert_eq!(r.detectors, ["rule:credential-read"]);
        assert_eq!(r.tier, Some(Tier::Contain));
        assert!((r.time_to_detect_ms.unwrap() - 0.1).abs() < 1e-9);
        assert!((r.time_to_contain_ms.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(
            r.false_positives,
            TierCounts {
                log: 1,
                ..TierCounts::default()
            }
        );
        let actions: Vec<&str> = r.actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["rate_limit", "deny_all"]);
        assert!(
            r.timeline
                .iter()
                .any(|t| t.actor == "attack" && t.text.starts_with("open /x"))
        );
    }

    #[test]
    fn a_miss_and_a_low_tier_fail() {
        let s = scenario(ATTACK);
        let mut r = score(
            &s,
            Mode::Replay,
            &lines("shell-spawned", "rate_limit"),
            &PolicyConfig::default(),
        );
        r.finish(&s);
        assert!(!r.passed);
        let all = r.failures.join("; ");
        assert!(
            all.contains("missed: none of rule:credential-read fired"),
            "{all}"
        );
        assert!(
            all.contains("tier rate_limit is below the expected contain"),
            "{all}"
        );
        assert!(all.contains("no containment was decided"), "{all}");
    }

    #[test]
    fn a_benign_run_that_is_contained_fails() {
        let s = scenario(
            "version: 1\nname: t\ndescription: d\nclass: fraud\nbenign: {duration: 5s}\n\
             expect: {detected: false}\n",
        );
        let mut r = score(
            &s,
            Mode::Replay,
            &lines("credential-read", "contain"),
            &PolicyConfig::default(),
        );
        r.finish(&s);
        assert!(!r.passed);
        assert_eq!(
            r.false_positives,
            TierCounts {
                log: 1,
                rate_limit: 0,
                contain: 1
            }
        );
        assert!(
            r.failures[0].contains("benign run reached contain"),
            "{:?}",
            r.failures
        );
    }
}
