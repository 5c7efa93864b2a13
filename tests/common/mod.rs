//! Shared helpers for the kernel integration tests: fresh cgroups, the real daemon binary, and
//! reading its JSON output.

#![allow(dead_code)]

pub mod kube_api;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use std::sync::{Arc, Mutex};

use agent_monitor::{
    cgroup,
    respond::webhook::{HEADER_IDEMPOTENCY, HEADER_SIGNATURE, HEADER_TIMESTAMP},
};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_agent-monitor");

/// A cgroup tree for one test, removed on drop.
pub struct TestCgroups {
    pub root: PathBuf,
}

impl TestCgroups {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let mount = cgroup::v2_mount().expect("cgroup v2 mount");
        let root = mount.join(format!(
            "agent-monitor-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        cgroup::create(&root).expect("create test cgroup root");
        Self { root }
    }

    pub fn dir(&self, rel: &str) -> PathBuf {
        let d = self.root.join(rel);
        cgroup::create(&d).expect("create cgroup");
        d
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        cgroup::remove_tree(&self.root);
    }
}

/// The daemon binary, started with a config file and writing JSON lines and a trace.
pub struct Daemon {
    pub child: Child,
    pub json: PathBuf,
    pub trace: PathBuf,
}

/// A test that fails before `stop` must not leave its daemon running with programs attached.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    pub fn start(dir: &Path, config: &str, cgroup: Option<&Path>) -> Self {
        let cfg = dir.join("config.yaml");
        // Keep the daemon's state (tiers, release requests) inside the test's directory, and pin
        // nothing unless the test asks: a test's containment must not outlive it on the host.
        // Top-level keys only: `api:` also appears inside `kubernetes:`.
        let keys: serde_yaml::Value = serde_yaml::from_str(config).expect("test config is YAML");
        let has = |key: &str| keys.get(key).is_some();
        let mut config = config.to_owned();
        if !has("state_dir") {
            config = format!("{config}\nstate_dir: {}\n", dir.join("state").display());
        }
        if !has("pin_dir") {
            config.push_str("pin_dir: null\n");
        }
        // No metrics endpoint unless the test asks: daemons of parallel tests would share a port.
        if !has("observability") {
            config.push_str("observability: {listen: null}\n");
        }
        // The control API listens inside the test's directory, not on the host's socket.
        if !has("api") {
            config.push_str(&format!(
                "api: {{socket: {}}}\n",
                dir.join("api.sock").display()
            ));
        }
        std::fs::write(&cfg, config).unwrap();
        let json = dir.join("events.jsonl");
        let trace = dir.join("events.amtrace");
        let ready = dir.join("ready");
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--output")
            .arg(&json)
            .arg("--record")
            .arg(&trace)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null());
        let mut child = match cgroup {
            Some(cg) => cgroup::spawn_in(cg, &mut cmd).expect("spawn daemon in cgroup"),
            None => cmd.spawn().expect("spawn daemon"),
        };
        let start = Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("daemon exited before ready: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "daemon not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, json, trace }
    }

    /// SIGTERM, then the events it wrote.
    pub fn stop(mut self) -> Vec<Value> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit status {status}");
        read_jsonl(&self.json)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Runs the scripted workload in `cgroup` and returns (pid, exit code).
pub fn workload_in(cgroup: &Path, steps: &[String]) -> (u32, i32) {
    let mut cmd = Command::new(BIN);
    cmd.arg("workload").args(steps);
    let mut child = cgroup::spawn_in(cgroup, &mut cmd).expect("spawn workload");
    let pid = child.id();
    let status = child.wait().unwrap();
    (pid, status.code().unwrap_or(-1))
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    let kind = kind.to_owned();
    events.iter().filter(move |e| e["kind"] == kind.as_str())
}

/// (timestamp, signature, idempotency key, body) of each request.
pub type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A real HTTP server on loopback that records every request and answers 200.
pub fn soc_receiver() -> (String, Received) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tickets", server.server_addr());
    let got = Received::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let header = |name: &'static str| {
                req.headers()
                    .iter()
                    .find(|h| h.field.equiv(name))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default()
            };
            let (ts, sig, key) = (
                header(HEADER_TIMESTAMP),
                header(HEADER_SIGNATURE),
                header(HEADER_IDEMPOTENCY),
            );
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
            sink.lock().unwrap().push((ts, sig, key, body));
            let _ = req.respond(tiny_http::Response::empty(200));
        }
    });
    (url, got)
}

pub fn release(config: &Path, agent: &str, approver: &str) -> (bool, String) {
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

/// Runs `audit verify` on an audit log and asserts that the whole chain verifies.
pub fn assert_audit_verifies(log: &Path, public_key: &Path) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(log)
        .arg("--public-key")
        .arg(public_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
