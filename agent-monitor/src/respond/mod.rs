//! Responses: the decision policy, the response stage, and the actuators it drives (each
//! idempotent and undoable), SOC tickets, the audit log and the release state.

pub mod actuator;
pub mod approve;
pub mod audit;
pub mod contain;
pub mod engine;
pub mod flight;
pub mod host;
pub mod network;
pub mod policy;
pub mod release;
pub mod revoke;
pub mod sinks;
pub mod snapshot;
pub mod state;
pub mod urgent;
pub mod webhook;
