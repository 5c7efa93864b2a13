//! The daemon's state directory, shared with the CLI: which tier each agent is in (written by the
//! daemon on every decision) and release approvals and requests (written by `agent-monitor
//! release`, carried out by the daemon, which holds the actuators).
//!
//! Layout under `state_dir`: `agents/<agent>.json` (target, tier, since), `approvals/<agent>.json`
//! (approvers so far), `releases/<agent>.json` (a release the daemon must carry out) and
//! `released/<agent>.json` (its result). Files are written to a temporary name and renamed, so a
//! reader never sees half a file.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::actuator::{ActionOutcome, Target};
use crate::detect::Tier;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub target: Target,
    pub tier: Option<Tier>,
    /// RFC 3339.
    pub since: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Approvals {
    pub approvers: BTreeSet<String>,
    pub reason: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub agent_id: String,
    pub approvers: Vec<String>,
    pub requested: String,
    /// The approvers' reasons (`<approver>: <reason>`), for the SOC ticket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseResult {
    pub request: ReleaseRequest,
    pub actions: Vec<ActionOutcome>,
    pub done: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("agent id {0:?} cannot name a state file")]
    BadAgent(String),
}

pub struct StateDir {
    root: PathBuf,
}

/// Holds [`StateDir::lock`]; unlocks when dropped.
pub struct StateLock(std::fs::File);

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, kind: &str, agent: &str) -> Result<PathBuf, StateError> {
        // Agent ids come from cgroup directory names, pod labels and config; never let one
        // escape the dir. A '/' (the Kubernetes default id `<namespace>/<pod>`) is escaped.
        if agent.is_empty() || agent.starts_with('.') {
            return Err(StateError::BadAgent(agent.to_owned()));
        }
        let name = agent.replace('%', "%25").replace('/', "%2F");
        Ok(self.root.join(kind).join(format!("{name}.json")))
    }

    fn create_root(&self) -> Result<(), StateError> {
        if !self.root.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            // Approvals live here: only root may write them.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|source| StateError::Io {
                    path: self.root.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Takes the directory's exclusive lock (`.lock`, a `flock`) until the guard is dropped:
    /// approvals are read, counted and written by the CLI and the API, and two approvers at
    /// the same moment must not lose one another's approval.
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.create_root()?;
        let path = self.root.join(".lock");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(StateLock(file))
    }

    fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        self.create_root()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Json {
            path: path.to_owned(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Json {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn write_agent(&self, record: &AgentRecord) -> Result<(), StateError> {
        self.write(&self.file("agents", &record.target.agent_id)?, record)
    }

    pub fn agent(&self, agent: &str) -> Result<Option<AgentRecord>, StateError> {
        self.read(&self.file("agents", agent)?)
    }

    /// The approvals recorded so far for the agent's next release.
    pub fn approvals(&self, agent: &str) -> Result<Approvals, StateError> {
        Ok(self
            .read(&self.file("approvals", agent)?)?
            .unwrap_or_default())
    }

    /// Records one approval; returns every distinct approver so far.
    pub fn approve(
        &self,
        agent: &str,
        approver: &str,
        reason: &str,
    ) -> Result<Approvals, StateError> {
        let path = self.file("approvals", agent)?;
        let mut a: Approvals = self.read(&path)?.unwrap_or_default();
        a.approvers.insert(approver.to_owned());
        if !reason.is_empty() {
            a.reason.push(format!("{approver}: {reason}"));
        }
        self.write(&path, &a)?;
        Ok(a)
    }

    pub fn request_release(&self, request: &ReleaseRequest) -> Result<(), StateError> {
        let _ = std::fs::remove_file(self.file("released", &request.agent_id)?);
        self.write(&self.file("releases", &request.agent_id)?, request)
    }

    /// Release requests waiting for the daemon.
    pub fn pending_releases(&self) -> Vec<ReleaseRequest> {
        let Ok(entries) = std::fs::read_dir(self.root.join("releases")) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| match self.read::<ReleaseRequest>(&e.path()) {
                Ok(r) => r,
                Err(err) => {
                    log::error!("release request ignored: {err}");
                    None
                }
            })
            .collect()
    }

    /// The daemon carried out a release: record the result, clear the request and approvals.
    pub fn complete_release(&self, result: &ReleaseResult) -> Result<(), StateError> {
        let agent = &result.request.agent_id;
        self.write(&self.file("released", agent)?, result)?;
        for kind in ["releases", "approvals"] {
            let _ = std::fs::remove_file(self.file(kind, agent)?);
        }
        Ok(())
    }

    pub fn release_result(&self, agent: &str) -> Result<Option<ReleaseResult>, StateError> {
        self.read(&self.file("released", agent)?)
    }
}

/// Keeps `agents/<agent>.json` current for the CLI.
pub struct StateSink(pub StateDir);

impl super::engine::ResponseSink for StateSink {
    fn name(&self) -> &'static str {
        "state"
    }

    fn on_response(&mut self, r: &super::engine::Response) -> anyhow::Result<()> {
        Ok(self.0.write_agent(&AgentRecord {
            target: r.target.clone(),
            tier: r.decision.to,
            since: now_rfc3339(),
        })?)
    }

    fn on_release(
        &mut self,
        target: &Target,
        _approvers: &[String],
        _actions: &[ActionOutcome],
    ) -> anyhow::Result<()> {
        Ok(self.0.write_agent(&AgentRecord {
            target: target.clone(),
            tier: None,
            since: now_rfc3339(),
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_count_distinct_people_and_requests_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(dir.path());
        assert_eq!(
            s.approve("fraud-1", "alice", "checked")
                .expect("ok")
                .approvers
                .len(),
            1
        );
        assert_eq!(
            s.approve("fraud-1", "alice", "")
                .expect("ok")
                .approvers
                .len(),
            1
        );
        assert_eq!(
            s.approve("fraud-1", "bob", "agreed")
                .expect("ok")
                .approvers
                .len(),
            2
        );
        let req = ReleaseRequest {
            agent_id: "fraud-1".into(),
            approvers: vec!["alice".into(), "bob".into()],
            requested: now_rfc3339(),
            reasons: vec![],
        };
        s.request_release(&req).expect("request");
        assert_eq!(s.pending_releases(), vec![req.clone()]);
        s.complete_release(&ReleaseResult {
            request: req,
            actions: vec![],
            done: now_rfc3339(),
        })
        .expect("complete");
        assert!(s.pending_releases().is_empty());
        assert!(s.release_result("fraud-1").expect("read").is_some());
        assert_eq!(
            s.approve("fraud-1", "carol", "")
                .expect("ok")
                .approvers
                .len(),
            1
        );
    }

    #[test]
    fn agent_ids_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(dir.path());
        assert!(matches!(
            s.approve("../etc", "x", ""),
            Err(StateError::BadAgent(_))
        ));
        // A pod's default agent id stays one file in the directory.
        s.approve("agents/fraud-7d9", "alice", "").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("approvals"))
                .unwrap()
                .count(),
            1
        );
        assert!(
            dir.path()
                .join("approvals/agents%2Ffraud-7d9.json")
                .is_file()
        );
    }
}
