//! Secrets read from files (or, for a token, given inline): never printed, never logged.

use std::{fmt, fs, io, path::Path};

use serde::Deserialize;

/// A secret string. `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] gives the
/// value, and only the request builders call it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First 16 hex digits of the value's SHA-256: names a token in records without revealing it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }

    /// Replaces every occurrence of the secret in `text` (for details built from server replies).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is not part of the secret.
pub fn read_secret_file(path: &Path) -> Result<Secret, io::Error> {
    let text = fs::read_to_string(path)?;
    let value = text.trim();
    if value.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file is empty"));
    }
    Ok(Secret(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert!(!s.fingerprint().contains("hunter2"));
        assert_eq!(
            s.scrub("got hunter2-very-secret back"),
            "got <redacted> back"
        );
    }

    #[test]
    fn reads_trimmed_and_rejects_empty_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        fs::write(&p, "abc\n").expect("write");
        assert_eq!(read_secret_file(&p).expect("read").expose(), "abc");
        fs::write(&p, "\n").expect("write");
        assert!(read_secret_file(&p).is_err());
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
