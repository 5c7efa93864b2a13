//! Drill scenarios: one YAML file per scenario under `drills/` (schema in `drills/README.md`).
//!
//! Files are read with serde into a raw shape, then checked field by field; every refusal names
//! the file, the line and the field (`drills/x.yaml:12: expect.min_tier: unknown tier ...`).
//! Lines come from the same line-keeping YAML tree the rule loader uses.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::fixtures::Placeholders;
use crate::{
    detect::{
        Tier,
        rules::yaml::{self, Node, NodeKind},
    },
    workload::{Step, profile::Profile},
};

/// The only schema version so far.
pub const VERSION: u32 = 1;
/// Agent ids are `drill-<name>`; ids must stay under 64 bytes.
const MAX_NAME: usize = 48;
/// Actions the response stage can report.
pub const ACTIONS: &[&str] = &[
    "rate_limit",
    "deny_all",
    "forensic_snapshot",
    "revoke_tokens",
];

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        file: String,
        line: usize,
        /// Dotted path of the field (`expect.min_tier`, `attack.steps[2]`); empty at top level.
        field: String,
        message: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A detector a scenario expects to fire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "name")]
pub enum Detector {
    /// A rule from `rules/`, by name.
    Rule(String),
    /// The class's anomaly models (window or sequence).
    Anomaly,
}

impl std::fmt::Display for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detector::Rule(n) => write!(f, "rule:{n}"),
            Detector::Anomaly => f.write_str("anomaly"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Benign {
    /// The representative workload the attack hides in.
    #[serde(serialize_with = "ser_profile")]
    pub workload: Profile,
    #[serde(with = "humantime_serde_ms")]
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Attack {
    /// When the attack starts, after the benign workload.
    #[serde(with = "humantime_serde_ms")]
    pub at: Duration,
    /// Workload steps (`agent-monitor workload` syntax) with `{placeholders}`.
    pub steps: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Expect {
    pub detected: bool,
    /// At least one of these must fire (empty: any finding after the attack starts).
    pub by: Vec<Detector>,
    /// Lowest tier the response must reach.
    pub min_tier: Option<Tier>,
    /// Highest tier allowed (benign scenarios: below containment unless stated).
    pub max_tier: Option<Tier>,
    /// Actions that must have run.
    pub actions: Vec<String>,
    /// Live: the agent's cgroup must be frozen while contained.
    pub frozen: bool,
    #[serde(with = "opt_ms")]
    pub detect_within: Option<Duration>,
    #[serde(with = "opt_ms")]
    pub contain_within: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Scenario {
    #[serde(skip)]
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub mitre: Vec<String>,
    pub class: String,
    pub benign: Benign,
    pub attack: Option<Attack>,
    pub expect: Expect,
}

impl Scenario {
    /// An attack scenario (as opposed to a benign run).
    pub fn is_attack(&self) -> bool {
        self.attack.is_some()
    }

    /// The agent id the scenario runs as.
    pub fn agent_id(&self) -> String {
        format!("drill-{}", self.name)
    }

    /// The recorded trace next to the scenario: `traces/<name>.amtrace`.
    pub fn trace_path(&self) -> PathBuf {
        self.file
            .parent()
            .unwrap_or(Path::new("."))
            .join("traces")
            .join(format!("{}.amtrace", self.name))
    }

    /// Whether the expectation includes containment.
    pub fn expects_containment(&self) -> bool {
        self.expect.min_tier == Some(Tier::Contain)
    }

    /// The highest tier the scenario may reach.
    pub fn allowed_tier(&self) -> Tier {
        match (self.is_attack(), self.expect.max_tier) {
            (_, Some(t)) => t,
            (true, None) => Tier::Contain,
            (false, None) => Tier::RateLimit,
        }
    }

    /// Reads and checks one scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Every `*.yaml` scenario in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
            .collect();
        files.sort();
        files.iter().map(|f| Self::load(f)).collect()
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let tree = yaml::parse(text).map_err(|e| ScenarioError::Invalid {
            file: file.clone(),
            line: e.line,
            field: String::new(),
            message: e.message,
        })?;
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: Raw = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.location().map_or(1, |l| l.line());
            // serde_yaml appends its own position; the file:line prefix says it already.
            let message = inner.to_string();
            let mut message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            // serde_yaml also starts with the path of the mapping; the field says it already.
            if let Some((head, rest)) = message.split_once(": ")
                && !head.contains(' ')
                && field.starts_with(head)
            {
                message = rest.to_owned();
            }
            ScenarioError::Invalid {
                file: file.clone(),
                line,
                field: if field == "." { String::new() } else { field },
                message,
            }
        })?;
        let ctx = Ctx {
            file: &file,
            tree: &tree,
        };
        raw.check(&ctx, path)
    }
}

/// Where errors are reported.
struct Ctx<'a> {
    file: &'a str,
    tree: &'a Node,
}

