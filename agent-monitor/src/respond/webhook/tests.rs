//! End-to-end tests against a real HTTP server on loopback (tiny_http), not a mock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Instant;

use std::path::Path;

use super::*;
use crate::detect::Source;

const KEY: &[u8] = b"test-key-0123456789abcdef-0123456789";

// ---------------------------------------------------------------- a receiver on loopback

#[derive(Clone, Debug)]
struct Received {
    key: String,
    ts: String,
    sig: String,
    body: String,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    /// Serve on `addr` ("127.0.0.1:0" or a reserved port); `answer(request, n)` gives the status
    /// and body for the n-th request (0-based).
    fn start(
        addr: &str,
        answer: impl Fn(&Received, usize) -> (u16, &'static str) + Send + 'static,
    ) -> Self {
        let server = tiny_http::Server::http(addr).expect("bind loopback server");
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let header = |name: &'static str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.equiv(name))
                        .map(|h| h.value.as_str().to_owned())
                        .unwrap_or_default()
                };
                let mut r = Received {
                    key: header(HEADER_IDEMPOTENCY),
                    ts: header(HEADER_TIMESTAMP),
                    sig: header(HEADER_SIGNATURE),
                    body: String::new(),
                };
                req.as_reader()
                    .read_to_string(&mut r.body)
                    .expect("request body");
                let n = {
                    let mut got = g.lock().expect("lock");
                    got.push(r.clone());
                    got.len() - 1
                };
                let (status, text) = answer(&r, n);
                let _ =
                    req.respond(tiny_http::Response::from_string(text).with_status_code(status));
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/tickets"),
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// What a receiver keeps after dropping duplicates by idempotency key.
    fn deduplicated(&self) -> BTreeMap<String, Ticket> {
        let mut kept = BTreeMap::new();
        for r in self.received() {
            verify(r.body.as_bytes(), &r.ts, &r.sig, KEY).expect("signature verifies");
            let t: Ticket = serde_json::from_str(&r.body).expect("ticket JSON");
            assert_eq!(t.idempotency_key, r.key, "header and body agree");
            kept.entry(r.key).or_insert(t);
        }
        kept
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ok_server() -> Receiver {
    Receiver::start("127.0.0.1:0", |_, _| (200, "ok"))
}

/// A loopback port with nothing listening on it (for now).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------- logs

struct Capture;
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut l) = LINES.lock() {
            l.push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    });
}

fn logged(containing: &str) -> Vec<String> {
    LINES
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains(containing))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------- helpers

fn config(url: &str, dir: &Path) -> WebhookConfig {
    let key_file = dir.join("key");
    if !key_file.exists() {
        std::fs::write(&key_file, [KEY, b"\n"].concat()).expect("key file");
    }
    let mut c = WebhookConfig::new(url, key_file, dir.join("outbox"));
    c.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(80),
    };
    c.timeout = Duration::from_secs(2);
    c.idle_poll = Duration::from_millis(50);
    c.group_window = Duration::from_secs(60);
    c
}

