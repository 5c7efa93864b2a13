//! `agent-monitor ctl`: the control API's client. Talks to the daemon's Unix socket, or to its
//! TCP endpoint with a client certificate; prints tables for people and `--json` for scripts.

mod connect;
mod show;

use std::{path::PathBuf, process::ExitCode};

use agent_monitor::api::{config::DEFAULT_SOCKET, pb};
use anyhow::Context as _;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The daemon's Unix socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// TCP endpoint with mutual TLS instead of the socket, e.g. https://node-1.example:9751.
    #[arg(long)]
    endpoint: Option<String>,
    /// Client certificate (PEM) for --endpoint.
    #[arg(long, requires = "endpoint", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for --endpoint.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// CA certificate (PEM) the server's certificate must chain to, for --endpoint.
    #[arg(long, requires = "endpoint")]
    ca: Option<PathBuf>,
    /// Name to verify in the server's certificate, when not the endpoint's host.
    #[arg(long, requires = "endpoint")]
    server_name: Option<String>,
    /// JSON output: one object per agent, item or event per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(clap::Subcommand)]
enum CtlCommand {
    /// The monitored agents: class, state, tier, approvals towards a release.
    Agents,
    /// Follow findings, decisions (with their actions) and releases as they happen.
    Watch {
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
    },
    /// An agent's recent events, from the daemon's flight recorder (oldest first).
    Events {
        agent: String,
        /// How many of the newest events (0: all the recorder holds).
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// Approve releasing an agent (a containment needs two different principals).
    Release {
        agent: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Who the daemon takes you for, and your roles.
    Whoami,
}

pub async fn run(args: &CtlArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect::client(args).await?;
    let call = |e: tonic::Status| anyhow::anyhow!("{:?}: {}", e.code(), e.message());
    match &args.command {
        CtlCommand::Agents => {
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(call)?
                .into_inner()
                .agents;
            show::agents(&agents, args.json);
        }
        CtlCommand::Watch { agent } => {
            let mut stream = client
                .watch(pb::WatchRequest {
                    agent_id: agent.clone().unwrap_or_default(),
                })
                .await
                .map_err(call)?
                .into_inner();
            // The daemon answered: from here on nothing it publishes is missed.
            eprintln!(
                "watching {} (interrupt to stop)",
                agent.as_deref().unwrap_or("every agent")
            );
            while let Some(item) = stream.message().await.map_err(call)? {
                if let Some(event) = &item.event {
                    show::watch_event(event, args.json);
                }
            }
        }
        CtlCommand::Events { agent, last } => {
            let events = client
                .recent_events(pb::RecentEventsRequest {
                    agent_id: agent.clone(),
                    last: *last,
                })
                .await
                .map_err(call)?
                .into_inner()
                .events;
            show::events(&events, args.json);
        }
        CtlCommand::Release { agent, reason } => {
            let resp = client
                .release(pb::ReleaseRequest {
                    agent_id: agent.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(call)?
                .into_inner();
            return show::release(&resp, args.json);
        }
        CtlCommand::Whoami => {
            let me = client
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(call)?
                .into_inner();
            show::whoami(&me, args.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a PEM file for the TLS client.
fn read_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
