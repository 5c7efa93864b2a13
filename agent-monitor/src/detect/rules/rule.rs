//! One rule as loaded: scope, event kinds, compiled condition, rate, tier and summary.

use std::{sync::Arc, time::Duration};

use super::{compile::Cond, field::Field, kind::Kind, template::Template};
use crate::detect::Tier;

#[derive(Debug)]
pub(crate) struct Rule {
    pub name: Arc<str>,
    /// The file name the rule came from (no directory, so replays match across machines).
    pub file: Arc<str>,
    pub line: usize,
    pub description: String,
    pub kinds: Vec<Kind>,
    pub scope: ClassScope,
    pub cond: Cond,
    pub rate: Option<RateSpec>,
    pub tier: Tier,
    pub summary: Template,
    /// Canonical text of what decides which events count: kinds, scope, resolved condition and
    /// rate. Reload keeps a rule's rate windows when its name and this are unchanged.
    pub fingerprint: String,
}

/// Which agent classes a rule applies to.
#[derive(Debug, Default)]
pub(crate) struct ClassScope {
    /// `None`: every class.
    pub classes: Option<Vec<Box<str>>>,
    pub except: Vec<Box<str>>,
}

impl ClassScope {
    pub fn applies(&self, class: &str) -> bool {
        self.classes
            .as_ref()
            .is_none_or(|c| c.iter().any(|c| &**c == class))
            && !self.except.iter().any(|c| &**c == class)
    }

    /// Every class this scope names, for the class index.
    pub fn named(&self) -> impl Iterator<Item = &str> {
        self.classes
            .iter()
            .flatten()
            .chain(&self.except)
            .map(|c| &**c)
    }
}

/// "More than `more_than` matching events (or distinct values of `distinct`) within `within`",
/// counted per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSpec {
    pub more_than: usize,
    pub within: Duration,
    pub distinct: Option<Field>,
}

/// Rate windows keep at most `more_than + 1` entries per agent: this caps their memory.
pub(crate) const MAX_RATE_COUNT: usize = 10_000;
