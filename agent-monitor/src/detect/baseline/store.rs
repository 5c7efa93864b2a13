//! Model files: `models/<class>/model.bin` (bincode) beside `models/<class>/meta.yaml`, which
//! says what the model is (feature schema, window length, thresholds, training data digest, date)
//! and carries the model file's SHA-256, so that a corrupt or swapped file is refused, never
//! half-loaded.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};

use super::FEATURE_SCHEMA_VERSION;

pub const MODEL_FILE: &str = "model.bin";
pub const META_FILE: &str = "meta.yaml";
/// Largest model file accepted (a corrupt length prefix must not allocate gigabytes).
const MAX_MODEL_BYTES: usize = 256 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    pub class: String,
    pub feature_schema_version: u32,
    pub window_secs: u64,
    /// Windows the model was fitted on.
    pub trained_windows: u64,
    /// Score above which a window is reported (the calibrated false-alarm budget).
    pub report_threshold: f64,
    /// SHA-256 over the training traces, in the order given.
    pub training_data_sha256: String,
    pub training_traces: Vec<String>,
    pub model_sha256: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub agent_monitor_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model metadata {path}: {source}")]
    Meta {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error(
        "model {path}: feature schema version {found}, this agent-monitor needs {expected}; \
         retrain with `agent-monitor train`"
    )]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("model {path}: made for class {found:?}, expected {expected:?}")]
    Class {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "model {path}: SHA-256 {found} does not match {expected} in meta.yaml (corrupt or replaced)"
    )]
    Digest {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("model {path}: not a valid model file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MODEL_BYTES>()
}

/// Writes `model` and its metadata (filling in `model_sha256`) under `dir/<class>/`.
pub fn save<M: Serialize>(
    dir: &Path,
    model: &M,
    mut meta: ModelMeta,
) -> Result<PathBuf, ModelError> {
    let class_dir = dir.join(&meta.class);
    std::fs::create_dir_all(&class_dir).map_err(io(&class_dir))?;
    let model_path = class_dir.join(MODEL_FILE);
    let bytes = bincode::serde::encode_to_vec(model, bincode_config()).map_err(|e| {
        ModelError::Corrupt {
            path: model_path.clone(),
            reason: format!("encoding: {e}"),
        }
    })?;
    meta.model_sha256 = sha256_hex(&bytes);
    std::fs::write(&model_path, &bytes).map_err(io(&model_path))?;
    let meta_path = class_dir.join(META_FILE);
    let yaml = serde_yaml::to_string(&meta).map_err(|source| ModelError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    std::fs::write(&meta_path, yaml).map_err(io(&meta_path))?;
    Ok(class_dir)
}

/// Loads the model of `class` from `dir/<class>/`, checking class, schema and digest first.
pub fn load<M: DeserializeOwned>(dir: &Path, class: &str) -> Result<(M, ModelMeta), ModelError> {
    let class_dir = dir.join(class);
    let meta_path = class_dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
    let meta: ModelMeta = serde_yaml::from_str(&text).map_err(|source| ModelError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    if meta.class != class {
        return Err(ModelError::Class {
            path: meta_path,
            found: meta.class,
            expected: class.to_owned(),
        });
    }
    if meta.feature_schema_version != FEATURE_SCHEMA_VERSION {
        return Err(ModelError::Schema {
            path: meta_path,
            found: meta.feature_schema_version,
            expected: FEATURE_SCHEMA_VERSION,
        });
    }
    let model_path = class_dir.join(MODEL_FILE);
    let bytes = std::fs::read(&model_path).map_err(io(&model_path))?;
    let found = sha256_hex(&bytes);
    if found != meta.model_sha256 {
        return Err(ModelError::Digest {
            path: model_path,
            found,
            expected: meta.model_sha256,
        });
    }
    let (model, used) =
        bincode::serde::decode_from_slice(&bytes, bincode_config()).map_err(|e| {
            ModelError::Corrupt {
                path: model_path.clone(),
                reason: e.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(ModelError::Corrupt {
            path: model_path,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok((model, meta))
}

/// The classes that have a model under `dir`.
pub fn classes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut classes: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join(META_FILE).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    classes.sort();
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(class: &str) -> ModelMeta {
        ModelMeta {
            class: class.into(),
            feature_schema_version: FEATURE_SCHEMA_VERSION,
            window_secs: 10,
            trained_windows: 3,
            report_threshold: 0.5,
            training_data_sha256: String::new(),
            training_traces: vec![],
            model_sha256: String::new(),
            created: "2026-11-22T00:00:00Z".into(),
            agent_monitor_version: "0".into(),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), &vec![1.5f64, 2.5], meta("fraud")).expect("save");
        let (m, meta): (Vec<f64>, _) = load(dir.path(), "fraud").expect("load");
        assert_eq!(m, vec![1.5, 2.5]);
        assert_eq!(meta.class, "fraud");
        assert_eq!(classes(dir.path()), vec!["fraud".to_owned()]);
    }

    #[test]
    fn refuses_a_corrupt_model_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), &vec![1.5f64], meta("fraud")).expect("save");
        let path = dir.path().join("fraud").join(MODEL_FILE);
        std::fs::write(&path, b"\xff\xff\xff").expect("corrupt");
        let err = load::<Vec<f64>>(dir.path(), "fraud").unwrap_err();
        assert!(matches!(err, ModelError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("model.bin"), "{err}");
    }

    #[test]
    fn refuses_garbage_even_with_a_matching_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = b"\xfd\xff\xff\xff\xff\xff\xff\xff\xff";
        let mut m = meta("fraud");
        m.model_sha256 = sha256_hex(garbage);
        std::fs::create_dir_all(dir.path().join("fraud")).expect("dir");
        std::fs::write(dir.path().join("fraud").join(MODEL_FILE), garbage).expect("write");
        std::fs::write(
            dir.path().join("fraud").join(META_FILE),
            serde_yaml::to_string(&m).expect("yaml"),
        )
        .expect("write");
        let err = load::<Vec<f64>>(dir.path(), "fraud").unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn refuses_another_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = meta("fraud");
        m.feature_schema_version = FEATURE_SCHEMA_VERSION + 1;
        save(dir.path(), &0u8, m).expect("save");
        let err = load::<u8>(dir.path(), "fraud").unwrap_err();
        assert!(matches!(err, ModelError::Schema { .. }), "{err}");
        assert!(err.to_string().contains("retrain"), "{err}");
    }

    #[test]
    fn refuses_missing_and_misfiled_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            load::<u8>(dir.path(), "fraud").unwrap_err(),
            ModelError::Io { .. }
        ));
        save(dir.path(), &0u8, meta("onboarding")).expect("save");
        std::fs::rename(dir.path().join("onboarding"), dir.path().join("fraud")).expect("mv");
        assert!(matches!(
            load::<u8>(dir.path(), "fraud").unwrap_err(),
            ModelError::Class { .. }
        ));
    }
}
