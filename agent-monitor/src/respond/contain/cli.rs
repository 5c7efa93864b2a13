//! `agent-monitor contain status|deny|rate-limit|release`: works on the pinned maps of the running
//! (or killed) daemon from another process; prints JSON.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use serde_json::json;

use super::{Containment, DEFAULT_PIN_DIR};
use crate::cgroup;

#[derive(clap::Args, Clone, Debug)]
pub struct ContainArgs {
    /// bpffs directory where the daemon pins containment (config key `pin_dir`).
    #[arg(long, default_value = DEFAULT_PIN_DIR, global = true)]
    pub pin_dir: PathBuf,
    #[command(subcommand)]
    pub command: ContainCommand,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum ContainCommand {
    /// Containments in force, their denial counters and the pinned hooks.
    Status,
    /// Refuse every connect and UDP send of the cgroup (EPERM) and drop its egress packets.
    Deny {
        /// Agent cgroup: absolute, or relative to the cgroup v2 mount.
        #[arg(long)]
        cgroup: PathBuf,
        /// Agent id, for the audit record.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Limit connects and egress bytes per second (0: unlimited).
    RateLimit {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long, default_value_t = 0)]
        connects_per_s: u32,
        #[arg(long, default_value_t = 0)]
        bytes_per_s: u64,
    },
    /// Lift every restriction on the cgroup.
    Release {
        #[arg(long)]
        cgroup: PathBuf,
    },
}

/// Resolves a cgroup path (absolute or relative to the v2 mount) to its id.
pub fn cgroup_id(path: &std::path::Path) -> anyhow::Result<u64> {
    let full = if path.is_absolute() {
        path.to_owned()
    } else {
        cgroup::v2_mount()?.join(path)
    };
    Ok(cgroup::id_of(&full)?)
}

pub fn run(args: &ContainArgs) -> anyhow::Result<ExitCode> {
    let mut c = Containment::open_pinned(&args.pin_dir)?;
    let out = match &args.command {
        ContainCommand::Status => {
            let mut contained = Vec::new();
            for (cgroup_id, policy) in c.state()? {
                contained.push(json!({
                    "cgroup_id": cgroup_id,
                    "policy": policy,
                    "denials": c.denials(cgroup_id)?,
                }));
            }
            json!({
                "pin_dir": args.pin_dir,
                "contained": contained,
                "hooks": c.hooks(),
            })
        }
        ContainCommand::Deny { cgroup, agent } => {
            serde_json::to_value(c.deny_all(cgroup_id(cgroup)?, agent.as_deref())?)?
        }
        ContainCommand::RateLimit {
            cgroup,
            connects_per_s,
            bytes_per_s,
        } => serde_json::to_value(c.rate_limit(
            cgroup_id(cgroup)?,
            *connects_per_s,
            *bytes_per_s,
        )?)?,
        ContainCommand::Release { cgroup } => serde_json::to_value(c.release(cgroup_id(cgroup)?)?)?,
    };
    println!("{}", serde_json::to_string(&out).context("JSON")?);
    Ok(ExitCode::SUCCESS)
}
