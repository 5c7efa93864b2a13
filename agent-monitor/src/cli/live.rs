//! Running the live pipeline until a signal or a deadline.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use agent_monitor::{
    config::Config,
    detect::Tier,
    ebpf::{Kernel, LoadOptions, Platform},
    identity::AgentRegistry,
    pipeline::Pipeline,
    respond::{
        contain::Containment,
        network::{Network, NetworkAction, SharedContainment},
    },
    source::{Batch, EventSource as _, LiveOptions, LiveSource},
    trace::{TraceHeader, TraceWriter},
};
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::LiveArgs;

pub fn json_out(path: Option<&Path>) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) if p != Path::new("-") => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        _ => Box::new(BufWriter::new(std::io::stdout())),
    })
}

pub fn trace_out(path: &Path) -> anyhow::Result<TraceWriter<Box<dyn Write + Send>>> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let out: Box<dyn Write + Send> = Box::new(BufWriter::with_capacity(1 << 20, file));
    Ok(TraceWriter::new(out, &TraceHeader::for_this_host())?)
}

/// Probes the kernel, loads the programs and registers the agents that exist now.
/// Probes the kernel, loads the programs and registers the agents that exist now; with a
/// pipeline that responds, the network actuators get the containment maps.
pub fn start(
    config: &Config,
    initial: &mut Batch,
    pipeline: &mut Pipeline,
) -> anyhow::Result<(LiveSource, Option<SharedContainment>)> {
    let (platform, report) = Platform::probe()?;
    log::debug!("feature probe:\n{report}");
    let opts = LoadOptions {
        max_agents: config.max_agents,
        daemon_tgid: std::process::id(),
        pin_dir: config.pin_dir.clone(),
    };
    let (kernel, mut maps) = Kernel::load(&platform, &opts)?;
    let mut containment = None;
    if let (Some(responder), Some(maps)) = (pipeline.responder_mut(), maps.containment.take()) {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Containment::open(maps)));
        containment = Some(shared.clone());
        let rate = &config.policy.rate_limit;
        responder.add_actuator(
            Tier::RateLimit,
            Box::new(Network::new(
                shared.clone(),
                NetworkAction::RateLimit {
                    connects_per_s: rate.connects_per_s,
                    bytes_per_s: rate.bytes_per_s,
                },
            )),
        );
        responder.add_actuator(
            Tier::Contain,
            Box::new(Network::new(shared, NetworkAction::DenyAll)),
        );
    }
    let registry = AgentRegistry::new(platform.cgroup_v2.clone(), config.clone());
    let live = LiveOptions {
        poll_interval: Duration::from_millis(config.poll_interval_ms),
        snapshot_interval: Duration::from_millis(config.snapshot_interval_ms),
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
    };
    let programs = kernel.loaded_programs();
    let mut source = LiveSource::new(kernel, maps, registry, &live, initial)?;
    // Observability hook: the probes learn that the programs are attached, the cgroup scan is
    // done, and from now on every drain and map read.
    if let Some(health) = pipeline.health() {
        health.set_programs_attached(u32::try_from(programs).unwrap_or(u32::MAX));
        health
            .identity_source("cgroups")
            .set_synced(true, "configured and watched cgroups scanned");
        source.set_health(health.clone());
    }
    log::info!(
        "programs attached; {} agent cgroup(s) monitored; cgroup v2 at {}",
        source.registry().len(),
        platform.cgroup_v2.display()
    );
    Ok((source, containment))
}

/// After the agents are announced: agents an earlier daemon contained (pinned DENY_ALL) are
/// contained for this one too, so a release can lift it.
pub fn restore_containment(pipeline: &mut Pipeline, containment: Option<&SharedContainment>) {
    let Some(state) = containment.and_then(|c| c.lock().ok().and_then(|c| c.state().ok())) else {
        return;
    };
    let denied: Vec<u64> = state
        .iter()
        .filter(|(_, p)| p.deny_all)
        .map(|(cg, _)| *cg)
        .collect();
    if let Some(r) = pipeline.responder_mut() {
        for agent in r.restore_contained(&denied, agent_monitor::clock::boot_ns()) {
            log::warn!("{agent} is contained (DENY_ALL in force from before this start)");
        }
    }
}

pub async fn run(
    args: &LiveArgs,
    config: &Config,
    mut pipeline: Pipeline,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    let (mut source, containment) = start(config, &mut batch, &mut pipeline)?;
    pipeline.process(&batch)?;
    restore_containment(&mut pipeline, containment.as_ref());
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, b"ready\n")
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    run_until_stopped(&mut source, &mut pipeline, args.duration, config).await?;
    log::info!("stopped: {:?}", pipeline.stats);
    if let Some(path) = &args.stats_file {
        std::fs::write(path, serde_json::to_string(&pipeline.stats)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs until SIGINT/SIGTERM or `duration`, then drains what the kernel still holds. SIGHUP
/// reloads the rules between two batches; release requests left by the CLI are carried out.
pub async fn run_until_stopped(
    source: &mut LiveSource,
    pipeline: &mut Pipeline,
    duration: Option<Duration>,
    config: &Config,
) -> anyhow::Result<()> {
    let state = agent_monitor::respond::state::StateDir::new(&config.state_dir);
    let mut releases = tokio::time::interval(Duration::from_millis(100));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut batch = Batch::default();
    loop {
        tokio::select! {
            more = source.next_batch(&mut batch) => {
                if !more? {
                    break;
                }
                pipeline.process(&batch)?;
            }
            _ = hup.recv() => pipeline.reload_rules(&config.detection.rules_dir),
            _ = releases.tick() => pipeline.carry_out_releases(&state)?,
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut deadline => break,
        }
    }
    if let Some(health) = pipeline.health() {
        health.set_stopping();
    }
    pipeline.flush()?;
    source.finish(&mut batch)?;
    pipeline.process(&batch)?;
    pipeline.finish()
}
