//! Response end to end, as root against the real kernel: an agent triggers a containment rule;
//! its next connect fails with EPERM; a webhook server on loopback receives one signed ticket;
//! one approver cannot lift the containment, two distinct ones do, and the agent connects
//! again; the audit log of all of it verifies.

mod common;

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use agent_monitor::respond::webhook::verify;
use common::*;
use serde_json::Value;

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
    let keys = tmp.path().join("keys");
    let status = Command::new(BIN)
        .args(["audit", "keygen", "--dir"])
        .arg(&keys)
        .status()
        .unwrap();
    assert!(status.success());
    let hmac_key = b"test webhook key, at least 32 bytes long";
    std::fs::write(keys.join("webhook.key"), hmac_key).unwrap();
    let (url, received) = soc_receiver();
    let audit_log = tmp.path().join("audit.jsonl");
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\npin_dir: {pins}\n\
         detection:\n  models_dir: {}\n  rules_dir: {}\n\
         audit: {{path: {}, signing_key: {}, token_key: {}}}\n\
         webhook: {{url: '{url}', key_file: {}, outbox_dir: {}, retry_initial_ms: 100}}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display(),
        audit_log.display(),
        keys.join("audit-signing.key").display(),
        keys.join("audit-token.key").display(),
        keys.join("webhook.key").display(),
        tmp.path().join("outbox").display(),
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

    // One signed ticket about the containment reaches the SOC.
    let start = Instant::now();
    while received.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let tickets = received.lock().unwrap().clone();
    assert!(!tickets.is_empty(), "no ticket delivered");
    let mut ids = std::collections::BTreeSet::new();
    for (ts, sig, key, body) in &tickets {
        verify(body.as_bytes(), ts, sig, hmac_key).expect("the ticket's signature verifies");
        assert!(!key.is_empty(), "idempotency key");
        let t: Value = serde_json::from_str(body).unwrap();
        ids.insert(t["ticket_id"].as_str().unwrap_or_default().to_owned());
        assert_eq!(t["agent"]["id"], "fraud-9", "{t:#}");
        assert_eq!(t["tier"], "contain", "{t:#}");
        assert!(
            body.contains("agent-monitor release fraud-9"),
            "rollback command: {body}"
        );
    }
    assert_eq!(ids.len(), 1, "one ticket (updates keep its id): {ids:?}");

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

    // The release reaches the SOC as a new version of the same ticket, signed, through the
    // outbox: released, both approvers, each undo with its result.
    let start = Instant::now();
    let released = loop {
        let got = received.lock().unwrap().clone();
        if let Some(r) = got
            .iter()
            .find(|(.., b)| b.contains(r#""event":"released""#))
        {
            break r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no release ticket"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (ts, sig, key, body) = &released;
    verify(body.as_bytes(), ts, sig, hmac_key).expect("the release version is signed");
    let t: Value = serde_json::from_str(body).unwrap();
    assert!(
        ids.contains(t["ticket_id"].as_str().unwrap()),
        "same ticket: {t:#}"
    );
    assert_eq!(key, t["idempotency_key"].as_str().unwrap());
    assert_eq!(t["status"], "released");
    assert_eq!(t["release"]["tier"], "contain");
    assert_eq!(
        t["release"]["approvers"],
        serde_json::json!(["alice", "bob"])
    );
    let undone = t["release"]["actions"].as_array().unwrap();
    assert!(
        undone
            .iter()
            .any(|a| a["action"] == "deny_all:undo" && a["ok"] == true),
        "{t:#}"
    );

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

    // The audit log holds the decision, the actions, the approvals and the release, and
    // verifies; the agent's id never appears in clear.
    let log = std::fs::read_to_string(&audit_log).unwrap();
    for kind in ["\"decision\"", "\"action\"", "\"approval\"", "\"release\""] {
        assert!(log.contains(kind), "{kind} entry in {log}");
    }
    assert!(
        !log.contains("fraud-9") && !log.contains("alice"),
        "tokenised: {log}"
    );
    assert_audit_verifies(&audit_log, &keys.join("audit-signing.pub"));
    let _ = std::fs::remove_dir_all(&pins);
}

/// The open that fires a `contain` rule wakes the daemon at once: with the daemon's own drain
/// ticks a minute apart, the agent is contained while it sleeps after the offence, so its next
/// connect already fails. Were the open batched, it would wait for a tick, or for the connect's
/// own wakeup, by which time that connect has passed.
#[test]
fn an_open_that_fires_a_contain_rule_wakes_the_daemon_without_waiting_for_a_poll() {
    let cgroups = TestCgroups::new("respond-wake");
    let agent = cgroups.dir("agents/fraud/fraud-wake");
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\npoll_interval_ms: 60000\nsnapshot_interval_ms: 60000\n\
         detection:\n  models_dir: {}\n  rules_dir: {}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display(),
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let connect = format!("connect:127.0.0.1:{port}");
    let (_, code) = workload_in(&agent, std::slice::from_ref(&connect));
    assert_eq!(code, 0, "the agent connects before the offence");
    let (_, code) = workload_in(
        &agent,
        &[
            "read:/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            "sleep:1000".into(),
            connect,
        ],
    );
    assert_ne!(
        code, 0,
        "contained during the sleep: the next connect fails"
    );
    daemon.stop();
}
