//! The durable outbox: one file per pending delivery, written atomically, deleted only after the
//! endpoint accepted it, moved to `dead/` with the response when the endpoint refused it.
//!
//! File names sort in the order the entries were written (`<unix ns>-<seq>-<ticket>-v<n>.json`),
//! so the oldest is sent first, after a restart too. Temporary files start with `.tmp-` and are
//! removed when an outbox is opened (a crash between write and rename leaves one behind).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::WebhookError;

/// The value of `format` in every outbox file.
pub const ENVELOPE_FORMAT: &str = "agent-monitor.outbox/v1";
const TMP_PREFIX: &str = ".tmp-";
const DEAD_DIR: &str = "dead";
const LOCK_FILE: &str = ".lock";
const RESPONSE_SUFFIX: &str = ".response.json";

/// One pending delivery: a ticket version, its body exactly as it will be signed and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub format: String,
    pub ticket_id: String,
    pub version: u32,
    pub idempotency_key: String,
    pub enqueued_at: String,
    /// The ticket JSON.
    pub body: String,
}

/// Why an entry was moved to `dead/`, written beside it as `<name>.response.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    pub url: String,
    /// The HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// The start of the response body (at most 4 KiB).
    pub response: String,
    pub reason: String,
    pub attempts: u32,
    pub at: String,
}

/// A directory of pending deliveries and its `dead/` subdirectory. An open outbox holds an
/// exclusive lock on `<dir>/.lock`, so that two daemons never send the same entries.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    dead: PathBuf,
    seq: AtomicU64,
    _lock: Flock<File>,
}

impl Outbox {
    /// Open (and create, mode 0700) the outbox directory; remove temporary files left by a crash.
    pub fn open(dir: &Path) -> Result<Self, WebhookError> {
        let dead = dir.join(DEAD_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dead)
            .map_err(|e| WebhookError::io(&dead, "create directory", e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| WebhookError::io(&lock_path, "open lock file", e))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                WebhookError::io(
                    &lock_path,
                    "lock (is another agent-monitor using this outbox?)",
                    std::io::Error::from(errno),
                )
            })?;
        for name in list_names(dir)? {
            if name.starts_with(TMP_PREFIX) {
                let path = dir.join(&name);
                fs::remove_file(&path)
                    .map_err(|e| WebhookError::io(&path, "remove temporary file", e))?;
            }
        }
        sync_dir(dir)?;
        let outbox = Self {
            dir: dir.to_path_buf(),
            dead,
            seq: AtomicU64::new(0),
            _lock: lock,
        };
        outbox.publish_depth();
        Ok(outbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write an entry durably (temp file, fsync, rename, fsync directory); its path.
    pub fn enqueue(&self, env: &Envelope) -> Result<PathBuf, WebhookError> {
        let bytes = serde_json::to_vec(env).map_err(|source| WebhookError::Encode {
            ticket_id: env.ticket_id.clone(),
            source,
        })?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{nanos:020}-{seq:08}-{}-v{}.json",
            sanitize(&env.ticket_id),
            env.version
        );
        let path = write_atomic(&self.dir, &name, &bytes)?;
        self.publish_depth();
        Ok(path)
    }

    /// `agent_monitor_webhook_outbox_depth`, after every change (a listing of a directory
    /// that holds a few tickets).
    fn publish_depth(&self) {
        if let Ok(n) = self.depth() {
            metrics::gauge!(crate::observe::names::OUTBOX_DEPTH).set(n as f64);
        }
    }

