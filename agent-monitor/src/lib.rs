//! agent-monitor: eBPF runtime behavioural monitor for AI agents.
//!
//! The pipeline is the same live and in replay:
//! `EventSource` (raw records) -> `event::decode` -> `identity` -> sinks (JSON lines, trace file).

pub mod api;
pub mod cgroup;
pub mod clock;
pub mod config;
pub mod detect;
pub mod drill;
pub mod ebpf;
pub mod eval;
pub mod event;
pub mod identity;
pub mod k8s;
pub mod observe;
pub mod pipeline;
pub mod respond;
pub mod source;
pub mod startup;
pub mod trace;
pub mod workload;
