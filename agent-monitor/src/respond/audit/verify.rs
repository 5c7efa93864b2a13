//! Verification of a whole log: every line parses, `seq` is consecutive from 1, `prev` chains,
//! the key id is trusted and the signature verifies. The first failing entry is named.

use std::{
    fmt,
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use super::{
    entry::{self, EntryBody, GENESIS_PREV},
    error::AuditError,
    keys::KeyRing,
};

/// Why an entry does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The file could not be read.
    Read(String),
    /// The last line has no final newline: truncated, or a write was interrupted.
    Incomplete,
    /// The line is empty.
    EmptyLine,
    /// The line does not end with a well-formed `sig` member.
    Sig(&'static str),
    /// The entry (without `sig`) is not the documented JSON object.
    Parse(String),
    /// A field has a wrong form.
    Field {
        field: &'static str,
        problem: String,
    },
    /// The entry was signed by a key that is not trusted.
    UnknownKey { key_id: String },
    /// The signature does not verify under the entry's key.
    BadSignature,
    /// `seq` is not the previous entry's plus one (1 for the first entry).
    Seq { expected: u64, found: u64 },
    /// `prev` is not the digest of the previous entry.
    Prev { expected: String, found: String },
    /// The log ends at another entry than the one expected (`--expect-seq`).
    HeadSeq { expected: u64, found: u64 },
    /// The log's head digest is not the one expected (`--expect-head`).
    HeadDigest { expected: String, found: String },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Read(e) => write!(f, "cannot read: {e}"),
            FailReason::Incomplete => f.write_str(
                "incomplete last line (no final newline): truncated or interrupted write",
            ),
            FailReason::EmptyLine => f.write_str("empty line"),
            FailReason::Sig(why) => f.write_str(why),
            FailReason::Parse(e) => write!(f, "not an audit entry: {e}"),
            FailReason::Field { field, problem } => write!(f, "field {field}: {problem}"),
            FailReason::UnknownKey { key_id } => write!(f, "signed by unknown key id {key_id}"),
            FailReason::BadSignature => f.write_str("signature does not verify"),
            FailReason::Seq { expected, found } => {
                write!(
                    f,
                    "seq {found}, expected {expected} (entry missing, added or moved)"
                )
            }
            FailReason::Prev { expected, found } => write!(
                f,
                "prev {found} is not the previous entry's digest {expected} (entry changed, missing \
                 or moved)"
            ),
            FailReason::HeadSeq { expected, found } => write!(
                f,
                "log ends at seq {found}, expected {expected} (entries removed from the end, or \
                 added)"
            ),
            FailReason::HeadDigest { expected, found } => {
                write!(f, "head digest {found}, expected {expected}")
            }
        }
    }
}

/// The first entry that failed: 1-based line, its seq when it could be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct VerifyFailure {
    pub line: u64,
    pub seq: Option<u64>,
    pub reason: FailReason,
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of entries (0 for an empty file).
    pub entries: u64,
    /// Seq of the last entry (0 for an empty file).
    pub head_seq: u64,
    /// SHA-256 of the last entry's canonical bytes (the next entry's `prev`).
    pub head_digest: String,
    /// Entries per key id.
    pub keys: Vec<(String, u64)>,
}

/// External anchors the head must match.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub seq: Option<u64>,
    pub head: Option<String>,
}

/// One entry that verified on its own (signature, form); the chain is checked by the caller.
#[derive(Debug, Clone)]
pub struct Checked {
    pub body: EntryBody,
    /// SHA-256 hex of the canonical bytes.
    pub digest: String,
}

