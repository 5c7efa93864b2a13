//! Drills end to end with the real binary: every scenario of the catalog replayed from its
//! recorded trace (dry-run actuators) must meet its expectation; a live subset, as root against
//! the real kernel, must be detected, contained (connects refused with EPERM or the cgroup
//! frozen), released by two approvers and verified released; a recording made with
//! `record --agent` replays to the same detection.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::BIN;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Runs `agent-monitor drill <args>` from the repository root; returns (exit ok, stdout+stderr).
fn drill(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("drill")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run agent-monitor drill");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Live drills run one at a time: each binds the class service at the port the class models
/// know, and a second one at once would have to move it elsewhere. The replay of the whole
/// catalog takes it too, so that a live agent, whose behaviour the drill judges, never shares
/// the machine's CPUs with a busy replay.
static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The release build of the binary, which the live tests' agents run (scripts/test.sh builds
/// it): debug-built agents make syscalls the shipped class models have not seen.
fn release_bin() -> String {
    let debug = Path::new(BIN);
    let release = debug
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("release/agent-monitor");
    assert!(
        release.is_file(),
        "{} is missing: cargo build --release -p agent-monitor (scripts/test.sh does)",
        release.display()
    );
    release.display().to_string()
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report is JSON")
}

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

#[test]
fn every_scenario_of_the_catalog_passes_in_replay() {
    let _not_beside_a_live_run = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let (ok, text) = drill(&["run", "--replay", "--out", &dir]);
    assert!(ok, "drill run --replay failed:\n{text}");
    let r = report(out.path());
    let s = &r["summary"];
    assert!(s["attacks"].as_u64().unwrap() >= 15, "{s:#}");
    assert_eq!(s["detected"], s["attacks"], "{s:#}");
    assert_eq!(s["benign_contained"].as_array().map(Vec::len), Some(0));
    let benign: Vec<&str> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "benign")
        .filter_map(|s| s["class"].as_str())
        .collect();
    for class in ["fraud", "onboarding", "compliance"] {
        assert!(
            benign.contains(&class),
            "a benign run of {class}: {benign:?}"
        );
    }
    for sc in r["scenarios"].as_array().unwrap() {
        assert_eq!(sc["mode"], "replay");
        if sc["kind"] == "attack" {
            assert!(sc["time_to_detect_ms"].as_f64().is_some(), "{}", sc["name"]);
            assert!(!sc["timeline"].as_array().unwrap().is_empty());
        }
        if sc["tier"] == "contain" {
            assert_eq!(
                sc["release_verified"], true,
                "{}: dry-run release",
                sc["name"]
            );
        }
    }
    for file in ["junit.xml", "report.html"] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let junit = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    assert!(junit.contains("<testcase classname=\"drills.replay.fraud\" name=\"sa-token-read\""));
    assert!(!junit.contains("<failure"), "{junit}");
}

#[test]
fn a_failed_expectation_fails_the_run() {
    // The same trace, a stricter expectation: a rule that does not fire and an action that does
    // not run make the run exit non-zero and say why.
    let tmp = tempfile::tempdir().unwrap();
    let drills = tmp.path().join("drills");
    std::fs::create_dir_all(drills.join("traces")).unwrap();
    let src = repo().join("drills");
    std::fs::copy(
        src.join("traces/port-scan.amtrace"),
        drills.join("traces/port-scan.amtrace"),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(src.join("port-scan.yaml"))
        .unwrap()
        .replace("by: [rule:port-scan]", "by: [rule:reverse-shell]")
        .replace("actions: [rate_limit]", "actions: [revoke_tokens]");
    std::fs::write(drills.join("port-scan.yaml"), yaml).unwrap();
    let out = tmp.path().join("out");
    let (ok, text) = drill(&[
        "run",
        "--dir",
        &drills.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL port-scan: missed: none of rule:reverse-shell fired"),
        "{text}"
    );
    assert!(text.contains("action revoke_tokens did not run"), "{text}");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure message=\"missed"), "{junit}");
}

