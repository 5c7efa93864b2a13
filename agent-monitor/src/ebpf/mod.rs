//! Loading the kernel programs: the start-up feature probe and the loader.

pub mod batch;
mod loader;
pub mod pin;
mod probe;
mod wake;

pub use loader::{
    CONTAINMENT_MAP, ContainMaps, DENIALS_MAP, Kernel, KernelMaps, LINKS_DIR, LoadOptions,
};
pub use probe::{Platform, ProbeError, ProbeReport};
pub use wake::WakeKinds;
