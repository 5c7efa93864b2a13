//! `cargo xtask bench contain`: time from an agent's offending syscall to its containment being
//! in force (PERF-ANCHORS row 6). The offender timestamps itself: it opens the Kubernetes
//! service-account token path (a `contain` rule), then connects to a loopback listener in a tight
//! loop until a connect is refused with EPERM, and reports the elapsed time. Each run is released
//! (two approvers) before the next. Idle, and with another agent streaming about a million
//! syscall ids per second in the background.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
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
    // A deep accept queue: the offender connects in a tight loop, and an overflowing queue's
    // one-second SYN retry would be measured instead of the containment.
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
    let mut daemon = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .args(["run", "--output", "/dev/null", "--config"])
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "error")
        .spawn()?;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("daemon not ready after 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let idle = runs(opts.runs, bin, &config, agent, port);
    let mut flood: Child = {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1"])
            .arg(bin)
            .args(["workload", "loop:getppid:100000000000"])
            .stdout(Stdio::null());
        cgroup::spawn_in(noisy, &mut cmd)?
    };
    let loaded = runs(opts.runs, bin, &config, agent, port);
    let _ = flood.kill();
    let _ = flood.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
    Ok(json!({
        "method": "offender opens the service-account token path (contain rule), then connects in a loop until EPERM; microseconds from the open to the first refused connect; released with two approvers between runs; daemon on CPU 0",
        "idle": summary(&idle?),
        "under_load": summary(&loaded?),
        "background": "another monitored agent running getppid in a loop on CPU 1, every syscall id streamed",
    }))
}

fn runs(n: usize, bin: &Path, config: &Path, agent: &Path, port: u16) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut cmd = Command::new(bin);
        cmd.arg("workload")
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
