//! Project tasks: `cargo xtask bench capture`.

mod capture;
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
}

#[derive(Subcommand)]
enum Bench {
    /// Syscall tax with no daemon, unmonitored and monitored cgroups; delivered vs generated.
    Capture(capture::Options),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Bench {
            which: Bench::Capture(opts),
        } => capture::run(&opts),
    }
}
