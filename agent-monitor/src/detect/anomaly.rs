//! Per-class window model over numeric feature vectors (one row per window).
//!
//! Method: robust standardisation, then PCA (linfa-reduction) fitted on normal windows; a window
//! scores by Hotelling's T² inside the principal subspace plus the squared prediction error (SPE,
//! reconstruction error) outside it. Why this rather than a Gaussian mixture:
//! - it has one parameter (the number of components) and no random restarts, so a baseline
//!   retrained on the same data is the same model (replays and drills stay reproducible);
//! - both terms are sums over features, so the score splits exactly into per-feature
//!   contributions an analyst can read ("poll frequency", "novel 6-grams");
//! - it degrades gracefully: with few rows or zero variance it falls back to a plain sum of
//!   squared standardised deviations instead of fitting a covariance it cannot estimate.
//!
//! Calibration: the raw score is mapped through the empirical CDF of *held-out* training scores
//! (k-fold cross-fitting), so 0.99 means "more unusual than 99% of normal windows not used to fit
//! the model". In-sample scores would be optimistic and make 0.9+ common on new normal data.
//! Beyond the largest calibration score the score keeps rising smoothly towards 1, so clearly
//! abnormal windows separate from merely rare ones (0.999+ against the top of the normal range).

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_reduction::Pca;
use ndarray::{Array1, Array2, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use super::Contribution;

/// Errors of fitting or scoring a window model.
#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error("no training windows")]
    NoRows,
    #[error("{names} feature names for {columns} feature columns")]
    NamesMismatch { names: usize, columns: usize },
    #[error("{folds} fold assignments for {rows} training windows")]
    FoldsMismatch { folds: usize, rows: usize },
    #[error("window has {got} features, the model expects {expected}")]
    FeatureCount { expected: usize, got: usize },
    #[error("feature {feature} (column {column}) of row {row} is not finite: {value}")]
    NonFinite {
        row: usize,
        column: usize,
        feature: String,
        value: f64,
    },
}

/// Fitting parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowParams {
    /// Principal components kept (clamped to what the data supports).
    pub components: usize,
    /// Scale floor relative to `max(1, |mean|)`: a feature that never varied in training still
    /// has a finite scale, so a change in it scores high without dividing by zero.
    pub scale_floor: f64,
    /// Folds for the held-out calibration scores (used when there are at least 4 rows per fold).
    pub folds: usize,
    /// At most this many contributions are reported.
    pub top_features: usize,
}

impl Default for WindowParams {
    fn default() -> Self {
        Self {
            components: 5,
            scale_floor: 0.1,
            folds: 5,
            top_features: 5,
        }
    }
}

/// Empirical-CDF calibration of raw scores against normal (held-out) scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Sorted, finite.
    sorted: Vec<f64>,
    /// Scale of the smooth tail above the largest calibration score.
    tail: f64,
}

impl Calibration {
    /// Builds from normal scores; non-finite values are dropped.
    #[must_use]
    pub fn new(mut scores: Vec<f64>) -> Self {
        scores.retain(|s| s.is_finite());
        scores.sort_by(f64::total_cmp);
        let tail = match (scores.first(), scores.last()) {
            // Spread of the upper half, so the tail is in the units of the data.
            (Some(_), Some(&max)) => {
                let median = scores[scores.len() / 2];
                (max - median).max(max.abs() * 0.1).max(1e-9)
            }
            _ => 1.0,
        };
        Self {
            sorted: scores,
            tail,
        }
    }

    /// Score in [0, 1]: the share of calibration scores at or below `raw` (ties count half),
    /// with a smooth exponential tail past the largest one. With no calibration data: 0.5.
    #[must_use]
    pub fn score(&self, raw: f64) -> f64 {
        let m = self.sorted.len();
        let Some(&max) = self.sorted.last() else {
            return 0.5;
        };
        if raw.is_nan() {
            return 0.5;
        }
        let denom = (m + 1) as f64;
        if raw > max {
            let excess = 1.0 - (-(raw - max) / self.tail).exp();
            return (m as f64 + excess) / denom;
        }
        let below = self.sorted.partition_point(|&s| s < raw);
        let at_or_below = self.sorted.partition_point(|&s| s <= raw);
        (below + at_or_below) as f64 / 2.0 / denom
    }

