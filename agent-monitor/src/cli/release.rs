//! `agent-monitor release <agent> --approver NAME`: lifts the responses in force for an agent.
//! A containment needs two distinct approvers (each runs the command once); a lower tier needs
//! one. The running daemon carries the release out (it holds the actuators) and records it.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use agent_monitor::respond::{approve::approve, audit::AuditLog, state::StateDir};
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
    let mut audit = config
        .audit
        .as_ref()
        .map(AuditLog::from_config)
        .transpose()?;
    let outcome = approve(
        &state,
        audit.as_mut(),
        &args.agent,
        &args.approver,
        &args.reason,
        false,
    )?;
    let Some(tier) = outcome.tier else {
        println!("{}: no response in force, nothing to release", args.agent);
        return Ok(ExitCode::SUCCESS);
    };
    if outcome.requested.is_none() {
        println!(
            "{}: approval by {} recorded ({} of {}); a containment needs another, \
             different approver: agent-monitor release {} --approver <name>",
            args.agent,
            args.approver,
            outcome.approvers.len(),
            outcome.needed,
            args.agent
        );
        return Ok(ExitCode::SUCCESS);
    }
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
