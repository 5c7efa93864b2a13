//! One class's baseline: its state (learning until enough healthy windows, then stable), its
//! models, and on-line learning from the healthy windows of its agents.
//!
//! Fitting is the same off-line (`agent-monitor train`) and on-line: from a set of healthy
//! windows, learn what the class knows (destinations, names, binaries, hours), train the sequence
//! model, and fit the window model on feature rows whose novelty features are computed
//! out-of-fold (each fold against knowledge learned from the other folds). In-sample novelty
//! would always be zero, and the model would then treat any novelty at all as extreme.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::{ClassKnowledge, FeatureSchema};
use crate::detect::{
    Contribution,
    anomaly::{AnomalyError, WindowModel, WindowParams, severity},
    sequence::{MemoSurprise, SequenceModel, SequenceParams, SurpriseModel, SurpriseParams},
    window::{MAX_SEQUENCE, Window},
};

/// Folds for out-of-fold novelty features.
const FOLDS: usize = 5;
/// Healthy windows kept for on-line refits (a reservoir: memory stays bounded).
pub const MAX_KEPT_WINDOWS: usize = 512;
/// Syscall ids kept per window for refits.
const KEPT_SEQUENCE: usize = 2048;

/// Everything a class's detection needs, saved as `models/<class>/model.bin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassModel {
    pub schema: FeatureSchema,
    pub knowledge: ClassKnowledge,
    pub sequence: SequenceModel,
    pub surprise: SurpriseModel,
    pub window: WindowModel,
    pub trained_windows: u64,
}

/// A window's score against its class.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowScore {
    /// Severity in [0, 1] (see [`severity`]).
    pub score: f64,
    /// Share of the class's training windows that scored lower.
    pub calibrated: f64,
    pub top_features: Vec<Contribution>,
    /// Share of the window's n-grams never seen for the class.
    pub seq_novelty: f64,
    /// Mean surprise of the window's syscalls under the class's language model (nats).
    pub seq_surprise: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("class {class}: {have} healthy windows, at least {need} needed")]
    TooFewWindows {
        class: String,
        have: usize,
        need: usize,
    },
    #[error("class {class}: fitting the window model: {reason}")]
    Model { class: String, reason: String },
}

/// The windows' syscall sequences, one per thread.
fn sequences<'a>(windows: &[&'a Window]) -> impl Iterator<Item = &'a [u16]> {
    windows
        .iter()
        .flat_map(|w| w.stats.sequences.values().map(Vec::as_slice))
}

fn knowledge_of(windows: &[&Window]) -> ClassKnowledge {
    let mut k = ClassKnowledge::default();
    for w in windows {
        k.learn(w, w.unix_end_s);
    }
    k
}

impl ClassModel {
    /// Fits a class model on healthy windows.
    pub fn fit(class: &str, windows: &[&Window], min_windows: usize) -> Result<Self, FitError> {
        if windows.len() < min_windows.max(FOLDS) {
            return Err(FitError::TooFewWindows {
                class: class.to_owned(),
                have: windows.len(),
                need: min_windows.max(FOLDS),
            });
        }
        let knowledge = knowledge_of(windows);
        let schema = FeatureSchema::for_class(&knowledge);
        let names = schema.names();
        let mut rows = Array2::<f64>::zeros((windows.len(), names.len()));
        let fold_of = folds_by_agent(windows);
        for fold in 0..FOLDS {
            let in_fold = |i: usize| fold_of[i] == fold;
            let rest: Vec<&Window> = windows
                .iter()
                .enumerate()
                .filter(|(i, _)| !in_fold(*i))
                .map(|(_, w)| *w)
                .collect();
            let held = windows.iter().enumerate().filter(|(i, _)| in_fold(*i));
            let fold_knowledge = knowledge_of(&rest);
            let fold_sequence = SequenceModel::train(sequences(&rest), SequenceParams::default());
            let fold_surprise = SurpriseModel::train(sequences(&rest), SurpriseParams::default());
            for (i, &w) in held {
                let novelty = window_novelty(&fold_sequence, w);
                let surprise = window_surprise(&fold_surprise, w);
                let v = schema.vector(w, &fold_knowledge, novelty, surprise, w.unix_end_s);
                rows.row_mut(i).assign(&ndarray::ArrayView1::from(&v));
            }
        }
        let params = WindowParams {
            folds: FOLDS,
            ..WindowParams::default()
        };
        let window = WindowModel::fit_folds(&rows, &names, params, &fold_of).map_err(|e| {
            FitError::Model {
                class: class.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            sequence: SequenceModel::train(sequences(windows), SequenceParams::default()),
            surprise: SurpriseModel::train(sequences(windows), SurpriseParams::default()),
            schema,
            knowledge,
            window,
            trained_windows: windows.len() as u64,
        })
    }

    pub fn score(&self, window: &Window) -> Result<WindowScore, AnomalyError> {
        let seq_novelty = window_novelty(&self.sequence, window);
        let seq_surprise = window_surprise(&self.surprise, window);
        let v = self.schema.vector(
            window,
            &self.knowledge,
            seq_novelty,
            seq_surprise,
            window.unix_end_s,
        );
        let s = self.window.score(ndarray::ArrayView1::from(&v))?;
        Ok(WindowScore {
            score: severity(s.score),
            calibrated: s.score,
            top_features: s.top,
            seq_novelty,
            seq_surprise,
        })
    }
}

/// The fold of each window, whole agents at a time (an agent is its cgroup: the same agent id
/// in two recordings is two agents), so that out-of-fold features and the calibration see each
/// agent as a new one, which is what the live daemon meets. Windows of one agent are alike:
/// holding out single windows let the rest of their agent vouch for them, and the models came
/// out too sure of themselves on the next agent. With fewer agents than folds, single windows.
fn folds_by_agent(windows: &[&Window]) -> Vec<usize> {
    let mut agents: Vec<u64> = Vec::new();
    let group: Vec<usize> = windows
        .iter()
        .map(|w| {
            agents
                .iter()
                .position(|&c| c == w.cgroup_id)
                .unwrap_or_else(|| {
                    agents.push(w.cgroup_id);
                    agents.len() - 1
                })
        })
        .collect();
    if agents.len() < FOLDS {
        return (0..windows.len()).map(|i| i % FOLDS).collect();
    }
    group.into_iter().map(|g| g % FOLDS).collect()
}

/// Novel n-grams over all of a window's threads, as a share of its n-grams.
fn window_novelty(model: &SequenceModel, window: &Window) -> f64 {
    let (mut novel, mut total) = (0usize, 0usize);
    for seq in window.stats.sequences.values() {
        let n = model.novelty(seq);
        novel += n.novel;
        total += n.total;
    }
    if total == 0 {
        0.0
    } else {
        novel as f64 / total as f64
    }
}

/// Mean surprise per syscall over all of a window's threads (0 without a stream).
fn window_surprise(model: &SurpriseModel, window: &Window) -> f64 {
    let mut memo = MemoSurprise::new(model);
    let (mut sum, mut n) = (0.0, 0usize);
    for seq in window.stats.sequences.values() {
        sum += memo.surprise(seq) * seq.len() as f64;
        n += seq.len();
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// A copy of a window small enough to keep for refits: sequences are cut to their start.
pub fn kept(window: &Window) -> Window {
    let mut w = window.clone();
    let per_thread = KEPT_SEQUENCE / w.stats.sequences.len().max(1);
    for seq in w.stats.sequences.values_mut() {
        seq.truncate(per_thread.min(MAX_SEQUENCE));
        seq.shrink_to_fit();
    }
    w
}
