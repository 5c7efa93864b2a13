//! `cargo xtask bench memory`: the daemon's memory with 1,000 and 10,000 monitored cgroups
//! (PERF-ANCHORS row 7) and its start-up to first event with them (row 8).
//!
//! For each count, that many agent cgroups are created for real under a temporary parent
//! (`<parent>/<class>/<agent-id>`, watched through the `watch` key), the release daemon is started
//! on them in a memory cgroup of its own, and once every agent is registered its memory is read
//! from `/proc/<pid>/status` (VmRSS, VmHWM and the parts of RSS), from the `memlock` of its BPF
//! map descriptors (kernel memory) and from its memory cgroup (everything the kernel charges to
//! it, which is what a container memory limit counts). Read twice: with every agent idle, and
//! after every agent has run one process (so each has events, windows and flight-recorder
//! entries). Start-up is then measured as `bench capture` measures it.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use agent_monitor::cgroup;
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Options {
    /// Numbers of monitored agent cgroups, measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    agents: Vec<usize>,
    /// Daemon launches for the start-up measurement at each count.
    #[arg(long, default_value_t = 5)]
    startups: usize,
    /// Seconds the daemon runs before each memory reading.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Ring buffer sizes (config `ring_buffer_mib`) measured at each count; none given: the
    /// default only. The daemon's RSS counts its ring buffer's pages.
    #[arg(long, value_delimiter = ',')]
    ring_buffer_mib: Vec<u32>,
}

const CLASSES: [&str; 3] = ["fraud", "onboarding", "compliance"];
/// PERF-ANCHORS row 7, MiB of RSS by number of agents.
const TARGETS_MIB: [(usize, f64); 2] = [(1_000, 25.0), (10_000, 40.0)];
const ROW8_TARGET_MS: f64 = 150.0;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let bin = crate::build_release(&root)?;
    let work = tempfile::tempdir()?;
    let mount = cgroup::v2_mount()?;
    let base = mount.join(format!("agent-monitor-bench-memory-{}", std::process::id()));
    let mut runs = Vec::new();
    let mut result = Ok(());
    let rings = if opts.ring_buffer_mib.is_empty() {
        vec![agent_monitor::config::Config::embedded().ring_buffer_mib]
    } else {
        opts.ring_buffer_mib.clone()
    };
    'counts: for &n in &opts.agents {
        let agents = base.join(format!("agents-{n}"));
        let dirs = create_agents(&agents, n);
        for &ring in &rings {
            let run = dirs
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .and_then(|dirs| {
                    let memcg = MemoryCgroup::create(&mount, &base, &format!("daemon-{n}-{ring}"))?;
                    let run = measure(opts, &root, &bin, work.path(), dirs, &memcg, ring);
                    memcg.remove();
                    run
                });
            match run {
                Ok(r) => runs.push(r),
                Err(e) => {
                    result = Err(e);
                    cgroup::remove_tree(&agents);
                    break 'counts;
                }
            }
        }
        cgroup::remove_tree(&agents);
    }
    cgroup::remove_tree(&base);
    result?;
    let report = json!({
        "method": "N agent cgroups created under a watched parent; release daemon (pinned to CPU 0, \
                   shipped rules and models, no pinning) in its own memory cgroup; memory read \
                   once every agent is registered (idle, with the CPU used meanwhile) and again \
                   after every agent ran one process; RSS split by mapping from smaps; start-up \
                   from launch to the first open event of a busy agent, with the daemon's own \
                   phase timings",
        "machine": machine()?,
        "runs": runs,
    });
    let out = root.join("bench/results/memory.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(&report);
    println!("written to {}", out.display());
    Ok(())
}

