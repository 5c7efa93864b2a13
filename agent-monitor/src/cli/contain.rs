//! `agent-monitor contain ...`: the containment commands (implemented in the library, see
//! `agent_monitor::respond::contain::cli`). Wiring in cli/mod.rs:
//!
//! ```text
//! mod contain;
//! // in enum Command:
//! /// Contain an agent cgroup in the kernel, or show or lift containment.
//! Contain(contain::ContainArgs),
//! // in main(), with the synchronous commands:
//! Command::Contain(args) => contain::run(&args),
//! ```

pub use agent_monitor::respond::contain::cli::{ContainArgs, run};