/// Checks one line (without its `\n`): form, trusted key, signature.
pub fn check_line(line: &[u8], keys: &KeyRing) -> Result<Checked, (Option<u64>, FailReason)> {
    if line.is_empty() {
        return Err((None, FailReason::EmptyLine));
    }
    let (canonical, sig) = entry::split(line).map_err(|why| (None, FailReason::Sig(why)))?;
    let body: EntryBody =
        serde_json::from_slice(&canonical).map_err(|e| (None, FailReason::Parse(e.to_string())))?;
    let seq = Some(body.seq);
    let field = |field, problem: &str| {
        (
            seq,
            FailReason::Field {
                field,
                problem: problem.into(),
            },
        )
    };
    if !is_lower_hex(&body.prev, 64) {
        return Err(field("prev", "not 64 lowercase hex digits"));
    }
    if !body.data.is_object() {
        return Err(field("data", "not a JSON object"));
    }
    if humantime::parse_rfc3339(&body.ts).is_err() {
        return Err(field("ts", "not an RFC 3339 UTC time"));
    }
    match keys.verify(&body.key_id, &canonical, &sig) {
        None => Err((
            seq,
            FailReason::UnknownKey {
                key_id: body.key_id.clone(),
            },
        )),
        Some(false) => Err((seq, FailReason::BadSignature)),
        Some(true) => Ok(Checked {
            digest: entry::digest(&canonical),
            body,
        }),
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Chain state while reading a log line by line: feed every line with its `\n` to
/// [`Verifier::push`], then call [`Verifier::finish`]. Cloning it after a line gives the state to
/// resume from there.
#[derive(Debug, Clone)]
pub struct Verifier<'k> {
    keys: &'k KeyRing,
    line: u64,
    head_seq: u64,
    prev: String,
    per_key: Vec<(String, u64)>,
}

impl<'k> Verifier<'k> {
    pub fn new(keys: &'k KeyRing) -> Self {
        Verifier {
            keys,
            line: 0,
            head_seq: 0,
            prev: GENESIS_PREV.to_owned(),
            per_key: Vec::new(),
        }
    }

    /// Checks the next line (with its final `\n`, which only the last line of a torn file lacks)
    /// and returns its entry.
    pub fn push(&mut self, raw: &[u8]) -> Result<EntryBody, VerifyFailure> {
        self.line += 1;
        let line_no = self.line;
        let fail = |seq, reason| VerifyFailure {
            line: line_no,
            seq,
            reason,
        };
        let Some(line) = raw.strip_suffix(b"\n") else {
            return Err(fail(None, FailReason::Incomplete));
        };
        let checked = check_line(line, self.keys).map_err(|(seq, r)| fail(seq, r))?;
        let seq = checked.body.seq;
        if seq != self.head_seq + 1 {
            return Err(fail(
                Some(seq),
                FailReason::Seq {
                    expected: self.head_seq + 1,
                    found: seq,
                },
            ));
        }
        if checked.body.prev != self.prev {
            return Err(fail(
                Some(seq),
                FailReason::Prev {
                    expected: self.prev.clone(),
                    found: checked.body.prev,
                },
            ));
        }
        let key_id = &checked.body.key_id;
        match self.per_key.iter_mut().find(|(k, _)| k == key_id) {
            Some((_, n)) => *n += 1,
            None => self.per_key.push((key_id.clone(), 1)),
        }
        self.head_seq = seq;
        self.prev = checked.digest;
        Ok(checked.body)
    }

    /// The verdict once every line was pushed, checked against the external anchors.
    pub fn finish(self, expect: &Expect) -> Result<VerifyReport, VerifyFailure> {
        let head = |reason| VerifyFailure {
            line: self.line,
            seq: Some(self.head_seq),
            reason,
        };
        if let Some(expected) = expect.seq
            && expected != self.head_seq
        {
            return Err(head(FailReason::HeadSeq {
                expected,
                found: self.head_seq,
            }));
        }
        if let Some(expected) = &expect.head
            && !expected.eq_ignore_ascii_case(&self.prev)
        {
            return Err(head(FailReason::HeadDigest {
                expected: expected.clone(),
                found: self.prev.clone(),
            }));
        }
        Ok(VerifyReport {
            entries: self.line,
            head_seq: self.head_seq,
            head_digest: self.prev,
            keys: self.per_key,
        })
    }
}

/// Verifies a log read from `input`.
pub fn verify_reader<R: BufRead>(
    mut input: R,
    keys: &KeyRing,
    expect: &Expect,
) -> Result<VerifyReport, VerifyFailure> {
    let mut verifier = Verifier::new(keys);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| VerifyFailure {
                line: verifier.line + 1,
                seq: None,
                reason: FailReason::Read(e.to_string()),
            })?;
        if n == 0 {
            return verifier.finish(expect);
        }
        verifier.push(&buf)?;
    }
}

/// Verifies the log file at `path`. The outer error is the file not opening; the inner result is
/// the verdict.
pub fn verify_file(
    path: &Path,
    keys: &KeyRing,
    expect: &Expect,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let f = File::open(path).map_err(|e| AuditError::io(path, "open", e))?;
    Ok(verify_reader(BufReader::new(f), keys, expect))
}
