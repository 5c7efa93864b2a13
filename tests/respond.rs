//! Response end to end, as root against the real kernel: an agent triggers a containment rule;
//! its next connect fails with EPERM; one approver cannot lift it, two distinct ones do, and
//! the agent connects again.

mod common;

use std::{net::TcpListener, path::Path, process::Command};

use common::*;

fn release(config: &Path, agent: &str, approver: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["release", agent, "--approver", approver, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_contain_rule_denies_the_next_connect_until_two_approvers_release() {
    let cgroups = TestCgroups::new("respond");
    let agent = cgroups.dir("agents/fraud/fraud-9");
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let pins = format!("/sys/fs/bpf/agent-monitor-test-{}", std::process::id());
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\npin_dir: {pins}\n\
         detection:\n  models_dir: {}\n  rules_dir: {}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let cfg = tmp.path().join("config.yaml");
    let connect = format!("connect:127.0.0.1:{port}");

    let (_, code) = workload_in(&agent, std::slice::from_ref(&connect));
    assert_eq!(code, 0, "the agent connects before anything happened");
    let (_, code) = workload_in(
        &agent,
        &[
            "read:/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            "sleep:500".into(),
            connect.clone(),
        ],
    );
    assert_ne!(
        code, 0,
        "after the credential read the agent's connect fails"
    );
    let (_, code) = workload_in(&agent, std::slice::from_ref(&connect));
    assert_ne!(code, 0, "and keeps failing");

    let (ok, out) = release(&cfg, "fraud-9", "alice");
    assert!(ok && out.contains("1 of 2"), "{out}");
    let (ok, out) = release(&cfg, "fraud-9", "alice");
    assert!(
        ok && out.contains("1 of 2"),
        "the same approver twice is one approval: {out}"
    );
    let (_, code) = workload_in(&agent, std::slice::from_ref(&connect));
    assert_ne!(code, 0, "one approver does not lift a containment");
    let (ok, out) = release(&cfg, "fraud-9", "bob");
    assert!(ok && out.contains("released by alice and bob"), "{out}");
    let (_, code) = workload_in(&agent, std::slice::from_ref(&connect));
    assert_eq!(code, 0, "released, the agent connects again");

    let lines = daemon.stop();
    let responses: Vec<_> = lines.iter().filter_map(|l| l.get("response")).collect();
    assert!(
        responses.iter().any(|r| r["decision"]["to"] == "contain"
            && r["actions"].as_array().is_some_and(|a| a
                .iter()
                .any(|x| x["action"] == "deny_all" && x["ok"] == true))),
        "a containment decision with deny_all applied: {responses:#?}"
    );
    assert!(
        lines.iter().any(|l| l.get("release").is_some()),
        "the release is reported"
    );
    let _ = std::fs::remove_dir_all(&pins);
}
