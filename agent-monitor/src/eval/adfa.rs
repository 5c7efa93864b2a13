//! ADFA-LD (Creech & Hu, UNSW Canberra, 2013): reader and trace-level evaluation.
//!
//! Layout: `training/` and `validation/` hold normal traces, `attack/<Family>_<n>/` attack traces;
//! one file per process, one line of space-separated i386 syscall numbers. The models train on
//! `training/` only; `validation/` supplies the normal side of the figures.
//!
//! A trace scores like a live window: the surprise model's mean surprise per event (calibrated)
//! averaged with the window model's score over the trace's feature vector (see
//! [`TraceFeatures`]). The n-gram novelty rate is reported alone and feeds the window model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Serialize;

use super::EvalError;
use super::roc::{detection_at_far, roc_auc};
use crate::detect::anomaly::{Calibration, WindowModel, WindowParams};
use crate::detect::sequence::{SequenceModel, SequenceParams, SurpriseModel, SurpriseParams};

/// i386 `poll` and `clock_gettime`: the leading run of these is a recording artifact (README).
const ARTIFACT_IDS: [u16; 2] = [168, 265];

/// Evaluation parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct AdfaParams {
    pub sequence: SequenceParams,
    pub surprise: SurpriseParams,
    pub window: WindowParams,
}

/// One attack trace and its family (folder name without the `_<n>` run number).
#[derive(Clone, Debug)]
pub struct AttackTrace {
    pub family: String,
    pub ids: Vec<u16>,
}

/// The dataset in memory.
#[derive(Clone, Debug, Default)]
pub struct AdfaData {
    pub training: Vec<Vec<u16>>,
    pub validation: Vec<Vec<u16>>,
    pub attack: Vec<AttackTrace>,
    /// i386 number -> name from `syscall_i386_map.tsv`, when present (feature names only).
    pub names: BTreeMap<u16, String>,
}

/// Reads one trace file, refusing anything but whitespace-separated numbers in `0..=65535`.
pub fn read_trace(path: &Path) -> Result<Vec<u16>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ids = text
        .split_ascii_whitespace()
        .enumerate()
        .map(|(i, tok)| {
            tok.parse::<u16>().map_err(|_| EvalError::BadToken {
                path: path.to_path_buf(),
                position: i + 1,
                token: tok.chars().take(40).collect(),
            })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    if ids.is_empty() {
        return Err(EvalError::EmptyTrace {
            path: path.to_path_buf(),
        });
    }
    Ok(ids)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let io = |source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// Reads every `*.txt` trace of a folder, in name order.
fn read_folder(dir: &Path) -> Result<Vec<Vec<u16>>, EvalError> {
    let traces = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
        .map(|p| read_trace(&p))
        .collect::<Result<Vec<_>, _>>()?;
    if traces.is_empty() {
        return Err(EvalError::NoTraces {
            path: dir.to_path_buf(),
        });
    }
    Ok(traces)
}

/// Loads the dataset from its root folder.
pub fn load_adfa(dir: &Path) -> Result<AdfaData, EvalError> {
    let mut data = AdfaData {
        training: read_folder(&dir.join("training"))?,
        validation: read_folder(&dir.join("validation"))?,
        ..AdfaData::default()
    };
    for run in sorted_entries(&dir.join("attack"))? {
        if !run.is_dir() {
            continue;
        }
        let name = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let family = match name.rsplit_once('_') {
            Some((f, n)) if n.chars().all(|c| c.is_ascii_digit()) => f.to_owned(),
            _ => name.clone(),
        };
        for ids in read_folder(&run)? {
            data.attack.push(AttackTrace {
                family: family.clone(),
                ids,
            });
        }
    }
    if data.attack.is_empty() {
        return Err(EvalError::NoTraces {
            path: dir.join("attack"),
        });
    }
    // Names are cosmetic: a missing or odd map only leaves numbers in feature names.
    if let Ok(text) = std::fs::read_to_string(dir.join("syscall_i386_map.tsv")) {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some(num), Some(name)) = (it.next(), it.next())
                && let Ok(num) = num.parse::<u16>()
            {
                data.names.insert(num, name.to_owned());
            }
        }
    }
    Ok(data)
}

/// Drops a trace's leading run of poll/clock_gettime (the dataset's recording artifact).
#[must_use]
pub fn strip_artifact(ids: &[u16]) -> &[u16] {
    let start = ids
        .iter()
        .position(|id| !ARTIFACT_IDS.contains(id))
        .unwrap_or(ids.len());
    &ids[start..]
}

