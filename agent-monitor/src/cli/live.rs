//! Running the live pipeline until a signal or a deadline.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use agent_monitor::{
    config::Config,
    detect::Tier,
    ebpf::{Kernel, LoadOptions, Platform},
    identity::AgentRegistry,
    k8s::{Node, netpol::NetworkPolicyActuator, pod_wide::PodWide},
    pipeline::Pipeline,
    respond::{
        actuator::Actuator,
        contain::Containment,
        network::{Network, NetworkAction, SharedContainment},
    },
    source::{Batch, EventSource as _, HoldOptions, LiveOptions, LiveSource},
    startup::Phases,
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

/// Probes the kernel, loads the programs and registers the agents that exist now; with a
/// pipeline that responds, the network actuators get the containment maps.
/// On a Kubernetes node (`node`), pod containers become agents by their pod's labels, and
/// containment also creates a deny-all NetworkPolicy when configured.
pub fn start(
    config: &Config,
    initial: &mut Batch,
    pipeline: &mut Pipeline,
    node: Option<&Node>,
) -> anyhow::Result<(LiveSource, Option<SharedContainment>)> {
    start_timed(config, initial, pipeline, node, &mut Phases::default())
}

/// [`start`], timing its phases.
pub fn start_timed(
    config: &Config,
    initial: &mut Batch,
    pipeline: &mut Pipeline,
    node: Option<&Node>,
    phases: &mut Phases,
) -> anyhow::Result<(LiveSource, Option<SharedContainment>)> {
    let (platform, report) = Platform::probe()?;
    log::debug!("feature probe:\n{report}");
    phases.done("probe");
    let opts = LoadOptions {
        max_agents: config.max_agents,
        ring_buffer_bytes: config.ring_buffer_mib << 20,
        daemon_tgid: std::process::id(),
        pin_dir: config.pin_dir.clone(),
    };
    let (kernel, mut maps) = Kernel::load_timed(&platform, &opts, phases)?;
    let kube = node.zip(config.kubernetes.as_ref());
    let mut containment = None;
    if let (Some(responder), Some(maps)) = (pipeline.responder_mut(), maps.containment.take()) {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Containment::open(maps)));
        containment = Some(shared.clone());
        let rate = &config.policy.rate_limit;
        let network = |action| -> Box<dyn Actuator> {
            let a = Network::new(shared.clone(), action);
            // A pod's containers are separate cgroups of one agent: act on all of them.
            if kube.is_some() {
                Box::new(PodWide(a))
            } else {
                Box::new(a)
            }
        };
        responder.add_actuator(
            Tier::RateLimit,
            network(NetworkAction::RateLimit {
                connects_per_s: rate.connects_per_s,
                bytes_per_s: rate.bytes_per_s,
            }),
        );
        responder.add_actuator(Tier::Contain, network(NetworkAction::DenyAll));
    }
    if let (Some((node, k)), Some(responder)) = (kube, pipeline.responder_mut())
        && k.network_policy
    {
        // After the in-kernel deny: an API round trip must not delay it.
        responder.add_actuator(
            Tier::Contain,
            Box::new(NetworkPolicyActuator::new(
                node.api.clone(),
                node.pods.clone(),
                &k.id_label,
                Duration::from_millis(k.api_timeout_ms),
            )?),
        );
    }
    let mut registry = AgentRegistry::new(platform.cgroup_v2.clone(), config.clone());
    if let Some((node, _)) = kube {
        registry = registry.with_pods(Arc::new(node.pods.clone()));
    }
    let live = LiveOptions {
        poll_interval: Duration::from_millis(config.poll_interval_ms),
        snapshot_interval: Duration::from_millis(config.snapshot_interval_ms),
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
        hold: kube.map(|(_, k)| HoldOptions {
            hold: k.hold(),
            max_records: k.hold_max_events,
        }),
        identity_changed: kube.map(|(node, _)| node.pods.changed()),
    };
    let mut source = LiveSource::new(kernel, maps, registry, &live, initial)?;
    phases.done("cgroup_scan");
    // Observability hook: the probes learn that the cgroup scan is done, and from now on every
    // drain and map read; the source tells them when every program is attached.
    if let Some(health) = pipeline.health() {
        health
            .identity_source("cgroups")
            .set_synced(true, "configured and watched cgroups scanned");
        source.set_health(health.clone());
    }
    update_wake_kinds(&mut source, pipeline, config);
    return_freed_heap();
    log::info!(
        "programs loaded; {} agent cgroup(s) monitored; cgroup v2 at {}",
        source.registry().len(),
        platform.cgroup_v2.display()
    );
    Ok((source, containment))
}

/// Marks the kernel event kinds that the loaded rules can turn into a rate-limit or a
/// containment as urgent: their events wake the reader at once instead of waiting for the next
/// poll. At start and after each rule reload; without a response stage nothing is urgent.
fn update_wake_kinds(source: &mut LiveSource, pipeline: &mut Pipeline, config: &Config) {
    let kinds = match (pipeline.responder_mut().is_some(), pipeline.detection()) {
        (true, Some(d)) => d.rules().map_or_else(Vec::new, |rules| {
            agent_monitor::respond::urgent::urgent_kinds(rules, &config.policy)
        }),
        _ => Vec::new(),
    };
    match source.set_wake_kinds(&kinds) {
        Ok(()) => log::debug!("event kinds that wake the reader at once: {kinds:?}"),
        Err(e) => log::error!("{e:#}: urgent events wait for the next poll"),
    }
}

