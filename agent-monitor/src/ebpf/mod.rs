//! Loading the kernel programs: the start-up feature probe and the loader.

mod loader;
mod probe;

pub use loader::{Kernel, KernelMaps, LoadOptions};
pub use probe::{Platform, ProbeError, ProbeReport};
