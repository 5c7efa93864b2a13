//! Responding to findings: what is recorded and done about them.

pub mod audit;
