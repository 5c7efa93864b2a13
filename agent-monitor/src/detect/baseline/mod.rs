//! Per-class baselines: what a class is known to do, and the models fitted on its windows.

pub mod features;
pub mod knowledge;

pub use features::{FEATURE_SCHEMA_VERSION, FeatureSchema, SCALAR_FEATURES};
pub use knowledge::ClassKnowledge;
pub mod store;
