//! `cargo xtask bench capture`: the cost of monitoring, measured the way PERF-ANCHORS.md does.
//!
//! Each round runs the same workload (getppid, openat+close, loopback connect loops) pinned to
//! CPU 1 in three settings: (a) no daemon, (b) daemon running (pinned to CPU 0) with the workload
//! in an unmonitored cgroup, (c) the workload in a monitored cgroup. Rounds are interleaved and
//! the median of per-round ratios to (a) is reported. The daemon records a trace; replaying it
//! counts the events delivered against those the workload generated, and the kernel's loss
//! counters are read from the same trace.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent_monitor::cgroup;
use anyhow::{Context as _, bail};
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
    /// openat calls for the sustained-rate run in the monitored cgroup.
    #[arg(long, default_value_t = 1_000_000)]
    sustained: u64,
}

const OPS: [&str; 3] = ["getppid", "openat", "connect"];

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "agent-monitor"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building agent-monitor failed");
    }
    let bin = root.join("target/release/agent-monitor");
    let work = root.join("target/bench-capture");
    std::fs::create_dir_all(&work)?;

    let mount = cgroup::v2_mount()?;
    let base = mount.join(format!("agent-monitor-bench-{}", std::process::id()));
    let unmonitored = base.join("unmonitored");
    let agents = base.join("agents");
    let monitored = agents.join("bench/agent-0");
    cgroup::create(&unmonitored)?;
    cgroup::create(&monitored)?;
    let result = measure(opts, &bin, &work, &agents, &unmonitored, &monitored);
    cgroup::remove_tree(&base);
    let report = result?;
    let out = root.join("bench/results/capture.json");
    std::fs::create_dir_all(out.parent().unwrap_or(&root))?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(&report);
    println!("written to {}", out.display());
    Ok(())
}

fn measure(
    opts: &Options,
    bin: &Path,
    work: &Path,
    agents: &Path,
    unmonitored: &Path,
    monitored: &Path,
) -> anyhow::Result<Value> {
    let listener = loopback_listener()?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let steps = vec![
        format!("loop:getppid:{}", opts.getppid),
        format!("loop:openat:{}", opts.openat),
        format!("loop:connect=127.0.0.1:{port}:{}", opts.connect),
    ];

    let mut ratios_b: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut ratios_c: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut base_ns: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut delivered = json!([]);
    for round in 0..opts.rounds {
        let a = workload(bin, unmonitored, &steps)?;
        let trace = work.join(format!("round-{round}.amtrace"));
        let mut daemon = Daemon::start(bin, work, agents, &trace)?;
        let b = workload(bin, unmonitored, &steps)?;
        let (c, pid) = workload_pid(bin, monitored, &steps)?;
        std::thread::sleep(Duration::from_millis(1200));
        daemon.stop()?;
        for i in 0..3 {
            base_ns[i].push(a[i]);
            ratios_b[i].push(b[i] / a[i]);
            ratios_c[i].push(c[i] / a[i]);
        }
        let counts = count_events(bin, &trace, pid, port)?;
        eprintln!("round {round}: a={a:?} b={b:?} c={c:?} delivered={counts}");
        delivered
            .as_array_mut()
            .unwrap_or(&mut Vec::new())
            .push(counts);
        let _ = std::fs::remove_file(&trace);
    }

    // Sustained lossless rate: one producer core opening files as fast as it can.
    let trace = work.join("sustained.amtrace");
    let mut daemon = Daemon::start(bin, work, agents, &trace)?;
    let start = Instant::now();
    let (_, pid) = workload_pid(bin, monitored, &[format!("loop:openat:{}", opts.sustained)])?;
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1200));
    daemon.stop()?;
    let sustained = count_events(bin, &trace, pid, 0)?;
    let _ = std::fs::remove_file(&trace);
    let got = sustained["open_delivered"].as_u64().unwrap_or(0);

    let per_op = |v: &Vec<Vec<f64>>| -> Value {
        OPS.iter()
            .zip(v)
            .map(|(op, xs)| ((*op).to_owned(), json!(median(xs.clone()))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(json!({
        "method": "workload pinned to CPU1, daemon to CPU0; interleaved rounds; median of per-round ratios to the no-daemon run",
        "rounds": opts.rounds,
        "iterations": {"getppid": opts.getppid, "openat": opts.openat, "connect": opts.connect},
        "baseline_ns_per_op": per_op(&base_ns),
        "ratio_unmonitored_cgroup": per_op(&ratios_b),
        "ratio_monitored_cgroup": per_op(&ratios_c),
        "delivered_per_round": delivered,
        "sustained": {
            "openat_generated": opts.sustained,
            "open_events_delivered": got,
            "kernel_lost": sustained["lost"],
            "seconds": secs,
            "events_per_second": got as f64 / secs,
        },
    }))
}

fn workload(bin: &Path, cg: &Path, steps: &[String]) -> anyhow::Result<Vec<f64>> {
    Ok(workload_pid(bin, cg, steps)?.0)
}

/// Runs the workload pinned to CPU 1 in `cg`; returns ns/op per step and its pid.
fn workload_pid(bin: &Path, cg: &Path, steps: &[String]) -> anyhow::Result<(Vec<f64>, u32)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(bin)
        .arg("workload")
        .args(steps)
        .stdout(Stdio::piped());
    let child = cgroup::spawn_in(cg, &mut cmd)?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("workload failed: {}", out.status);
    }
    let ns = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .collect();
    Ok((ns, pid))
}

struct Daemon(Child);

impl Daemon {
    fn start(bin: &Path, work: &Path, agents: &Path, trace: &Path) -> anyhow::Result<Self> {
        let ready = work.join("ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin)
            .arg("record")
            .arg("--output")
            .arg(trace)
            .arg("--watch")
            .arg(agents)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .spawn()?;
        let start = Instant::now();
        while !ready.exists() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("daemon not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self(child))
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.0.wait()?;
        Ok(())
    }
}

/// Replays a trace and counts the monitored workload's events.
fn count_events(bin: &Path, trace: &Path, pid: u32, port: u16) -> anyhow::Result<Value> {
    let out = Command::new(bin)
        .arg("replay")
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
    println!("| op | baseline ns/op | unmonitored cgroup | monitored cgroup |");
    println!("|---|---|---|---|");
    for op in OPS {
        println!(
            "| {op} | {:.0} | {:.2}x | {:.2}x |",
            r["baseline_ns_per_op"][op].as_f64().unwrap_or(f64::NAN),
            r["ratio_unmonitored_cgroup"][op]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["ratio_monitored_cgroup"][op].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("sustained: {}", r["sustained"]);
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has a parent")?
        .to_owned())
}

/// A loopback listener with a deep accept queue: with the default 128 a descheduled accept
/// thread lets the queue overflow, and the dropped SYN's one-second retry swamps the mean.
fn loopback_listener() -> anyhow::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )?;
    listen(&fd, Backlog::new(4096)?)?;
    Ok(TcpListener::from(fd))
}
