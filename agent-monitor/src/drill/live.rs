//! Live drills: the benign workload in a fresh monitored cgroup, the attack re-enacted inside it
//! against loopback targets, the real daemon with real actuators (DENY_ALL and rate limits in
//! the kernel, forensic snapshot with freeze). The harness watches the kernel's pinned
//! containment map to time the containment, then checks that it holds (a connect from the
//! agent's cgroup fails with EPERM, or the cgroup is frozen), releases the agent with two
//! approvers through `agent-monitor release`, and checks the release (thawed, nothing left in the
//! map, a connect works).

use std::time::{Duration, Instant};

use super::{
    fixtures::Targets,
    outcome::{Mode, ScenarioResult, score},
    replay::{APPROVERS, parse_lines},
    scenario::Scenario,
    stage::{Daemon, Programs, Stage},
};
use crate::{config::Config, detect::Tier, respond::contain::Containment};

/// Time after the containment for the snapshot and its freeze to finish.
const SETTLE_CONTAINED: Duration = Duration::from_millis(500);
/// Time after the attack for late findings (rate windows, a DNS packet, counters).
const SETTLE_AFTER_ATTACK: Duration = Duration::from_millis(2500);
/// Time after the benign workload for its last events to arrive.
const SETTLE_AFTER_BENIGN: Duration = Duration::from_millis(500);

/// What the harness saw in the kernel while the scenario ran.
#[derive(Default)]
struct Observed {
    /// Boot-time ns when DENY_ALL was first in the map.
    deny_ns: Option<u64>,
    /// Boot-time ns when a rate limit was first in the map.
    rate_ns: Option<u64>,
    /// Boot-time ns when the cgroup was first seen frozen after the attack started.
    frozen_ns: Option<u64>,
}

