//! The `agent-monitor` command: daemon, recorder, replayer, demo and probe.

mod cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    agent_monitor::startup::mark_process_start();
    one_heap();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .init();
    let args = cli::Args::parse();
    match cli::main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent-monitor: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One glibc heap for every thread. By default each thread that allocates (the API server, the
/// metrics endpoint) gets an arena of its own whose free space no other thread can reuse: 1.3
/// MiB more resident at 1,000 idle agents (PERF-ANCHORS row 7). Those threads allocate little,
/// and small allocations are served from per-thread caches without taking the heap's lock.
fn one_heap() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
