//! The main job on a fresh machine: the daemon on its embedded configuration, watching demo
//! agents that do what a fraud-scoring agent does (read transactions, call a scoring service on
//! loopback, write a report, run a helper program), printed as JSON lines.

use std::{path::Path, process::ExitCode, time::Duration};

use agent_monitor::{cgroup, config::Config, pipeline::Pipeline, source::Batch};
use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::live;

const DEMO_AGENTS: &[(&str, &str)] = &[
    ("fraud", "demo-fraud-1"),
    ("onboarding", "demo-onboarding-1"),
];

pub async fn run(duration: Duration, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::embedded();
    let mount = cgroup::v2_mount()?;
    let parent = Config::cgroup_path(&mount, &config.watch[0]);
    let dirs: Vec<_> = DEMO_AGENTS
        .iter()
        .map(|(class, id)| parent.join(class).join(id))
        .collect();
    for dir in &dirs {
        cgroup::create(dir)?;
    }
    let result = demo(&config, &dirs, duration, output).await;
    for dir in &dirs {
        cgroup::remove_tree(dir);
    }
    result
}

async fn demo(
    config: &Config,
    dirs: &[std::path::PathBuf],
    duration: Duration,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    // The agents' cgroups exist before the programs load, so they are monitored from the start.
    let mut source = live::start(config, &mut batch)?;
    let mut pipeline = Pipeline::default().with_json(live::json_out(output)?);
    pipeline.process(&batch)?;

    let scoring = scoring_service().await?;
    let data = tempfile::tempdir().context("creating the demo data directory")?;
    let txns = data.path().join("transactions.csv");
    std::fs::write(
        &txns,
        "id,amount,merchant\ntxn-1,120.00,grocer\ntxn-2,9400.00,jeweller\n",
    )?;
    let exe = std::env::current_exe()?;

    let mut children = Vec::new();
    for (dir, (_, id)) in dirs.iter().zip(DEMO_AGENTS) {
        let report = data.path().join(format!("{id}-report.txt"));
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("workload").args([
            format!("read:{}", txns.display()),
            format!("connect:{scoring}"),
            format!("write:{}", report.display()),
            format!("chmod:{}:640", report.display()),
            "dns:scoring.bank.internal@127.0.0.1:53".into(),
            "exec:/usr/bin/env:true".into(),
            "getppid:100".into(),
            "sleep:200".into(),
            "exit:0".into(),
        ]);
        children.push(cgroup::spawn_in(dir, &mut cmd)?);
    }
    log::info!(
        "demo agents started: {}",
        DEMO_AGENTS
            .iter()
            .map(|(c, i)| format!("{i} ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    live::run_until_stopped(&mut source, &mut pipeline, Some(duration)).await?;
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

/// A loopback "fraud scoring" service: answers every request line with a score.
async fn scoring_service() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                if conn.read(&mut buf).await.is_ok() {
                    let _ = conn.write_all(b"score 0.12\n").await;
                }
            });
        }
    });
    Ok(addr)
}
