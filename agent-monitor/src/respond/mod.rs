//! Responses: the decision policy and the actuators it drives.

pub mod actuator;
pub mod engine;
pub mod policy;
pub mod state;
