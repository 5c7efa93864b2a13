//! `cargo xtask bench contain`: time from an agent's offending syscall to its containment being
//! in force (PERF-ANCHORS row 6). The offender timestamps itself: it opens the Kubernetes
//! service-account token path (a `contain` rule), then connects a UDP socket to a loopback
//! address in a tight loop until the connect is refused with EPERM (the same cgroup connect hook
//! as TCP, a probe of a few microseconds), reports the elapsed time, and checks that a TCP
//! connect is refused too. Each run is released (two approvers) before the next. Idle, and with another monitored
//! agent making a steady `--background-rate` syscalls a second, every syscall id streamed to the
//! daemon (the unit of row 4).

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_monitor::cgroup;
use anyhow::{Context as _, bail};
use serde_json::json;

#[derive(clap::Args)]
pub struct Options {
    /// Containments measured per setting.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Syscalls per second of the background agent (every syscall id is streamed).
    #[arg(long, default_value_t = 1_000_000)]
    background_rate: u64,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let bin = crate::build_release(&root)?;
    let work = tempfile::tempdir()?;
    let mount = cgroup::v2_mount()?;
    let base = mount.join(format!(
        "agent-monitor-bench-contain-{}",
        std::process::id()
    ));
    let agent = base.join("agents/fraud/offender");
    let noisy = base.join("agents/fraud/noisy");
    cgroup::create(&agent)?;
    cgroup::create(&noisy)?;
    let result = measure(opts, &bin, work.path(), &base, &agent, &noisy);
    cgroup::remove_tree(&base);
    let report = result?;
    let out = root.join("bench/results/contain.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("written to {}", out.display());
    Ok(())
}

fn measure(
    opts: &Options,
    bin: &Path,
    work: &Path,
    base: &Path,
    agent: &Path,
    noisy: &Path,
) -> anyhow::Result<serde_json::Value> {
    // The offender's UDP probes need no listener; its closing TCP check connects here.
    let listener = crate::capture::daemon::loopback_listener()?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "watch: [{}]\nrescan_interval_ms: 50\nstate_dir: {}\npin_dir: null\n\
             detection:\n  rules_dir: {}\n  models_dir: {}\n",
            base.join("agents").display(),
            work.join("state").display(),
            crate::workspace_root()?.join("rules").display(),
            work.join("no-models").display()
        ),
    )?;
    let ready = work.join("ready");
    let stats = work.join("stats.json");
    let mut daemon = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .args(["run", "--output", "/dev/null", "--config"])
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready)
        .arg("--stats-file")
        .arg(&stats)
        .env("RUST_LOG", "error")
        .spawn()?;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            bail!("daemon not ready after 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let idle = runs(opts.runs, bin, &config, agent, port);
    let (mut noise, rates) = background(bin, noisy, opts.background_rate)?;
    // Let the background reach its rate before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let loaded = runs(opts.runs, bin, &config, agent, port);
    let _ = noise.kill();
    let _ = noise.wait();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let _ = daemon.wait();
    let daemon_stats: serde_json::Value = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let per_second = rates.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(json!({
        "method": "offender opens the service-account token path (contain rule), then connects a UDP socket in a loop until the connect is refused with EPERM (cgroup connect4 hook, as for TCP; a TCP connect is then checked to be refused too); microseconds from the open to that refusal; released with two approvers between runs; daemon on CPU 0 with the shipped rules",
        "idle": summary(&idle?),
        "under_load": summary(&loaded?),
        "background": {
            "what": "another monitored agent calling getppid at a steady rate on CPU 1, every syscall id streamed to the daemon",
            "target_syscalls_per_s": opts.background_rate,
            "measured_syscalls_per_s": crate::stats::median(per_second.clone()),
            "seconds": per_second.len(),
        },
        "daemon": {
            "syscall_ids_delivered": daemon_stats["syscall_ids"],
            "kernel_lost": daemon_stats["kernel_lost"],
        },
    }))
}

/// The background agent and the calls it made in each second (it prints them).
fn background(
    bin: &Path,
    noisy: &Path,
    rate: u64,
) -> anyhow::Result<(Child, Arc<Mutex<Vec<f64>>>)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(bin)
        .args(["workload", &format!("rate:getppid:{rate}:3600")])
        .stdout(Stdio::piped());
    let mut child = cgroup::spawn_in(noisy, &mut cmd)?;
    let out = child.stdout.take().context("background stdout")?;
    let rates = Arc::new(Mutex::new(Vec::new()));
    let sink = rates.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("rate ").and_then(|n| n.parse().ok())
                && let Ok(mut r) = sink.lock()
            {
                r.push(n);
            }
        }
    });
    Ok((child, rates))
}

fn runs(n: usize, bin: &Path, config: &Path, agent: &Path, port: u16) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..n {
        // On CPU 1, away from the daemon on CPU 0 (the PERF-ANCHORS set-up): an offender that
        // lands on the daemon's CPU spins its connect loop there, and the daemon's reaction
        // waits for the scheduler to preempt it.
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1"])
            .arg(bin)
            .arg("workload")
            .arg(format!(
                "offend:/var/run/secrets/kubernetes.io/serviceaccount/token:127.0.0.1:{port}"
            ))
            .stdout(Stdio::piped());
        let child = cgroup::spawn_in(agent, &mut cmd)?;
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let us: f64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("offender output {text:?}"))?;
        out.push(us);
        for approver in ["bench-a", "bench-b"] {
            let status = Command::new(bin)
                .args(["release", "offender", "--approver", approver, "--config"])
                .arg(config)
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("release by {approver} failed");
            }
        }
    }
    Ok(out)
}

fn summary(xs: &[f64]) -> serde_json::Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({"runs": v.len(), "p50_us": pct(0.5), "p99_us": pct(0.99), "max_us": pct(1.0)})
}
