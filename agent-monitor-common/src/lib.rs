//! Wire types shared by the agent-monitor kernel programs and the daemon.
//!
//! Every struct here crosses the kernel/user boundary or is stored in a trace file, so all are
//! `#[repr(C)]`, padded explicitly, and size-checked at compile time. Event kinds are stable
//! numbers: recorded traces depend on them, so a kind is never renumbered or reused.
#![no_std]

pub mod contain;
pub mod event;
pub mod maps;

pub use contain::*;
pub use event::*;
pub use maps::*;
