//! The evidence bundle: a directory of JSON files, a manifest listing each file with its
//! SHA-256, and an Ed25519 signature over the manifest's exact bytes.
//!
//! Layout: `<name>/manifest.json`, `<name>/manifest.sig` (hex signature), and the files the
//! manifest lists. The directory is written as `<name>.partial` and renamed when complete, so a
//! bundle that exists under its final name is whole.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const FORMAT: &str = "agent-monitor-forensic-bundle/1";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{dir}: manifest signature does not verify with the given key")]
    BadSignature { dir: PathBuf },
    #[error("{dir}: {file}: {reason}")]
    BadFile {
        dir: PathBuf,
        file: String,
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The signed list of a bundle's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub agent: String,
    pub cgroup: String,
    pub created_unix_ms: u64,
    /// Hex Ed25519 public key that signed (for finding the key; trust comes from the verifier's
    /// own copy, never from this field).
    pub public_key: String,
    pub files: Vec<ManifestFile>,
}

/// Loads an Ed25519 signing key: a file of 32 raw bytes, or 64 hex digits (whitespace around
/// them ignored). Warns when the file is readable by group or others.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    use std::os::unix::fs::PermissionsExt as _;
    let raw = fs::read(path).map_err(io(path))?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "signing key {} is readable by group or others",
            path.display()
        );
    }
    let bytes: [u8; 32] = key_bytes(&raw).ok_or_else(|| BundleError::Key {
        path: path.to_owned(),
        reason: "expected 32 raw bytes or 64 hex digits".into(),
    })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parses a public key: 32 raw bytes or 64 hex digits.
pub fn parse_verifying_key(raw: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&key_bytes(raw)?).ok()
}

fn key_bytes(raw: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(raw).ok().map(str::trim);
    if let Some(text) = text
        && text.len() == 64
        && let Ok(v) = hex::decode(text)
    {
        return v.try_into().ok();
    }
    raw.try_into().ok()
}

/// Writes bundles: collects files in memory-light order, then signs and publishes.
pub(super) struct Writer {
    partial: PathBuf,
    final_dir: PathBuf,
    files: Vec<ManifestFile>,
}

impl Writer {
    /// Creates `<parent>/<name>.partial` (mode 0700).
    pub(super) fn create(parent: &Path, name: &str) -> Result<Self, BundleError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io(parent))?;
        let partial = parent.join(format!("{name}.partial"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&partial)
            .map_err(io(&partial))?;
        Ok(Self {
            partial,
            final_dir: parent.join(name),
            files: Vec::new(),
        })
    }

    /// Writes one JSON file (mode 0600) and lists it.
    pub(super) fn json(&mut self, name: &str, value: &impl Serialize) -> Result<(), BundleError> {
        let path = self.partial.join(name);
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| BundleError::Json {
            path: path.clone(),
            source,
        })?;
        write_file(&path, &bytes)?;
        self.files.push(ManifestFile {
            name: name.to_owned(),
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
        });
        Ok(())
    }

    /// Writes the manifest and its signature and renames the directory to its final name.
    /// Returns the final path and the manifest's SHA-256.
    pub(super) fn finish(
        self,
        key: &SigningKey,
        agent: &str,
        cgroup: &Path,
        created_unix_ms: u64,
    ) -> Result<(PathBuf, String), BundleError> {
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            agent: agent.to_owned(),
            cgroup: cgroup.display().to_string(),
            created_unix_ms,
            public_key: hex::encode(key.verifying_key().to_bytes()),
            files: self.files,
        };
        let path = self.partial.join(MANIFEST);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|source| BundleError::Json {
            path: path.clone(),
            source,
        })?;
        write_file(&path, &bytes)?;
        let signature = key.sign(&bytes);
        write_file(
            &self.partial.join(SIGNATURE),
            format!("{}\n", hex::encode(signature.to_bytes())).as_bytes(),
        )?;
        fs::rename(&self.partial, &self.final_dir).map_err(io(&self.final_dir))?;
        Ok((self.final_dir, hex::encode(sha2::Sha256::digest(&bytes))))
    }

    /// Removes an unfinished bundle.
    pub(super) fn abandon(self) {
        let _ = fs::remove_dir_all(&self.partial);
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Verifies a bundle with a trusted public key: the signature over `manifest.json`, every listed
/// file's SHA-256 and size, and that the directory holds nothing else. Returns the manifest.
pub fn verify_bundle(dir: &Path, key: &VerifyingKey) -> Result<Manifest, BundleError> {
    let bad = |file: &str, reason: String| BundleError::BadFile {
        dir: dir.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let manifest_path = dir.join(MANIFEST);
    let bytes = fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let sig_path = dir.join(SIGNATURE);
    let sig_text = fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
    let sig_bytes: [u8; 64] = hex::decode(sig_text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad(SIGNATURE, "not 64 hex-encoded bytes".into()))?;
    key.verify_strict(&bytes, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| BundleError::BadSignature {
            dir: dir.to_owned(),
        })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| BundleError::Json {
            path: manifest_path.clone(),
            source,
        })?;
    if manifest.format != FORMAT {
        return Err(bad(
            MANIFEST,
            format!("unknown format {:?}", manifest.format),
        ));
    }
    let mut expected: Vec<&str> = vec![MANIFEST, SIGNATURE];
    for file in &manifest.files {
        if file.name.contains('/') || file.name.starts_with('.') || file.name.is_empty() {
            return Err(bad(&file.name, "not a plain file name".into()));
        }
        let path = dir.join(&file.name);
        let data = fs::read(&path).map_err(io(&path))?;
        if data.len() as u64 != file.bytes {
            return Err(bad(
                &file.name,
                format!("{} bytes, manifest says {}", data.len(), file.bytes),
            ));
        }
        let digest = hex::encode(sha2::Sha256::digest(&data));
        if digest != file.sha256 {
            return Err(bad(
                &file.name,
                format!("SHA-256 {digest}, manifest says {}", file.sha256),
            ));
        }
        expected.push(&file.name);
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name.as_str()) {
            return Err(bad(&name, "not listed in the manifest".into()));
        }
    }
    Ok(manifest)
}
