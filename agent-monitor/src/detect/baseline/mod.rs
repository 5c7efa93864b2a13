//! Per-class baselines: what a class is known to do, and the models fitted on its windows.

pub mod class;
pub mod classes;
pub mod features;
pub mod knowledge;
pub mod store;

pub use class::{ClassModel, FitError, WindowScore};
pub use classes::{Baselines, ClassBaseline, LearningPolicy, State};
pub use features::{FEATURE_SCHEMA_VERSION, FeatureSchema, SCALAR_FEATURES};
pub use knowledge::ClassKnowledge;
pub use store::{ModelError, ModelMeta};

#[cfg(test)]
mod tests;
