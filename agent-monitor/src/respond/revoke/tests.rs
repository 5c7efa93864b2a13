//! Revocation against real HTTP servers on loopback that implement the RFC 7009 endpoint and
//! Vault's lease endpoints, checking method, content type, authentication and body.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use base64::Engine as _;

use super::*;

const TOKEN: &str = "at-9f8e7d6c5b4a-agent-fraud-1";
const CLIENT_SECRET: &str = "cs&very=secret value";
const VAULT_TOKEN: &str = "hvs.test-vault-token-123";

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    url: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A real HTTP server on 127.0.0.1 answering with `respond`; stops when dropped.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(
        respond: impl Fn(&Seen) -> (u16, Vec<(&'static str, String)>, String) + Send + 'static,
    ) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind loopback");
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let headers = req
                    .headers()
                    .iter()
                    .map(|h| {
                        (
                            h.field.as_str().as_str().to_ascii_lowercase(),
                            h.value.as_str().to_owned(),
                        )
                    })
                    .collect();
                let s = Seen {
                    method: req.method().as_str().to_owned(),
                    url: req.url().to_owned(),
                    headers,
                    body,
                };
                let (status, extra, text) = respond(&s);
                seen2.lock().expect("lock").push(s);
                let mut resp = tiny_http::Response::from_string(text).with_status_code(status);
                for (k, v) in extra {
                    if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                        resp.add_header(h);
                    }
                }
                let _ = req.respond(resp);
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form_decode(body: &str) -> HashMap<String, String> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let v = u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape");
                    out.push(v);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).expect("utf8")
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

