//! The `agent_monitor.v1.AgentMonitor` service: each call authorises its caller first.

use std::{path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use tokio_stream::{Stream, StreamExt as _, wrappers::BroadcastStream};
use tonic::{Code, Request, Response, Status};

use super::{
    auth::{Auth, Principal},
    config::Role,
    convert,
    hub::{AgentEntry, Hub},
    pb::{self, agent_monitor_server::AgentMonitor},
};
use crate::respond::{
    approve::{self, ApproveError},
    flight::FlightRecorder,
    state::StateDir,
};

#[derive(Clone)]
pub struct Service {
    pub hub: Arc<Hub>,
    pub auth: Arc<Auth>,
    pub flight: Arc<FlightRecorder>,
    pub state_dir: PathBuf,
    pub release_wait: Duration,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// The agent's cgroup state: gone, frozen (`cgroup.events` says so) or monitored.
fn state(entry: &AgentEntry) -> pb::AgentState {
    if !entry.present {
        return pb::AgentState::Removed;
    }
    let frozen = entry.target.cgroup_path.as_ref().is_some_and(|dir| {
        std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
    });
    if frozen {
        pb::AgentState::Frozen
    } else {
        pb::AgentState::Monitored
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Service {
    fn agent_message(&self, state_dir: &StateDir, e: &AgentEntry) -> pb::Agent {
        let approvals = state_dir
            .approvals(&e.target.agent_id)
            .map(|a| a.approvers.len())
            .unwrap_or(0);
        pb::Agent {
            id: e.target.agent_id.to_string(),
            class: e.target.class.to_string(),
            state: state(e) as i32,
            tier: convert::tier(e.tier),
            tier_since: e.since.clone().unwrap_or_default(),
            cgroup_id: e.target.cgroup_id,
            cgroup_path: e
                .target
                .cgroup_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            approvals: count(if e.tier.is_some() { approvals } else { 0 }),
            approvals_needed: count(e.tier.map_or(0, approve::needed)),
        }
    }

    /// The principal's approval, then, with enough approvers, the daemon's release.
    async fn release_as(
        &self,
        who: &Principal,
        req: &pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, Status> {
        let state = StateDir::new(&self.state_dir);
        let outcome = {
            let mut audit = self
                .auth
                .audit
                .as_ref()
                .map(|a| a.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            approve::approve(
                &state,
                audit.as_deref_mut(),
                &req.agent_id,
                &who.name,
                &req.reason,
                true,
            )
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e @ ApproveError::Unknown { .. }) => return Err(Status::not_found(e.to_string())),
            Err(e) => {
                log::error!("api: release of {} by {}: {e}", req.agent_id, who.name);
                return Err(Status::internal(e.to_string()));
            }
        };
        let mut resp = pb::ReleaseResponse {
            agent_id: req.agent_id.clone(),
            status: pb::ReleaseStatus::NothingInForce as i32,
            tier: convert::tier(outcome.tier),
            approvals: count(outcome.approvers.len()),
            approvals_needed: count(outcome.needed),
            approvers: outcome.approvers.clone(),
            actions: vec![],
        };
        if outcome.tier.is_none() {
            return Ok(resp);
        }
        if outcome.repeated {
            return Err(self.auth.refuse(
                &who.caller,
                Some(&who.name),
                Some(&req.agent_id),
                "Release",
                Code::FailedPrecondition,
                "{principal} already approved releasing {agent}; another, different approver is \
                 needed",
            ));
        }
        if outcome.requested.is_none() {
            resp.status = pb::ReleaseStatus::ApprovalRecorded as i32;
            return Ok(resp);
        }
        log::warn!(
            "api: release of {} requested by {}",
            req.agent_id,
            outcome.approvers.join(" and ")
        );
        // The daemon's main loop carries requests out; wait for its result.
        let deadline = tokio::time::Instant::now() + self.release_wait;
        resp.status = pb::ReleaseStatus::Requested as i32;
        while tokio::time::Instant::now() < deadline {
            match state.release_result(&req.agent_id) {
                Ok(Some(result)) => {
                    resp.status = pb::ReleaseStatus::Released as i32;
                    resp.actions = result.actions.iter().map(convert::action).collect();
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        Ok(resp)
    }
}

#[tonic::async_trait]
impl AgentMonitor for Service {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.auth
            .authorize(&req, Some(Role::Viewer), "ListAgents")?;
        let state_dir = StateDir::new(&self.state_dir);
        let agents = self
            .hub
            .agents()
            .iter()
            .map(|e| self.agent_message(&state_dir, e))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.auth.authorize(&req, Some(Role::Viewer), "Watch")?;
        let only = req.into_inner().agent_id;
        let rx = self
            .hub
            .subscribe()
            .ok_or_else(|| Status::unavailable("the daemon is stopping"))?;
        let stream = BroadcastStream::new(rx).filter_map(move |item| match item {
            Ok(item) if only.is_empty() || item.agent_id == only => Some(Ok(pb::WatchEvent {
                event: Some(item.event.clone()),
            })),
            Ok(_) => None,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(pb::WatchEvent {
                    event: Some(pb::watch_event::Event::Lagged(n)),
                }))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn recent_events(
        &self,
        req: Request<pb::RecentEventsRequest>,
    ) -> Result<Response<pb::RecentEventsResponse>, Status> {
        self.auth
            .authorize(&req, Some(Role::Viewer), "RecentEvents")?;
        let req = req.into_inner();
        let n = match req.last {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let events = self.flight.last(&req.agent_id, n);
        if events.is_empty() && self.hub.agent(&req.agent_id).is_none() {
            return Err(Status::not_found(format!(
                "no agent {:?} and no recent events under that name",
                req.agent_id
            )));
        }
        Ok(Response::new(pb::RecentEventsResponse {
            agent_id: req.agent_id,
            events: events.iter().map(convert::event).collect(),
        }))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let who = self.auth.authorize(&req, Some(Role::Approver), "Release")?;
        let body = req.into_inner();
        self.release_as(&who, &body).await.map(Response::new)
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = self.auth.authorize(&req, None, "WhoAmI")?;
        Ok(Response::new(pb::WhoAmIResponse {
            principal: who.name,
            roles: who.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            identified_by: who.caller.to_string(),
        }))
    }
}
