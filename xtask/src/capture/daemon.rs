//! Starting the daemon and the workload for the capture benchmarks.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent_monitor::cgroup;
use anyhow::bail;

pub fn workload(bin: &Path, cg: &Path, steps: &[String]) -> anyhow::Result<Vec<f64>> {
    Ok(workload_pid(bin, cg, steps)?.0)
}

/// Runs the workload pinned to CPU 1 in `cg`; returns ns/op per step and its pid.
pub fn workload_pid(bin: &Path, cg: &Path, steps: &[String]) -> anyhow::Result<(Vec<f64>, u32)> {
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

pub struct Daemon(Child);

impl Daemon {
    /// `record`s the agents under `agents` to `trace`, pinned to CPU 0; waits until attached.
    pub fn start(bin: &Path, work: &Path, agents: &Path, trace: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, work, agents, trace, "0", &[])
    }

    /// Same, on CPU `cpu` and with extra `record` arguments.
    pub fn start_with(
        bin: &Path,
        work: &Path,
        agents: &Path,
        trace: &Path,
        cpu: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let ready = work.join("ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new("taskset")
            .args(["-c", cpu])
            .arg(bin)
            .arg("record")
            .arg("--output")
            .arg(trace)
            .arg("--watch")
            .arg(agents)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
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

    pub fn stop(&mut self) -> anyhow::Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.0.wait()?;
        Ok(())
    }
}

/// A loopback listener with a deep accept queue: with the default 128 a descheduled accept
/// thread lets the queue overflow, and the dropped SYN's one-second retry swamps the mean.
pub fn loopback_listener() -> anyhow::Result<TcpListener> {
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