    /// Number of calibration scores.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Decades of rarity that span the severity scale: [`severity`] reaches 1 when a window is
/// rarer than one in 10^5 normal windows.
pub const SEVERITY_DECADES: f64 = 5.0;

/// Maps a calibrated score `p` (share of normal windows scoring lower) to the severity the
/// decision policy thresholds: `-log10(1 - p) / 5`, clamped to [0, 1]. So 0.5 is a window rarer
/// than 1 in ~300 normal ones, 0.7 than 1 in 3,000, 0.9 than 1 in 30,000: the bank playbook's
/// 0.5 / 0.7 / 0.9 tiers then mean "unusual", "rare", "practically never seen".
#[must_use]
pub fn severity(p: f64) -> f64 {
    let q = (1.0 - p).clamp(1e-12, 1.0);
    (-q.log10() / SEVERITY_DECADES).clamp(0.0, 1.0)
}

/// The fitted geometry without calibration (used for cross-fitting too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Core {
    mean: Array1<f64>,
    scale: Array1<f64>,
    /// `k x d`, orthonormal rows (principal axes in standardised space, not centred again:
    /// standardised training data has mean zero).
    axes: Array2<f64>,
    /// Variance of the training projections on each axis, floored.
    variances: Array1<f64>,
}

/// A window score with its explanation.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowScore {
    /// Calibrated score in [0, 1].
    pub score: f64,
    /// Uncalibrated T² + SPE.
    pub raw: f64,
    /// Largest contributors first; weights are shares of `raw`.
    pub top: Vec<Contribution>,
}

/// The per-class window model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowModel {
    names: Vec<String>,
    core: Core,
    calibration: Calibration,
    params: WindowParams,
}

/// Smallest projection variance kept, so T² cannot explode on a flat axis.
const MIN_VARIANCE: f64 = 1e-3;

impl WindowModel {
    /// Fits on normal windows: `features` has one row per window and one column per name.
    /// The calibration holds out every `params.folds`-th row in turn.
    pub fn fit(
        features: &Array2<f64>,
        names: &[String],
        params: WindowParams,
    ) -> Result<Self, AnomalyError> {
        let folds = params.folds.max(1);
        let fold_of: Vec<usize> = (0..features.nrows()).map(|i| i % folds).collect();
        Self::fit_folds(features, names, params, &fold_of)
    }

    /// As [`WindowModel::fit`], with the calibration's held-out folds given: `fold_of[i]` in
    /// `0..params.folds` for row `i`. Windows of one agent are alike, so holding out whole
    /// agents calibrates against how a new agent of the class scores; holding out single windows
    /// would calibrate against the other windows of agents the model knows.
    pub fn fit_folds(
        features: &Array2<f64>,
        names: &[String],
        params: WindowParams,
        fold_of: &[usize],
    ) -> Result<Self, AnomalyError> {
        let (rows, cols) = features.dim();
        if names.len() != cols {
            return Err(AnomalyError::NamesMismatch {
                names: names.len(),
                columns: cols,
            });
        }
        if rows == 0 {
            return Err(AnomalyError::NoRows);
        }
        if fold_of.len() != rows {
            return Err(AnomalyError::FoldsMismatch {
                folds: fold_of.len(),
                rows,
            });
        }
        for ((row, column), &value) in features.indexed_iter() {
            if !value.is_finite() {
                return Err(AnomalyError::NonFinite {
                    row,
                    column,
                    feature: names[column].clone(),
                    value,
                });
            }
        }
        let core = Core::fit(features, &params);
        let calibration = Calibration::new(held_out_scores(features, &params, &core, fold_of));
        Ok(Self {
            names: names.to_vec(),
            core,
            calibration,
            params,
        })
    }

    /// Feature names, in column order.
    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    /// Number of principal components actually kept.
    #[must_use]
    pub fn components(&self) -> usize {
        self.core.axes.nrows()
    }

