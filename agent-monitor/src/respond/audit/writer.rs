//! The writer: appends signed, chained entries to a log file that the daemon and CLI commands
//! (release, approval) may share. Each append takes an exclusive `flock` on the file, re-reads the
//! tail if another writer appended since, writes one line with `O_APPEND` and `fsync`s it.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Deserialize;
use serde_json::Value;

use super::{
    entry::{self, EntryBody, GENESIS_PREV, Kind},
    error::{AuditError, JsonKind},
    keys::{KeyRing, Signer},
    token::Tokenizer,
    verify::{FailReason, check_line},
};

/// Where the log and its keys are (paths come from the configuration, never built in).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file (created with mode 0600 if missing).
    pub path: PathBuf,
    /// Ed25519 signing key file (64 hex digits of the seed).
    pub signing_key: PathBuf,
    /// HMAC-SHA256 token key file (64 hex digits).
    pub token_key: PathBuf,
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    signer: Signer,
    own_key: KeyRing,
    tokenizer: Tokenizer,
    /// Seq of the last entry in the file (0 when empty).
    head_seq: u64,
    /// Digest of the last entry ([`GENESIS_PREV`] when empty).
    head_digest: String,
    /// File length when the head was last read or written; another length means another writer.
    known_len: u64,
}

/// Unlocks the file when dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl AuditLog {
    /// Opens (creating if missing) the log at `path` and reads its last entry to continue `seq`
    /// and `prev`. Refuses a log whose last entry does not verify under `signer`'s key (an
    /// incomplete last line, a changed entry, or another key: a new key starts a new file).
    pub fn open(path: &Path, signer: Signer, tokenizer: Tokenizer) -> Result<Self, AuditError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| AuditError::io(path, "open", e))?;
        if !existed {
            sync_parent(path);
        }
        let mut own_key = KeyRing::default();
        own_key.add(signer.verifying_key());
        let mut log = AuditLog {
            path: path.to_owned(),
            file,
            signer,
            own_key,
            tokenizer,
            head_seq: 0,
            head_digest: GENESIS_PREV.to_owned(),
            known_len: u64::MAX,
        };
        let file = log
            .file
            .try_clone()
            .map_err(|e| AuditError::io(path, "dup", e))?;
        let _lock = lock(&file, path)?;
        log.refresh()?;
        Ok(log)
    }

    /// Opens the log and loads the keys named by `config`.
    pub fn from_config(config: &AuditConfig) -> Result<Self, AuditError> {
        let signer = Signer::load(&config.signing_key)?;
        let tokenizer = Tokenizer::load(&config.token_key)?;
        AuditLog::open(&config.path, signer, tokenizer)
    }

    /// Appends one entry and returns its seq once it is on disk. `agent` is tokenised; `data`
    /// must be a JSON object (tokenise personal identifiers in it with [`AuditLog::token`]).
    pub fn append(
        &mut self,
        kind: Kind,
        agent: Option<&str>,
        class: Option<&str>,
        data: Value,
    ) -> Result<u64, AuditError> {
        if !data.is_object() {
            return Err(AuditError::DataNotObject {
                path: self.path.clone(),
                found: JsonKind::of(&data),
            });
        }
        let file = self
            .file
            .try_clone()
            .map_err(|e| AuditError::io(&self.path, "dup", e))?;
        let _lock = lock(&file, &self.path)?;
        self.refresh()?;
        let body = EntryBody {
            seq: self.head_seq + 1,
            ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            kind: kind.as_str().to_owned(),
            agent: agent.map(|a| self.tokenizer.token(a)),
            class: class.map(str::to_owned),
            data,
            prev: self.head_digest.clone(),
            key_id: self.signer.key_id().to_owned(),
        };
        let canonical = body.canonical();
        let line = entry::line(&canonical, &self.signer.sign(&canonical));
        // Until the write is known to be complete, the next append re-reads the tail.
        self.known_len = u64::MAX;
        (&file)
            .write_all(&line)
            .map_err(|e| AuditError::io(&self.path, "append", e))?;
        file.sync_all()
            .map_err(|e| AuditError::io(&self.path, "fsync", e))?;
        let len = file
            .metadata()
            .map_err(|e| AuditError::io(&self.path, "stat", e))?
            .len();
        self.head_seq = body.seq;
        self.head_digest = entry::digest(&canonical);
        self.known_len = len;
        Ok(body.seq)
    }

    /// The token of a personal identifier, for use inside `data`.
    pub fn token(&self, id: &str) -> String {
        self.tokenizer.token(id)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Seq and digest of the last entry this handle has seen (0 and zeros for an empty log):
    /// what to anchor outside the log (e.g. in the SOC ticket).
    pub fn head(&self) -> (u64, &str) {
        (self.head_seq, &self.head_digest)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key_id(&self) -> &str {
        self.signer.key_id()
    }

    /// Re-reads and checks the last entry if the file changed since this handle last saw it.
    /// Called with the lock held.
    fn refresh(&mut self) -> Result<(), AuditError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| AuditError::io(&self.path, "stat", e))?
            .len();
        if len == self.known_len {
            return Ok(());
        }
        let tail = read_tail(&self.file, len).map_err(|e| AuditError::io(&self.path, "read", e))?;
        let (start, line) = match tail {
            Tail::Empty => {
                self.head_seq = 0;
                self.head_digest = GENESIS_PREV.to_owned();
                self.known_len = 0;
                return Ok(());
            }
            Tail::Incomplete(start) => return Err(self.tail_error(start, FailReason::Incomplete)),
            Tail::Line(start, line) => (start, line),
        };
        let checked =
            check_line(&line, &self.own_key).map_err(|(_, r)| self.tail_error(start, r))?;
        if checked.body.seq == 0 {
            let r = FailReason::Seq {
                expected: 1,
                found: 0,
            };
            return Err(self.tail_error(start, r));
        }
        self.head_seq = checked.body.seq;
        self.head_digest = checked.digest;
        self.known_len = len;
        Ok(())
    }

    fn tail_error(&self, line_start: u64, reason: FailReason) -> AuditError {
        AuditError::Tail {
            path: self.path.clone(),
            line: count_newlines(&self.file, line_start).map_or(0, |n| n + 1),
            reason,
        }
    }
}

