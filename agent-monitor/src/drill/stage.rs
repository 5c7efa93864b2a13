//! One scenario's live stage, shared by live drills and recordings: a fresh cgroup tree with the
//! agent's cgroup, the agent's private files, a daemon (`agent-monitor run` or `record`) started
//! as a child process on a configuration that watches only that tree, and the agent's benign
//! workload and attack started inside the cgroup. Everything is removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_yaml::Value as Yaml;

use super::{
    fixtures::{AgentFiles, HOME, Placeholders, Targets},
    scenario::Scenario,
};
use crate::cgroup;

/// How the harness finds the daemon and the agent program.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The agent-monitor binary (daemon, workload and release CLI).
    pub bin: PathBuf,
    /// The base configuration file (`None`: the embedded default), and the rules and models
    /// directories to use (absolute).
    pub base_config: Option<PathBuf>,
    pub rules_dir: PathBuf,
    pub models_dir: PathBuf,
    /// The program the benign agent runs (its `agent:` workload step); default: `bin`. The
    /// class models learned agents of both builds (in a debug build std checks every file
    /// descriptor with an extra `fcntl` before closing it), so either works. The attack and the
    /// harness's probes run `bin` (their steps are this build's).
    pub agent: Option<PathBuf>,
}

impl Programs {
    /// The binary the agent processes run: the daemon's, unless it lives where the agent's
    /// private mounts would hide it, then a copy in `dir`.
    fn visible(bin: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        if AgentFiles::hidden().iter().any(|h| bin.starts_with(h)) {
            let copy = dir.join(name);
            std::fs::copy(bin, &copy)
                .with_context(|| format!("copying {} for the agent", bin.display()))?;
            return Ok(copy);
        }
        Ok(bin.to_owned())
    }
}

/// Which daemon a stage runs.
pub enum Daemon {
    /// `agent-monitor run`: detection and response, containment pinned in `pin_dir`.
    Run { keep_frozen: bool },
    /// `agent-monitor record --agent ID`: the trace of the agent only.
    Record { trace: PathBuf },
}

pub struct Stage {
    pub files: AgentFiles,
    pub root: PathBuf,
    pub agent_dir: PathBuf,
    pub cgroup_id: u64,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub output: PathBuf,
    pub placeholders: Placeholders,
    /// What the benign agent runs, and what the attack and probes run (visible inside the
    /// agent's private mounts).
    agent_bin: PathBuf,
    attack_bin: PathBuf,
    programs: Programs,
    daemon: Option<Child>,
    pub benign: Option<Child>,
    pub attack: Option<Child>,
}

