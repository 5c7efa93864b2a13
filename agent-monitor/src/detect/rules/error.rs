//! Load errors: every refusal names the file, the line and, where there is one, the rule.

use std::{fmt, io, path::PathBuf};

/// Why a rule file (or directory) was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file was read but its content is wrong.
    #[error("{file}:{line}: {}{message}", RuleName(rule.as_deref()))]
    Invalid {
        file: String,
        /// 1-based line of the offending node (or of the YAML syntax error).
        line: usize,
        /// The rule the error is in, when it is in one.
        rule: Option<String>,
        message: String,
    },
    /// The file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RuleError {
    /// The line of an [`RuleError::Invalid`] error.
    pub fn line(&self) -> Option<usize> {
        match self {
            RuleError::Invalid { line, .. } => Some(*line),
            RuleError::Io { .. } => None,
        }
    }

    /// The rule an error is in, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            RuleError::Invalid { rule, .. } => rule.as_deref(),
            RuleError::Io { .. } => None,
        }
    }

    /// The file an error is in (the path, for I/O errors).
    pub fn file(&self) -> String {
        match self {
            RuleError::Invalid { file, .. } => file.clone(),
            RuleError::Io { path, .. } => path.display().to_string(),
        }
    }
}

struct RuleName<'a>(Option<&'a str>);

impl fmt::Display for RuleName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "rule \"{name}\": "),
            None => Ok(()),
        }
    }
}

/// An error before the file and rule are attached: a line and a message. The file parser adds
/// the rest when it turns this into a [`RuleError`].
#[derive(Debug)]
pub(crate) struct Located {
    pub line: usize,
    pub message: String,
}

impl Located {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Located {
            line,
            message: message.into(),
        }
    }
}

/// Shorthand for the results of the parsing stages.
pub(crate) type Res<T> = Result<T, Located>;