fn finding(agent: &str, rule: &str, ts_ns: u64) -> Finding {
    Finding {
        ts_ns,
        agent_id: Arc::from(agent),
        class: Arc::from("fraud"),
        cgroup_id: 42,
        source: Source::Rule {
            name: rule.to_owned(),
            file: "rules/fraud.yaml".to_owned(),
        },
        score: 1.0,
        tier: Some(Tier::Log),
        summary: format!("{rule}: read /etc/shadow"),
        top_features: Vec::new(),
        lossy: false,
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn webhook_delivers_one_signed_ticket() {
    let server = ok_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook");
    let action = ActionRecord {
        action: "rate_limit".to_owned(),
        ok: true,
        detail: "egress limited to 64 KiB/s".to_owned(),
        undo: Some("agent-monitor release demo-fraud-1 --approver <you>".to_owned()),
    };
    let ctx = TicketContext {
        node: Some("node-7".to_owned()),
        ..TicketContext::default()
    };
    let r = wh
        .submit(
            &[finding("demo-fraud-1", "credential-read", 5)],
            Tier::RateLimit,
            std::slice::from_ref(&action),
            ctx,
        )
        .expect("submit");
    assert!(r.outbox_path.exists(), "durable before submit returns");
    assert_eq!(wh.stats().pending, 1);
    let handle = wh.start_delivery().expect("start");
    wait_until("delivery", || wh.stats().pending == 0);
    handle.stop().expect("stop");

    let got = server.received();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    verify_fresh(
        g.body.as_bytes(),
        &g.ts,
        &g.sig,
        KEY,
        SystemTime::now(),
        DEFAULT_TOLERANCE,
    )
    .expect("signature verifies");
    assert_eq!(
        verify(
            g.body.as_bytes(),
            &g.ts,
            &g.sig,
            b"another-key-0123456789abcdef-01234"
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(g.key, r.idempotency_key);
    let t: Ticket = serde_json::from_str(&g.body).expect("ticket");
    assert_eq!(t.schema, SCHEMA);
    assert_eq!((t.ticket_id.as_str(), t.version), (r.ticket_id.as_str(), 1));
    assert_eq!(t.agent.id, "demo-fraud-1");
    assert_eq!(t.node.as_deref(), Some("node-7"));
    assert_eq!(t.tier, Tier::RateLimit);
    assert_eq!(t.rule_matches[0].name, "credential-read");
    assert_eq!(t.actions, vec![action]);
    assert_eq!(
        t.rollback,
        vec!["agent-monitor release demo-fraud-1 --approver <you>".to_owned()]
    );
    assert!(t.summary.contains("demo-fraud-1") && t.summary.contains("To roll back"));
    assert_eq!(wh.stats().delivered, 1);
}

#[test]
fn webhook_endpoint_down_then_back_loses_nothing_and_keys_are_stable() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}/tickets");
    let mut wh = Webhook::new(config(&url, dir.path())).expect("webhook");
    let handle = wh.start_delivery().expect("start");
    let mut sent = BTreeSet::new();
    for (i, agent) in ["a", "b", "c", "a", "d"].iter().enumerate() {
        let r = wh
            .submit(
                &[finding(agent, "r", i as u64)],
                Tier::Log,
                &[],
                TicketContext::default(),
            )
            .expect("submit");
        sent.insert(r.idempotency_key);
    }
    assert_eq!(sent.len(), 5);
    wait_until("retries while down", || wh.stats().retries >= 3);
    assert_eq!(wh.stats().pending, 5, "nothing dropped while down");

    // Back up, but the first answer to each key is a 503: the client must retry that key.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let seen2 = Arc::clone(&seen);
    let server = Receiver::start(&format!("127.0.0.1:{port}"), move |r, _| {
        if seen2.lock().expect("lock").insert(r.key.clone()) {
            (503, "busy")
        } else {
            (200, "ok")
        }
    });
    wait_until("all delivered", || wh.stats().pending == 0);
    handle.stop().expect("stop");

    let got = server.received();
    assert_eq!(got.len(), 10, "each version sent twice (503, then 200)");
    // Every retry of a version carries the same key and the same body.
    let mut bodies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &got {
        bodies.entry(&r.key).or_default().insert(&r.body);
    }
    assert!(bodies.values().all(|b| b.len() == 1));
    let kept = server.deduplicated();
    assert_eq!(kept.keys().cloned().collect::<BTreeSet<_>>(), sent);
    // Versions of a ticket arrive in order: agent a's v1 before v2.
    let a_versions: Vec<u32> = got
        .iter()
        .filter_map(|r| serde_json::from_str::<Ticket>(&r.body).ok())
        .filter(|t| t.agent.id == "a")
        .map(|t| t.version)
        .collect();
    assert_eq!(a_versions, vec![1, 1, 2, 2]);
}

#[test]
fn webhook_restart_resends_pending() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}/tickets");
    let mut sent = BTreeSet::new();
    {
        let mut wh = Webhook::new(config(&url, dir.path())).expect("webhook");
        let handle = wh.start_delivery().expect("start");
        for agent in ["x", "y", "z"] {
            let r = wh
                .submit(
                    &[finding(agent, "r", 1)],
                    Tier::Contain,
                    &[],
                    TicketContext::default(),
                )
                .expect("submit");
            sent.insert(r.idempotency_key);
        }
        wait_until("a failed attempt", || wh.stats().retries >= 1);
        handle.stop().expect("stop");
        // The daemon stops here: webhook and outbox dropped.
    }
    let server = Receiver::start(&format!("127.0.0.1:{port}"), |_, _| (200, "ok"));
    let wh = Webhook::new(config(&url, dir.path())).expect("webhook after restart");
    assert_eq!(wh.stats().pending, 3);
    let handle = wh.start_delivery().expect("start");
    wait_until("resent", || wh.stats().pending == 0);
    handle.stop().expect("stop");
    let kept = server.deduplicated();
    assert_eq!(kept.keys().cloned().collect::<BTreeSet<_>>(), sent);
}

