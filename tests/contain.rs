//! Kernel containment tests (root, real programs, real cgroups, loopback only): deny-all gives
//! the agent EPERM at its next connect and UDP send while other cgroups are untouched; release
//! restores; the connect rate limit lets about N a second through; a deny outlives a daemon
//! killed with SIGKILL, is reported by the next daemon and can be released, from the pinned map
//! and through `agent-monitor release` with two approvers (the SOC ticket of the containment
//! gets the release); and the containment of a removed cgroup is dropped, with an audit record.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use agent_monitor::{
    cgroup,
    ebpf::{Kernel, LoadOptions, Platform},
    respond::{
        contain::{Action, Containment},
        webhook::verify,
    },
};
use agent_monitor_common::AgentSlot;
use common::*;

const CHILD_ENV: &str = "AGENT_MONITOR_CONTAIN_CHILD";

/// Runs inside a test cgroup when re-executed with `CHILD_ENV` set: `connect ADDR N` or
/// `udp ADDR N`, printing one `RESULT ok` or `RESULT errno E` line per attempt.
#[test]
fn contain_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = spec.split_whitespace();
    let (op, addr, n) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap().parse::<u32>().unwrap(),
    );
    let started = Instant::now();
    for _ in 0..n {
        let r = match op {
            "connect" => TcpStream::connect(addr).map(drop),
            "udp" => UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.send_to(b"ping", addr))
                .map(drop),
            _ => panic!("unknown child op {op}"),
        };
        match r {
            Ok(()) => println!("RESULT ok"),
            Err(e) => println!("RESULT errno {}", e.raw_os_error().unwrap_or(-1)),
        }
    }
    println!("ELAPSED_MS {}", started.elapsed().as_millis());
}

/// What a child in `cg` got for `n` attempts: (successes, errnos, elapsed).
fn attempts(cg: &Path, op: &str, addr: &str, n: u32) -> (u32, Vec<i32>, Duration) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "contain_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{op} {addr} {n}"))
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let child = cgroup::spawn_in(cg, &mut cmd).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {:?}", out.status);
    let (mut ok, mut errs, mut elapsed) = (0, Vec::new(), Duration::ZERO);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.find("RESULT ").map_or(line, |i| &line[i..]);
        if line == "RESULT ok" {
            ok += 1;
        } else if let Some(e) = line.strip_prefix("RESULT errno ") {
            errs.push(e.parse().unwrap());
        } else if let Some(ms) = line.strip_prefix("ELAPSED_MS ") {
            elapsed = Duration::from_millis(ms.parse().unwrap());
        }
    }
    assert_eq!(ok + errs.len() as u32, n, "every attempt reported");
    (ok, errs, elapsed)
}

fn connect_ok(cg: &Path, addr: &str) -> bool {
    let (ok, errs, _) = attempts(cg, "connect", addr, 1);
    assert!(
        errs.iter().all(|&e| e == libc::EPERM),
        "connect failed with something else than EPERM: {errs:?}"
    );
    ok == 1
}

/// A loopback TCP listener that accepts forever, and its address.
fn listener() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || for _ in l.incoming() {});
    addr
}

