//! The `agent-monitor` command: daemon, recorder, replayer, demo and probe.

mod cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    agent_monitor::startup::mark_process_start();
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
