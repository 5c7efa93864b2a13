//! `cargo xtask bench capture`: the cost of monitoring, measured the way PERF-ANCHORS.md does.
//!
//! Each round runs the same workload (getppid, openat+close, loopback connect loops) pinned to
//! CPU 1 in three settings: (a) no daemon, (b) daemon running (pinned to CPU 0) with the workload
//! in an unmonitored cgroup, (c) the workload in a monitored cgroup. Rounds are interleaved and
//! the median of per-round ratios to (a) is reported. The daemon records a trace; replaying it
//! counts the events delivered against those the workload generated, and the kernel's loss
//! counters are read from the same trace.

mod bpftrace;
pub mod daemon;
pub mod extra;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use agent_monitor::cgroup;
use anyhow::Context as _;
use daemon::{Daemon, loopback_listener, workload, workload_pid};
use serde_json::{Value, json};

use crate::stats::median;

#[derive(clap::Args)]
pub struct Options {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 2_000_000)]
    getppid: u64,
    #[arg(long, default_value_t = 200_000)]
    openat: u64,
    #[arg(long, default_value_t = 3_000)]
    connect: u64,
    /// Seconds of the sustained lossless-rate run (PERF-ANCHORS row 4 asks for 60).
    #[arg(long, default_value_t = 60)]
    sustained_secs: u64,
    /// openat calls of the flooding agent (row 9); the victim makes a tenth as many.
    #[arg(long, default_value_t = 2_000_000)]
    flood: u64,
    /// Daemon launches for the start-up measurement (row 8).
    #[arg(long, default_value_t = 5)]
    startups: usize,
    /// Skip the bpftrace columns even when bpftrace is installed.
    #[arg(long)]
    no_bpftrace: bool,
}

const OPS: [&str; 3] = ["getppid", "openat", "connect"];
/// Settings measured in every round, against (a) no monitor.
const SETTINGS: [&str; 4] = [
    "unmonitored_cgroup",
    "monitored_cgroup",
    "bpftrace_count",
    "bpftrace_printf",
];

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let bin = crate::build_release(&root)?;
    let work = root.join("target/bench-capture");
    std::fs::create_dir_all(&work)?;

    let mount = cgroup::v2_mount()?;
    let base = mount.join(format!("agent-monitor-bench-{}", std::process::id()));
    let cgroups = Cgroups {
        unmonitored: base.join("unmonitored"),
        agents: base.join("agents"),
        monitored: base.join("agents/bench/agent-0"),
        flooder: base.join("agents/bench/flood"),
        victim: base.join("agents/bench/victim"),
    };
    for dir in [
        &cgroups.unmonitored,
        &cgroups.monitored,
        &cgroups.flooder,
        &cgroups.victim,
    ] {
        cgroup::create(dir)?;
    }
    let result = measure(opts, &bin, &work, &cgroups);
    cgroup::remove_tree(&base);
    let report = result?;
    let out = root.join("bench/results/capture.json");
    std::fs::create_dir_all(out.parent().unwrap_or(&root))?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(&report);
    println!("written to {}", out.display());
    Ok(())
}

struct Cgroups {
    unmonitored: PathBuf,
    agents: PathBuf,
    monitored: PathBuf,
    flooder: PathBuf,
    victim: PathBuf,
}

