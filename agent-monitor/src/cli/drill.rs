//! `agent-monitor drill run|record|list|check`: the purple-team drill harness
//! (`agent_monitor::drill`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use agent_monitor::{
    config::Config,
    drill::{self, Mode, Report, fixtures::Targets, stage::Programs},
};
use anyhow::Context as _;

#[derive(clap::Args)]
pub struct DrillArgs {
    #[command(subcommand)]
    command: DrillCommand,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Directory of the scenarios (`*.yaml`) and their traces (`traces/`).
    #[arg(long, default_value = "drills")]
    dir: PathBuf,
    /// Base configuration (default: the embedded config/default.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules directory (default: the configuration's `detection.rules_dir`).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Class models directory (default: the configuration's `detection.models_dir`).
    #[arg(long)]
    models: Option<PathBuf>,
    /// The agent-monitor binary the benign agent runs (live and record; default: this one).
    /// The shipped class models were trained on agents of both builds, so either works; the
    /// benchmarks and recordings use a release build. The attack steps run this binary.
    #[arg(long)]
    agent_bin: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum DrillCommand {
    /// Run scenarios (all when none is named) and report; exits 1 when an expected detection
    /// is missed, a benign run is contained or any other expectation fails.
    Run {
        #[command(flatten)]
        common: Common,
        /// Replay the recorded traces with dry-run actuators (the default).
        #[arg(long, conflicts_with = "live")]
        replay: bool,
        /// Re-enact the attacks against the real daemon and kernel (root).
        #[arg(long)]
        live: bool,
        /// Where report.json, junit.xml and report.html go.
        #[arg(long, default_value = "drill-report")]
        out: PathBuf,
        scenarios: Vec<String>,
    },
    /// Re-record scenarios' traces (live, no detection: the attack runs to its end).
    Record {
        #[command(flatten)]
        common: Common,
        scenarios: Vec<String>,
    },
    /// List the scenarios.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Check every scenario file, the rules they name and that each has its trace.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

impl Common {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::embedded(),
        };
        if let Some(r) = &self.rules {
            config.detection.rules_dir = r.clone();
        }
        if let Some(m) = &self.models {
            config.detection.models_dir = m.clone();
        }
        config.detection.rules_dir = absolute(&config.detection.rules_dir)?;
        config.detection.models_dir = absolute(&config.detection.models_dir)?;
        Ok(config)
    }

    fn programs(&self, config: &Config) -> anyhow::Result<Programs> {
        Ok(Programs {
            bin: std::env::current_exe().context("finding the agent-monitor binary")?,
            base_config: self.config.as_deref().map(absolute).transpose()?,
            rules_dir: config.detection.rules_dir.clone(),
            models_dir: config.detection.models_dir.clone(),
            agent: self.agent_bin.as_deref().map(absolute).transpose()?,
        })
    }
}

pub fn run(args: &DrillArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        DrillCommand::Run {
            common,
            live,
            out,
            scenarios,
            ..
        } => {
            let config = common.config()?;
            let selected = drill::select(&common.dir, scenarios)?;
            drill::check_rules(&selected, &config)?;
            let mode = if *live { Mode::Live } else { Mode::Replay };
            let targets = if *live { Some(Targets::start()?) } else { None };
            let programs = common.programs(&config)?;
            let mut results = Vec::new();
            let mut errors = Vec::new();
            for s in &selected {
                log::info!("drill {} ({mode})", s.name);
                let r = match &targets {
                    Some(t) => drill::live::run(s, &programs, t, &config),
                    None => drill::replay::run(s, &config),
                };
                match r {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        log::error!("drill {}: {e:#}", s.name);
                        errors.push((s.name.clone(), format!("{e:#}")));
                    }
                }
            }
            let report = Report::new(mode, results, errors);
            print!("{}", report.table());
            report.write(out)?;
            println!(
                "report: {} (also junit.xml, report.html)",
                out.join("report.json").display()
            );
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DrillCommand::Record { common, scenarios } => {
            let config = common.config()?;
            let selected = drill::select(&common.dir, scenarios)?;
            let programs = common.programs(&config)?;
            let targets = Targets::start()?;
            for s in &selected {
                let (path, size) = drill::record::run(s, &programs, &targets, None)
                    .with_context(|| format!("recording {}", s.name))?;
                println!("{}: {} ({size} bytes)", s.name, path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::List { common } => {
            for s in drill::select(&common.dir, &[])? {
                println!(
                    "{:<28} {:<7} {:<11} {:<18} {}",
                    s.name,
                    if s.is_attack() { "attack" } else { "benign" },
                    s.class,
                    s.mitre.join(","),
                    s.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Check { common } => {
            let config = common.config()?;
            let all = drill::select(&common.dir, &[])?;
            drill::check_rules(&all, &config)?;
            let mut missing = Vec::new();
            for s in &all {
                let t = s.trace_path();
                match std::fs::metadata(&t) {
                    Ok(m) if m.len() <= drill::record::MAX_TRACE_BYTES => {}
                    Ok(m) => {
                        missing.push(format!("{}: {} bytes, above 1 MiB", t.display(), m.len()))
                    }
                    Err(_) => missing.push(format!("{}: missing", t.display())),
                }
            }
            for m in &missing {
                println!("{m}");
            }
            println!(
                "{} scenarios ({} attacks, {} benign) parse; {} trace(s) missing or too large",
                all.len(),
                all.iter().filter(|s| s.is_attack()).count(),
                all.iter().filter(|s| !s.is_attack()).count(),
                missing.len()
            );
            Ok(if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