#[test]
fn webhook_groups_findings_per_agent_and_escalates() {
    let server = ok_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook");
    let handle = wh.start_delivery().expect("start");
    let mut refs = Vec::new();
    for i in 0..10u64 {
        let tier = if i < 6 { Tier::Log } else { Tier::Contain };
        let rule = if i % 2 == 0 {
            "shell-spawn"
        } else {
            "port-scan"
        };
        refs.push(
            wh.submit(
                &[finding("agent-1", rule, i)],
                tier,
                &[],
                TicketContext::default(),
            )
            .expect("submit"),
        );
    }
    let other = wh
        .submit(
            &[finding("agent-2", "dns-outside", 3)],
            Tier::Log,
            &[],
            TicketContext::default(),
        )
        .expect("submit");
    wait_until("delivery", || wh.stats().pending == 0);
    handle.stop().expect("stop");

    assert!(
        refs.iter().all(|r| r.ticket_id == refs[0].ticket_id),
        "one ticket"
    );
    assert_ne!(other.ticket_id, refs[0].ticket_id);
    let versions: Vec<u32> = refs.iter().map(|r| r.version).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<u32>>());
    let escalated: Vec<u32> = refs
        .iter()
        .filter(|r| r.escalated)
        .map(|r| r.version)
        .collect();
    assert_eq!(escalated, vec![7], "only the version that raised the tier");

    let kept = server.deduplicated();
    let ids: BTreeSet<&str> = kept.values().map(|t| t.ticket_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "two agents, two tickets");
    let last = kept
        .values()
        .filter(|t| t.ticket_id == refs[0].ticket_id)
        .max_by_key(|t| t.version)
        .expect("agent-1 ticket");
    assert_eq!(last.version, 10);
    assert_eq!(last.findings.count, 10);
    assert_eq!(last.tier, Tier::Contain);
    assert_eq!(last.tier_history.len(), 2);
    let rules: BTreeSet<&str> = last.rule_matches.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rules, BTreeSet::from(["port-scan", "shell-spawn"]));
    let v7 = &kept[&idempotency_key(&refs[0].ticket_id, 7)];
    assert!(v7.escalated);
    assert_eq!(v7.event, TicketEvent::Escalated);
    assert_eq!(v7.previous_tier, Some(Tier::Log));
}

#[test]
fn webhook_refused_400_goes_to_dead_with_the_response() {
    let server = Receiver::start("127.0.0.1:0", |_, _| (400, "schema rejected: no field foo"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook");
    let r = wh
        .submit(
            &[finding("q", "r", 1)],
            Tier::Log,
            &[],
            TicketContext::default(),
        )
        .expect("submit");
    let handle = wh.start_delivery().expect("start");
    wait_until("dead", || wh.stats().dead == 1);
    handle.stop().expect("stop");
    let stats = wh.stats();
    assert_eq!(
        (stats.pending, stats.dead_pending, stats.delivered),
        (0, 1, 0)
    );
    assert_eq!(server.received().len(), 1, "a 400 is not retried");
    let name = r.outbox_path.file_name().expect("name");
    let dead = wh.outbox().dead_dir().join(name);
    let env = wh.outbox().read(&dead).expect("kept in dead/");
    assert_eq!(env.idempotency_key, r.idempotency_key);
    let record: DeadRecord = serde_json::from_slice(
        &std::fs::read(format!("{}.response.json", dead.display())).expect("response file"),
    )
    .expect("record");
    assert_eq!(record.status, Some(400));
    assert_eq!(record.response, "schema rejected: no field foo");
}

#[test]
fn webhook_unreachable_url_logs_a_clear_error_and_keeps_the_ticket() {
    capture_logs();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}/tickets");
    let mut wh = Webhook::new(config(&url, dir.path())).expect("webhook");
    let r = wh
        .submit(
            &[finding("u", "r", 1)],
            Tier::Log,
            &[],
            TicketContext::default(),
        )
        .expect("submit");
    let handle = wh.start_delivery().expect("start");
    wait_until("retries", || wh.stats().retries >= 2);
    handle.stop().expect("stop");
    let stats = wh.stats();
    assert_eq!(stats.pending, 1, "kept");
    assert!(r.outbox_path.exists());
    let err = stats.last_error.expect("an error");
    assert!(
        err.contains(&url) && err.contains("kept in the outbox"),
        "{err}"
    );
    let lines = logged(&url);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains(&r.ticket_id)),
        "{lines:?}"
    );
}