fn measure(opts: &Options, bin: &Path, work: &Path, cg: &Cgroups) -> anyhow::Result<Value> {
    let listener = loopback_listener()?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let steps = vec![
        format!("loop:getppid:{}", opts.getppid),
        format!("loop:openat:{}", opts.openat),
        format!("loop:connect=127.0.0.1:{port}:{}", opts.connect),
    ];
    let with_bpftrace = !opts.no_bpftrace && bpftrace::available();
    if !with_bpftrace {
        eprintln!("bpftrace not measured (install it with `apt-get install bpftrace`)");
    }

    // ratios[setting][op], one entry per round.
    let mut ratios: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 3]; SETTINGS.len()];
    let mut base_ns: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut delivered = Vec::new();
    let mut bpftrace_delivered = Vec::new();
    for round in 0..opts.rounds {
        let a = workload(bin, &cg.unmonitored, &steps)?;
        let trace = work.join(format!("round-{round}.amtrace"));
        let mut daemon = Daemon::start(bin, work, &cg.agents, &trace)?;
        let b = workload(bin, &cg.unmonitored, &steps)?;
        let (c, pid) = workload_pid(bin, &cg.monitored, &steps)?;
        std::thread::sleep(Duration::from_millis(1200));
        daemon.stop()?;
        let mut per_setting = vec![b, c];
        if with_bpftrace {
            let out = work.join("bpftrace.out");
            for mode in [bpftrace::Mode::Count, bpftrace::Mode::PrintfEach] {
                let bt = bpftrace::Bpftrace::start(mode, &cg.monitored, &out)?;
                per_setting.push(workload(bin, &cg.monitored, &steps)?);
                let (opens, connects) = bt.stop()?;
                if matches!(mode, bpftrace::Mode::PrintfEach) {
                    bpftrace_delivered
                        .push(json!({"open_printed": opens, "connect_printed": connects}));
                }
            }
        }
        base_ns.iter_mut().zip(&a).for_each(|(v, x)| v.push(*x));
        for (s, ns) in per_setting.iter().enumerate() {
            for i in 0..3 {
                ratios[s][i].push(ns[i] / a[i]);
            }
        }
        let counts = count_events(bin, &trace, pid, port)?;
        eprintln!("round {round}: a={a:?} settings={per_setting:?} delivered={counts}");
        delivered.push(counts);
        let _ = std::fs::remove_file(&trace);
    }

    let getppid_c = median(ratios[1][0].clone()) * median(base_ns[0].clone());
    let sustained = extra::sustained(
        bin,
        work,
        &cg.agents,
        &cg.monitored,
        opts.sustained_secs,
        getppid_c,
    )?;
    eprintln!("sustained: {sustained}");
    let startup = extra::startup(bin, &cg.agents, &cg.monitored, opts.startups, &[])?;
    eprintln!("startup: {startup}");
    let flood = extra::flood(
        bin,
        work,
        &cg.agents,
        (&cg.flooder, "flood"),
        (&cg.victim, "victim"),
        opts.flood,
        opts.flood / 10,
    )?;
    eprintln!("flood: {flood}");

    let per_op = |v: &Vec<Vec<f64>>| -> Value {
        OPS.iter()
            .zip(v)
            .map(|(op, xs)| ((*op).to_owned(), json!(median(xs.clone()))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut ratio_table = serde_json::Map::new();
    for (name, r) in SETTINGS.iter().zip(&ratios) {
        if !r[0].is_empty() {
            ratio_table.insert((*name).to_owned(), per_op(r));
        }
    }
    Ok(json!({
        "method": "workload pinned to CPU1, monitor (daemon or bpftrace) to CPU0; interleaved rounds; median of per-round ratios to the no-monitor run",
        "rounds": opts.rounds,
        "iterations": {"getppid": opts.getppid, "openat": opts.openat, "connect": opts.connect},
        "baseline_ns_per_op": per_op(&base_ns),
        "ratios": ratio_table,
        "delivered_per_round": delivered,
        "bpftrace_printf_delivered_per_round": bpftrace_delivered,
        "sustained": sustained,
        "startup": startup,
        "flood": flood,
    }))
}

/// Replays a trace and counts the monitored workload's events.
fn count_events(bin: &Path, trace: &Path, pid: u32, port: u16) -> anyhow::Result<Value> {
    let out = Command::new(bin)
        .arg("replay")
        .arg("--no-detect")
        .arg(trace)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .output()
        .context("replaying the bench trace")?;
    let (mut open, mut connect, mut lost, mut getppid) = (0u64, 0u64, 0u64, 0u64);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match e["kind"].as_str() {
            Some("open") if e["pid"] == pid && e["path"] == "/proc/self/stat" => open += 1,
            Some("connect") if e["pid"] == pid && e["port"] == port => connect += 1,
            Some("lost") => lost += e["count"].as_u64().unwrap_or(0),
            Some("syscall_count") if e["name"] == "getppid" => {
                getppid += e["count"].as_u64().unwrap_or(0)
            }
            _ => {}
        }
    }
    Ok(
        json!({"open_delivered": open, "connect_delivered": connect, "getppid_counted": getppid, "lost": lost}),
    )
}

fn print_table(r: &Value) {
    println!("| op | baseline ns/op | {} |", SETTINGS.join(" | "));
    println!("|---|---|{}", "---|".repeat(SETTINGS.len()));
    for op in OPS {
        let cells: Vec<String> = SETTINGS
            .iter()
            .map(|s| {
                r["ratios"][s][op]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"))
            })
            .collect();
        println!(
            "| {op} | {:.0} | {} |",
            r["baseline_ns_per_op"][op].as_f64().unwrap_or(f64::NAN),
            cells.join(" | ")
        );
    }
    for key in ["sustained", "startup", "flood"] {
        println!("{key}: {}", r[key]);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AgentCounts {
    pub opens: u64,
    pub lost: u64,
}

/// Replays a trace and counts each agent's opens of `/proc/self/stat` and kernel losses.
fn count_by_agent(
    bin: &Path,
    trace: &Path,
) -> anyhow::Result<std::collections::HashMap<String, AgentCounts>> {
    let out = Command::new(bin)
        .args(["replay", "--no-detect"])
        .arg(trace)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .output()
        .context("replaying the bench trace")?;
    let mut counts = std::collections::HashMap::<String, AgentCounts>::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(id) = e["agent"]["id"].as_str() else {
            continue;
        };
        let c = counts.entry(id.to_owned()).or_default();
        match e["kind"].as_str() {
            Some("open") if e["path"] == "/proc/self/stat" => c.opens += 1,
            Some("lost") => c.lost += e["count"].as_u64().unwrap_or(0),
            _ => {}
        }
    }
    Ok(counts)
}
