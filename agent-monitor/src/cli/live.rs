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
    ebpf::{Kernel, LoadOptions, Platform},
    identity::AgentRegistry,
    pipeline::Pipeline,
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
pub fn start(config: &Config, initial: &mut Batch) -> anyhow::Result<LiveSource> {
    let (platform, report) = Platform::probe()?;
    log::debug!("feature probe:\n{report}");
    let opts = LoadOptions {
        max_agents: config.max_agents,
        daemon_tgid: std::process::id(),
        pin_dir: config.pin_dir.clone(),
    };
    let (kernel, maps) = Kernel::load(&platform, &opts)?;
    let registry = AgentRegistry::new(platform.cgroup_v2.clone(), config.clone());
    let live = LiveOptions {
        poll_interval: Duration::from_millis(config.poll_interval_ms),
        snapshot_interval: Duration::from_millis(config.snapshot_interval_ms),
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
    };
    let source = LiveSource::new(kernel, maps, registry, &live, initial)?;
    log::info!(
        "programs attached; {} agent cgroup(s) monitored; cgroup v2 at {}",
        source.registry().len(),
        platform.cgroup_v2.display()
    );
    Ok(source)
}

pub async fn run(
    args: &LiveArgs,
    config: &Config,
    mut pipeline: Pipeline,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    let mut source = start(config, &mut batch)?;
    pipeline.process(&batch)?;
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
    pipeline.flush()?;
    source.finish(&mut batch)?;
    pipeline.process(&batch)?;
    pipeline.finish()
}