/// A unique bpffs pin directory, removed (with everything pinned in it) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/agent-monitor-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(links) = std::fs::read_dir(self.0.join("links")) {
            for l in links.flatten() {
                let _ = std::fs::remove_file(l.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.join("links"));
        for m in ["CONTAINMENT", "DENIALS"] {
            let _ = std::fs::remove_file(self.0.join(m));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Loads the real programs in this process with `pin` and monitors `agent`.
fn load(pin: &PinDir, agent: &Path) -> (Kernel, Containment) {
    let (platform, _) = Platform::probe().unwrap();
    let opts = LoadOptions {
        max_agents: 16,
        ring_buffer_bytes: agent_monitor_common::RING_BUF_BYTES,
        daemon_tgid: std::process::id(),
        pin_dir: Some(pin.0.clone()),
    };
    let (kernel, mut maps) = Kernel::load(&platform, &opts).unwrap();
    let id = cgroup::id_of(agent).unwrap();
    maps.monitored
        .insert(id, AgentSlot { slot: 0, flags: 0 }, 0)
        .unwrap();
    let contain = Containment::open(maps.containment.take().unwrap());
    // Keep the other maps alive with the programs.
    std::mem::forget(maps);
    (kernel, contain)
}

#[test]
fn deny_all_refuses_connect_and_udp_until_release() {
    let cgroups = TestCgroups::new("contain-deny");
    let agent = cgroups.dir("agents/fraud/agent-1");
    let other = cgroups.dir("other");
    let pin = PinDir::new("deny");
    let (kernel, mut c) = load(&pin, &agent);
    let id = cgroup::id_of(&agent).unwrap();
    let addr = listener();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap().to_string();

    assert!(connect_ok(&agent, &addr), "connects before containment");
    let (ok, _, _) = attempts(&agent, "udp", &udp_addr, 1);
    assert_eq!(ok, 1, "UDP send before containment");

    let r = c.deny_all(id, Some("agent-1")).unwrap();
    assert_eq!(r.action, Action::DenyAll);
    assert!(r.changed && r.before.is_none() && r.after.is_some_and(|p| p.deny_all));
    let again = c.deny_all(id, Some("agent-1")).unwrap();
    assert!(!again.changed, "deny_all is idempotent");

    let (ok, errs, _) = attempts(&agent, "connect", &addr, 3);
    assert_eq!((ok, errs), (0, vec![libc::EPERM; 3]), "connect gets EPERM");
    let (ok, errs, _) = attempts(&agent, "udp", &udp_addr, 2);
    assert_eq!(
        (ok, errs),
        (0, vec![libc::EPERM; 2]),
        "UDP sendto gets EPERM"
    );
    assert!(connect_ok(&other, &addr), "another cgroup is not contained");

    let d = c.denials(id).unwrap();
    assert_eq!((d.connects, d.sends), (3, 2), "denials counted: {d:?}");
    assert_eq!(c.state().unwrap().len(), 1);
    assert!(c.hooks().iter().all(|h| h.link.is_some()), "hooks pinned");

    let r = c.release(id).unwrap();
    assert!(r.changed && r.after.is_none());
    assert!(!c.release(id).unwrap().changed, "release is idempotent");
    assert!(connect_ok(&agent, &addr), "connects again after release");

    // Undo of the release puts the deny back.
    c.undo(&r).unwrap();
    assert!(!connect_ok(&agent, &addr), "undo restored the deny");
    c.release(id).unwrap();
    drop(kernel);
    assert!(
        !pin.0.exists(),
        "no containment left: the pins are removed at exit"
    );
}

#[test]
fn rate_limit_lets_about_n_connects_a_second_through() {
    let cgroups = TestCgroups::new("contain-rate");
    let agent = cgroups.dir("agents/fraud/agent-1");
    let pin = PinDir::new("rate");
    let (_kernel, mut c) = load(&pin, &agent);
    let id = cgroup::id_of(&agent).unwrap();
    let addr = listener();

    let n = 20;
    c.rate_limit(id, n, 0).unwrap();
    let (ok, errs, elapsed) = attempts(&agent, "connect", &addr, 100);
    // The full bucket (one second's worth) plus what refilled while the child ran.
    let max = n + (elapsed.as_secs_f64() * f64::from(n)).ceil() as u32 + 1;
    assert!(
        (n..=max).contains(&ok),
        "{ok} of 100 connects passed in {elapsed:?} at {n}/s"
    );
    assert!(errs.iter().all(|&e| e == libc::EPERM), "{errs:?}");
    let d = c.denials(id).unwrap();
    assert_eq!(d.connects_rate_limited, u64::from(100 - ok));

    // A second later about N more pass; lowered while running, the next burst follows it.
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, _, elapsed) = attempts(&agent, "connect", &addr, 100);
    let max = n + (elapsed.as_secs_f64() * f64::from(n)).ceil() as u32 + 1;
    assert!((n..=max).contains(&ok), "{ok} after a second");
    c.rate_limit(id, 5, 0).unwrap();
    let (ok, _, elapsed) = attempts(&agent, "connect", &addr, 50);
    let max = 5 + (elapsed.as_secs_f64() * 5.0).ceil() as u32 + 1;
    assert!((5..=max).contains(&ok), "{ok} after lowering to 5/s");
    // A deny on a cgroup with an entry already (read first, then updated) keeps its rate.
    let denied = c.deny_all(id, None).unwrap();
    assert!(
        denied
            .before
            .is_some_and(|p| !p.deny_all && p.connects_per_s == Some(5))
    );
    assert!(
        denied
            .after
            .is_some_and(|p| p.deny_all && p.connects_per_s == Some(5))
    );
    assert!(!connect_ok(&agent, &addr));
    c.release(id).unwrap();
    assert!(connect_ok(&agent, &addr));
}

/// The daemon binary with its stderr captured, waited for until ready.
fn daemon(dir: &Path, tag: &str, config: &str) -> (Child, PathBuf) {
    let cfg = dir.join(format!("{tag}.yaml"));
    // No control API and no metrics listener: the host's default socket and port are not the
    // test's to take, and tests run side by side.
    let mut text = format!("{config}\napi: null\n");
    if !config.contains("observability:") {
        text.push_str("observability: {listen: null}\n");
    }
    std::fs::write(&cfg, text).unwrap();
    let ready = dir.join(format!("{tag}.ready"));
    let log = dir.join(format!("{tag}.log"));
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(dir.join(format!("{tag}.jsonl")))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon exited before ready: {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "daemon not ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, log)
}

fn log_lines(log: &Path) -> Vec<String> {
    let f = std::fs::File::open(log).unwrap();
    BufReader::new(f).lines().map_while(Result::ok).collect()
}

#[test]
fn deny_outlives_a_killed_daemon_and_a_restart_reports_and_releases_it() {
    let cgroups = TestCgroups::new("contain-kill");
    let agent = cgroups.dir("agents/fraud/agent-1");
    let pin = PinDir::new("kill");
    let tmp = tempfile::tempdir().unwrap();
    let id = cgroup::id_of(&agent).unwrap();
    let addr = listener();
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\npin_dir: {}\nobservability: {{listen: null}}\n",
        cgroups.root.join("agents").display(),
        pin.0.display()
    );

    let (mut first, _) = daemon(tmp.path(), "first", &config);
    assert!(connect_ok(&agent, &addr));
    // Another process (as `agent-monitor contain deny` would) works on the pinned map only.
    let mut c = Containment::open_pinned(&pin.0).unwrap();
    c.deny_all(id, Some("agent-1")).unwrap();
    assert!(!connect_ok(&agent, &addr), "denied while the daemon runs");
    let links_before: Vec<_> = c.hooks().into_iter().map(|h| h.link.unwrap()).collect();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    first.wait().unwrap();
    assert!(
        !connect_ok(&agent, &addr),
        "the deny stays in force with the daemon killed"
    );
    let (ok, errs, _) = attempts(&agent, "udp", &addr, 1);
    assert_eq!((ok, errs), (0, vec![libc::EPERM]));

    let (mut second, log) = daemon(tmp.path(), "second", &config);
    let reported = log_lines(&log).iter().any(|l| {
        l.contains("containment in force from before this start")
            && l.contains(&format!("cgroup {id}:"))
            && l.contains("deny_all")
    });
    assert!(
        reported,
        "restart reports the containment: {:?}",
        log_lines(&log)
    );
    assert!(!connect_ok(&agent, &addr), "still denied after the restart");
    // The restarted daemon took the same links over with its own programs: nothing stacked.
    let links_after: Vec<_> = c.hooks().into_iter().map(|h| h.link.unwrap()).collect();
    for (b, a) in links_before.iter().zip(&links_after) {
        assert_eq!(b.link_id, a.link_id, "same pinned link");
        assert_ne!(b.prog_id, a.prog_id, "program replaced in place");
    }
    assert_eq!(c.state().unwrap().len(), 1);
    assert!(c.denials(id).unwrap().connects >= 3);

    let r = c.release(id).unwrap();
    assert!(r.changed && r.before.is_some_and(|p| p.deny_all));
    assert!(connect_ok(&agent, &addr), "released");
    drop(c);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(second.wait().unwrap().success());
    assert!(
        !pin.0.exists(),
        "an orderly exit with nothing contained leaves no pins"
    );
}

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Audit keys and a webhook key in `dir/keys`; the YAML of a daemon that responds with the
/// shipped rules, audits to `dir/audit.jsonl` and (with a URL) sends tickets there.
fn responding_config(dir: &Path, watch: &Path, pin: &Path, soc: Option<&str>) -> String {
    let keys = dir.join("keys");
    if !keys.exists() {
        let status = Command::new(BIN)
            .args(["audit", "keygen", "--dir"])
            .arg(&keys)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(keys.join("webhook.key"), WEBHOOK_KEY).unwrap();
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\npin_dir: {}\nstate_dir: {}\n\
         detection:\n  models_dir: {}\n  rules_dir: {}\n\
         audit: {{path: {}, signing_key: {}, token_key: {}}}\n",
        watch.display(),
        pin.display(),
        dir.join("state").display(),
        dir.join("no-models").display(),
        rules.display(),
        dir.join("audit.jsonl").display(),
        keys.join("audit-signing.key").display(),
        keys.join("audit-token.key").display(),
    );
    if let Some(url) = soc {
        config.push_str(&format!(
            "webhook: {{url: '{url}', key_file: {}, outbox_dir: {}, retry_initial_ms: 100}}\n",
            keys.join("webhook.key").display(),
            dir.join("outbox").display()
        ));
    }
    config
}

const WEBHOOK_KEY: &[u8] = b"test webhook key, at least 32 bytes long";

fn audit_verifies(dir: &Path) -> String {
    assert_audit_verifies(
        &dir.join("audit.jsonl"),
        &dir.join("keys/audit-signing.pub"),
    );
    std::fs::read_to_string(dir.join("audit.jsonl")).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn a_rule_containment_outlives_sigkill_and_two_approvers_release_it_after_a_restart() {
    let cgroups = TestCgroups::new("contain-release");
    let agent = cgroups.dir("agents/fraud/fraud-7");
    let pin = PinDir::new("release");
    let tmp = tempfile::tempdir().unwrap();
    let addr = listener();
    let (url, received) = soc_receiver();
    let config = responding_config(tmp.path(), &cgroups.root.join("agents"), &pin.0, Some(&url));

    let (mut first, _) = daemon(tmp.path(), "first", &config);
    assert!(connect_ok(&agent, &addr), "connects before the offence");
    let (_, code) = workload_in(&agent, &[format!("read:{TOKEN_PATH}")]);
    assert_eq!(code, 0);
    wait_for("the rule's containment", || !connect_ok(&agent, &addr));

    signal(&first, nix::sys::signal::Signal::SIGKILL);
    first.wait().unwrap();
    assert!(
        !connect_ok(&agent, &addr),
        "the deny stays in force with the daemon killed"
    );

    let (mut second, log) = daemon(tmp.path(), "second", &config);
    let lines = log_lines(&log);
    assert!(
        lines.iter().any(|l| l.contains("fraud-7 is contained")),
        "the restarted daemon reports the containment: {lines:?}"
    );
    assert!(!connect_ok(&agent, &addr), "still denied after the restart");

    let cfg = tmp.path().join("second.yaml");
    let (ok, out) = release(&cfg, "fraud-7", "alice");
    assert!(ok && out.contains("1 of 2"), "{out}");
    assert!(!connect_ok(&agent, &addr), "one approver does not lift it");
    let (ok, out) = release(&cfg, "fraud-7", "bob");
    assert!(ok && out.contains("released by alice and bob"), "{out}");
    assert!(
        connect_ok(&agent, &addr),
        "released, the agent connects again"
    );

    // The SOC got the containment ticket from the first daemon and, from the second, the
    // release as a version of that same ticket.
    let released = |body: &str| body.contains(r#""event":"released""#);
    wait_for("the released ticket", || {
        received.lock().unwrap().iter().any(|(.., b)| released(b))
    });
    let tickets = received.lock().unwrap().clone();
    let mut ids = std::collections::BTreeSet::new();
    for (ts, sig, _, body) in &tickets {
        verify(body.as_bytes(), ts, sig, WEBHOOK_KEY).expect("signed");
        let t: serde_json::Value = serde_json::from_str(body).unwrap();
        ids.insert(t["ticket_id"].as_str().unwrap().to_owned());
        assert_eq!(t["agent"]["id"], "fraud-7");
    }
    assert_eq!(ids.len(), 1, "one ticket across the restart: {ids:?}");
    let (.., body) = tickets.iter().find(|(.., b)| released(b)).unwrap();
    let t: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(t["status"], "released", "{t:#}");
    assert_eq!(t["tier"], "contain");
    assert_eq!(
        t["release"]["approvers"],
        serde_json::json!(["alice", "bob"])
    );
    assert!(
        t["release"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "deny_all:undo" && a["ok"] == true),
        "{t:#}"
    );

    signal(&second, nix::sys::signal::Signal::SIGTERM);
    assert!(second.wait().unwrap().success());
    assert!(!pin.0.exists(), "nothing contained: no pins left");
    let audit = audit_verifies(tmp.path());
    assert!(audit.contains(r#""kind":"release""#), "{audit}");
}

#[test]
fn containments_of_removed_cgroups_are_dropped_with_an_audit_record() {
    let cgroups = TestCgroups::new("contain-gone");
    // Agent a is removed while the daemon runs; b (contained from outside the daemon) before an
    // orderly exit; c while no daemon runs; d stays.
    let a = cgroups.dir("agents/fraud/gone-1");
    let [b, c, d] = ["other/b", "other/c", "other/d"].map(|p| cgroups.dir(p));
    let [id_a, id_b, id_c, id_d] = [&a, &b, &c, &d].map(|p| cgroup::id_of(p).unwrap());
    let pin = PinDir::new("gone");
    let tmp = tempfile::tempdir().unwrap();
    let addr = listener();
    let config = responding_config(tmp.path(), &cgroups.root.join("agents"), &pin.0, None);

    let (mut first, _) = daemon(tmp.path(), "first", &config);
    let (_, code) = workload_in(&a, &[format!("read:{TOKEN_PATH}")]);
    assert_eq!(code, 0);
    let mut pinned = Containment::open_pinned(&pin.0).unwrap();
    wait_for("the rule's containment", || {
        pinned.policy(id_a).unwrap().is_some()
    });
    std::fs::remove_dir(&a).unwrap();
    wait_for("the removed agent's entry dropped", || {
        pinned.policy(id_a).unwrap().is_none()
    });

    pinned.deny_all(id_b, None).unwrap();
    std::fs::remove_dir(&b).unwrap();
    signal(&first, nix::sys::signal::Signal::SIGTERM);
    assert!(first.wait().unwrap().success());
    assert!(
        !pin.0.exists(),
        "an orderly exit drops the removed cgroup's entry and leaves nothing pinned"
    );
    drop(pinned);

    let (mut second, _) = daemon(tmp.path(), "second", &config);
    let mut pinned = Containment::open_pinned(&pin.0).unwrap();
    pinned.deny_all(id_c, None).unwrap();
    pinned.deny_all(id_d, None).unwrap();
    signal(&second, nix::sys::signal::Signal::SIGKILL);
    second.wait().unwrap();
    std::fs::remove_dir(&c).unwrap();
    let (mut third, log) = daemon(tmp.path(), "third", &config);
    let ids: Vec<u64> = pinned.state().unwrap().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [id_d], "the start dropped c's entry and kept d's");
    assert!(
        log_lines(&log)
            .iter()
            .any(|l| l.contains(&format!("cgroup {id_c} no longer exists"))),
        "{:?}",
        log_lines(&log)
    );
    assert!(!connect_ok(&d, &addr), "d is still denied");
    pinned.release(id_d).unwrap();
    drop(pinned);
    signal(&third, nix::sys::signal::Signal::SIGTERM);
    assert!(third.wait().unwrap().success());
    assert!(!pin.0.exists());

    let audit = audit_verifies(tmp.path());
    let gone = audit.matches(r#""reason":"cgroup_gone""#).count();
    assert_eq!(gone, 3, "one audit record each for a, b and c: {audit}");
}
