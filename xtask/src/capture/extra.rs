//! The capture measurements beyond the per-syscall tax: sustained lossless rate (PERF-ANCHORS
//! row 4), start-up to first event (row 8) and flood isolation (row 9).

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_monitor::cgroup;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::daemon::{Daemon, workload_pid};
use crate::stats::median;

/// Row 4: a getppid loop in the monitored cgroup for about `secs`, every syscall id streamed to
/// userspace (64 per record). Delivered ids are compared with the kernel's own syscall counters.
pub fn sustained(
    bin: &Path,
    work: &Path,
    agents: &Path,
    monitored: &Path,
    secs: u64,
    getppid_ns: f64,
) -> anyhow::Result<Value> {
    let stats = work.join("sustained-stats.json");
    let mut daemon = Daemon::start_with(
        bin,
        work,
        agents,
        Path::new("/dev/null"),
        "0",
        &["--stats-file", &stats.to_string_lossy()],
    )?;
    let n = (secs as f64 * 1e9 / getppid_ns.max(1.0)) as u64;
    let start = Instant::now();
    workload_pid(bin, monitored, &[format!("loop:getppid:{n}")])?;
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    daemon.stop()?;
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    let ids = s["syscall_ids"].as_u64().unwrap_or(0);
    Ok(json!({
        "what": "syscall ids streamed from a getppid loop in a monitored cgroup",
        "seconds": elapsed,
        "syscalls_counted_in_kernel": s["syscalls_counted"],
        "syscall_ids_delivered": ids,
        "kernel_lost": s["kernel_lost"],
        "events_per_second": ids as f64 / elapsed,
    }))
}

/// Row 8: from launching the daemon to the first event of an already busy agent on its output.
/// `args` are added to the daemon's command line (e.g. a `--config`).
pub fn startup(
    bin: &Path,
    agents: &Path,
    monitored: &Path,
    reps: usize,
    args: &[&str],
) -> anyhow::Result<Value> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(bin)
        .args(["workload", "loop:openat:1000000000"])
        .stdout(Stdio::null());
    let mut busy = cgroup::spawn_in(monitored, &mut cmd)?;
    let mut times = Vec::new();
    let mut phases = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let mut daemon = Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin)
            .args(["run", "--watch"])
            .arg(agents)
            .args(args)
            .env(
                "RUST_LOG",
                format!("error,{}=info", agent_monitor::startup::LOG_TARGET),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out = daemon.stdout.take().context("daemon stdout")?;
        let err = daemon.stderr.take().context("daemon stderr")?;
        // The daemon's own phase timings, logged once every program is attached (after the
        // first batch).
        let (phases_tx, phases_rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some((_, json)) = line.split_once(agent_monitor::startup::LOG_PREFIX)
                    && let Ok(v) = serde_json::from_str::<Value>(json)
                {
                    let _ = phases_tx.send(v);
                }
            }
        });
        let mut first = None;
        let mut out = BufReader::new(out);
        let mut line = String::new();
        while out.read_line(&mut line)? > 0 {
            if line.contains(r#""kind":"open""#) {
                first = Some(start.elapsed());
                break;
            }
            line.clear();
        }
        // The rest of the output is read until the daemon ends: a full pipe would stop it before
        // it finishes starting.
        let drain = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        phases.push(
            phases_rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or(Value::Null),
        );
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = (log.join(), drain.join());
        if let Some(t) = first {
            times.push(t.as_secs_f64() * 1e3);
        }
    }
    let _ = busy.kill();
    let _ = busy.wait();
    Ok(json!({
        "what": "daemon launch to the first open event of a busy monitored agent on its JSON output",
        "runs_ms": times,
        "median_ms": median(times.clone()),
        "daemon_phases_ms": phases,
    }))
}

/// Row 9: one agent floods (openat loop, every open an event with its path) while another does
/// a known number of opens; the daemon shares the flooder's CPU, so the ring buffer can fill.
pub fn flood(
    bin: &Path,
    work: &Path,
    agents: &Path,
    flooder: (&Path, &str),
    victim: (&Path, &str),
    flood_ops: u64,
    victim_ops: u64,
) -> anyhow::Result<Value> {
    let trace = work.join("flood.amtrace");
    let mut daemon = Daemon::start_with(bin, work, agents, &trace, "1", &[])?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(bin)
        .arg("workload")
        .arg(format!("loop:openat:{flood_ops}"))
        .stdout(Stdio::null());
    let mut flood = cgroup::spawn_in(flooder.0, &mut cmd)?;
    workload_pid(bin, victim.0, &[format!("loop:openat:{victim_ops}")])?;
    flood.wait()?;
    std::thread::sleep(Duration::from_millis(1500));
    daemon.stop()?;
    let counts = super::count_by_agent(bin, &trace)?;
    let _ = std::fs::remove_file(&trace);
    let of = |id: &str| counts.get(id).copied().unwrap_or_default();
    let (f, v) = (of(flooder.1), of(victim.1));
    Ok(json!({
        "what": "flooder and victim agents and the daemon all on CPU 1",
        "flooder": {"generated": flood_ops, "delivered": f.opens, "lost": f.lost},
        "victim": {"generated": victim_ops, "delivered": v.opens, "lost": v.lost},
    }))
}