/// Per-window feature vector, the same kinds the live daemon computes per window:
/// `freq:<syscall>` = sqrt of the syscall's share of the window (bag of syscalls over the
/// training vocabulary, plus `freq:other` for ids never seen in training); `novel_ngrams` =
/// the sequence model's novelty rate; `log_length` = ln(1 + syscalls); `distinct_syscalls`.
/// The square root tames the heavy-tailed counts so one busy syscall does not dominate.
#[derive(Clone, Debug)]
pub struct TraceFeatures {
    vocab: BTreeMap<u16, usize>,
    names: Vec<String>,
}

impl TraceFeatures {
    fn new<'a>(training: impl Iterator<Item = &'a [u16]>, names: &BTreeMap<u16, String>) -> Self {
        let mut ids: Vec<u16> = training.flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let vocab: BTreeMap<u16, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut out: Vec<String> = ids
            .iter()
            .map(|id| match names.get(id) {
                Some(n) => format!("freq:{n}"),
                None => format!("freq:{id}"),
            })
            .collect();
        out.extend(
            [
                "freq:other",
                "novel_ngrams",
                "log_length",
                "distinct_syscalls",
            ]
            .map(String::from),
        );
        Self { vocab, names: out }
    }

    fn row(&self, ids: &[u16], novelty: f64) -> Vec<f64> {
        let v = self.vocab.len();
        let mut row = vec![0.0; v + 4];
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let slot = self.vocab.get(id).copied().unwrap_or(v);
            row[slot] += 1.0;
            seen.insert(*id);
        }
        let len = ids.len().max(1) as f64;
        for x in &mut row[..=v] {
            *x = (*x / len).sqrt();
        }
        row[v + 1] = novelty;
        row[v + 2] = (ids.len() as f64).ln_1p();
        row[v + 3] = seen.len() as f64;
        row
    }
}

/// AUC and detection rates at 1% and 5% false alarms for one score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    pub auc: f64,
    pub dr_at_1pct: f64,
    pub dr_at_5pct: f64,
    /// Score threshold of the 5% operating point.
    pub threshold_5pct: f64,
}

/// Detection rate of one attack family at the 5% false-alarm threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FamilyFigure {
    pub family: String,
    pub traces: usize,
    pub dr_at_5pct: f64,
}

/// Figures of one data variant (as recorded, or artifact stripped).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantReport {
    /// The trace score: mean of the calibrated surprise and window scores.
    pub combined: Figures,
    /// Sequence model alone (calibrated n-gram novelty rate).
    pub sequence: Figures,
    /// Surprise model alone (calibrated mean surprise per event).
    pub surprise: Figures,
    /// Window model alone.
    pub window: Figures,
    /// Combined score, per family.
    pub families: Vec<FamilyFigure>,
}

/// The ADFA-LD evaluation result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdfaReport {
    pub training_traces: usize,
    pub validation_traces: usize,
    pub attack_traces: usize,
    pub params: AdfaParams,
    /// Traces as recorded.
    pub as_recorded: VariantReport,
    /// Every trace's leading poll/clock_gettime run removed before training and scoring.
    pub artifact_stripped: VariantReport,
}

/// Trains on `training/` only and scores `validation/` (normal) against `attack/`, on the traces
/// as recorded and with the leading poll/clock_gettime artifact stripped.
pub fn evaluate_adfa(dir: &Path, params: AdfaParams) -> Result<AdfaReport, EvalError> {
    let data = load_adfa(dir)?;
    let as_recorded = evaluate_variant(&data, &params, |t| t)?;
    let artifact_stripped = evaluate_variant(&data, &params, strip_artifact)?;
    Ok(AdfaReport {
        training_traces: data.training.len(),
        validation_traces: data.validation.len(),
        attack_traces: data.attack.len(),
        params,
        as_recorded,
        artifact_stripped,
    })
}

/// Scores of one trace set, each calibrated to [0, 1].
struct Scores {
    sequence: Vec<f64>,
    surprise: Vec<f64>,
    window: Vec<f64>,
    combined: Vec<f64>,
}