/// One daemon run on the agent cgroups `dirs` (all under one watched parent).
fn measure(
    opts: &Options,
    root: &Path,
    bin: &Path,
    work: &Path,
    dirs: &[PathBuf],
    memcg: &MemoryCgroup,
    ring_buffer_mib: u32,
) -> anyhow::Result<Value> {
    let n = dirs.len();
    let agents = dirs[0]
        .parent()
        .and_then(Path::parent)
        .context("agent cgroups are <parent>/<class>/<id>")?;
    let config = work.join(format!("memory-{n}-{ring_buffer_mib}.yaml"));
    std::fs::write(
        &config,
        format!(
            "watch: [{:?}]\nmax_agents: {n}\nring_buffer_mib: {ring_buffer_mib}\npin_dir: null\n\
             state_dir: {:?}\n",
            agents.display().to_string(),
            work.join("state").display().to_string(),
        ),
    )?;
    let config_arg = config.to_string_lossy().into_owned();

    let start = Instant::now();
    let ready = work.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut daemon = Daemon::start(root, bin, &config_arg, &ready, memcg)?;
    if let Err(e) = daemon.wait_ready(&ready, Duration::from_secs(300)) {
        let _ = daemon.stop();
        return Err(e);
    }
    let register_secs = start.elapsed().as_secs_f64();
    // CPU while idle: rescans of the watched parent, counter snapshots of every agent.
    let cpu_before = cpu_seconds(daemon.child.id())?;
    std::thread::sleep(Duration::from_secs(opts.settle_secs));
    let idle_cpu = (cpu_seconds(daemon.child.id())? - cpu_before) / opts.settle_secs as f64;
    let idle = daemon.sample(memcg, bin)?;
    eprintln!("{n} agents, {ring_buffer_mib} MiB ring buffer, idle: {idle}");

    // One short process in each agent cgroup: fork, exec, the loader's opens, exit.
    let activity_start = Instant::now();
    for dir in dirs {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "true"]);
        cgroup::spawn_in(dir, &mut cmd)?.wait()?;
    }
    let activity_secs = activity_start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(opts.settle_secs));
    let active = daemon.sample(memcg, bin)?;
    eprintln!("{n} agents, after activity: {active}");
    daemon.stop()?;
    // The daemon's output is buffered: every announcement is in it once it has exited.
    let lines = daemon.lines.load(Ordering::Relaxed);
    let registered = daemon.announced.load(Ordering::Relaxed);
    if registered != n as u64 {
        bail!("the daemon announced {registered} of {n} agents");
    }

    let startup = crate::capture::extra::startup(
        bin,
        agents,
        &dirs[0],
        opts.startups,
        &["--config", &config_arg],
    )?;
    eprintln!("{n} agents, startup: {startup}");
    let target = TARGETS_MIB
        .iter()
        .find(|(count, _)| *count == n)
        .map(|(_, mib)| *mib);
    Ok(json!({
        "agents": n,
        "ring_buffer_mib": ring_buffer_mib,
        "registered": registered,
        "seconds_to_announce_all": register_secs,
        "idle": idle,
        "idle_cpu_fraction_of_one_core": idle_cpu,
        "after_activity": active,
        "activity": {"processes": n, "seconds": activity_secs, "output_lines": lines},
        "row7_target_rss_mib": target,
        "startup": startup,
        "row8_target_ms": ROW8_TARGET_MS,
    }))
}

/// `<agents>/<class>/agent-NNNNN`, classes in turn.
fn create_agents(agents: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let dir = agents
                .join(CLASSES[i % CLASSES.len()])
                .join(format!("agent-{i:05}"));
            cgroup::create(&dir)?;
            Ok(dir)
        })
        .collect()
}

/// The daemon's memory cgroup: the memory controller of cgroup v1 on hybrid hosts, else a
/// cgroup v2 child with the memory controller enabled; `None` when neither is available (the
/// charged memory is then not reported).
struct MemoryCgroup {
    dir: Option<PathBuf>,
    /// The file with the current charge, and the one with the peak (if the kernel has one).
    current: &'static str,
    peak: Option<&'static str>,
}

impl MemoryCgroup {
    fn create(v2_mount: &Path, base: &Path, name: &str) -> anyhow::Result<Self> {
        if let Some(v1) = v1_memory_mount()? {
            let base_name = base.file_name().context("base cgroup name")?;
            let dir = v1.join(format!("{}-{name}", base_name.to_string_lossy()));
            std::fs::create_dir_all(&dir)?;
            return Ok(Self {
                dir: Some(dir),
                current: "memory.usage_in_bytes",
                peak: Some("memory.max_usage_in_bytes"),
            });
        }
        cgroup::create(base)?;
        let controllers = std::fs::read_to_string(v2_mount.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Ok(Self {
                dir: None,
                current: "",
                peak: None,
            });
        }
        // Enable the controller down to the daemon's cgroup (already on where systemd runs).
        let mut parent = v2_mount.to_owned();
        for part in base.strip_prefix(v2_mount)?.components() {
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
            parent = parent.join(part);
        }
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+memory");
        let dir = base.join(name);
        cgroup::create(&dir)?;
        let peak = dir.join("memory.peak").exists().then_some("memory.peak");
        Ok(Self {
            dir: Some(dir),
            current: "memory.current",
            peak,
        })
    }

    fn read(&self) -> anyhow::Result<Value> {
        let Some(dir) = &self.dir else {
            return Ok(Value::Null);
        };
        let kib = |file: &str| -> anyhow::Result<u64> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(text.trim().parse::<u64>()? / 1024)
        };
        Ok(json!({
            "cgroup": self.describe(),
            "current_kib": kib(self.current)?,
            "peak_kib": self.peak.map(kib).transpose()?,
        }))
    }

    fn describe(&self) -> Value {
        json!(self.dir.as_ref().map(|d| d.display().to_string()))
    }

    fn remove(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Where cgroup v1's memory controller is mounted, if it is.
fn v1_memory_mount() -> anyhow::Result<Option<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let fstype = fields.next()?;
        let options = fields.nth(1)?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(mount_point))
    }))
}

struct Daemon {
    child: Child,
    announced: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
}