impl Ctx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.to_owned(),
            line: line_of(self.tree, field),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The line of a dotted field path (`attack.steps[2]`) in the tree: the deepest node found.
fn line_of(root: &Node, field: &str) -> usize {
    let mut node = root;
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let NodeKind::Map(entries) = &node.kind else {
            break;
        };
        let Some((k, v)) = entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, NodeKind::Scalar { text } if text == key))
        else {
            break;
        };
        node = v;
        if let (Some(i), NodeKind::Seq(items)) = (index, &v.kind) {
            match items.get(i) {
                Some(item) => node = item,
                None => return k.line,
            }
        }
    }
    node.line
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    name: String,
    description: String,
    #[serde(default)]
    mitre: Vec<String>,
    class: String,
    benign: RawBenign,
    #[serde(default)]
    attack: Option<RawAttack>,
    expect: RawExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBenign {
    #[serde(default)]
    workload: Option<String>,
    duration: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttack {
    at: String,
    steps: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    detected: bool,
    #[serde(default)]
    by: Vec<String>,
    #[serde(default)]
    min_tier: Option<String>,
    #[serde(default)]
    max_tier: Option<String>,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    frozen: bool,
    #[serde(default)]
    detect_within: Option<String>,
    #[serde(default)]
    contain_within: Option<String>,
}

fn duration(ctx: &Ctx, field: &str, text: &str) -> Result<Duration, ScenarioError> {
    humantime::parse_duration(text).map_err(|e| {
        ctx.err(
            field,
            format!("bad duration {text:?} ({e}); write e.g. 500ms, 2s"),
        )
    })
}

fn tier(ctx: &Ctx, field: &str, text: &str) -> Result<Tier, ScenarioError> {
    match text {
        "log" => Ok(Tier::Log),
        "rate_limit" => Ok(Tier::RateLimit),
        "contain" => Ok(Tier::Contain),
        _ => Err(ctx.err(
            field,
            format!("unknown tier {text:?} (log, rate_limit, contain)"),
        )),
    }
}

fn is_technique(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, "000"));
    main.len() == 4
        && sub.len() == 3
        && main.bytes().all(|b| b.is_ascii_digit())
        && sub.bytes().all(|b| b.is_ascii_digit())
}

