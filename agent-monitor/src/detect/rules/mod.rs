//! Deterministic rules: YAML files under `rules/` (language in `docs/RULES.md`), validated into a
//! [`RuleSet`] and evaluated per event by a [`RuleEngine`] that emits [`Finding`]s with the
//! rule's tier.
//!
//! Stages: `yaml` (tree with lines), then `parse` and `condition` (schema, AST, lists), then
//! `compile`, `matcher` and `template` (typed per rule), then `index` (per class and kind,
//! anchors), then `engine` and `rate` (evaluation, windows).
//!
//! [`Finding`]: crate::detect::Finding

mod compile;
mod condition;
mod engine;
mod error;
mod field;
mod index;
mod kind;
mod matcher;
mod parse;
mod rate;
mod rule;
mod set;
mod template;
pub(crate) mod yaml;

#[cfg(test)]
mod tests;

pub use engine::{RuleEngine, UNIDENTIFIED};
pub use error::RuleError;
pub use set::{RuleInfo, RuleSet};
