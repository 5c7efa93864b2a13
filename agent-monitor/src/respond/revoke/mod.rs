//! Token revocation: revokes the credentials an agent holds, OAuth 2.0 tokens at their
//! authorization server (RFC 7009) and HashiCorp Vault leases, so that a compromised agent's
//! valid credentials stop being valid.
//!
//! Revocation is idempotent at the source (RFC 7009 answers 200 for a token that is already
//! invalid; Vault answers 204 for a lease that is already gone), so running it twice is safe.
//! It cannot be undone: every record says what must be re-issued.

mod http;
mod oauth;
mod secret;
mod vault;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use secret::{Secret, read_secret_file};

/// Revocation configuration: which credentials each agent holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeConfig {
    /// Time allowed for one HTTP call, connection included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Tries per credential when the failure is retriable (5xx, 429, unreachable).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Pause between tries.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Agent id -> its credentials.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentCredentials>,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_attempts() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    500
}

impl Default for RevokeConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            agents: BTreeMap::new(),
        }
    }
}

/// The credentials of one agent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCredentials {
    #[serde(default)]
    pub oauth: Vec<OAuthToken>,
    #[serde(default)]
    pub vault: Vec<VaultLeases>,
}

/// One OAuth 2.0 token and the authorization server that revokes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthToken {
    /// The server's revocation endpoint (https; plain http only to a loopback address).
    pub endpoint: String,
    /// The client the token was issued to (HTTP Basic client authentication).
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: PathBuf,
    /// The token itself; prefer `token_file`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token (read at revocation time, so a rotated token is the one revoked).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `access_token` or `refresh_token` (RFC 7009 section 2.1); optional.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Vault leases of one agent.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultLeases {
    /// Vault address, e.g. `https://vault.internal:8200`.
    pub address: String,
    /// File holding a Vault token allowed to revoke these leases.
    pub token_file: PathBuf,
    /// Vault Enterprise namespace (`X-Vault-Namespace`); optional.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Lease ids to revoke one by one.
    #[serde(default)]
    pub lease_ids: Vec<String>,
    /// Revoke every lease under this prefix (e.g. `database/creds/fraud-1/`).
    #[serde(default)]
    pub lease_prefix: Option<String>,
}

/// What one revocation did. One record per credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRecord {
    /// `revoke_oauth_token`, `revoke_vault_lease`, `revoke_vault_lease_prefix`, or `revoke`
    /// (nothing configured for the agent).
    pub action: String,
    pub agent: String,
    /// What was revoked: never a secret (an OAuth token is named by a SHA-256 fingerprint).
    pub target: String,
    pub ok: bool,
    /// The failure may pass if tried again (server 5xx or 429, unreachable, timeout).
    pub retriable: bool,
    pub attempts: u32,
    /// Last HTTP status received, if any.
    pub status: Option<u16>,
    pub detail: String,
    /// Revocation cannot be undone: what must be re-issued.
    pub undo: String,
}

/// Why one revocation failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("reading {what} from {path}: {source}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("HTTP {status} from {url}: {body}{}", retry_after.as_ref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    #[error("{url}: {source}")]
    Transport { url: String, source: ureq::Error },
}

impl RevokeError {
    /// Whether trying again may succeed.
    pub fn retriable(&self) -> bool {
        match self {
            RevokeError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            RevokeError::Transport { source, .. } => matches!(
                source,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_)
            ),
            RevokeError::ReadSecret { .. }
            | RevokeError::Config(_)
            | RevokeError::BadUrl { .. } => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            RevokeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Outcome of one successful call: status and a note for the record.
struct Done {
    status: u16,
    note: String,
}

/// Revokes the credentials configured for agents.
pub struct Revoker {
    config: RevokeConfig,
    http: ureq::Agent,
}

impl Revoker {
    pub fn new(config: RevokeConfig) -> Self {
        let http = http::agent(Duration::from_millis(config.timeout_ms));
        Self { config, http }
    }

    pub fn config(&self) -> &RevokeConfig {
        &self.config
    }

    /// Revokes every credential configured for `agent_id`; one record per credential, in
    /// configuration order. Failures are in the records, never a panic.
    pub fn revoke_agent(&self, agent_id: &str) -> Vec<RevokeRecord> {
        let Some(creds) = self.config.agents.get(agent_id) else {
            return vec![RevokeRecord {
                action: "revoke".into(),
                agent: agent_id.into(),
                target: "(none)".into(),
                ok: false,
                retriable: false,
                attempts: 0,
                status: None,
                detail: "no credentials configured for this agent".into(),
                undo: "nothing was revoked".into(),
            }];
        };
        let mut records = Vec::new();
        for token in &creds.oauth {
            records.push(self.run(agent_id, &oauth::Job::new(token)));
        }
        for leases in &creds.vault {
            for lease_id in &leases.lease_ids {
                records.push(self.run(agent_id, &vault::Job::lease(leases, lease_id)));
            }
            if let Some(prefix) = &leases.lease_prefix {
                records.push(self.run(agent_id, &vault::Job::prefix(leases, prefix)));
            }
            if leases.lease_ids.is_empty() && leases.lease_prefix.is_none() {
                records.push(RevokeRecord {
                    action: "revoke_vault_lease".into(),
                    agent: agent_id.into(),
                    target: leases.address.clone(),
                    ok: false,
                    retriable: false,
                    attempts: 0,
                    status: None,
                    detail: "vault entry has neither lease_ids nor lease_prefix".into(),
                    undo: "nothing was revoked".into(),
                });
            }
        }
        records
    }

    /// Runs one job with retries on retriable failures.
    fn run(&self, agent_id: &str, job: &dyn Job) -> RevokeRecord {
        let attempts = self.config.attempts.max(1);
        let mut tried = 0;
        let result = loop {
            tried += 1;
            let result = job.send(&self.http);
            match &result {
                Err(e) if e.retriable() && tried < attempts => {
                    log::warn!(
                        "{} for agent {agent_id} failed (try {tried} of {attempts}): {e}",
                        job.action()
                    );
                    std::thread::sleep(Duration::from_millis(self.config.backoff_ms));
                }
                _ => break result,
            }
        };
        let (ok, retriable, status, detail) = match result {
            Ok(done) => (true, false, Some(done.status), done.note),
            Err(e) => (false, e.retriable(), e.status(), e.to_string()),
        };
        if ok {
            log::info!("{} for agent {agent_id}: {}", job.action(), job.target());
        } else {
            log::warn!(
                "{} for agent {agent_id} failed: {}: {detail}",
                job.action(),
                job.target()
            );
        }
        RevokeRecord {
            action: job.action().into(),
            agent: agent_id.into(),
            target: job.target(),
            ok,
            retriable,
            attempts: tried,
            status,
            detail,
            undo: job.undo(),
        }
    }
}

/// One revocation call.
trait Job {
    fn action(&self) -> &'static str;
    fn target(&self) -> String;
    fn undo(&self) -> String;
    /// Reads the secrets it needs and makes the call. Errors never hold a secret: server
    /// replies quoted in them are scrubbed of the secrets sent.
    fn send(&self, http: &ureq::Agent) -> Result<Done, RevokeError>;
}
