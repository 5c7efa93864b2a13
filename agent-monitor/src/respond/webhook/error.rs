//! Errors of the webhook sink, each with the file or URL it concerns.

use std::path::PathBuf;

/// What went wrong while configuring the webhook, writing a ticket to the outbox or delivering it.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook configuration: {0}")]
    Config(String),

    #[error("signing key {path}: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("signing key {path}: {reason}")]
    KeyInvalid { path: PathBuf, reason: String },

    #[error("outbox {path}: {op}: {source}")]
    Outbox {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("outbox entry {path}: {reason}")]
    Envelope { path: PathBuf, reason: String },

    #[error("ticket {ticket_id}: encoding to JSON: {source}")]
    Encode {
        ticket_id: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("submit: no findings")]
    NoFindings,

    #[error(
        "submit: findings of more than one agent ({first} and {other}): submit one agent at a time"
    )]
    MixedAgents { first: String, other: String },

    #[error("delivery worker: {0}")]
    Worker(String),
}

impl WebhookError {
    /// An I/O error on an outbox path, with the operation that failed.
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Self::Outbox {
            path: path.into(),
            op,
            source,
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error("timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "timestamp {ts} is {age_secs} s away from now, more than the {tolerance_secs} s allowed"
    )]
    Stale {
        ts: u64,
        age_secs: u64,
        tolerance_secs: u64,
    },
    #[error("the verification key cannot key HMAC-SHA256")]
    Key,
    #[error("signature does not match the body and timestamp")]
    Mismatch,
}
