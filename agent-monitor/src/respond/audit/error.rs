//! Errors of the audit log: every one names the file and, where there is one, the line.

use std::{fmt, io, path::PathBuf};

/// Why an audit key, log or append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be opened, read, written, locked or synced.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done ("open", "read", "append", "fsync", ...).
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// A key file is missing, unreadable or not in the documented format.
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// A key file that `keygen` would write already exists.
    #[error("{}: already exists, refusing to overwrite a key", path.display())]
    KeyExists { path: PathBuf },
    /// The log's last entry does not verify, so nothing is appended after it.
    #[error("{}:{line}: refusing to append: {reason}", path.display())]
    Tail {
        path: PathBuf,
        /// 1-based line of the entry that failed (0 when the file could not be split in lines).
        line: u64,
        reason: super::verify::FailReason,
    },
    /// The `data` of an entry must be a JSON object.
    #[error("{}: entry data must be a JSON object, not {found}", path.display())]
    DataNotObject { path: PathBuf, found: JsonKind },
    /// The system's random source failed (key generation).
    #[error("random source: {0}")]
    Random(String),
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn key(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        AuditError::KeyFile {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The 1-based line an error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            AuditError::Tail { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// The JSON type of a value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub fn of(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => JsonKind::Null,
            serde_json::Value::Bool(_) => JsonKind::Bool,
            serde_json::Value::Number(_) => JsonKind::Number,
            serde_json::Value::String(_) => JsonKind::String,
            serde_json::Value::Array(_) => JsonKind::Array,
            serde_json::Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}
