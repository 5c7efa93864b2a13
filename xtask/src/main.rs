//! Project tasks: `cargo xtask bench capture`, `cargo xtask bench pipeline`,
//! `cargo xtask bench contain`, `cargo xtask bench drills`, `cargo xtask bench memory`,
//! `cargo xtask drills record`.

mod capture;
mod contain;
mod drills;
mod memory;
mod pipeline;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmarks; results go to bench/results/<name>.json and are printed as a table.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Drill catalog upkeep.
    Drills {
        #[command(subcommand)]
        which: Drills,
    },
}

#[derive(Subcommand)]
enum Drills {
    /// Re-record the traces of the drill catalog (drills/traces/), live, as root.
    Record(drills::RecordOptions),
}

#[derive(Subcommand)]
enum Bench {
    /// Syscall tax with no daemon, unmonitored and monitored cgroups; delivered vs generated.
    Capture(capture::Options),
    /// Userspace pipeline in replay: events per CPU-second by stage, and rule-count scaling.
    Pipeline(pipeline::Options),
    /// Offending syscall to containment in force, idle and under load.
    Contain(contain::Options),
    /// The drill catalog live: time to detect and to contain per scenario.
    Drills(drills::BenchOptions),
    /// Daemon memory with 1,000 and 10,000 monitored cgroups, and start-up to first event.
    Memory(memory::Options),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Bench {
            which: Bench::Capture(opts),
        } => capture::run(&opts),
        Task::Bench {
            which: Bench::Pipeline(opts),
        } => pipeline::run(&opts),
        Task::Bench {
            which: Bench::Contain(opts),
        } => contain::run(&opts),
        Task::Bench {
            which: Bench::Drills(opts),
        } => drills::bench(&opts),
        Task::Drills {
            which: Drills::Record(opts),
        } => drills::record(&opts),
        Task::Bench {
            which: Bench::Memory(opts),
        } => memory::run(&opts),
    }
}

fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has a parent")?
        .to_owned())
}

/// Builds the release daemon the benchmarks run; returns its path.
fn build_release(root: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let mut cargo = std::process::Command::new("cargo");
    // `cargo run` gives xtask its own CARGO_* variables and LD_LIBRARY_PATH. Passed on, they reach
    // crates that read variables at compile time, and the whole release build is redone instead
    // of reusing the one `cargo build --release` from a shell made.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let ours = matches!(&*k, "CARGO_HOME" | "CARGO_TARGET_DIR");
        if (k == "CARGO" || k.starts_with("CARGO_") || k == "LD_LIBRARY_PATH") && !ours {
            cargo.env_remove(&key);
        }
    }
    let status = cargo
        .args(["build", "--release", "-p", "agent-monitor"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        anyhow::bail!("building agent-monitor failed");
    }
    // Where cargo put it: CARGO_TARGET_DIR when set, as for the build above.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    Ok(target.join("release/agent-monitor"))
}
