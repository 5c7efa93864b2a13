//! Drill tasks: `cargo xtask drills record [scenario...]` re-records the catalog's traces, and
//! `cargo xtask bench drills [scenario...]` runs the catalog live (release build, real daemon and
//! kernel) and writes each scenario's time to detect and to contain to
//! `bench/results/drills.json`, the numbers BENCHMARKS.md quotes.

use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct RecordOptions {
    /// Scenarios to record (default: all).
    scenarios: Vec<String>,
}

#[derive(clap::Args)]
pub struct BenchOptions {
    /// The daemon binary to measure (default: a release build made now).
    #[arg(long)]
    bin: Option<std::path::PathBuf>,
    /// The binary the benign agents run (default: the daemon binary).
    #[arg(long)]
    agent_bin: Option<std::path::PathBuf>,
    /// Scenarios to run (default: all).
    scenarios: Vec<String>,
}

pub fn record(opts: &RecordOptions) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    // Agents are recorded as release builds, like the agents the class models learned.
    let bin = crate::build_release(&root)?;
    let status = Command::new(&bin)
        .args(["drill", "record"])
        .args(&opts.scenarios)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("recording the drills failed");
    }
    Ok(())
}

pub fn bench(opts: &BenchOptions) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let bin = match &opts.bin {
        Some(b) => b.clone(),
        None => crate::build_release(&root)?,
    };
    let out = root.join("target/bench-drills");
    let mut cmd = Command::new(&bin);
    cmd.args(["drill", "run", "--live", "--out"]).arg(&out);
    if let Some(agent) = &opts.agent_bin {
        cmd.arg("--agent-bin").arg(agent);
    }
    let status = cmd
        .args(&opts.scenarios)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = std::fs::read_to_string(out.join("report.json"))
        .context("the drill run wrote no report")?;
    let report: Value = serde_json::from_str(&text)?;
    let rows: Vec<Value> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "scenario": s["name"],
                "kind": s["kind"],
                "class": s["class"],
                "passed": s["passed"],
                "detector": s["detectors"].get(0),
                "tier": s["tier"],
                "time_to_detect_ms": s["time_to_detect_ms"],
                "time_to_contain_ms": s["time_to_contain_ms"],
                "containment_held": s["containment_held"],
                "release_verified": s["release_verified"],
                "false_positives": s["false_positives"],
            })
        })
        .collect();
    let result = json!({
        "method": "agent-monitor drill run --live (release build): each scenario in a fresh cgroup \
                   with its own daemon; times from the attack process's exec (kernel event time) to \
                   the first expected finding's event, and to DENY_ALL seen in the pinned \
                   containment map by the harness (polled every 1 ms)",
        "created": report["created"],
        "daemon": bin.display().to_string(),
        "agent": opts.agent_bin.as_ref().unwrap_or(&bin).display().to_string(),
        "summary": report["summary"],
        "scenarios": rows,
    });
    let dest = root.join("bench/results/drills.json");
    std::fs::write(&dest, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("written to {}", dest.display());
    if !status.success() {
        bail!(
            "some drills failed (see {})",
            out.join("report.html").display()
        );
    }
    Ok(())
}
