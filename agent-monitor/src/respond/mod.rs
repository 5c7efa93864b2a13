//! Response actuators: what the monitor can do about an agent once a finding calls for it.

pub mod flight;
pub mod revoke;
pub mod snapshot;