fn evaluate_variant(
    data: &AdfaData,
    params: &AdfaParams,
    view: fn(&[u16]) -> &[u16],
) -> Result<VariantReport, EvalError> {
    let training: Vec<&[u16]> = data.training.iter().map(|t| view(t)).collect();
    let seq = SequenceModel::train(training.iter().copied(), params.sequence);
    let lm = SurpriseModel::train(training.iter().copied(), params.surprise);
    let features = TraceFeatures::new(training.iter().copied(), &data.names);

    // Training rows need the novelty a *new* normal trace would get, not 0: cross-fit it.
    let (train_novelty, train_surprise) = cross_fitted(&training, params);
    let lm_cal = Calibration::new(train_surprise);
    let seq_cal = Calibration::new(train_novelty.clone());
    let rows: Vec<Vec<f64>> = training
        .iter()
        .zip(&train_novelty)
        .map(|(t, &nov)| features.row(t, nov))
        .collect();
    let window = WindowModel::fit(&to_matrix(&rows), &features.names, params.window)?;

    let score = |traces: &mut dyn Iterator<Item = &[u16]>| -> Result<Scores, EvalError> {
        let mut s = Scores {
            sequence: Vec::new(),
            surprise: Vec::new(),
            window: Vec::new(),
            combined: Vec::new(),
        };
        for t in traces {
            let nov = seq.score(t);
            let sq = seq_cal.score(nov);
            let w = window
                .score(ndarray::ArrayView1::from(&features.row(t, nov)))?
                .score;
            let lm_score = lm_cal.score(lm.surprise(t));
            s.sequence.push(sq);
            s.surprise.push(lm_score);
            s.window.push(w);
            s.combined.push(0.5 * (lm_score + w));
        }
        Ok(s)
    };
    let normal = score(&mut data.validation.iter().map(|t| view(t)))?;
    let attack = score(&mut data.attack.iter().map(|a| view(&a.ids)))?;

    let combined = figures(&normal.combined, &attack.combined, "combined")?;
    let mut by_family: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (a, &s) in data.attack.iter().zip(&attack.combined) {
        let e = by_family.entry(&a.family).or_default();
        e.0 += 1;
        e.1 += usize::from(s > combined.threshold_5pct);
    }
    Ok(VariantReport {
        sequence: figures(&normal.sequence, &attack.sequence, "sequence")?,
        surprise: figures(&normal.surprise, &attack.surprise, "surprise")?,
        window: figures(&normal.window, &attack.window, "window")?,
        combined,
        families: by_family
            .into_iter()
            .map(|(family, (traces, hit))| FamilyFigure {
                family: family.to_owned(),
                traces,
                dr_at_5pct: hit as f64 / traces as f64,
            })
            .collect(),
    })
}

/// Novelty rate and mean surprise of each training trace under models trained on the other
/// folds (what a new normal trace gets, not the in-sample 0).
fn cross_fitted(training: &[&[u16]], params: &AdfaParams) -> (Vec<f64>, Vec<f64>) {
    let folds = params.window.folds.max(2);
    let mut novelty = vec![0.0; training.len()];
    let mut surprise = vec![0.0; training.len()];
    for f in 0..folds {
        let fit = || {
            training
                .iter()
                .enumerate()
                .filter(|(i, _)| i % folds != f)
                .map(|(_, t)| *t)
        };
        let model = SequenceModel::train(fit(), params.sequence);
        let lm = SurpriseModel::train(fit(), params.surprise);
        for i in (f..training.len()).step_by(folds) {
            novelty[i] = model.score(training[i]);
            surprise[i] = lm.surprise(training[i]);
        }
    }
    (novelty, surprise)
}

fn to_matrix(rows: &[Vec<f64>]) -> Array2<f64> {
    let cols = rows.first().map_or(0, Vec::len);
    Array2::from_shape_fn((rows.len(), cols), |(i, j)| rows[i][j])
}

fn figures(normal: &[f64], attack: &[f64], what: &str) -> Result<Figures, EvalError> {
    let err = || EvalError::Figures {
        what: what.to_owned(),
    };
    let auc = roc_auc(normal, attack).ok_or_else(err)?;
    let p1 = detection_at_far(normal, attack, 0.01).ok_or_else(err)?;
    let p5 = detection_at_far(normal, attack, 0.05).ok_or_else(err)?;
    Ok(Figures {
        auc,
        dr_at_1pct: p1.detection_rate,
        dr_at_5pct: p5.detection_rate,
        threshold_5pct: p5.threshold,
    })
}

