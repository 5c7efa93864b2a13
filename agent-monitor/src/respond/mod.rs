//! Responses to findings: actuators that act on an agent, each idempotent and undoable.

pub mod contain;
