//! Offline evaluation of the anomaly models: ROC figures and the ADFA-LD benchmark
//! (Creech & Hu, UNSW Canberra, 2013).

pub mod adfa;
pub mod roc;

pub use adfa::{AdfaParams, AdfaReport, evaluate_adfa};
pub use roc::{OperatingPoint, detection_at_far, roc_auc};

use std::path::PathBuf;

use crate::detect::anomaly::AnomalyError;

/// Errors of reading a dataset or evaluating on it.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: token {position} {token:?} is not a syscall number (0..=65535)", path.display())]
    BadToken {
        path: PathBuf,
        /// 1-based position of the token in the file.
        position: usize,
        token: String,
    },
    #[error("{}: empty trace", path.display())]
    EmptyTrace { path: PathBuf },
    #[error("{}: no traces found", path.display())]
    NoTraces { path: PathBuf },
    #[error("{}: scores cannot be compared (empty side or NaN)", what)]
    Figures { what: String },
    #[error("window model: {0}")]
    Model(#[from] AnomalyError),
}
