//! bpftrace measured the same way as the daemon, for the side-by-side columns of BENCHMARKS.md:
//! (d) per-cgroup syscall counts in a kernel map, (e) one printf per openat and connect.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Count,
    PrintfEach,
}

pub struct Bpftrace {
    child: Child,
    out: PathBuf,
}

pub fn available() -> bool {
    Command::new("bpftrace")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Bpftrace {
    /// Starts bpftrace on CPU 0 filtered to `cgroup`; returns once its probes are attached.
    pub fn start(mode: Mode, cgroup: &Path, out: &Path) -> anyhow::Result<Self> {
        let cg = cgroup.display();
        let program = match mode {
            Mode::Count => format!(
                "tracepoint:raw_syscalls:sys_enter /cgroup == cgroupid(\"{cg}\")/ {{ @calls[args->id] = count(); }}"
            ),
            Mode::PrintfEach => format!(
                "tracepoint:syscalls:sys_enter_openat /cgroup == cgroupid(\"{cg}\")/ {{ printf(\"open %s\\n\", str(args->filename)); }} \
                 tracepoint:syscalls:sys_enter_connect /cgroup == cgroupid(\"{cg}\")/ {{ printf(\"connect\\n\"); }}"
            ),
        };
        let _ = std::fs::remove_file(out);
        let child = Command::new("taskset")
            .args(["-c", "0", "bpftrace", "-o"])
            .arg(out)
            .arg("-e")
            .arg(program)
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let start = Instant::now();
        // bpftrace writes "Attaching N probes..." just before attaching.
        while !std::fs::read_to_string(out).is_ok_and(|s| s.contains("Attaching")) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("bpftrace did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            child,
            out: out.to_owned(),
        })
    }

    /// Stops bpftrace; returns (open lines, connect lines) it printed.
    pub fn stop(mut self) -> anyhow::Result<(u64, u64)> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let opens = text
            .lines()
            .filter(|l| *l == "open /proc/self/stat")
            .count();
        let connects = text.lines().filter(|l| *l == "connect").count();
        let _ = std::fs::remove_file(&self.out);
        Ok((opens as u64, connects as u64))
    }
}