/// Returns the allocator's free pages to the kernel: after loading (the kernel's BTF, the object
/// file and the loader's tables, about 13 MiB here, PERF-ANCHORS row 7) and periodically.
fn return_freed_heap() {
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// After the agents are announced: agents an earlier daemon contained (pinned DENY_ALL) are
/// contained for this one too, so a release can lift it. Containments of cgroups that no longer
/// exist are dropped first (with an audit record).
pub fn restore_containment(pipeline: &mut Pipeline, containment: Option<&SharedContainment>) {
    if let Some(r) = pipeline.responder_mut() {
        r.forget_gone(agent_monitor::clock::boot_ns());
    }
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

/// On Kubernetes (`kubernetes` configured): the pod watch, synced with the API server.
pub async fn node(config: &Config) -> anyhow::Result<Option<Node>> {
    Ok(match &config.kubernetes {
        Some(k) => Some(Node::start(k).await?),
        None => None,
    })
}

pub async fn run(
    args: &LiveArgs,
    config: &Config,
    mut pipeline: Pipeline,
    node: Option<Node>,
) -> anyhow::Result<ExitCode> {
    // From the process start: configuration, rules, models and sinks are set up by now.
    let mut phases = Phases::default();
    phases.done("setup");
    let mut batch = Batch::default();
    let (mut source, containment) = start_timed(
        config,
        &mut batch,
        &mut pipeline,
        node.as_ref(),
        &mut phases,
    )?;
    pipeline.process(&batch)?;
    pipeline.flush()?;
    // The announcements are in the pipeline's tables now: this batch (some 400 bytes per agent)
    // is not kept for the daemon's life.
    drop(batch);
    return_freed_heap();
    phases.done("announce");
    restore_containment(&mut pipeline, containment.as_ref());
    if let (Some(node), Some(health)) = (&node, pipeline.health()) {
        watch_pod_sync(node.pods.clone(), health.identity_source("kubernetes"));
    }
    run_until_stopped(
        &mut source,
        &mut pipeline,
        args.duration,
        config,
        Some(Start {
            phases,
            ready_file: args.ready_file.as_deref(),
        }),
    )
    .await?;
    log::info!("stopped: {:?}", pipeline.stats);
    if node.is_some() {
        log::info!("held for pod identity: {:?}", source.hold_stats());
    }
    if let Some(path) = &args.stats_file {
        std::fs::write(path, serde_json::to_string(&pipeline.stats)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Readiness follows the pod watch: not ready until the first list of this node's pods.
fn watch_pod_sync(
    pods: agent_monitor::k8s::cache::PodCache,
    source: agent_monitor::observe::health::IdentitySource,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let synced = pods.is_synced();
            let detail = if synced {
                "pods of this node listed and watched"
            } else {
                "waiting for the first list of this node's pods"
            };
            source.set_synced(synced, detail);
        }
    });
}

/// What `run_until_stopped` reports of the start: the phases up to the first events and to
/// readiness (every program attached), and the file that tells readiness.
pub struct Start<'a> {
    pub phases: Phases,
    pub ready_file: Option<&'a Path>,
}

impl Start<'_> {
    /// After each batch: the first one ends the `first_batch` phase; once every program is
    /// attached the daemon is ready (the ready file is written) and the phases are logged.
    /// True when there is nothing left to report.
    fn after_batch(
        &mut self,
        pipeline: &mut Pipeline,
        source: &LiveSource,
    ) -> anyhow::Result<bool> {
        if !self.phases.has("first_batch") {
            pipeline.flush()?;
            self.phases.done("first_batch");
        }
        if !source.cgroup_hooks_attached() {
            return Ok(false);
        }
        self.phases.done("cgroup_hooks_attached");
        if let Some(ready) = self.ready_file {
            std::fs::write(ready, b"ready\n")
                .with_context(|| format!("writing {}", ready.display()))?;
        }
        self.phases.log();
        Ok(true)
    }
}

/// Runs until SIGINT/SIGTERM or `duration`, then drains what the kernel still holds. SIGHUP
/// reloads the rules between two batches; release requests left by the CLI are carried out,
/// actions finished off the pipeline thread (forensic snapshots) are reported, and metrics that
/// are due are published, every 100 ms.
pub async fn run_until_stopped(
    source: &mut LiveSource,
    pipeline: &mut Pipeline,
    duration: Option<Duration>,
    config: &Config,
    mut start: Option<Start<'_>>,
) -> anyhow::Result<()> {
    let state = agent_monitor::respond::state::StateDir::new(&config.state_dir);
    let mut releases = tokio::time::interval(Duration::from_millis(100));
    // glibc keeps the pages a burst freed (windows, findings, output) inside its heap: give them
    // back every few seconds, so that the resident size follows the live heap (PERF-ANCHORS
    // row 7). One pass over the free lists; well under a millisecond at these heap sizes.
    let mut trim = tokio::time::interval(Duration::from_secs(5));
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
                if let Some(s) = &mut start
                    && s.after_batch(pipeline, source)?
                {
                    start = None;
                }
            }
            _ = hup.recv() => {
                pipeline.reload_rules(&config.detection.rules_dir);
                update_wake_kinds(source, pipeline, config);
            }
            _ = releases.tick() => {
                pipeline.carry_out_releases(&state)?;
                pipeline.collect_completed(None)?;
                pipeline.flush_metrics();
            }
            _ = trim.tick() => return_freed_heap(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut deadline => break,
        }
    }
    // Nothing of a removed agent stays pinned after an orderly exit.
    if let Some(r) = pipeline.responder_mut() {
        r.forget_gone(agent_monitor::clock::boot_ns());
    }
    if let Some(health) = pipeline.health() {
        health.set_stopping();
    }
    pipeline.flush()?;
    source.finish(&mut batch)?;
    pipeline.process(&batch)?;
    pipeline.finish()
}
