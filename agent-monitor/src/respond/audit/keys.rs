//! Key files: the Ed25519 signing key, its public key and the token key.
//!
//! Every key file holds 32 bytes as 64 hexadecimal digits on one line (a final newline and
//! surrounding whitespace are ignored; upper or lower case). The signing key file holds the
//! RFC 8032 32-byte private key (the seed), the public key file the 32-byte public key, the token
//! key file the HMAC-SHA256 key. A key id is the first 8 bytes of SHA-256 of the public key, in
//! lowercase hex (16 digits).

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::error::AuditError;

/// File names written by [`keygen`].
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";
pub const TOKEN_KEY_FILE: &str = "audit-token.key";

/// The id of a public key: first 8 bytes of its SHA-256, lowercase hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Reads a key file of 32 bytes in hex; the error names the file.
pub fn read_key32(path: &Path) -> Result<[u8; 32], AuditError> {
    let text = fs::read_to_string(path).map_err(|e| AuditError::key(path, e.to_string()))?;
    let hex_text = text.trim();
    if hex_text.is_empty() {
        return Err(AuditError::key(
            path,
            "empty, expected 64 hexadecimal digits",
        ));
    }
    if hex_text.len() != 64 {
        return Err(AuditError::key(
            path,
            format!(
                "{} characters, expected 64 hexadecimal digits (32 bytes)",
                hex_text.len()
            ),
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|e| AuditError::key(path, format!("not hexadecimal: {e}")))?;
    Ok(out)
}

/// Reads a secret key file, warning when group or others may read it.
pub(crate) fn read_secret32(path: &Path) -> Result<[u8; 32], AuditError> {
    let key = read_key32(path)?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "secret key file {} is readable by group or others",
            path.display()
        );
    }
    Ok(key)
}

/// The key entries are signed with, and its id.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl Signer {
    /// From a 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// Loads a signing key file (64 hex digits of the seed).
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        read_secret32(path).map(|seed| Signer::from_seed(&seed))
    }

    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, AuditError> {
        random32().map(|seed| Signer::from_seed(&seed))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    pub(crate) fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The public keys a verifier trusts, by key id.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeyRing {
    /// Loads public key files (64 hex digits each).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, AuditError> {
        let mut ring = KeyRing::default();
        for p in paths {
            let p = p.as_ref();
            let bytes = read_key32(p)?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| AuditError::key(p, format!("not an Ed25519 public key: {e}")))?;
            ring.add(key);
        }
        Ok(ring)
    }

    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    /// The trusted key ids.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Strict Ed25519 verification (no malleable signatures, no small-order keys).
    pub fn verify(&self, key_id: &str, msg: &[u8], sig: &[u8; 64]) -> Option<bool> {
        let key = self.get(key_id)?;
        Some(key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
    }
}

/// The files [`keygen`] wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing_key: PathBuf,
    pub public_key: PathBuf,
    pub token_key: PathBuf,
    pub key_id: String,
}

/// Writes a new signing key, its public key and a token key into `dir` (created with mode 0700
/// if missing), each file with mode 0600. Refuses to overwrite an existing file.
pub fn keygen(dir: &Path) -> Result<KeyFiles, AuditError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AuditError::io(dir, "create directory", e))?;
    let files = KeyFiles {
        signing_key: dir.join(SIGNING_KEY_FILE),
        public_key: dir.join(PUBLIC_KEY_FILE),
        token_key: dir.join(TOKEN_KEY_FILE),
        key_id: String::new(),
    };
    for p in [&files.signing_key, &files.public_key, &files.token_key] {
        if p.exists() {
            return Err(AuditError::KeyExists { path: p.clone() });
        }
    }
    let signer = Signer::generate()?;
    let token = random32()?;
    write_key(&files.signing_key, &signer.seed())?;
    write_key(&files.public_key, signer.verifying_key().as_bytes())?;
    write_key(&files.token_key, &token)?;
    if let Ok(d) = fs::File::open(dir) {
        // Make the new names durable; a failure here leaves the keys written.
        let _ = d.sync_all();
    }
    Ok(KeyFiles {
        key_id: signer.key_id().to_owned(),
        ..files
    })
}

fn write_key(path: &Path, key: &[u8; 32]) -> Result<(), AuditError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuditError::io(path, "create", e))?;
    writeln!(f, "{}", hex::encode(key)).map_err(|e| AuditError::io(path, "write", e))?;
    f.sync_all().map_err(|e| AuditError::io(path, "fsync", e))
}

fn random32() -> Result<[u8; 32], AuditError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| AuditError::Random(e.to_string()))?;
    Ok(b)
}