impl Stage {
    pub fn new(
        scenario: &Scenario,
        programs: &Programs,
        targets: &Targets,
        daemon: &Daemon,
    ) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let files = AgentFiles::new(&scenario.name)?;
        let work = files.work_dir().to_owned();
        let mount = cgroup::v2_mount()?;
        let tag = format!("agent-monitor-drill-{}-{n}", std::process::id());
        let root = mount.join(&tag);
        let agent_dir = root
            .join("agents")
            .join(&scenario.class)
            .join(scenario.agent_id());
        let cgroup_id = cgroup::create(&agent_dir)?;
        let pin_dir = Path::new("/sys/fs/bpf").join(&tag);
        let mut stage = Self {
            placeholders: files.placeholders(targets),
            agent_bin: Programs::visible(
                programs.agent.as_ref().unwrap_or(&programs.bin),
                &work,
                "agent",
            )?,
            attack_bin: Programs::visible(&programs.bin, &work, "agent-monitor")?,
            programs: programs.clone(),
            config: work.join("config.yaml"),
            output: work.join("events.jsonl"),
            files,
            root,
            agent_dir,
            cgroup_id,
            pin_dir,
            daemon: None,
            benign: None,
            attack: None,
        };
        stage.write_config(daemon)?;
        stage.start_daemon(scenario, daemon)?;
        Ok(stage)
    }

    /// The base configuration with the stage's overrides (watched tree, state, pins, rules,
    /// models, snapshot into the work directory).
    fn write_config(&self, daemon: &Daemon) -> anyhow::Result<()> {
        let text = match &self.programs.base_config {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            None => crate::config::DEFAULT_YAML.to_owned(),
        };
        let mut config: Yaml = serde_yaml::from_str(&text)?;
        let work = self.files.work_dir();
        let map = config
            .as_mapping_mut()
            .context("the base configuration is not a mapping")?;
        let s = |p: &Path| Yaml::String(p.display().to_string());
        map.insert(
            "watch".into(),
            Yaml::Sequence(vec![s(&self.root.join("agents"))]),
        );
        map.insert("agents".into(), Yaml::Sequence(vec![]));
        map.insert("rescan_interval_ms".into(), 50.into());
        map.insert("state_dir".into(), s(&work.join("state")));
        map.insert("pin_dir".into(), s(&self.pin_dir));
        let detection = map
            .entry("detection".into())
            .or_insert_with(|| Yaml::Mapping(Default::default()));
        if let Some(d) = detection.as_mapping_mut() {
            d.insert("rules_dir".into(), s(&self.programs.rules_dir));
            d.insert("models_dir".into(), s(&self.programs.models_dir));
        }
        if let Daemon::Run { keep_frozen } = daemon {
            let key = work.join("evidence.key");
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random key: {e}"))?;
            std::fs::write(&key, hex::encode(bytes))?;
            let mut snapshot = serde_yaml::Mapping::new();
            snapshot.insert("output_dir".into(), s(&work.join("evidence")));
            snapshot.insert("signing_key_file".into(), s(&key));
            map.insert("snapshot".into(), Yaml::Mapping(snapshot));
            let policy = map
                .entry("policy".into())
                .or_insert_with(|| Yaml::Mapping(Default::default()));
            if let Some(p) = policy.as_mapping_mut() {
                p.insert("keep_frozen".into(), (*keep_frozen).into());
            }
        }
        let text = serde_yaml::to_string(&config)?;
        crate::config::Config::parse(&text, &self.config)
            .context("the drill configuration does not load")?;
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    fn start_daemon(&mut self, scenario: &Scenario, daemon: &Daemon) -> anyhow::Result<()> {
        let work = self.files.work_dir().to_owned();
        let ready = work.join("ready");
        let log = std::fs::File::create(work.join("daemon.log"))?;
        let mut cmd = Command::new(&self.programs.bin);
        match daemon {
            Daemon::Run { .. } => {
                cmd.arg("run").arg("--output").arg(&self.output);
            }
            Daemon::Record { trace } => {
                cmd.arg("record")
                    .arg("--agent")
                    .arg(scenario.agent_id())
                    .arg("--output")
                    .arg(trace)
                    .arg("--json")
                    .arg(&self.output);
            }
        }
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--ready-file")
            .arg(&ready)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().context("starting the daemon")?;
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the daemon exited before it was ready ({status}); its log: {}",
                    work.join("daemon.log").display()
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("the daemon was not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.daemon = Some(child);
        Ok(())
    }

    /// Starts `agent-monitor workload <steps>` in the agent's cgroup with its private mounts.
    pub fn spawn_workload(&self, steps: &[String], quiet: bool) -> anyhow::Result<Child> {
        self.spawn_program(&self.attack_bin, steps, quiet)
    }

    fn spawn_program(&self, bin: &Path, steps: &[String], quiet: bool) -> anyhow::Result<Child> {
        let mut cmd = Command::new(bin);
        cmd.arg("workload")
            .args(steps)
            .env("HOME", HOME)
            .stdin(Stdio::null());
        if quiet {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        } else {
            let log = self.files.work_dir().join("workload.log");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        self.files.spawn().spawn(&self.agent_dir, &mut cmd)
    }

    /// Starts the benign workload of the scenario.
    pub fn start_benign(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let service = self
            .placeholders
            .get("service")
            .unwrap_or_default()
            .to_owned();
        let step = format!(
            "agent:{}:{}:{service}",
            scenario.benign.workload.class(),
            scenario.benign.duration.as_secs().max(1)
        );
        self.benign = Some(self.spawn_program(&self.agent_bin, &[step], false)?);
        Ok(())
    }

    /// Starts the attack: `mark:<name>` then the scenario's steps, rendered.
    pub fn start_attack(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let Some(attack) = &scenario.attack else {
            return Ok(());
        };
        let mut steps = vec![format!("mark:{}", scenario.name)];
        for s in &attack.steps {
            steps.push(self.placeholders.render(s)?);
        }
        self.attack = Some(self.spawn_workload(&steps, false)?);
        Ok(())
    }

    /// Whether a child has exited (or was never started).
    pub fn done(child: &mut Option<Child>) -> bool {
        match child {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// Processes in the agent's cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.agent_dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process of the cgroup except `keep` (SIGKILL ends frozen processes too) and
    /// waits for them to go.
    pub fn kill_all_but(&mut self, keep: Option<i32>) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let pids: Vec<i32> = self
                .pids()
                .into_iter()
                .filter(|p| Some(*p) != keep)
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for child in [&mut self.attack, &mut self.benign].into_iter().flatten() {
            if keep != Some(child.id() as i32) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Whether the cgroup is frozen now (`frozen 1` in `cgroup.events`).
    pub fn frozen(&self) -> bool {
        std::fs::read_to_string(self.agent_dir.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().eq(["frozen", "1"])))
    }

    /// Runs `agent-monitor release` as one approver; returns (success, output).
    pub fn release(&self, agent: &str, approver: &str) -> anyhow::Result<(bool, String)> {
        let out = Command::new(&self.programs.bin)
            .args([
                "release",
                agent,
                "--approver",
                approver,
                "--reason",
                "drill",
                "--config",
            ])
            .arg(&self.config)
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        ))
    }

    /// Runs one connect from inside the agent's cgroup; true when its outcome is `want`.
    pub fn check_connect(&self, want: &str) -> anyhow::Result<(bool, String)> {
        let listener = self.placeholders.get("listener").unwrap_or_default();
        let mut child = self.spawn_workload(&[format!("check-connect:{listener}:{want}")], true)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((
                    status.success(),
                    format!(
                        "connect from the agent's cgroup: expected {want}, {}",
                        if status.success() {
                            "got it"
                        } else {
                            "did not get it"
                        }
                    ),
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((
                    false,
                    format!(
                        "connect from the agent's cgroup (expected {want}) did not finish in 5 s"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon (SIGTERM, then it drains and exits) and returns its output lines.
    pub fn stop_daemon(&mut self) -> anyhow::Result<String> {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = d.try_wait()? {
                    if !status.success() {
                        bail!(
                            "the daemon exited with {status}; its log: {}",
                            self.files.work_dir().join("daemon.log").display()
                        );
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = d.kill();
                    bail!("the daemon did not stop within 30 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(std::fs::read_to_string(&self.output).unwrap_or_default())
    }

    /// The daemon's log (for errors).
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.files.work_dir().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.kill_all_but(None);
        let _ = std::fs::write(self.agent_dir.join("cgroup.freeze"), "0");
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        cgroup::remove_tree(&self.root);
        // A daemon that exits with a containment in force leaves it pinned: drills leave nothing.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
