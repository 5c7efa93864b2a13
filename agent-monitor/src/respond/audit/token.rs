//! Tokenisation of identifiers that may be personal data (agent ids holding user names, user
//! names, pod names): `tok:` + the first 16 bytes, in lowercase hex, of HMAC-SHA256 under the
//! token key of the identifier's UTF-8 bytes. The same identifier always gives the same token, so
//! an auditor holding the key can check a given id (`agent-monitor audit token`), and nobody
//! without it can reverse or test guesses against a token.

use std::path::Path;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use super::{error::AuditError, keys::read_secret32};

/// Prefix of every token.
pub const TOKEN_PREFIX: &str = "tok:";

/// Keyed hash of identifiers.
#[derive(Clone)]
pub struct Tokenizer {
    key: [u8; 32],
}

impl Tokenizer {
    pub fn new(key: [u8; 32]) -> Self {
        Tokenizer { key }
    }

    /// Loads a token key file (64 hex digits).
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        read_secret32(path).map(Tokenizer::new)
    }

    /// `tok:` + 32 lowercase hex digits.
    pub fn token(&self, id: &str) -> String {
        // HMAC takes keys of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return format!("{TOKEN_PREFIX}invalid-key");
        };
        mac.update(id.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("{TOKEN_PREFIX}{}", hex::encode(&out[..16]))
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_truncated_hmac_sha256() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(bytes(range(32)),b"alice",hashlib.sha256).hexdigest()[:32])'
        let t = Tokenizer::new(std::array::from_fn(|i| u8::try_from(i).unwrap_or(0)));
        let a = t.token("alice");
        assert_eq!(a, "tok:6eefad2bed97b6d93ee663d67a44b460");
        assert_eq!(a, t.token("alice"));
        assert_ne!(a, t.token("alicf"));
        assert_ne!(a, Tokenizer::new([1; 32]).token("alice"));
    }
}