#[test]
fn webhook_config_and_submit_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config("http://soc.example.com/t", dir.path());
    let err = Webhook::new(c).expect_err("plain http outside loopback");
    assert!(err.to_string().contains("https"), "{err}");
    let mut c = config("https://soc.example.com/t", dir.path());
    c.key_file = dir.path().join("nope");
    let err = Webhook::new(c).expect_err("no key");
    assert!(err.to_string().contains("nope"), "{err}");
    let mut wh = Webhook::new(config("https://soc.example.com/t", dir.path())).expect("webhook");
    assert!(matches!(
        wh.submit(&[], Tier::Log, &[], TicketContext::default()),
        Err(WebhookError::NoFindings)
    ));
    assert!(matches!(
        wh.submit(
            &[finding("a", "r", 1), finding("b", "r", 1)],
            Tier::Log,
            &[],
            TicketContext::default()
        ),
        Err(WebhookError::MixedAgents { .. })
    ));
    // Another daemon on the same outbox is refused.
    let err = Webhook::new(config("https://soc.example.com/t", dir.path())).expect_err("locked");
    assert!(err.to_string().contains("another agent-monitor"), "{err}");
}

#[test]
fn webhook_documented_example_is_a_valid_ticket() {
    let doc = include_str!("../../../../docs/SOC-TICKETS.md");
    let start = doc.find("### Example").expect("example section");
    let json = doc[start..]
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("json block");
    let t: Ticket = serde_json::from_str(json).expect("the example parses as a Ticket");
    assert_eq!(t.schema, SCHEMA);
    assert_eq!(t.idempotency_key, idempotency_key(&t.ticket_id, t.version));
    // Every documented field is one the code writes, and the other way round.
    let doc_value: serde_json::Value = serde_json::from_str(json).expect("json");
    let ours = serde_json::to_value(&t).expect("to value");
    assert_eq!(doc_value, ours);
}

#[test]
fn webhook_release_closes_the_containment_ticket_across_a_restart() {
    let server = ok_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let undo = "agent-monitor release fraud-3 --approver <you>".to_owned();
    let deny = ActionRecord {
        action: "deny_all".to_owned(),
        ok: true,
        detail: "connects refused".to_owned(),
        undo: Some(undo.clone()),
    };
    let revoke_undo = "re-issue the agent's credentials".to_owned();
    let revoke = ActionRecord {
        action: "revoke_tokens".to_owned(),
        ok: true,
        detail: "1 token revoked".to_owned(),
        undo: Some(revoke_undo.clone()),
    };
    let contained = {
        let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook");
        let r = wh
            .submit(
                &[finding("fraud-3", "credential-read", 1)],
                Tier::Contain,
                &[deny, revoke],
                TicketContext::default(),
            )
            .expect("submit");
        let handle = wh.start_delivery().expect("start");
        wait_until("delivery", || wh.stats().pending == 0);
        handle.stop().expect("stop");
        r
    };
    assert!(
        dir.path()
            .join("outbox")
            .join(TICKETS_DIR)
            .read_dir()
            .expect("store")
            .count()
            == 1,
        "the agent's ticket is kept on disk"
    );

    // The daemon restarts; the release updates the same ticket.
    let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook after restart");
    assert_eq!(wh.stats().open_tickets, 1);
    let release = ReleaseRecord {
        at: "2026-11-22T02:00:00Z".to_owned(),
        tier: Some(Tier::Contain),
        approvers: vec!["alice".to_owned(), "bob".to_owned()],
        reasons: vec!["alice: false positive".to_owned()],
        actions: vec![ActionRecord {
            action: "deny_all:undo".to_owned(),
            ok: true,
            detail: "deny lifted".to_owned(),
            undo: None,
        }],
    };
    let agent = AgentRef {
        id: "fraud-3".to_owned(),
        class: "fraud".to_owned(),
    };
    let r = wh
        .release(agent, Some(Tier::Contain), release.clone())
        .expect("release");
    assert_eq!(
        (r.ticket_id.as_str(), r.version),
        (contained.ticket_id.as_str(), 2)
    );
    let handle = wh.start_delivery().expect("start");
    wait_until("delivery", || wh.stats().pending == 0);

    let kept = server.deduplicated();
    let v2 = &kept[&idempotency_key(&contained.ticket_id, 2)];
    assert_eq!(v2.schema, SCHEMA);
    assert_eq!(
        (v2.event, v2.status, v2.tier),
        (TicketEvent::Released, TicketStatus::Released, Tier::Contain)
    );
    assert_eq!(v2.release.as_ref(), Some(&release));
    assert_eq!(v2.actions.len(), 2, "what was done stays in the ticket");
    assert_eq!(
        v2.rollback,
        vec![revoke_undo],
        "the release command was carried out"
    );
    assert!(v2.summary.contains("Released") && v2.summary.contains("alice and bob"));
    let v1 = &kept[&idempotency_key(&contained.ticket_id, 1)];
    assert_eq!(
        (v1.status, v1.rollback.contains(&undo)),
        (TicketStatus::Open, true)
    );

    // Closed: the agent's next finding opens a new ticket, and nothing is kept for it until then.
    assert_eq!(wh.stats().open_tickets, 0);
    let next = wh
        .submit(
            &[finding("fraud-3", "shell-spawn", 9)],
            Tier::Log,
            &[],
            TicketContext::default(),
        )
        .expect("submit");
    assert_ne!(next.ticket_id, contained.ticket_id);
    // A release of an agent without a ticket opens one, released at once.
    let lone = wh
        .release(
            AgentRef {
                id: "onboarding-1".to_owned(),
                class: "onboarding".to_owned(),
            },
            Some(Tier::RateLimit),
            release,
        )
        .expect("release");
    assert_eq!(lone.version, 1);
    wait_until("delivery", || wh.stats().pending == 0);
    handle.stop().expect("stop");
    let lone_ticket = &server.deduplicated()[&lone.idempotency_key];
    assert_eq!(
        (
            lone_ticket.event,
            lone_ticket.tier,
            lone_ticket.agent.id.as_str()
        ),
        (TicketEvent::Released, Tier::RateLimit, "onboarding-1")
    );
}

