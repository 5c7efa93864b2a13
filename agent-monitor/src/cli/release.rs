//! `agent-monitor release <agent> --approver NAME`: lifts the responses in force for an agent.
//! A containment needs two distinct approvers (each runs the command once); a lower tier needs
//! one. The running daemon carries the release out (it holds the actuators) and records it.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use agent_monitor::{
    detect::Tier,
    respond::audit::{AuditLog, Kind},
    respond::state::{ReleaseRequest, StateDir, now_rfc3339},
};
use anyhow::bail;

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// The agent id.
    agent: String,
    /// Who approves (each approver runs the command once).
    #[arg(long)]
    approver: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    /// Configuration file (for state_dir; default: embedded).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How long to wait for the daemon to carry the release out.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    wait: Duration,
}

pub fn run(args: &ReleaseArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(p) => agent_monitor::config::Config::load(p)?,
        None => agent_monitor::config::Config::embedded(),
    };
    let state = StateDir::new(&config.state_dir);
    let Some(record) = state.agent(&args.agent)? else {
        bail!(
            "no response is recorded for agent {:?} in {}",
            args.agent,
            config.state_dir.display()
        );
    };
    let Some(tier) = record.tier else {
        println!("{}: no response in force, nothing to release", args.agent);
        return Ok(ExitCode::SUCCESS);
    };
    let needed = if tier == Tier::Contain { 2 } else { 1 };
    let approvals = state.approve(&args.agent, &args.approver, &args.reason)?;
    let have = approvals.approvers.len();
    if let Some(audit) = &config.audit {
        // The daemon may be appending too: the log's own lock keeps the chain whole.
        let mut log = AuditLog::from_config(audit)?;
        let approver = log.token(&args.approver);
        log.append(
            Kind::Approval,
            Some(&args.agent),
            Some(&record.target.class),
            serde_json::json!({
                "approver": approver,
                "tier": tier,
                "approvals": have,
                "needed": needed,
                "reason": args.reason,
            }),
        )?;
    }
    if have < needed {
        println!(
            "{}: approval by {} recorded ({have} of {needed}); a containment needs another, \
             different approver: agent-monitor release {} --approver <name>",
            args.agent, args.approver, args.agent
        );
        return Ok(ExitCode::SUCCESS);
    }
    let request = ReleaseRequest {
        agent_id: args.agent.clone(),
        approvers: approvals.approvers.into_iter().collect(),
        requested: now_rfc3339(),
        reasons: approvals.reason,
    };
    state.request_release(&request)?;
    let deadline = std::time::Instant::now() + args.wait;
    while std::time::Instant::now() < deadline {
        if let Some(result) = state.release_result(&args.agent)? {
            println!(
                "{}: released by {} ({:?} lifted)",
                args.agent,
                result.request.approvers.join(" and "),
                tier
            );
            for a in &result.actions {
                println!(
                    "  {}: {} {}",
                    a.action,
                    if a.ok { "ok" } else { "FAILED" },
                    a.detail
                );
            }
            let failed = result.actions.iter().any(|a| !a.ok);
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the release of {} is requested but no daemon carried it out within {:?} (is it running?); \
         the request stays in {} and runs when the daemon starts",
        args.agent,
        args.wait,
        config.state_dir.display()
    )
}
