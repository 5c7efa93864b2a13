//! The control API end to end, as root against the real kernel, through `agent-monitor ctl`:
//! over the Unix socket, callers are told apart by their uid (the test runs `ctl` as other
//! users); over TCP, by client certificates made here with their own CAs. Refusals are checked
//! in the audit log, which must still verify.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// Users the test runs `ctl` as (none of them needs to exist in /etc/passwd).
const BOB: u32 = 64_001;
const CARL: u32 = 64_002;
const NOBODY: u32 = 65_534;
/// The socket's group: every `ctl` run as another user gets it, so only the daemon's
/// principal check can refuse it.
const API_GROUP: u32 = 65_534;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

fn ctl_cmd(api: &[String], args: &[&str], uid: Option<u32>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl").args(api).args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(API_GROUP);
    }
    cmd
}

fn ctl(api: &[String], args: &[&str], uid: Option<u32>) -> Out {
    let out = ctl_cmd(api, args, uid).output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn keygen(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    let status = Command::new(BIN)
        .args(["audit", "keygen", "--dir"])
        .arg(&keys)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    keys
}

fn audit_config(dir: &Path, keys: &Path) -> String {
    format!(
        "audit: {{path: {}, signing_key: {}, token_key: {}}}\n",
        dir.join("audit.jsonl").display(),
        keys.join("audit-signing.key").display(),
        keys.join("audit-token.key").display()
    )
}

/// The audit log's entries, after `audit verify` passed on it.
fn verified_audit(dir: &Path, keys: &Path) -> Vec<Value> {
    let log = dir.join("audit.jsonl");
    assert_audit_verifies(&log, &keys.join("audit-signing.pub"));
    read_jsonl(&log)
}

fn refusals(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["kind"] == "refusal")
        .map(|e| &e["data"])
        .collect()
}

/// `ctl watch --json` in the background: its lines arrive on the channel. Returns once the
/// daemon has answered the call (from then on nothing published is missed).
fn watch(api: &[String]) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = ctl_cmd(api, &["watch", "--json"], None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with("watching"), "ctl watch: {first}");
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads watch items until `done` holds for the ones read so far.
fn watch_until(rx: &mpsc::Receiver<Value>, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => got.push(v),
            Err(_) => panic!("watch: not seen in 20 s; got {got:#?}"),
        }
    }
    got
}

fn agent<'a>(agents: &'a [Value], id: &str) -> &'a Value {
    agents
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {agents:#?}"))
}