impl Raw {
    fn check(self, ctx: &Ctx, path: &Path) -> Result<Scenario, ScenarioError> {
        if self.version != VERSION {
            return Err(ctx.err(
                "version",
                format!(
                    "version {} is not supported (this build reads {VERSION})",
                    self.version
                ),
            ));
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(ctx.err(
                "name",
                format!("{:?}: use 1 to {MAX_NAME} of a-z, 0-9 and -", self.name),
            ));
        }
        if path.file_stem().is_some_and(|s| s != self.name.as_str()) {
            return Err(ctx.err(
                "name",
                format!(
                    "{:?} differs from the file name {}",
                    self.name,
                    path.display()
                ),
            ));
        }
        for (i, id) in self.mitre.iter().enumerate() {
            if !is_technique(id) {
                return Err(ctx.err(
                    &format!("mitre[{i}]"),
                    format!("{id:?} is not an ATT&CK technique id (T1234 or T1234.001)"),
                ));
            }
        }
        if self.class.is_empty() || self.class.len() >= agent_monitor_common::AGENT_CLASS_LEN {
            return Err(ctx.err("class", "must be 1 to 31 bytes"));
        }
        let workload_text = self.benign.workload.as_deref().unwrap_or(&self.class);
        let workload: Profile = workload_text
            .parse()
            .map_err(|e: anyhow::Error| ctx.err("benign.workload", e.to_string()))?;
        let benign = Benign {
            workload,
            duration: duration(ctx, "benign.duration", &self.benign.duration)?,
        };
        if benign.duration.is_zero() || benign.duration > Duration::from_secs(120) {
            return Err(ctx.err("benign.duration", "must be between 1s and 120s"));
        }
        let attack = match self.attack {
            None => None,
            Some(a) => {
                let at = duration(ctx, "attack.at", &a.at)?;
                if at >= benign.duration {
                    return Err(ctx.err(
                        "attack.at",
                        "the attack must start while the benign workload runs",
                    ));
                }
                if a.steps.is_empty() {
                    return Err(ctx.err("attack.steps", "an attack needs at least one step"));
                }
                let sample = Placeholders::sample();
                for (i, step) in a.steps.iter().enumerate() {
                    let field = format!("attack.steps[{i}]");
                    let rendered = sample
                        .render(step)
                        .map_err(|e| ctx.err(&field, e.to_string()))?;
                    rendered
                        .parse::<Step>()
                        .map_err(|e| ctx.err(&field, format!("{e:#}")))?;
                }
                Some(Attack { at, steps: a.steps })
            }
        };
        if attack.is_some() && self.mitre.is_empty() {
            return Err(ctx.err("mitre", "an attack scenario names its ATT&CK techniques"));
        }
        let e = self.expect;
        if e.detected && attack.is_none() {
            return Err(ctx.err(
                "expect.detected",
                "a scenario without an attack cannot expect a detection",
            ));
        }
        if !e.detected && attack.is_some() {
            return Err(ctx.err(
                "expect.detected",
                "an attack scenario must expect its detection (a drill that expects a miss \
                 cannot fail)",
            ));
        }
        let mut by = Vec::new();
        for (i, d) in e.by.iter().enumerate() {
            by.push(match d.split_once(':') {
                Some(("rule", name)) if !name.is_empty() => Detector::Rule(name.to_owned()),
                None if d == "anomaly" => Detector::Anomaly,
                _ => {
                    return Err(ctx.err(
                        &format!("expect.by[{i}]"),
                        format!("{d:?}: write rule:NAME or anomaly"),
                    ));
                }
            });
        }
        let min_tier = e
            .min_tier
            .map(|t| tier(ctx, "expect.min_tier", &t))
            .transpose()?;
        let max_tier = e
            .max_tier
            .map(|t| tier(ctx, "expect.max_tier", &t))
            .transpose()?;
        if let (Some(lo), Some(hi)) = (min_tier, max_tier)
            && lo > hi
        {
            return Err(ctx.err("expect.max_tier", "is below expect.min_tier"));
        }
        for (i, a) in e.actions.iter().enumerate() {
            if !ACTIONS.contains(&a.as_str()) {
                return Err(ctx.err(
                    &format!("expect.actions[{i}]"),
                    format!("unknown action {a:?} ({})", ACTIONS.join(", ")),
                ));
            }
        }
        if e.frozen && min_tier != Some(Tier::Contain) {
            return Err(ctx.err(
                "expect.frozen",
                "only a containment freezes the agent: set expect.min_tier: contain",
            ));
        }
        let detect_within = e
            .detect_within
            .map(|d| duration(ctx, "expect.detect_within", &d))
            .transpose()?;
        let contain_within = e
            .contain_within
            .map(|d| duration(ctx, "expect.contain_within", &d))
            .transpose()?;
        if contain_within.is_some() && min_tier != Some(Tier::Contain) {
            return Err(ctx.err(
                "expect.contain_within",
                "a containment deadline needs expect.min_tier: contain",
            ));
        }
        if !e.detected
            && (!by.is_empty()
                || min_tier.is_some()
                || !e.actions.is_empty()
                || detect_within.is_some())
        {
            return Err(ctx.err(
                "expect",
                "a benign scenario sets only detected: false and max_tier",
            ));
        }
        Ok(Scenario {
            file: path.to_owned(),
            name: self.name,
            description: self.description,
            mitre: self.mitre,
            class: self.class,
            benign,
            attack,
            expect: Expect {
                detected: e.detected,
                by,
                min_tier,
                max_tier,
                actions: e.actions,
                frozen: e.frozen,
                detect_within,
                contain_within,
            },
        })
    }
}

