//! Command-line interface. Configuration precedence: the embedded default, replaced by
//! `--config FILE` when given; command-line flags then override single keys.

mod audit;
mod contain;
mod ctl;
mod demo;
mod drill;
mod eval;
mod live;
mod record;
mod release;
mod train;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use agent_monitor::{
    config::Config,
    detect::Tier,
    detect::{
        engine::Detection,
        rules::{RuleEngine, RuleSet},
    },
    ebpf::Platform,
    k8s::{Node, ticket::PodContext},
    pipeline::Pipeline,
    respond::{
        audit::AuditLog,
        engine::Responder,
        flight::FlightRecorder,
        host::{Revoke, Snapshot},
        revoke::Revoker,
        sinks::{AuditSink, WebhookSink},
        snapshot::Snapshotter,
        state::{StateDir, StateSink},
        webhook::{Webhook, WebhookConfig},
    },
    source::ReplaySource,
    workload::{self, Step},
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agent-monitor",
    version,
    about = "eBPF runtime behavioural monitor for AI agents"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct LiveArgs {
    /// Configuration file (default: the embedded config/default.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop after this long (e.g. 30s, 5m); default: until SIGINT or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Create this file once the programs are attached and the agents registered.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Write the run's counters (records, events, kernel losses, ...) as JSON here at exit.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Override `watch`: parent cgroups whose <class>/<agent-id> children are agents.
    #[arg(long)]
    watch: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Monitor agents and print their events as JSON lines.
    Run {
        #[command(flatten)]
        live: LiveArgs,
        /// Write JSON lines here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also record the raw records to this trace file.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Record raw kernel records of monitored agents to a trace file.
    Record {
        #[command(flatten)]
        live: LiveArgs,
        /// Trace file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// Also write the decoded events as JSON lines here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Record only this agent (by id): nothing else is monitored or written.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Feed a trace file through the pipeline and print the events as JSON lines.
    Replay {
        trace: PathBuf,
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Configuration file for detection (default: the embedded config/default.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Decode and print only: no windows, models or rules.
        #[arg(long)]
        no_detect: bool,
    },
    /// Start a demo agent workload in its own cgroup and show what it does (main job).
    Demo {
        /// How long to run the demo agents.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        duration: Duration,
        /// Agents started per class (fraud, onboarding, compliance).
        #[arg(long, default_value_t = 1)]
        agents_per_class: u32,
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also record the raw records to this trace file (how the training traces are made).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Halfway through, the first agent of this class (fraud, onboarding, compliance) turns
        /// hostile: credential and PII reads, a shell, a port scan, an outside DNS name.
        #[arg(long)]
        hostile: Option<agent_monitor::workload::profile::Profile>,
        /// The agent-monitor binary the agents run (default: this one). Training recordings use
        /// both a release and a debug build, so the class models know both (scripts/make-models.sh).
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// Configuration file (default: the embedded config/default.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Learn a class baseline from recorded traces of healthy agents.
    Train(train::TrainArgs),
    /// Score labelled traces (ADFA-LD or recorded ones): ROC AUC and detection at 1% and 5%.
    Eval(eval::EvalArgs),
    /// Lift the responses in force for an agent (a containment needs two distinct approvers).
    Release(release::ReleaseArgs),
    /// Tamper-evident audit log: keygen, verify, show, token, append.
    Audit(audit::AuditArgs),
    /// Containment in the kernel, from another process: status, deny, rate-limit, release.
    Contain(contain::ContainArgs),
    /// Purple-team drills: replay or re-enact attack scenarios and score detection (drills/).
    Drill(drill::DrillArgs),
    /// Query and control a running daemon through its API (agents, watch, events, release).
    Ctl(ctl::CtlArgs),
    /// Check what this kernel and host provide.
    Probe,
    /// Run a scripted workload (used by the demo, tests and benchmarks).
    #[command(hide = true)]
    Workload { steps: Vec<Step> },
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Workload { steps } => {
            workload::run(&steps)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Release(args) => release::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Contain(args) => contain::run(&args),
        Command::Drill(args) => drill::run(&args),
        Command::Probe => {
            let (_, mut report) = Platform::probe()?;
            report.probe_optional();
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        command => runtime()?.block_on(async_main(command)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn async_main(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            live,
            output,
            record,
        } => {
            let config = load_config(&live)?;
            let mut detection = detection(&config)?;
            detection.set_wall_offset(agent_monitor::clock::wall_offset_ns());
            let pipeline = Pipeline::default()
                .with_json(live::json_out(output.as_deref())?)
                .with_detection(detection)
                .with_live_clock();
            let node = live::node(&config).await?;
            let mut pipeline = with_response_on(pipeline, &config, true, node.as_ref())?;
            if let Some(path) = &record {
                pipeline = pipeline.with_trace(live::trace_out(path)?);
            }
            // Metrics, probes and OTLP export; stopped (and flushed) after the run.
            let obs = agent_monitor::observe::Observability::start(&config)?;
            if let Some(obs) = &obs {
                pipeline = obs.attach(pipeline);
            }
            live::run(&live, &config, pipeline, node).await
        }
        Command::Record {
            live,
            output,
            json,
            agent,
        } => {
            let mut config = load_config(&live)?;
            if let Some(agent) = &agent {
                record::narrow_to_agent(&mut config, agent)?;
            }
            let mut pipeline = Pipeline::default().with_trace(live::trace_out(&output)?);
            if let Some(path) = &json {
                pipeline = pipeline.with_json(live::json_out(Some(path))?);
            }
            let node = live::node(&config).await?;
            live::run(&live, &config, pipeline, node).await
        }
        Command::Replay {
            trace,
            output,
            config,
            no_detect,
        } => {
            let mut source =
                ReplaySource::open(&trace).with_context(|| format!("{}", trace.display()))?;
            let h = source.header();
            log::info!(
                "replaying {} (format {}, recorded on {} kernel {} by agent-monitor {})",
                trace.display(),
                h.format_version,
                h.hostname,
                h.kernel_release,
                h.agent_monitor_version
            );
            let mut pipeline = Pipeline::default().with_json(live::json_out(output.as_deref())?);
            if !no_detect {
                let config = match &config {
                    Some(p) => Config::load(p)?,
                    None => Config::embedded(),
                };
                let mut detection = detection(&config)?;
                detection.set_wall_anchor(i128::from(h.created_unix_ms) * 1_000_000);
                pipeline = with_response(pipeline.with_detection(detection), &config, false)?;
            }
            pipeline
                .run(&mut source, std::future::pending())
                .await
                .and_then(|()| pipeline.finish())
                .with_context(|| format!("replaying {}", trace.display()))?;
            log::info!("replay done: {:?}", pipeline.stats);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl(args) => ctl::run(&args).await,
        Command::Demo {
            duration,
            agents_per_class,
            output,
            record,
            hostile,
            agent_bin,
            config,
        } => {
            demo::run(&demo::DemoOptions {
                duration,
                agents_per_class,
                output: output.as_deref(),
                record: record.as_deref(),
                hostile,
                agent_bin: agent_bin.as_deref(),
                config: config.as_deref(),
            })
            .await
        }
        Command::Probe
        | Command::Workload { .. }
        | Command::Train(_)
        | Command::Eval(_)
        | Command::Release(_)
        | Command::Audit(_)
        | Command::Contain(_)
        | Command::Drill(_) => {
            unreachable!("handled synchronously")
        }
    }
}

/// The detection stage with the configured rules and class models (a class without a model
/// learns on-line). A rule file or model with an error stops the start: running while believing
/// an agent is covered when it is not is worse than not starting.
fn detection(config: &Config) -> anyhow::Result<Detection> {
    let mut detection = Detection::new(&config.detection)?;
    if let Some(k) = &config.kubernetes {
        // Pod cgroups may wait for their pod: unattributed is a finding only when it lasts.
        detection.set_unidentified_policy(agent_monitor::detect::engine::UnidentifiedPolicy {
            after: Duration::from_secs(k.unidentified_after_secs),
            tier: k.unidentified_tier,
        });
    }
    let rules_dir = &config.detection.rules_dir;
    if rules_dir.is_dir() {
        let set = RuleSet::load_dir(rules_dir)?;
        log::info!("{} rules loaded from {}", set.len(), rules_dir.display());
        detection.set_rules(RuleEngine::new(set));
    } else {
        log::warn!(
            "no rules directory {}: no rules in force",
            rules_dir.display()
        );
    }
    let dir = &config.detection.models_dir;
    if dir.is_dir() {
        let classes = detection.load_models(dir)?;
        log::info!(
            "class models loaded from {}: {}",
            dir.display(),
            classes.join(", ")
        );
    } else {
        log::warn!(
            "no models directory {}: every class starts learning",
            dir.display()
        );
    }
    Ok(detection)
}

/// The response stage. Live, it gets the configured sinks (state, audit log, SOC webhook) and
/// host actuators (token revocation, forensic snapshot); the network actuators are added once
/// the kernel maps exist. Replay runs none: its decisions are what the live run would have
/// decided. The flight recorder comes with its readers, the snapshot actuator and the API:
/// without either, no event is copied into it.
fn responder(
    config: &Config,
    live: bool,
    node: Option<&Node>,
) -> anyhow::Result<(Responder, Option<Arc<FlightRecorder>>)> {
    let mut responder = Responder::new(config.policy.clone());
    if let Ok(root) = agent_monitor::cgroup::v2_mount() {
        responder = responder.with_cgroup_root(root);
    }
    if !live {
        return Ok((responder, None));
    }
    responder = responder.with_live_cgroups();
    responder = responder.with_sink(Box::new(StateSink(StateDir::new(&config.state_dir))));
    if let Some(audit) = &config.audit {
        let log = AuditLog::from_config(audit)?;
        responder = responder.with_sink(Box::new(AuditSink(log)));
    }
    if let Some(w) = &config.webhook {
        let mut wc = WebhookConfig::new(&w.url, w.key_file.clone(), w.outbox_dir.clone());
        wc.group_window = Duration::from_secs(w.group_window_secs);
        wc.backoff.initial = Duration::from_millis(w.retry_initial_ms);
        let webhook = Webhook::new(wc)?;
        let delivery = webhook.start_delivery()?;
        responder = responder.with_sink(Box::new(WebhookSink {
            webhook,
            _delivery: delivery,
            pods: node.map(|n| PodContext::new(n.pods.clone(), n.name.clone())),
        }));
    }
    if let Some(revoke) = &config.revoke {
        responder.add_actuator(
            Tier::Contain,
            Box::new(Revoke(Revoker::new(revoke.clone()))),
        );
    }
    // The flight recorder's readers: the snapshot actuator and the API's RecentEvents.
    let flight = (config.snapshot.is_some() || config.api.is_some())
        .then(|| Arc::new(FlightRecorder::new(config.flight)));
    if let (Some(snapshot), Some(recorder)) = (&config.snapshot, &flight) {
        responder.add_actuator(
            Tier::Contain,
            Box::new(
                Snapshot::new(
                    Snapshotter::new(snapshot.clone(), Some(recorder.clone())),
                    config.policy.keep_frozen,
                )
                .context("starting the snapshot worker")?,
            ),
        );
    }
    // The control API (docs/API.md): its sink feeds it, and keeps it running, for as long as
    // the response stage lives.
    if let (Some(api), Some(recorder)) = (&config.api, &flight) {
        let sink = agent_monitor::api::start(
            api,
            agent_monitor::api::ApiContext {
                state_dir: config.state_dir.clone(),
                audit: config.audit.clone(),
                flight: recorder.clone(),
            },
        )?;
        responder = responder.with_sink(Box::new(sink));
    }
    Ok((responder, flight))
}

/// Adds the response stage (and its flight recorder, when one is needed) to a pipeline.
fn with_response(pipeline: Pipeline, config: &Config, live: bool) -> anyhow::Result<Pipeline> {
    with_response_on(pipeline, config, live, None)
}

/// The same on a Kubernetes node: tickets name the agent's pod and the node.
fn with_response_on(
    pipeline: Pipeline,
    config: &Config,
    live: bool,
    node: Option<&Node>,
) -> anyhow::Result<Pipeline> {
    let (responder, flight) = responder(config, live, node)?;
    let pipeline = pipeline.with_responder(responder);
    Ok(match flight {
        Some(f) => pipeline.with_flight_recorder(f),
        None => pipeline,
    })
}

fn load_config(args: &LiveArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    if !args.watch.is_empty() {
        config.watch = args.watch.clone();
    }
    Ok(config)
}