#[test]
fn unix_socket_lists_watches_reads_events_and_releases_with_two_principals() {
    let cgroups = TestCgroups::new("api");
    let cg = cgroups.dir("agents/fraud/fraud-7");
    let tmp = tempfile::tempdir().unwrap();
    // The other users' `ctl` must reach the socket inside the test's directory.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let keys = keygen(tmp.path());
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let socket = tmp.path().join("api.sock");
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\n\
         detection: {{models_dir: {}, rules_dir: {}}}\n{}\
         api:\n  socket: {}\n  socket_group: '{API_GROUP}'\n  principals:\n\
         \x20   - {{name: alice, uid: 0, roles: [viewer, approver]}}\n\
         \x20   - {{name: bob, uid: {BOB}, roles: [approver]}}\n\
         \x20   - {{name: carl, uid: {CARL}, roles: [viewer]}}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display(),
        audit_config(tmp.path(), &keys),
        socket.display(),
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    let api = vec!["--socket".to_owned(), socket.display().to_string()];

    // The monitored agent, with its class, state and (no) tier.
    let out = ctl(&api, &["agents", "--json"], None);
    assert!(out.ok, "{}", out.stderr);
    let agents = out.json_lines();
    let a = agent(&agents, "fraud-7");
    assert_eq!(a["class"], "fraud");
    assert_eq!(a["state"], "monitored");
    assert_eq!(a["tier"], Value::Null);
    let table = ctl(&api, &["agents"], None).stdout;
    assert!(
        table.starts_with("AGENT") && table.contains("fraud-7") && table.contains("monitored"),
        "{table}"
    );

    // A rule fires: the stream delivers the finding, and the decision with its actions.
    let (mut watcher, items) = watch(&api);
    let (_, code) = workload_in(
        &cg,
        &["read:/var/run/secrets/kubernetes.io/serviceaccount/token".into()],
    );
    assert_eq!(code, 0);
    let is_finding = |v: &Value| {
        v["finding"]["agent_id"] == "fraud-7"
            && v["finding"]["source"] == "rule"
            && v["finding"]["tier"] == "contain"
    };
    let is_containment = |v: &Value| {
        v["decision"]["agent_id"] == "fraud-7"
            && v["decision"]["to"] == "contain"
            && v["decision"]["actions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["action"] == "deny_all" && x["ok"] == true)
            })
    };
    let seen = watch_until(&items, |got| {
        got.iter().any(is_finding) && got.iter().any(is_containment)
    });
    assert!(seen.iter().all(|v| v.get("lagged").is_none()), "{seen:#?}");

    // The agent's recent events, from the flight recorder, include the credential read.
    let out = ctl(
        &api,
        &["events", "fraud-7", "--last", "200", "--json"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let events = out.json_lines();
    assert!(!events.is_empty() && events.len() <= 200);
    assert!(events.iter().all(|e| e["agent"]["id"] == "fraud-7"));
    assert!(
        events.iter().any(|e| e["kind"] == "open"
            && e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("serviceaccount/token"))),
        "the token read among {events:#?}"
    );
    let out = ctl(&api, &["events", "fraud-7", "--last", "3", "--json"], None);
    assert_eq!(out.json_lines().len(), 3);
    let out = ctl(&api, &["events", "nobody-here"], None);
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);

    let agents = ctl(&api, &["agents", "--json"], None).json_lines();
    let a = agent(&agents, "fraud-7");
    assert_eq!(
        (&a["tier"], &a["approvals_needed"]),
        (&"contain".into(), &2.into())
    );

    // Release: a viewer may not; alice's approval counts once, her second is refused; bob's
    // makes two distinct principals and the daemon lifts the containment.
    let out = ctl(&api, &["release", "fraud-7"], Some(CARL));
    assert!(
        !out.ok && out.stderr.contains("PermissionDenied"),
        "{}",
        out.stderr
    );
    let out = ctl(
        &api,
        &["release", "fraud-7", "--reason", "false positive"],
        None,
    );
    assert!(
        out.ok && out.stdout.contains("1 of 2: alice"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = ctl(&api, &["release", "fraud-7"], None);
    assert!(
        !out.ok && out.stderr.contains("FailedPrecondition") && out.stderr.contains("already"),
        "the same principal twice is refused: {}",
        out.stderr
    );
    let agents = ctl(&api, &["agents", "--json"], None).json_lines();
    let a = agent(&agents, "fraud-7");
    assert_eq!(
        (&a["tier"], &a["approvals"]),
        (&"contain".into(), &1.into())
    );
    let out = ctl(&api, &["whoami"], Some(BOB));
    assert!(
        out.ok && out.stdout.starts_with("bob (roles: approver)"),
        "{}",
        out.stdout
    );
    let out = ctl(&api, &["release", "fraud-7", "--json"], Some(BOB));
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let r = &out.json_lines()[0];
    assert_eq!(r["status"], "released", "{r:#}");
    assert_eq!(r["approvers"], serde_json::json!(["alice", "bob"]));
    assert!(
        r["actions"].as_array().is_some_and(|a| !a.is_empty()),
        "{r:#}"
    );
    watch_until(&items, |got| {
        got.iter().any(|v| {
            v["release"]["agent_id"] == "fraud-7"
                && v["release"]["approvers"] == serde_json::json!(["alice", "bob"])
        })
    });
    let agents = ctl(&api, &["agents", "--json"], None).json_lines();
    assert_eq!(agent(&agents, "fraud-7")["tier"], Value::Null);

    // A uid that is no principal is refused, as is a viewer-only call it lacks the role for.
    let out = ctl(&api, &["agents"], Some(NOBODY));
    assert!(
        !out.ok && out.stderr.contains("Unauthenticated"),
        "{}",
        out.stderr
    );
    let out = ctl(&api, &["agents"], Some(BOB));
    assert!(
        !out.ok && out.stderr.contains("PermissionDenied"),
        "{}",
        out.stderr
    );

    let _ = watcher.kill();
    let _ = watcher.wait();
    daemon.stop();
    assert!(!socket.exists(), "the socket is removed at exit");

    let entries = verified_audit(tmp.path(), &keys);
    let refused = refusals(&entries);
    assert!(
        refused.iter().any(|r| r["code"] == "unauthenticated"
            && r["caller"]["uid"] == NOBODY
            && r["method"] == "ListAgents"),
        "the unknown uid's refusal: {refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["code"] == "permission_denied" && r["method"] == "Release"),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["code"] == "failed_precondition" && r["method"] == "Release"),
        "{refused:#?}"
    );
    let approvals = entries.iter().filter(|e| e["kind"] == "approval").count();
    assert_eq!(approvals, 2, "one approval entry per distinct approver");
    assert!(entries.iter().any(|e| e["kind"] == "release"));
    let text = std::fs::read_to_string(tmp.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains("alice") && !text.contains("carl") && !text.contains("fraud-7"),
        "principals and agents are tokenised: {text}"
    );
}

/// A CA, and certificates it signs, as PEM files in `dir`.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Self { issuer, pem }
    }

    /// (certificate, key) files for `cn`, also valid for the names in `sans`.
    fn issue(&self, dir: &Path, file: &str, cn: &str, sans: &[&str], server: bool) -> [PathBuf; 2] {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let paths = [
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        ];
        std::fs::write(&paths[0], cert.pem()).unwrap();
        std::fs::write(&paths[1], key.serialize_pem()).unwrap();
        paths
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_with_mutual_tls_serves_the_configured_client_and_refuses_others() {
    let cgroups = TestCgroups::new("api-tls");
    cgroups.dir("agents/onboarding/onb-3");
    let tmp = tempfile::tempdir().unwrap();
    let keys = keygen(tmp.path());
    let dir = tmp.path();
    let ca = Ca::new(dir, "bank");
    let rogue = Ca::new(dir, "rogue");
    let [server_cert, server_key] = ca.issue(dir, "server", "node-1", &["localhost"], true);
    let [soc_cert, soc_key] = ca.issue(dir, "soc", "soc-viewer", &[], false);
    // The same name from another CA must not pass for the SOC.
    let [fake_cert, fake_key] = rogue.issue(dir, "fake", "soc-viewer", &[], false);
    let port = free_port();
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\n{}\
         api:\n  socket: null\n  tcp: {{listen: '127.0.0.1:{port}', cert: {}, key: {}, client_ca: {}}}\n\
         \x20 principals:\n    - {{name: soc, cert_name: soc-viewer, roles: [viewer]}}\n",
        cgroups.root.join("agents").display(),
        audit_config(dir, &keys),
        server_cert.display(),
        server_key.display(),
        ca.pem.display(),
    );
    let daemon = Daemon::start(dir, &config, None);
    let endpoint = format!("https://localhost:{port}");
    let api = |cert: Option<(&Path, &Path)>| {
        let mut a = vec![
            "--endpoint".to_owned(),
            endpoint.clone(),
            "--ca".to_owned(),
            ca.pem.display().to_string(),
        ];
        if let Some((c, k)) = cert {
            a.extend([
                "--cert".to_owned(),
                c.display().to_string(),
                "--key".to_owned(),
                k.display().to_string(),
            ]);
        }
        a
    };

    let soc = api(Some((&soc_cert, &soc_key)));
    let out = ctl(&soc, &["agents", "--json"], None);
    assert!(out.ok, "{}", out.stderr);
    let agents = out.json_lines();
    let a = agent(&agents, "onb-3");
    assert_eq!(
        (&a["class"], &a["state"]),
        (&"onboarding".into(), &"monitored".into())
    );
    let out = ctl(&soc, &["whoami"], None);
    assert!(
        out.ok
            && out
                .stdout
                .starts_with("soc (roles: viewer), identified by certificate soc-viewer"),
        "{}",
        out.stdout
    );
    // A viewer's certificate does not make it an approver.
    let out = ctl(&soc, &["release", "onb-3"], None);
    assert!(
        !out.ok && out.stderr.contains("PermissionDenied"),
        "{}",
        out.stderr
    );

    let out = ctl(&api(None), &["agents"], None);
    assert!(!out.ok, "no client certificate: refused: {}", out.stdout);
    let out = ctl(&api(Some((&fake_cert, &fake_key))), &["agents"], None);
    assert!(
        !out.ok,
        "a certificate from another CA: refused: {}",
        out.stdout
    );

    daemon.stop();
    let entries = verified_audit(dir, &keys);
    let refused = refusals(&entries);
    let handshakes: Vec<_> = refused
        .iter()
        .filter(|r| r["method"] == "tls-handshake" && r["code"] == "unauthenticated")
        .collect();
    // Both refused handshakes are audited, each with why.
    for why in ["no certificates", "UnknownIssuer"] {
        assert!(
            handshakes
                .iter()
                .any(|r| r["reason"].as_str().is_some_and(|s| s.contains(why))),
            "{why}: {refused:#?}"
        );
    }
    assert!(
        refused
            .iter()
            .any(|r| r["code"] == "permission_denied" && r["method"] == "Release"),
        "{refused:#?}"
    );
}
