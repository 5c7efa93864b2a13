//! Recording a scenario's trace for replay: the same stage as a live drill, but the daemon is
//! `agent-monitor record --agent <id>` (no detection, no response), so the attack runs to its
//! end and the trace holds all of it. The replay decides, in trace time, what a live run
//! would have.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    fixtures::Targets,
    scenario::Scenario,
    stage::{Daemon, Programs, Stage},
};

/// Largest trace kept in the repository.
pub const MAX_TRACE_BYTES: u64 = 1 << 20;

/// Records `scenario` into `out` (or its usual trace path); returns the path and its size.
pub fn run(
    scenario: &Scenario,
    programs: &Programs,
    targets: &Targets,
    out: Option<&Path>,
) -> anyhow::Result<(PathBuf, u64)> {
    let dest = out.map_or_else(|| scenario.trace_path(), Path::to_owned);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = dest.with_extension("amtrace.partial");
    let mut stage = Stage::new(
        scenario,
        programs,
        targets,
        &Daemon::Record {
            trace: partial.clone(),
        },
    )?;
    stage.start_benign(scenario)?;
    let started = Instant::now();
    let at = scenario.attack.as_ref().map(|a| a.at);
    let mut attacked = false;
    let limit = scenario.benign.duration + Duration::from_secs(30);
    loop {
        if !attacked && at.is_some_and(|at| started.elapsed() >= at) {
            stage.start_attack(scenario)?;
            attacked = true;
        }
        let all_done = Stage::done(&mut stage.benign) && Stage::done(&mut stage.attack);
        if all_done && (attacked || at.is_none()) {
            break;
        }
        if started.elapsed() > limit {
            bail!(
                "{}: the workload did not end within {limit:?}",
                scenario.name
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the last counters and flows be read before the recorder stops.
    std::thread::sleep(Duration::from_millis(1200));
    stage.kill_all_but(None);
    if let Err(e) = stage.stop_daemon() {
        bail!("{e:#}\n{}", stage.daemon_log());
    }
    let size = std::fs::metadata(&partial)
        .with_context(|| format!("{}: no trace written", partial.display()))?
        .len();
    if size > MAX_TRACE_BYTES {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{}: the trace is {size} bytes, above {MAX_TRACE_BYTES}: shorten the benign workload",
            scenario.name
        );
    }
    std::fs::rename(&partial, &dest)?;
    Ok((dest, size))
}