    /// The calibration of raw scores.
    #[must_use]
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Scores one window (a row in the training column order).
    pub fn score(&self, row: ArrayView1<f64>) -> Result<WindowScore, AnomalyError> {
        if row.len() != self.names.len() {
            return Err(AnomalyError::FeatureCount {
                expected: self.names.len(),
                got: row.len(),
            });
        }
        if let Some((column, &value)) = row.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(AnomalyError::NonFinite {
                row: 0,
                column,
                feature: self.names[column].clone(),
                value,
            });
        }
        let parts = self.core.contributions(row);
        let raw: f64 = parts.iter().sum();
        Ok(WindowScore {
            score: self.calibration.score(raw),
            raw,
            top: self.top(row, &parts, raw),
        })
    }

    fn top(&self, row: ArrayView1<f64>, parts: &[f64], raw: f64) -> Vec<Contribution> {
        if raw <= 0.0 {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by(|&a, &b| parts[b].total_cmp(&parts[a]));
        // The top few even when one dominates: an analyst needs the second and third reasons
        // too (a new destination matters even beside an odd syscall sequence).
        let mut out = Vec::new();
        for j in order.into_iter().take(self.params.top_features) {
            let weight = parts[j] / raw;
            if weight < 0.001 {
                break;
            }
            out.push(Contribution {
                feature: self.names[j].clone(),
                value: row[j],
                weight,
            });
        }
        out
    }
}

/// Raw scores of each training row from a model that did not see its fold, or in-sample scores
/// when there are too few rows to hold any out.
fn held_out_scores(
    x: &Array2<f64>,
    params: &WindowParams,
    full: &Core,
    fold_of: &[usize],
) -> Vec<f64> {
    let rows = x.nrows();
    let folds = params.folds;
    if folds < 2 || rows < 4 * folds {
        return x
            .rows()
            .into_iter()
            .map(|r| full.contributions(r).iter().sum())
            .collect();
    }
    let mut out = Vec::with_capacity(rows);
    for f in 0..folds {
        let (held, fit_rows): (Vec<usize>, Vec<usize>) = (0..rows).partition(|&i| fold_of[i] == f);
        if held.is_empty() || fit_rows.is_empty() {
            continue;
        }
        let core = Core::fit(&x.select(Axis(0), &fit_rows), params);
        out.extend(
            held.iter()
                .map(|&i| core.contributions(x.row(i)).iter().sum::<f64>()),
        );
    }
    out
}

impl Core {
    fn fit(x: &Array2<f64>, params: &WindowParams) -> Self {
        let (rows, cols) = x.dim();
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(cols));
        let var = x.var_axis(Axis(0), 0.0);
        let floor = params.scale_floor.max(1e-9);
        let scale = Array1::from_iter(
            var.iter()
                .zip(mean.iter())
                .map(|(&v, &m)| (v + (floor * m.abs().max(1.0)).powi(2)).sqrt()),
        );
        let z = (x - &mean) / &scale;
        let k = params.components.min(cols).min(rows.saturating_sub(1));
        let (axes, variances) = principal_axes(&z, k);
        Self {
            mean,
            scale,
            axes,
            variances,
        }
    }

    /// Per-feature split of T² + SPE for one row; the parts sum to the raw score.
    ///
    /// SPE part of feature j: the squared residual `r_j²`. T² part: each component's
    /// `p_k² / λ_k` shared across features in proportion to `(a_kj z_j)²`.
    fn contributions(&self, row: ArrayView1<f64>) -> Vec<f64> {
        let z = (&row - &self.mean) / &self.scale;
        let p = self.axes.dot(&z);
        let recon = self.axes.t().dot(&p);
        let mut parts: Vec<f64> = z
            .iter()
            .zip(recon.iter())
            .map(|(a, b)| (a - b).powi(2))
            .collect();
        for (k, axis) in self.axes.rows().into_iter().enumerate() {
            let t2 = p[k] * p[k] / self.variances[k];
            let shares: Vec<f64> = axis
                .iter()
                .zip(z.iter())
                .map(|(a, zj)| (a * zj).powi(2))
                .collect();
            let total: f64 = shares.iter().sum();
            if total > 0.0 {
                for (part, s) in parts.iter_mut().zip(shares) {
                    *part += t2 * s / total;
                }
            }
        }
        parts
    }
}