/// An RFC 7009 revocation endpoint at `/oauth2/revoke` for client `fraud:client` (a `:` in the id is form-encoded).
fn rfc7009(s: &Seen) -> (u16, Vec<(&'static str, String)>, String) {
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "fraud%3Aclient:{}",
            super::http::form_encode(CLIENT_SECRET)
        ))
    );
    if s.method != "POST" || s.url != "/oauth2/revoke" {
        return (405, vec![], "method or path".into());
    }
    if s.headers.get("content-type").map(String::as_str)
        != Some("application/x-www-form-urlencoded")
    {
        return (400, vec![], r#"{"error":"invalid_request"}"#.into());
    }
    if s.headers.get("authorization") != Some(&expected_auth) {
        return (
            401,
            vec![("WWW-Authenticate", "Basic".into())],
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    let form = form_decode(&s.body);
    match form.get("token_type_hint").map(String::as_str) {
        None | Some("access_token" | "refresh_token") => {}
        Some(_) => return (400, vec![], r#"{"error":"unsupported_token_type"}"#.into()),
    }
    if form.get("token").is_none_or(String::is_empty) {
        return (400, vec![], r#"{"error":"invalid_request"}"#.into());
    }
    // Valid or already invalid: 200 either way (RFC 7009 section 2.2).
    (200, vec![], String::new())
}

/// Vault's lease endpoints; answers 204, and echoes the token in a 403 to test scrubbing.
fn vault(s: &Seen) -> (u16, Vec<(&'static str, String)>, String) {
    if s.method != "PUT" {
        return (
            405,
            vec![],
            r#"{"errors":["unsupported operation"]}"#.into(),
        );
    }
    if s.headers.get("x-vault-token").map(String::as_str) != Some(VAULT_TOKEN) {
        let got = s.headers.get("x-vault-token").cloned().unwrap_or_default();
        return (
            403,
            vec![],
            format!(r#"{{"errors":["permission denied for {got}"]}}"#),
        );
    }
    if s.url == "/v1/sys/leases/revoke" {
        let ok_type = s.headers.get("content-type").map(String::as_str) == Some("application/json");
        let v: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
        return match v.get("lease_id").and_then(|l| l.as_str()) {
            Some(id) if ok_type && !id.is_empty() => (204, vec![], String::new()),
            _ => (400, vec![], r#"{"errors":["missing lease_id"]}"#.into()),
        };
    }
    if s.url.starts_with("/v1/sys/leases/revoke-prefix/") && s.body.is_empty() {
        return (204, vec![], String::new());
    }
    (404, vec![], r#"{"errors":[]}"#.into())
}

struct Files {
    _dir: tempfile::TempDir,
    client_secret: PathBuf,
    token: PathBuf,
    vault_token: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, value: &str| -> PathBuf {
        let p = dir.path().join(name);
        fs::write(&p, format!("{value}\n")).expect("write secret");
        p
    };
    Files {
        client_secret: write("client-secret", CLIENT_SECRET),
        token: write("token", TOKEN),
        vault_token: write("vault-token", VAULT_TOKEN),
        _dir: dir,
    }
}

fn oauth_entry(endpoint: &str, f: &Files, secret: &Path) -> OAuthToken {
    OAuthToken {
        endpoint: endpoint.to_owned(),
        client_id: "fraud:client".into(),
        client_secret_file: secret.to_owned(),
        token: None,
        token_file: Some(f.token.clone()),
        token_type_hint: Some("access_token".into()),
    }
}

fn revoker(agent: &str, creds: AgentCredentials) -> Revoker {
    Revoker::new(RevokeConfig {
        timeout_ms: 2_000,
        attempts: 2,
        backoff_ms: 10,
        agents: [(agent.to_owned(), creds)].into_iter().collect(),
    })
}

fn assert_no_secret(records: &[RevokeRecord]) {
    let text = serde_json::to_string(records).expect("json");
    for s in [TOKEN, CLIENT_SECRET, VAULT_TOKEN, "very=secret"] {
        assert!(!text.contains(s), "secret leaked into {text}");
    }
}

#[test]
fn oauth_token_is_revoked_per_rfc7009_and_again_idempotently() {
    let server = Server::start(rfc7009);
    let f = files();
    let r = revoker(
        "fraud-1",
        AgentCredentials {
            oauth: vec![oauth_entry(
                &format!("{}/oauth2/revoke", server.url),
                &f,
                &f.client_secret,
            )],
            vault: vec![],
        },
    );
    for round in 1..=2 {
        let records = r.revoke_agent("fraud-1");
        assert_eq!(records.len(), 1);
        let rec = &records[0];
        assert!(rec.ok, "round {round}: {rec:?}");
        assert_eq!(rec.action, "revoke_oauth_token");
        assert_eq!(rec.status, Some(200));
        assert!(rec.undo.contains("irreversible") && rec.undo.contains("fraud:client"));
        assert_no_secret(&records);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let form = form_decode(&seen[0].body);
    assert_eq!(form.get("token").map(String::as_str), Some(TOKEN));
    assert_eq!(
        form.get("token_type_hint").map(String::as_str),
        Some("access_token")
    );
}

#[test]
fn oauth_inline_token_and_wrong_client_secret() {
    let server = Server::start(rfc7009);
    let f = files();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong");
    fs::write(&wrong, "not-the-secret").expect("write");
    let mut inline = oauth_entry(
        &format!("{}/oauth2/revoke", server.url),
        &f,
        &f.client_secret,
    );
    inline.token = Some(Secret::new(TOKEN));
    inline.token_file = None;
    inline.token_type_hint = None;
    let bad = oauth_entry(&format!("{}/oauth2/revoke", server.url), &f, &wrong);
    let r = revoker(
        "a",
        AgentCredentials {
            oauth: vec![inline, bad],
            vault: vec![],
        },
    );
    let records = r.revoke_agent("a");
    assert!(records[0].ok, "{:?}", records[0]);
    assert!(!records[1].ok);
    assert!(!records[1].retriable, "401 is not retriable");
    assert_eq!(records[1].status, Some(401));
    assert_eq!(records[1].attempts, 1);
    assert!(
        records[1].detail.contains("invalid_client"),
        "{}",
        records[1].detail
    );
    assert_no_secret(&records);
}

#[test]
fn server_503_is_reported_retriable_after_the_configured_tries() {
    let server = Server::start(|_| {
        (
            503,
            vec![("Retry-After", "30".into())],
            "temporarily unavailable".into(),
        )
    });
    let f = files();
    let r = revoker(
        "a",
        AgentCredentials {
            oauth: vec![oauth_entry(
                &format!("{}/oauth2/revoke", server.url),
                &f,
                &f.client_secret,
            )],
            vault: vec![VaultLeases {
                address: server.url.clone(),
                token_file: f.vault_token.clone(),
                namespace: None,
                lease_ids: vec!["database/creds/fraud/abc".into()],
                lease_prefix: None,
            }],
        },
    );
    let records = r.revoke_agent("a");
    assert_eq!(records.len(), 2);
    for rec in &records {
        assert!(!rec.ok);
        assert!(rec.retriable, "{rec:?}");
        assert_eq!(rec.status, Some(503));
        assert_eq!(rec.attempts, 2);
        assert!(rec.detail.contains("Retry-After: 30"), "{}", rec.detail);
    }
    assert_eq!(server.seen().len(), 4);
    assert_no_secret(&records);
}

#[test]
fn unreachable_server_is_reported_retriable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let f = files();
    let r = revoker(
        "a",
        AgentCredentials {
            oauth: vec![oauth_entry(
                &format!("http://127.0.0.1:{port}/revoke"),
                &f,
                &f.client_secret,
            )],
            vault: vec![VaultLeases {
                address: format!("http://127.0.0.1:{port}"),
                token_file: f.vault_token.clone(),
                namespace: None,
                lease_ids: vec![],
                lease_prefix: Some("database/creds/fraud-1/".into()),
            }],
        },
    );
    let records = r.revoke_agent("a");
    assert_eq!(records.len(), 2);
    for rec in &records {
        assert!(!rec.ok);
        assert!(rec.retriable, "{rec:?}");
        assert_eq!(rec.status, None);
        assert_eq!(rec.attempts, 2);
    }
    assert_no_secret(&records);
}

#[test]
fn vault_leases_and_prefix_are_revoked() {
    let server = Server::start(vault);
    let f = files();
    let r = revoker(
        "fraud-1",
        AgentCredentials {
            oauth: vec![],
            vault: vec![VaultLeases {
                address: format!("{}/", server.url),
                token_file: f.vault_token.clone(),
                namespace: Some("bank/payments".into()),
                lease_ids: vec![
                    "database/creds/fraud/0a1b2c".into(),
                    "aws/creds/fraud/9z".into(),
                ],
                lease_prefix: Some("database/creds/fraud-1/".into()),
            }],
        },
    );
    let records = r.revoke_agent("fraud-1");
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r.ok && r.status == Some(204)),
        "{records:?}"
    );
    assert_eq!(records[0].action, "revoke_vault_lease");
    assert_eq!(records[2].action, "revoke_vault_lease_prefix");
    assert!(
        records[0].undo.contains("read database/creds/fraud again"),
        "{}",
        records[0].undo
    );
    let seen = server.seen();
    assert_eq!(seen[0].url, "/v1/sys/leases/revoke");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json body");
    assert_eq!(body["lease_id"], "database/creds/fraud/0a1b2c");
    assert_eq!(
        seen[2].url,
        "/v1/sys/leases/revoke-prefix/database/creds/fraud-1/"
    );
    assert_eq!(
        seen[2].headers.get("x-vault-namespace").map(String::as_str),
        Some("bank/payments")
    );
    assert_no_secret(&records);
}

#[test]
fn vault_reply_quoting_the_token_is_scrubbed() {
    let server = Server::start(vault);
    let f = files();
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("t");
    fs::write(&other, "hvs.another-token-456").expect("write");
    let r = revoker(
        "a",
        AgentCredentials {
            oauth: vec![],
            vault: vec![VaultLeases {
                address: server.url.clone(),
                token_file: other,
                namespace: None,
                lease_ids: vec!["x/y".into()],
                lease_prefix: None,
            }],
        },
    );
    let records = r.revoke_agent("a");
    assert!(!records[0].ok && !records[0].retriable);
    assert_eq!(records[0].status, Some(403));
    assert!(
        !records[0].detail.contains("hvs.another"),
        "{}",
        records[0].detail
    );
    assert!(records[0].detail.contains("<redacted>"));
    drop(f);
}

#[test]
fn bad_configuration_is_a_record_never_a_request() {
    let server = Server::start(vault);
    let f = files();
    let vault_entry = |prefix: &str| VaultLeases {
        address: server.url.clone(),
        token_file: f.vault_token.clone(),
        namespace: None,
        lease_ids: vec![],
        lease_prefix: Some(prefix.into()),
    };
    let mut no_token = oauth_entry("https://as.example/revoke", &f, &f.client_secret);
    no_token.token_file = None;
    let mut missing_file = oauth_entry("https://as.example/revoke", &f, &f.client_secret);
    missing_file.token_file = Some(PathBuf::from("/nonexistent/token"));
    let clear = oauth_entry("http://as.example/revoke", &f, &f.client_secret);
    let r = revoker(
        "a",
        AgentCredentials {
            oauth: vec![no_token, missing_file, clear],
            vault: vec![
                vault_entry(""),
                vault_entry("/"),
                vault_entry("db/../sys"),
                VaultLeases {
                    lease_prefix: None,
                    ..vault_entry("x")
                },
            ],
        },
    );
    let records = r.revoke_agent("a");
    assert_eq!(records.len(), 7);
    assert!(records.iter().all(|r| !r.ok && !r.retriable), "{records:?}");
    assert!(records[1].detail.contains("/nonexistent/token"));
    assert!(records[2].detail.contains("plain http"));
    assert!(records[3].detail.contains("every lease"));
    assert!(server.seen().is_empty());

    let unknown = r.revoke_agent("nobody");
    assert_eq!(unknown.len(), 1);
    assert!(!unknown[0].ok);
}

#[test]
fn configuration_reads_from_yaml() {
    let yaml = r#"
timeout_ms: 3000
agents:
  fraud-1:
    oauth:
      - endpoint: https://as.bank.example/oauth2/revoke
        client_id: fraud-agent
        client_secret_file: /etc/agent-monitor/secrets/as-client
        token_file: /var/run/agents/fraud-1/access_token
        token_type_hint: access_token
    vault:
      - address: https://vault.bank.example:8200
        token_file: /etc/agent-monitor/secrets/vault-token
        lease_prefix: database/creds/fraud-1/
"#;
    let c: RevokeConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert_eq!(c.timeout_ms, 3000);
    assert_eq!(c.attempts, 2);
    let a = &c.agents["fraud-1"];
    assert_eq!(a.oauth[0].client_id, "fraud-agent");
    assert_eq!(
        a.vault[0].lease_prefix.as_deref(),
        Some("database/creds/fraud-1/")
    );
    assert!(serde_yaml::from_str::<RevokeConfig>("agents: {a: {bogus: 1}}").is_err());
}
