//! A validated set of rules from one file or a directory of files.

use std::{fs, path::Path};

use super::{error::RuleError, parse::parse_file, rule::Rule};
use crate::detect::Tier;

/// Rules ready for a [`RuleEngine`](super::RuleEngine). Building one validates everything, so a
/// daemon can load a new set and swap it in only on success.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses one rule file. `file_name` names the file in errors and in findings.
    pub fn parse(file_name: &str, text: &str) -> Result<RuleSet, RuleError> {
        Ok(RuleSet {
            rules: parse_file(file_name, text)?,
        })
    }

    /// Loads every `*.yaml` file of `dir`, in name order. Findings name a rule's file without
    /// the directory; errors give the full path. Rule names must be unique across the files.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<RuleSet, RuleError> {
        let dir = dir.as_ref();
        let io = |path: &Path, source| RuleError::Io {
            path: path.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "yaml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut set = RuleSet::default();
        for path in paths {
            let text = fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let with_path = |e: RuleError| match e {
                RuleError::Invalid {
                    line,
                    rule,
                    message,
                    ..
                } => RuleError::Invalid {
                    file: path.display().to_string(),
                    line,
                    rule,
                    message,
                },
                other => other,
            };
            let file = RuleSet::parse(&name, &text).map_err(with_path)?;
            set.merge(file).map_err(with_path)?;
        }
        Ok(set)
    }

    /// Adds another set's rules; a rule name already present is an error.
    pub fn merge(&mut self, other: RuleSet) -> Result<(), RuleError> {
        for rule in other.rules {
            if let Some(first) = self.rules.iter().find(|r| r.name == rule.name) {
                return Err(RuleError::Invalid {
                    file: rule.file.to_string(),
                    line: rule.line,
                    rule: Some(rule.name.to_string()),
                    message: format!(
                        "duplicate rule name (first in {} line {})",
                        first.file, first.line
                    ),
                });
            }
            self.rules.push(rule);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule names in load order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// The kernel event kinds (wire numbers, sorted) read by a rule of tier `tier` or above:
    /// the events that can fire such a rule. Kinds the daemon makes itself are left out.
    pub fn kernel_kinds_at_or_above(&self, tier: Tier) -> Vec<u16> {
        let mut kinds: Vec<u16> = self
            .rules
            .iter()
            .filter(|r| r.tier >= tier)
            .flat_map(|r| r.kinds.iter().filter_map(|k| k.wire()))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }
}

/// What an operator or a CLI listing needs to know about a loaded rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo<'a> {
    pub name: &'a str,
    pub file: &'a str,
    pub line: usize,
    pub description: &'a str,
    pub tier: Tier,
}

impl RuleSet {
    /// The rules in load order.
    pub fn rules(&self) -> impl Iterator<Item = RuleInfo<'_>> {
        self.rules.iter().map(|r| RuleInfo {
            name: &r.name,
            file: &r.file,
            line: r.line,
            description: &r.description,
            tier: r.tier,
        })
    }
}