/// Top-k principal axes of standardised data with linfa's PCA. Degenerate data (no variance, too
/// few rows, or a decomposition that does not converge) yields no axes: the score is then the
/// plain sum of squared standardised deviations.
fn principal_axes(z: &Array2<f64>, k: usize) -> (Array2<f64>, Array1<f64>) {
    let cols = z.ncols();
    let empty = (Array2::zeros((0, cols)), Array1::zeros(0));
    if k == 0 || z.iter().all(|v| v.abs() < 1e-12) {
        return empty;
    }
    let dataset = DatasetBase::from(z.clone());
    let Ok(pca) = Pca::params(k).fit(&dataset) else {
        return empty;
    };
    let axes = pca.components().clone();
    if axes.iter().any(|v| !v.is_finite()) {
        return empty;
    }
    // Variance of the training projections (z is centred by construction).
    let proj = z.dot(&axes.t());
    let variances = proj.var_axis(Axis(0), 0.0).mapv(|v| v.max(MIN_VARIANCE));
    (axes, variances)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-normal cloud: sums of a small LCG's uniforms.
    fn cloud(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        Array2::from_shape_fn((rows, cols), |(_, j)| {
            let g: f64 = (0..6).map(|_| next()).sum::<f64>() - 3.0;
            10.0 * j as f64 + g
        })
    }

    fn names(cols: usize) -> Vec<String> {
        (0..cols).map(|j| format!("f{j}")).collect()
    }

    #[test]
    fn outlier_scores_high_with_its_feature_on_top() {
        let x = cloud(400, 6, 7);
        let m = WindowModel::fit(&x, &names(6), WindowParams::default()).expect("fit");
        let mut out = x.row(0).to_owned();
        out[3] += 25.0;
        let s = m.score(out.view()).expect("score");
        assert!(s.score > 0.999, "outlier scored {}", s.score);
        assert_eq!(s.top[0].feature, "f3");
        assert!(s.top[0].weight > 0.5);
        let fresh = cloud(200, 6, 99);
        let high = fresh
            .rows()
            .into_iter()
            .filter(|r| m.score(*r).map(|s| s.score > 0.99).unwrap_or(true))
            .count();
        assert!(high <= 10, "{high} of 200 normal windows above 0.99");
        let mean = x.mean_axis(Axis(0)).expect("mean");
        assert!(m.score(mean.view()).expect("score").score < 0.5);
    }

    #[test]
    fn degenerate_inputs_do_not_panic_or_nan() {
        // Constant features, a single row, two rows.
        for rows in [1usize, 2, 3, 50] {
            let mut x = Array2::from_elem((rows, 3), 4.0);
            if rows > 1 {
                x[[1, 0]] = 5.0;
            }
            let m = WindowModel::fit(&x, &names(3), WindowParams::default()).expect("fit");
            let s = m.score(x.row(0)).expect("score");
            assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score));
            let mut far = x.row(0).to_owned();
            far[2] = 100.0;
            let s = m.score(far.view()).expect("score");
            assert!(s.score > 0.5 && s.score <= 1.0, "rows {rows}: {}", s.score);
            assert_eq!(s.top[0].feature, "f2");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Array2::from_elem((0, 2), 0.0);
        assert!(matches!(
            WindowModel::fit(&x, &names(2), WindowParams::default()),
            Err(AnomalyError::NoRows)
        ));
        let mut x = Array2::from_elem((3, 2), 1.0);
        x[[2, 1]] = f64::NAN;
        assert!(matches!(
            WindowModel::fit(&x, &names(2), WindowParams::default()),
            Err(AnomalyError::NonFinite {
                row: 2,
                column: 1,
                ..
            })
        ));
        let m = WindowModel::fit(
            &Array2::from_elem((3, 2), 1.0),
            &names(2),
            WindowParams::default(),
        )
        .expect("fit");
        assert!(m.score(Array1::zeros(3).view()).is_err());
    }

    #[test]
    fn calibration_is_an_ecdf_with_a_tail() {
        let c = Calibration::new(vec![1.0, 2.0, 3.0, 4.0]);
        assert!((c.score(2.0) - 1.5 / 5.0).abs() < 1e-12);
        assert!(c.score(0.0) < 1e-12);
        assert!(c.score(4.0) < c.score(5.0) && c.score(5.0) < c.score(50.0));
        assert!(c.score(1e9) <= 1.0 && c.score(1e9) > 0.99);
    }

    #[test]
    fn model_round_trips_through_bincode() {
        let x = cloud(60, 3, 1);
        let m = WindowModel::fit(&x, &names(3), WindowParams::default()).expect("fit");
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&m, cfg).expect("encode");
        let (back, _): (WindowModel, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
        assert_eq!(back, m);
    }
}