impl fmt::Display for AdfaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ADFA-LD (Creech & Hu, UNSW Canberra, 2013): trained on {} normal traces; \
             scored {} validation normals vs {} attacks",
            self.training_traces, self.validation_traces, self.attack_traces
        )?;
        writeln!(
            f,
            "sequence n={}, surprise order={}, window PCA components={}",
            self.params.sequence.n, self.params.surprise.order, self.params.window.components
        )?;
        writeln!(
            f,
            "{:<28} {:>7} {:>10} {:>10}",
            "score", "AUC", "DR@1%FA", "DR@5%FA"
        )?;
        for (label, v) in [
            ("as recorded", &self.as_recorded),
            ("leading poll/clock stripped", &self.artifact_stripped),
        ] {
            writeln!(f, "-- {label}")?;
            for (name, fig) in [
                ("  combined (trace score)", &v.combined),
                ("  sequence model only", &v.sequence),
                ("  surprise model only", &v.surprise),
                ("  window model only", &v.window),
            ] {
                writeln!(
                    f,
                    "{:<28} {:>7.3} {:>9.1}% {:>9.1}%",
                    name,
                    fig.auc,
                    100.0 * fig.dr_at_1pct,
                    100.0 * fig.dr_at_5pct
                )?;
            }
            for fam in &v.families {
                writeln!(
                    f,
                    "{:<28} {:>7} {:>10} {:>9.1}%",
                    format!("  {} ({})", fam.family, fam.traces),
                    "",
                    "",
                    100.0 * fam.dr_at_5pct
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn reader_names_file_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "t.txt", "3 4 5x 6\n");
        let err = read_trace(&dir.path().join("t.txt")).expect_err("malformed");
        let msg = err.to_string();
        assert!(
            msg.contains("t.txt") && msg.contains("5x") && msg.contains("token 3"),
            "{msg}"
        );
        write(dir.path(), "big.txt", "70000");
        assert!(matches!(
            read_trace(&dir.path().join("big.txt")),
            Err(EvalError::BadToken { position: 1, .. })
        ));
        write(dir.path(), "empty.txt", " \n");
        assert!(matches!(
            read_trace(&dir.path().join("empty.txt")),
            Err(EvalError::EmptyTrace { .. })
        ));
        write(dir.path(), "ok.txt", "6 6 63\n");
        assert_eq!(
            read_trace(&dir.path().join("ok.txt")).expect("ok"),
            [6, 6, 63]
        );
    }

    #[test]
    fn strips_only_the_leading_artifact_run() {
        assert_eq!(strip_artifact(&[168, 265, 168, 3, 168]), [3, 168]);
        assert_eq!(strip_artifact(&[3, 168]), [3, 168]);
        assert!(strip_artifact(&[168, 265]).is_empty());
    }

    #[test]
    fn evaluates_a_tiny_synthetic_dataset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let normal = |k: usize| {
            (0..60)
                .map(|i| ((i + k) % 5 + 1).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for k in 0..40 {
            write(dir.path(), &format!("training/UTD-{k}.txt"), &normal(k));
            write(
                dir.path(),
                &format!("validation/UVD-{k}.txt"),
                &normal(k + 2),
            );
        }
        for k in 0..10 {
            let attack = (0..60)
                .map(|i| (i * 7 % 13 + 20).to_string())
                .collect::<Vec<_>>();
            write(
                dir.path(),
                &format!("attack/Evil_{}/UAD-{k}.txt", k % 2 + 1),
                &attack.join(" "),
            );
        }
        let report = evaluate_adfa(dir.path(), AdfaParams::default()).expect("evaluate");
        assert_eq!(report.attack_traces, 10);
        assert_eq!(report.as_recorded.families.len(), 1);
        assert!(report.as_recorded.combined.auc > 0.99);
        assert!(report.to_string().contains("Evil (10)"));
        assert!(serde_json::to_string(&report).is_ok());
    }

    fn real_report() -> AdfaReport {
        let dir = std::env::var_os("ADFA_LD_DIR").map_or_else(
            || PathBuf::from("/work/shared/datasets/adfa-ld"),
            PathBuf::from,
        );
        let report = evaluate_adfa(&dir, AdfaParams::default()).expect("evaluate");
        println!("{report}");
        report
    }

    /// Guards the figures reached so far (docs/ANOMALY-MODELS.md) and that stripping the
    /// recording artifact does not change them: `cargo test --release -p agent-monitor --lib --
    /// --ignored adfa_regression`.
    #[test]
    #[ignore = "needs the ADFA-LD dataset; run in release mode"]
    fn adfa_regression_floor() {
        let r = real_report();
        for v in [&r.as_recorded, &r.artifact_stripped] {
            assert!(v.combined.auc >= 0.84, "AUC {}", v.combined.auc);
            assert!(
                v.combined.dr_at_5pct >= 0.30,
                "DR@5% {}",
                v.combined.dr_at_5pct
            );
        }
        let gap = (r.as_recorded.combined.auc - r.artifact_stripped.combined.auc).abs();
        assert!(gap < 0.02, "artifact changes the AUC by {gap}");
    }

    /// The target (AUC >= 0.90, DR >= 50% at 5% false alarms). NOT met yet: this test fails
    /// until the models improve; see docs/ANOMALY-MODELS.md.
    #[test]
    #[ignore = "needs the ADFA-LD dataset; run in release mode; target not met yet"]
    fn adfa_meets_the_bar() {
        let r = real_report();
        for v in [&r.as_recorded, &r.artifact_stripped] {
            assert!(v.combined.auc >= 0.90, "AUC {}", v.combined.auc);
            assert!(
                v.combined.dr_at_5pct >= 0.50,
                "DR@5% {}",
                v.combined.dr_at_5pct
            );
        }
    }
}
