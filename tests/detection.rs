//! Detection end to end, as root against the real kernel: a fraud agent workload runs in a
//! monitored cgroup until its class baseline is learned on-line, then the same agent turns
//! hostile. The shipped rules and the learned window model must both report it; a replay of the
//! recorded trace must report the same rule findings; `train` on the trace must make a model
//! that `eval` and the daemon accept.

mod common;

use std::{path::Path, process::Command};

use agent_monitor::workload::{
    profile::{DATA_ROOT, prepare_data},
    services,
    spawn::AgentSpawn,
};
use common::*;
use serde_json::Value;

fn findings(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter_map(|l| l.get("finding")).collect()
}

fn rule_names(findings: &[&Value]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f["source"]["type"] == "rule")
        .map(|f| f["source"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn run_in(spawn: &AgentSpawn, cgroup: &Path, steps: &[String]) {
    let mut cmd = Command::new(BIN);
    cmd.arg("workload").args(steps);
    let status = spawn.spawn(cgroup, &mut cmd).unwrap().wait().unwrap();
    assert!(status.success(), "workload {steps:?}: {status}");
}

#[test]
fn a_learned_agent_that_turns_hostile_is_reported_by_rules_and_model() {
    let cgroups = TestCgroups::new("detection");
    let agent = cgroups.dir("agents/fraud/fraud-1");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    prepare_data(&data).unwrap();
    let service = services::start(0).unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let config = format!(
        "watch: [{}]\nsnapshot_interval_ms: 200\nrescan_interval_ms: 50\n\
         detection:\n  window_secs: 1\n  min_learning_windows: 8\n  models_dir: {}\n  rules_dir: {}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let spawn = AgentSpawn::default().bind(&data, DATA_ROOT);
    run_in(&spawn, &agent, &[format!("agent:fraud:14:{service}")]);
    run_in(
        &spawn,
        &agent,
        &[
            "read:/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            "exec:/bin/sh:-c:true".into(),
            "scan:127.0.0.1:20-60".into(),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let trace = daemon.trace.clone();
    let lines = daemon.stop();
    let live = findings(&lines);

    // Rules: the hostile part fires the credential, shell and scan rules.
    let names = rule_names(&live);
    for expected in ["credential-read", "shell-spawned", "port-scan"] {
        assert!(
            names.iter().any(|n| n == expected),
            "rule {expected} among {names:?}"
        );
    }
    // The model: learned on-line from the healthy windows, it scores the hostile window high.
    let window: Vec<&&Value> = live
        .iter()
        .filter(|f| f["source"]["type"] == "window")
        .collect();
    assert!(
        window
            .iter()
            .any(|f| f["score"].as_f64().unwrap_or(0.0) >= 0.7),
        "a window finding of severity >= 0.7 among {window:#?}"
    );

    // Replay reports exactly the live rule findings.
    let out = tmp.path().join("replay.jsonl");
    let cfg = tmp.path().join("config.yaml");
    let status = Command::new(BIN)
        .arg("replay")
        .arg(&trace)
        .arg("--config")
        .arg(&cfg)
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let replayed = read_jsonl(&out);
    assert_eq!(rule_names(&findings(&replayed)), names);

    // Off-line training on the same trace writes a model the loader accepts.
    let models = tmp.path().join("models");
    let status = Command::new(BIN)
        .args(["train", "--class", "fraud", "--config"])
        .arg(&cfg)
        .arg("--models")
        .arg(&models)
        .arg(&trace)
        .status()
        .unwrap();
    assert!(status.success());
    let meta = std::fs::read_to_string(models.join("fraud/meta.yaml")).unwrap();
    assert!(
        meta.contains("class: fraud") && meta.contains("window_secs: 1"),
        "{meta}"
    );
}
