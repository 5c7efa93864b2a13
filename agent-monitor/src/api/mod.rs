//! The control API (gRPC, `proto/agent_monitor/v1/api.proto`): list the agents with their class,
//! state and tier, watch findings, decisions and releases, read an agent's recent events from
//! the flight recorder, and approve a release. Served on a Unix socket (callers known by their
//! peer uid) and optionally on TCP with mutual TLS (callers known by their client certificate);
//! each call needs a configured principal holding the call's role. docs/API.md has the details.
//!
//! - [`config`]: the `api` configuration key;
//! - [`auth`]: callers, principals, roles, refusals (logged and audited);
//! - [`hub`]: what the pipeline publishes for the API (a response sink);
//! - [`server`]: listeners, TLS, the server thread; `service`: the calls.

pub mod auth;
pub mod config;
pub mod convert;
pub mod hub;
pub mod server;
mod service;
mod tls;
mod unix;

use std::{net::SocketAddr, path::PathBuf};

pub use config::{ApiConfig, PrincipalConfig, Role, TcpConfig};
pub use hub::{ApiSink, Hub};
pub use server::{ApiContext, ApiServer, start};

/// Code generated from the protobuf by tonic-prost-build.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("agent_monitor.v1");
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("api socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },
    #[error("api tcp listen {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("api tls {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("api audit log: {0}")]
    Audit(#[from] crate::respond::audit::AuditError),
    #[error("api: {0}")]
    Runtime(String),
}
