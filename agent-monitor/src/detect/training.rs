//! Off-line training input: recorded traces cut into the same windows the live pipeline cuts.

use std::path::{Path, PathBuf};

use super::window::{PathClassifier, Window, Windower};
use crate::{
    config::Detection as DetectionConfig,
    event::decode,
    identity::Identities,
    trace::{TraceError, TraceReader},
};

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("detection config: {0}")]
    Config(#[from] globset::Error),
}

/// The closed windows of every agent in a trace, and the trace's SHA-256.
pub fn windows_of_trace(
    path: &Path,
    config: &DetectionConfig,
) -> Result<(Vec<Window>, String), TrainingError> {
    let bytes = std::fs::read(path).map_err(|source| TrainingError::Io {
        path: path.to_owned(),
        source,
    })?;
    let digest = super::baseline::store::sha256_hex(&bytes);
    let mut reader = TraceReader::new(bytes.as_slice())?;
    let mut windower = Windower::new(
        std::time::Duration::from_secs(config.window_secs),
        std::time::Duration::ZERO,
        PathClassifier::new(config)?,
    );
    windower.set_wall_anchor(i128::from(reader.header().created_unix_ms) * 1_000_000);
    let mut identities = Identities::default();
    let mut windows = Vec::new();
    let mut record = Vec::new();
    while reader.next_into(&mut record)? {
        let Ok(mut event) = decode(&record) else {
            continue;
        };
        identities.attribute(&mut event);
        windower.add(&event, &mut windows);
    }
    windower.flush(&mut windows);
    Ok((windows, digest))
}
