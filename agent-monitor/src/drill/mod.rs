//! Purple-team drills: attack scenarios (and benign runs) described in `drills/*.yaml`, run by
//! replaying their recorded traces through the pipeline with dry-run actuators, or re-enacted
//! live against the real daemon and kernel; each run is scored (detected or missed, tier,
//! detector, time to detect and contain, actions, containment held, release verified, false
//! positives) into one report: a table, JSON, JUnit XML and HTML.
//!
//! Modules: `scenario` (the YAML schema), `fixtures` (loopback targets and private files),
//! `stage` (one live scenario's cgroup, daemon and workloads), `replay`, `live` and `record`
//! (the three ways to run a scenario), `outcome` (scoring) and `report`.

pub mod fixtures;
pub mod live;
pub mod outcome;
pub mod record;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod stage;

use std::path::Path;

pub use outcome::{Mode, ScenarioResult};
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

use crate::config::Config;

/// Picks scenarios by name from the catalog (all when `names` is empty); an unknown name is an
/// error listing the catalog.
pub fn select(dir: &Path, names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let all = Scenario::load_dir(dir)?;
    if all.is_empty() {
        anyhow::bail!("no scenarios (*.yaml) in {}", dir.display());
    }
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|s| &s.name == n).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "no scenario {n:?} in {} (have: {})",
                    dir.display(),
                    all.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

/// Checks that every rule a scenario names exists in the configured rule set, so a renamed rule
/// fails the catalog check instead of silently turning a drill into a miss.
pub fn check_rules(scenarios: &[Scenario], config: &Config) -> anyhow::Result<()> {
    let rules = crate::detect::rules::RuleSet::load_dir(&config.detection.rules_dir)?;
    let known: Vec<&str> = rules.names().collect();
    for s in scenarios {
        for (i, d) in s.expect.by.iter().enumerate() {
            if let scenario::Detector::Rule(name) = d
                && !known.contains(&name.as_str())
            {
                let field = format!("expect.by[{i}]");
                let text = std::fs::read_to_string(&s.file).unwrap_or_default();
                let line = text
                    .lines()
                    .position(|l| l.contains(&format!("rule:{name}")))
                    .map_or(1, |i| i + 1);
                anyhow::bail!(
                    "{}:{line}: {field}: no rule {name:?} in {}",
                    s.file.display(),
                    config.detection.rules_dir.display()
                );
            }
        }
    }
    Ok(())
}