impl Observed {
    /// When containment was first in force: the network refused or the agent frozen.
    fn contained_ns(&self) -> Option<u64> {
        match (self.deny_ns, self.frozen_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub fn run(
    scenario: &Scenario,
    programs: &Programs,
    targets: &Targets,
    config: &Config,
) -> anyhow::Result<ScenarioResult> {
    let mut stage = Stage::new(
        scenario,
        programs,
        targets,
        &Daemon::Run {
            keep_frozen: scenario.expect.frozen,
        },
    )?;
    let before = targets.hits.snapshot();
    let containment = Containment::open_pinned(&stage.pin_dir)?;
    stage.start_benign(scenario)?;
    let started = Instant::now();
    let attack_at = scenario.attack.as_ref().map(|a| a.at);
    let mut attack_started = false;
    let mut seen = Observed::default();
    let mut attack_done: Option<Instant> = None;
    let mut benign_done: Option<Instant> = None;
    let limit = scenario.benign.duration + Duration::from_secs(20);
    // When a containment that has not come is a miss: its deadline (or 5 s) after the attack.
    let contain_deadline = attack_at.map(|at| {
        at + scenario
            .expect
            .contain_within
            .unwrap_or(Duration::from_secs(5))
            + SETTLE_AFTER_ATTACK
    });
    let waits_for_anomaly = scenario
        .expect
        .by
        .contains(&super::scenario::Detector::Anomaly);
    loop {
        let now = crate::clock::boot_ns();
        if let Ok(Some(p)) = containment.policy(stage.cgroup_id) {
            if p.deny_all && seen.deny_ns.is_none() {
                seen.deny_ns = Some(now);
            }
            if (p.connects_per_s.is_some() || p.bytes_per_s.is_some()) && seen.rate_ns.is_none() {
                seen.rate_ns = Some(now);
            }
        }
        if seen.frozen_ns.is_none() && attack_started && stage.frozen() {
            seen.frozen_ns = Some(now);
        }
        if !attack_started && attack_at.is_some_and(|at| started.elapsed() >= at) {
            stage.start_attack(scenario)?;
            attack_started = true;
        }
        if attack_started && attack_done.is_none() && Stage::done(&mut stage.attack) {
            attack_done = Some(Instant::now());
        }
        if benign_done.is_none() && Stage::done(&mut stage.benign) {
            benign_done = Some(Instant::now());
        }
        let settled = |t: Option<Instant>, d: Duration| t.is_some_and(|t| t.elapsed() >= d);
        let finished = if !scenario.is_attack() {
            settled(benign_done, SETTLE_AFTER_BENIGN)
        } else if scenario.expects_containment() {
            seen.deny_ns.is_some_and(|d| {
                crate::clock::boot_ns().saturating_sub(d) >= SETTLE_CONTAINED.as_nanos() as u64
            }) || contain_deadline.is_some_and(|d| started.elapsed() >= d)
        } else {
            settled(attack_done, SETTLE_AFTER_ATTACK)
                && (!waits_for_anomaly || benign_done.is_some())
        };
        if finished || started.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut notes = Vec::new();
    let benign_pid = stage.benign.as_ref().map(|c| c.id() as i32);
    let kernel_tier = if seen.deny_ns.is_some() {
        Some(Tier::Contain)
    } else if seen.rate_ns.is_some() {
        Some(Tier::RateLimit)
    } else {
        None
    };
    let mut held = None;
    let mut frozen = None;
    let mut release_verified = None;
    if let Some(tier) = kernel_tier {
        // The daemon records the decision once its actions ran or were queued; the snapshot
        // runs on its worker thread, and a kept freeze is checked once its bundle is written.
        wait_for_record(&stage, &scenario.agent_id(), tier);
        if tier == Tier::Contain {
            wait_for_bundle(&stage);
        }
        // Containment holds: DENY_ALL in the map, and the agent cannot connect (or cannot run
        // at all: frozen).
        let is_frozen = stage.frozen();
        frozen = Some(is_frozen);
        if tier == Tier::Contain {
            let deny = containment
                .policy(stage.cgroup_id)
                .ok()
                .flatten()
                .is_some_and(|p| p.deny_all);
            notes.push(format!(
                "kernel: DENY_ALL in force for cgroup {}: {deny}",
                stage.cgroup_id
            ));
            let refused = if is_frozen {
                notes.push("the agent's cgroup is frozen: no process in it can run".into());
                true
            } else {
                let (ok, note) = stage.check_connect("eperm")?;
                notes.push(note);
                ok
            };
            held = Some(deny && refused);
        } else {
            notes.push("kernel: rate limit in force (no containment)".into());
        }
        // The attack ends here (a SOC would kill it); the benign agent is released and goes on.
        stage.kill_all_but(benign_pid);
        let agent = scenario.agent_id();
        let needed = if tier == Tier::Contain { 2 } else { 1 };
        let mut released = false;
        for approver in &APPROVERS[..needed] {
            let (ok, out) = stage.release(&agent, approver)?;
            notes.push(format!("release by {approver}: {out}"));
            released = ok && out.contains("released by");
        }
        let thawed = !stage.frozen();
        let cleared = containment.policy(stage.cgroup_id).ok().flatten().is_none();
        let (connects, note) = stage.check_connect("ok")?;
        notes.push(format!(
            "after release: thawed {thawed}, containment map entry gone {cleared}; {note}"
        ));
        release_verified = Some(released && thawed && cleared && connects);
    }
    stage.kill_all_but(None);
    let text = match stage.stop_daemon() {
        Ok(t) => t,
        Err(e) => anyhow::bail!("{e:#}\n{}", stage.daemon_log()),
    };
    let lines = parse_lines(&text, &stage.output.display().to_string())?;
    let mut result = score(scenario, Mode::Live, &lines, &config.policy);
    // Live, containment is timed as the harness saw it in the kernel, not as decided.
    result.time_to_contain_ms = match (
        seen.contained_ns(),
        super::outcome::Lines { lines: &lines }.attack_start(scenario),
    ) {
        (Some(c), Some((start, _))) => Some((c as f64 - start as f64) / 1e6),
        _ => None,
    };
    result.containment_held = held;
    result.frozen = frozen;
    result.release_verified = release_verified;
    let after = targets.hits.snapshot();
    result.targets = after
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    result.notes.extend(notes);
    result.finish(scenario);
    Ok(result)
}

/// Waits (up to 60 s) until the daemon's state directory records the agent at `tier`.
fn wait_for_record(stage: &Stage, agent: &str, tier: Tier) {
    let state = crate::respond::state::StateDir::new(stage.files.work_dir().join("state"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if state
            .agent(agent)
            .ok()
            .flatten()
            .is_some_and(|r| r.tier >= Some(tier))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 15 s) until the snapshot worker has written a bundle into the stage's evidence
/// directory (a bundle is renamed into place whole, from `<name>.partial`).
fn wait_for_bundle(stage: &Stage) {
    let dir = stage.files.work_dir().join("evidence");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let written = std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
        });
        if written {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