fn lock<'a>(file: &'a File, path: &Path) -> Result<Locked<'a>, AuditError> {
    file.lock().map_err(|e| AuditError::io(path, "flock", e))?;
    Ok(Locked(file))
}

fn sync_parent(path: &Path) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

enum Tail {
    Empty,
    /// The file does not end with a newline; the offset where its last line starts.
    Incomplete(u64),
    /// Offset and bytes (without `\n`) of the last line.
    Line(u64, Vec<u8>),
}

const CHUNK: u64 = 4096;

/// The last line of a file of length `len`, read backwards in chunks.
fn read_tail(file: &File, len: u64) -> std::io::Result<Tail> {
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    let end = if last[0] == b'\n' { len - 1 } else { len };
    let mut start = 0;
    let mut pos = end;
    let mut chunk = vec![0u8; usize::try_from(CHUNK).unwrap_or(4096)];
    while pos > 0 {
        let from = pos.saturating_sub(CHUNK);
        let n = usize::try_from(pos - from).unwrap_or(0);
        file.read_exact_at(&mut chunk[..n], from)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        pos = from;
    }
    if end == len {
        return Ok(Tail::Incomplete(start));
    }
    let mut line = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    file.read_exact_at(&mut line, start)?;
    Ok(Tail::Line(start, line))
}

/// Newlines before offset `upto` (the 0-based line number of a line starting there).
fn count_newlines(file: &File, upto: u64) -> std::io::Result<u64> {
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut pos, mut count) = (0u64, 0u64);
    while pos < upto {
        let want = usize::try_from((upto - pos).min(chunk.len() as u64)).unwrap_or(0);
        let n = file.read_at(&mut chunk[..want], pos)?;
        if n == 0 {
            break;
        }
        count += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        pos += n as u64;
    }
    Ok(count)
}