/// A snapshot that finishes after its containment was reported updates the same ticket: a new
/// version whose snapshot record is the result in place of the queued one, with the evidence.
#[test]
fn webhook_a_completed_snapshot_updates_the_ticket_with_its_evidence() {
    let server = ok_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = Webhook::new(config(&server.url, dir.path())).expect("webhook");
    let handle = wh.start_delivery().expect("start");
    let record = |ok: bool, detail: &str, undo: &str| ActionRecord {
        action: "forensic_snapshot".into(),
        ok,
        detail: detail.into(),
        undo: Some(undo.into()),
    };
    let deny = ActionRecord {
        action: "deny_all".into(),
        ok: true,
        detail: "in force".into(),
        undo: Some("agent-monitor contain release 7".into()),
    };
    assert!(
        wh.complete("agent-1", record(true, "x", "y"), None)
            .expect("no ticket")
            .is_none(),
        "no open ticket: nothing to update"
    );
    let opened = wh
        .submit(
            &[finding("agent-1", "reverse-shell", 1)],
            Tier::Contain,
            &[deny.clone(), record(true, "queued: ...", "thaw: queued")],
            TicketContext::default(),
        )
        .expect("submit");
    let evidence = Evidence {
        digest: "sha256:00ff".into(),
        path: "/var/lib/agent-monitor/forensics/agent-1-1".into(),
    };
    let done = wh
        .complete(
            "agent-1",
            record(true, "bundle of 2 processes", "thaw: done"),
            Some(evidence.clone()),
        )
        .expect("complete")
        .expect("the open ticket");
    assert_eq!(done.ticket_id, opened.ticket_id);
    assert_eq!(done.version, opened.version + 1);
    wait_until("delivery", || wh.stats().pending == 0);
    handle.stop().expect("stop");
    let kept = server.deduplicated();
    let last = &kept[&idempotency_key(&done.ticket_id, done.version)];
    assert_eq!(last.event, TicketEvent::Updated);
    assert_eq!(last.tier, Tier::Contain);
    assert_eq!(last.findings.count, 1, "an action is not a finding");
    assert_eq!(last.evidence.as_ref(), Some(&evidence));
    assert_eq!(
        last.actions,
        [deny, record(true, "bundle of 2 processes", "thaw: done")]
    );
    assert!(last.rollback.contains(&"thaw: done".to_owned()));
    assert!(!last.rollback.contains(&"thaw: queued".to_owned()));
}