fn ser_profile<S: serde::Serializer>(p: &Profile, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.class())
}

/// Durations serialised as milliseconds.
mod humantime_serde_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

mod opt_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
version: 1
name: token-read
description: reads the token
mitre: [T1528, T1552.001]
class: fraud
benign: {duration: 6s}
attack:
  at: 2s
  steps:
    - read:/var/run/secrets/kubernetes.io/serviceaccount/token
    - connect:{listener}
expect:
  detected: true
  by: [rule:credential-read, anomaly]
  min_tier: contain
  actions: [deny_all]
  detect_within: 1s
  contain_within: 2s
";

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("drills/token-read.yaml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = parse(GOOD).expect("parses");
        assert_eq!(s.benign.workload, Profile::Fraud);
        assert_eq!(s.attack.as_ref().map(|a| a.steps.len()), Some(2));
        assert_eq!(
            s.expect.by,
            [Detector::Rule("credential-read".into()), Detector::Anomaly]
        );
        assert!(s.expects_containment());
        assert_eq!(s.agent_id(), "drill-token-read");
        assert_eq!(
            s.trace_path(),
            Path::new("drills/traces/token-read.amtrace")
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err(&GOOD.replace("min_tier: contain", "min_tier: contian"));
        assert_eq!(
            e,
            "drills/token-read.yaml:15: expect.min_tier: unknown tier \"contian\" (log, rate_limit, contain)"
        );
        let e = err(&GOOD.replace("    - connect:{listener}", "    - conect:{listener}"));
        assert!(
            e.starts_with("drills/token-read.yaml:11: attack.steps[1]: unknown workload step"),
            "{e}"
        );
        let e = err(&GOOD.replace("{listener}", "{listenr}"));
        assert!(
            e.contains(":11: attack.steps[1]: unknown placeholder {listenr}"),
            "{e}"
        );
        let e = err(&GOOD.replace("detect_within: 1s", "detect_within: soon"));
        assert!(
            e.starts_with("drills/token-read.yaml:17: expect.detect_within: bad duration"),
            "{e}"
        );
        let e = err(&GOOD.replace("T1528", "1528"));
        assert!(e.starts_with("drills/token-read.yaml:4: mitre[0]:"), "{e}");
    }

    #[test]
    fn serde_errors_name_the_field_and_line() {
        let e = err(&GOOD
            .replace("  frozen", "  x")
            .replace("  actions:", "  actoins:"));
        assert!(
            e.starts_with("drills/token-read.yaml:16: expect.actoins: unknown field `actoins`"),
            "{e}"
        );
        let e = err(&GOOD.replace("detected: true", "detected: yes please"));
        assert!(
            e.starts_with("drills/token-read.yaml:13: expect.detected:"),
            "{e}"
        );
        let e = err("version: 1\nname: [x\n");
        assert!(e.starts_with("drills/token-read.yaml:"), "{e}");
    }

    #[test]
    fn the_name_must_match_the_file() {
        let e = err(&GOOD.replace("name: token-read", "name: other"));
        assert!(
            e.contains(":2: name: \"other\" differs from the file name"),
            "{e}"
        );
    }

    #[test]
    fn benign_scenarios_expect_nothing_but_quiet() {
        let benign = "version: 1\nname: token-read\ndescription: d\nclass: fraud\n\
                      benign: {duration: 10s}\nexpect: {detected: false, max_tier: log}\n";
        let s = parse(benign).expect("parses");
        assert!(!s.is_attack());
        assert_eq!(s.allowed_tier(), Tier::Log);
        let e = err(&benign.replace("detected: false", "detected: true"));
        assert!(
            e.contains("expect.detected: a scenario without an attack"),
            "{e}"
        );
        let e = err(&GOOD.replace("detected: true", "detected: false"));
        assert!(
            e.contains("expect.detected: an attack scenario must expect"),
            "{e}"
        );
    }
}