impl Daemon {
    /// `run`s the daemon on CPU 0 in the memory cgroup, from the workspace root (so the shipped
    /// rules and models are loaded), and counts the agents it announces on its output.
    fn start(
        root: &Path,
        bin: &Path,
        config: &str,
        ready: &Path,
        memcg: &MemoryCgroup,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"])
            .arg(bin)
            .args(["run", "--config", config, "--ready-file"])
            .arg(ready)
            .current_dir(root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped());
        let mut child = match &memcg.dir {
            Some(dir) => cgroup::spawn_in(dir, &mut cmd)?,
            None => cmd.spawn()?,
        };
        let out = child.stdout.take().context("daemon stdout")?;
        let announced = Arc::new(AtomicU64::new(0));
        let lines = Arc::new(AtomicU64::new(0));
        let (a, l) = (announced.clone(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.fetch_add(1, Ordering::Relaxed);
                if line.contains(r#""kind":"agent_added""#) {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self {
            child,
            announced,
            lines,
        })
    }

    /// Waits for the ready file: the programs are attached and every agent cgroup that existed
    /// at start is registered (announced on the output, which is buffered).
    fn wait_ready(&mut self, ready: &Path, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = self.child.try_wait()? {
                bail!("the daemon exited ({status}) before it was ready");
            }
            if start.elapsed() > timeout {
                bail!("the daemon was not ready after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The daemon's memory now: /proc status fields, its BPF maps' memlock and its memory cgroup.
    fn sample(&self, memcg: &MemoryCgroup, bin: &Path) -> anyhow::Result<Value> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        let (maps, memlock) = bpf_maps_memlock(pid)?;
        Ok(json!({
            "vm_rss_kib": field("VmRSS"),
            "vm_hwm_kib": field("VmHWM"),
            "rss_anon_kib": field("RssAnon"),
            "rss_file_kib": field("RssFile"),
            "rss_by_mapping_kib": rss_by_mapping(pid, bin)?,
            "threads": field("Threads"),
            "bpf_maps": maps,
            "bpf_maps_memlock_kib": memlock / 1024,
            "memory_cgroup": memcg.read()?,
            "cpu_seconds_so_far": cpu_seconds(pid)?,
        }))
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        Ok(())
    }
}

/// The daemon's RSS by what is mapped, from /proc/<pid>/smaps: BPF maps (the ring buffer), the
/// daemon's binary, shared libraries, the heap and other anonymous memory (malloc
/// arenas, thread stacks), and the rest.
fn rss_by_mapping(pid: u32, bin: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let bin = bin.to_string_lossy();
    let (mut bpf, mut binary, mut libs, mut anon, mut other) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut name = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            name = fields.nth(4).unwrap_or("").to_owned();
            continue;
        }
        if first != "Rss:" {
            continue;
        }
        let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let bucket = if name.contains("bpf-map") || name.contains("bpf_ringbuf") {
            &mut bpf
        } else if name == bin {
            &mut binary
        } else if name.contains(".so") {
            &mut libs
        } else if name.is_empty() || name == "[heap]" || name.starts_with("[stack") {
            &mut anon
        } else {
            &mut other
        };
        *bucket += kib;
    }
    Ok(json!({
        "bpf_maps": bpf,
        "binary": binary,
        "libraries": libs,
        "heap_and_anonymous": anon,
        "other": other,
    }))
}

/// User and system CPU time of a process so far, from /proc/<pid>/stat (fields 14 and 15, after
/// the parenthesised command name), in USER_HZ: 100 on every Linux architecture this runs on.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
        .into_iter()
        .flatten()
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Ok(ticks as f64 / 100.0)
}

/// The number of BPF maps a process holds and the sum of their `memlock` (the kernel's estimate
/// of the memory each map uses), from /proc/<pid>/fdinfo.
fn bpf_maps_memlock(pid: u32) -> anyhow::Result<(u64, u64)> {
    let (mut maps, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().contains("bpf-map") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(info) else {
            continue;
        };
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("memlock:")) {
            maps += 1;
            bytes += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok((maps, bytes))
}

fn machine() -> anyhow::Result<Value> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    Ok(json!({
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu": cpu,
        "kernel": kernel,
    }))
}

fn print_table(r: &Value) {
    let mib = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k / 1024.0))
    };
    println!(
        "| agents | ring buffer MiB | VmRSS MiB idle / active | VmHWM MiB | RssAnon MiB | RssFile MiB | BPF maps memlock MiB | memory cgroup MiB (peak) | target RSS MiB | idle CPU % | start-up median ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for run in r["runs"].as_array().into_iter().flatten() {
        let (i, a) = (&run["idle"], &run["after_activity"]);
        println!(
            "| {} | {} | {} / {} | {} | {} | {} | {} | {} ({}) | {} | {:.1} | {:.0} |",
            run["agents"],
            run["ring_buffer_mib"],
            mib(&i["vm_rss_kib"]),
            mib(&a["vm_rss_kib"]),
            mib(&a["vm_hwm_kib"]),
            mib(&a["rss_anon_kib"]),
            mib(&a["rss_file_kib"]),
            mib(&a["bpf_maps_memlock_kib"]),
            mib(&a["memory_cgroup"]["current_kib"]),
            mib(&a["memory_cgroup"]["peak_kib"]),
            run["row7_target_rss_mib"],
            run["idle_cpu_fraction_of_one_core"]
                .as_f64()
                .unwrap_or(f64::NAN)
                * 100.0,
            run["startup"]["median_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
}