    /// Pending entries, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, WebhookError> {
        let mut names: Vec<String> = list_names(&self.dir)?
            .into_iter()
            .filter(|n| is_entry(n))
            .collect();
        names.sort();
        Ok(names.into_iter().map(|n| self.dir.join(n)).collect())
    }

    /// How many deliveries are pending.
    pub fn depth(&self) -> Result<usize, WebhookError> {
        Ok(list_names(&self.dir)?
            .iter()
            .filter(|n| is_entry(n))
            .count())
    }

    /// How many entries are in `dead/`.
    pub fn dead_depth(&self) -> Result<usize, WebhookError> {
        Ok(list_names(&self.dead)?
            .iter()
            .filter(|n| is_entry(n))
            .count())
    }

    pub fn dead_dir(&self) -> &Path {
        &self.dead
    }

    /// Read a pending entry.
    pub fn read(&self, path: &Path) -> Result<Envelope, WebhookError> {
        let bytes = fs::read(path).map_err(|e| WebhookError::io(path, "read", e))?;
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| WebhookError::Envelope {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if env.format != ENVELOPE_FORMAT {
            return Err(WebhookError::Envelope {
                path: path.to_path_buf(),
                reason: format!("format {:?}, expected {ENVELOPE_FORMAT:?}", env.format),
            });
        }
        Ok(env)
    }

    /// The endpoint accepted it: remove it (already gone is fine).
    pub fn complete(&self, path: &Path) -> Result<(), WebhookError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(WebhookError::io(path, "remove delivered entry", e)),
        }
        self.publish_depth();
        sync_dir(&self.dir)
    }

    /// The endpoint refused it: write why beside it in `dead/`, then move it there.
    pub fn bury(&self, path: &Path, record: &DeadRecord) -> Result<PathBuf, WebhookError> {
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| WebhookError::Envelope {
                    path: path.to_path_buf(),
                    reason: "no file name".to_owned(),
                })?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| WebhookError::Encode {
            ticket_id: name.to_owned(),
            source,
        })?;
        write_atomic(&self.dead, &format!("{name}{RESPONSE_SUFFIX}"), &bytes)?;
        let target = self.dead.join(name);
        fs::rename(path, &target).map_err(|e| WebhookError::io(path, "move to dead/", e))?;
        sync_dir(&self.dead)?;
        sync_dir(&self.dir)?;
        self.publish_depth();
        Ok(target)
    }
}

fn is_entry(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && !name.ends_with(RESPONSE_SUFFIX)
}

/// Ticket ids are `[a-z0-9-]`; anything else is replaced so a name never leaves the directory.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}

fn list_names(dir: &Path) -> Result<Vec<String>, WebhookError> {
    let rd = fs::read_dir(dir).map_err(|e| WebhookError::io(dir, "list", e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| WebhookError::io(dir, "list", e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), WebhookError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WebhookError::io(dir, "fsync directory", e))
}

/// Write `bytes` to `dir/name` so that the file is either absent or complete, even across a
/// crash: write a temporary file, fsync it, rename it into place, fsync the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, WebhookError> {
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let target = dir.join(name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| WebhookError::io(&tmp, "write", e))
        .and_then(|()| {
            fs::rename(&tmp, &target).map_err(|e| WebhookError::io(&target, "rename", e))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str, v: u32) -> Envelope {
        Envelope {
            format: ENVELOPE_FORMAT.to_owned(),
            ticket_id: id.to_owned(),
            version: v,
            idempotency_key: format!("{id}:v{v}"),
            enqueued_at: "2026-01-01T00:00:00Z".to_owned(),
            body: "{}".to_owned(),
        }
    }

    #[test]
    fn webhook_outbox_orders_survives_reopen_and_buries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ob = Outbox::open(dir.path()).expect("open");
        let a = ob.enqueue(&env("am-a", 1)).expect("a");
        let b = ob.enqueue(&env("am-b", 1)).expect("b");
        let c = ob.enqueue(&env("am-a", 2)).expect("c");
        assert_eq!(
            ob.pending().expect("pending"),
            vec![a.clone(), b.clone(), c.clone()]
        );
        // A crash left a temporary file: the next open removes it and it never counts.
        fs::write(dir.path().join(".tmp-x.json"), b"partial").expect("tmp");
        let err = Outbox::open(dir.path()).expect_err("locked");
        assert!(err.to_string().contains("another agent-monitor"), "{err}");
        drop(ob);
        let ob = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(ob.depth().expect("depth"), 3);
        assert!(!dir.path().join(".tmp-x.json").exists());
        assert_eq!(ob.read(&b).expect("read"), env("am-b", 1));
        ob.complete(&a).expect("complete");
        ob.complete(&a).expect("complete twice is fine");
        let rec = DeadRecord {
            url: "http://x".to_owned(),
            status: Some(400),
            response: "bad".to_owned(),
            reason: "HTTP 400".to_owned(),
            attempts: 1,
            at: "now".to_owned(),
        };
        let dead = ob.bury(&b, &rec).expect("bury");
        assert_eq!(ob.pending().expect("pending"), vec![c]);
        assert_eq!(ob.dead_depth().expect("dead"), 1);
        assert!(dead.exists());
        let resp =
            fs::read_to_string(format!("{}{RESPONSE_SUFFIX}", dead.display())).expect("resp");
        assert!(resp.contains("\"status\": 400"), "{resp}");
    }
}
