//! Responses to findings: tickets, actions and their sinks.

pub mod webhook;
