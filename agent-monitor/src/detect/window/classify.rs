//! The configured path classes: sensitive paths and shells or interpreters.

use foldhash::HashSet;
use globset::{Glob, GlobSet, GlobSetBuilder};

use super::Classifier;
use crate::{config::Detection, detect::recent::RecentMemo};

/// Distinct paths per generation of the sensitive-path memo.
const RECENT_PATHS: usize = 4096;

pub struct PathClassifier {
    sensitive: GlobSet,
    /// Windows ask about the same paths window after window; the glob set may need a regex.
    recent: RecentMemo<bool>,
    shells: HashSet<String>,
}

impl PathClassifier {
    pub fn new(config: &Detection) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &config.sensitive_paths {
            builder.add(Glob::new(pattern)?);
        }
        Ok(Self {
            sensitive: builder.build()?,
            recent: RecentMemo::new(RECENT_PATHS),
            shells: config.shells.iter().cloned().collect(),
        })
    }
}

impl Classifier for PathClassifier {
    fn is_sensitive_path(&mut self, path: &str) -> bool {
        let sensitive = &self.sensitive;
        self.recent
            .with(path, || sensitive.is_match(path), |&hit| hit)
    }

    /// Matches the file name, ignoring a version suffix (`python3.11` is `python3`'s kin).
    fn is_shell_or_interpreter(&mut self, binary: &str) -> bool {
        let name = binary.rsplit('/').next().unwrap_or(binary);
        if self.shells.contains(name) {
            return true;
        }
        let unversioned = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        unversioned != name && self.shells.contains(unversioned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes() {
        let mut c = PathClassifier::new(&Detection::default()).expect("default globs");
        assert!(c.is_sensitive_path("/pii/customers.csv"));
        assert!(
            c.is_sensitive_path("/pii/customers.csv"),
            "remembered alike"
        );
        assert!(c.is_sensitive_path("/root/.ssh/id_ed25519"));
        assert!(c.is_sensitive_path("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        assert!(!c.is_sensitive_path("/data/transactions/t1.csv"));
        assert!(c.is_shell_or_interpreter("/bin/sh"));
        assert!(c.is_shell_or_interpreter("/usr/bin/python3.11"));
        assert!(!c.is_shell_or_interpreter("/usr/bin/shred"));
        assert!(!c.is_shell_or_interpreter("/usr/local/bin/agent"));
    }
}