#[test]
fn a_broken_scenario_is_refused_with_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(repo().join("drills/port-scan.yaml"))
        .unwrap()
        .replace("min_tier: rate_limit", "min_tier: ratelimit");
    std::fs::write(tmp.path().join("port-scan.yaml"), yaml).unwrap();
    let (ok, text) = drill(&["check", "--dir", &tmp.path().display().to_string()]);
    assert!(!ok);
    assert!(
        text.contains("port-scan.yaml:15: expect.min_tier: unknown tier \"ratelimit\""),
        "{text}"
    );
}

#[test]
fn the_catalog_checks_out() {
    let (ok, text) = drill(&["check"]);
    assert!(ok, "{text}");
}

/// `drill run --live` over `scenarios` (one live run at a time, agents of the release build);
/// asserts that the run passed and returns its report.
fn run_live(scenarios: &[&str]) -> Value {
    let _one_at_a_time = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let agent = release_bin();
    let mut args = vec!["run", "--live", "--agent-bin", &agent, "--out", &dir];
    args.extend(scenarios);
    let (ok, text) = drill(&args);
    let r = report(out.path());
    assert!(ok, "drill run --live failed:\n{text}");
    r
}

/// Live, as root: the subset CI runs on the real kernel.
#[test]
fn a_live_subset_is_detected_contained_and_released() {
    let r = run_live(&[
        "sa-token-read",
        "cloud-credentials-read",
        "reverse-shell",
        "pipe-to-shell",
        "port-scan",
    ]);
    for name in ["sa-token-read", "reverse-shell", "pipe-to-shell"] {
        let s = scenario(&r, name);
        assert_eq!(s["tier"], "contain", "{name}: {s:#}");
        assert_eq!(s["containment_held"], true, "{name}");
        assert_eq!(s["frozen"], false, "{name}");
        assert_eq!(s["release_verified"], true, "{name}");
        assert!(s["time_to_contain_ms"].as_f64().is_some(), "{name}");
    }
    let frozen = scenario(&r, "cloud-credentials-read");
    assert_eq!(frozen["frozen"], true, "{frozen:#}");
    assert_eq!(frozen["release_verified"], true);
    let scan = scenario(&r, "port-scan");
    assert!(
        scan["detected"] == true && scan["release_verified"] == true,
        "{scan:#}"
    );
}

/// Live, as root: every shipped class's benign workload runs without containment.
#[test]
fn benign_live_runs_are_not_contained() {
    let benign = ["benign-fraud", "benign-onboarding", "benign-compliance"];
    let r = run_live(&benign);
    for name in benign {
        let s = scenario(&r, name);
        assert_ne!(s["tier"], "contain", "{name}: {s:#}");
        assert!(s["events"].as_u64().unwrap() > 100, "{name}: the agent ran");
    }
}

/// Live, as root: `record --agent` (through `drill record`) captures a trace that replays to
/// the scenario's detection.
#[test]
fn a_recorded_trace_replays_to_the_same_detection() {
    let _one_at_a_time = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let drills = tmp.path().join("drills");
    std::fs::create_dir_all(&drills).unwrap();
    std::fs::copy(
        repo().join("drills/persist-cron.yaml"),
        drills.join("persist-cron.yaml"),
    )
    .unwrap();
    let d = drills.display().to_string();
    let agent = release_bin();
    let (ok, text) = drill(&["record", "--agent-bin", &agent, "--dir", &d, "persist-cron"]);
    assert!(ok, "{text}");
    let trace = drills.join("traces/persist-cron.amtrace");
    let size = std::fs::metadata(&trace).unwrap().len();
    assert!(size > 0 && size < 1 << 20, "{size}");
    let out = tmp.path().join("out");
    let (ok, text) = drill(&["run", "--dir", &d, "--out", &out.display().to_string()]);
    assert!(ok, "{text}");
    let r = report(&out);
    let s = scenario(&r, "persist-cron");
    assert_eq!(s["detectors"][0], "rule:persistence-write", "{s:#}");
    // Only the recorded agent is in the trace.
    let json = Command::new(BIN)
        .args(["replay", "--no-detect"])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&json.stdout);
    let agents: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["agent"]["id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        agents.into_iter().collect::<Vec<_>>(),
        ["drill-persist-cron"]
    );
}
