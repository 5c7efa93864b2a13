//! `agent-monitor eval`: detection quality on labelled traces. Either ADFA-LD (`--adfa DIR`,
//! i386 syscall traces: train on training/, score validation/ normals against attack/), or the
//! project's own recorded traces against a class model (`--class`, `--normal`, `--attack`): a
//! trace scores the highest window severity of that class's agents in it.

use std::{path::PathBuf, process::ExitCode};

use agent_monitor::{
    config::Config,
    detect::{
        baseline::{ClassModel, ModelMeta, store},
        training::windows_of_trace,
    },
    eval::{AdfaParams, detection_at_far, evaluate_adfa, roc_auc},
};
use anyhow::{Context as _, bail};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// An ADFA-LD directory (training/, validation/, attack/).
    #[arg(long, conflicts_with_all = ["class", "normal", "attack"])]
    adfa: Option<PathBuf>,
    /// The class whose model scores the traces.
    #[arg(long, requires = "normal")]
    class: Option<String>,
    /// Traces of healthy agents.
    #[arg(long, num_args = 1..)]
    normal: Vec<PathBuf>,
    /// Traces of attacks.
    #[arg(long, num_args = 1..)]
    attack: Vec<PathBuf>,
    /// Where the class models are (default: the config's models_dir).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Print every window of the class's agents with its severity and top features (start-up
    /// and partial windows, which are not scored, are listed as such).
    #[arg(long)]
    windows: bool,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.adfa {
        let report = evaluate_adfa(dir, AdfaParams::default())
            .with_context(|| format!("evaluating on {}", dir.display()))?;
        print!("{report}");
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(class) = &args.class else {
        bail!("give --adfa DIR, or --class with --normal and --attack traces");
    };
    let config = Config::embedded();
    let dir = args
        .models
        .clone()
        .unwrap_or_else(|| config.detection.models_dir.clone());
    let (model, meta): (ClassModel, ModelMeta) = store::load(&dir, class)?;
    let score_all = |paths: &[PathBuf]| -> anyhow::Result<Vec<f64>> {
        paths
            .iter()
            .map(|p| {
                let (windows, _) = windows_of_trace(p, &config.detection)
                    .with_context(|| format!("reading {}", p.display()))?;
                let mut best = None::<f64>;
                for w in windows.iter().filter(|w| &*w.agent.class == class) {
                    if !w.steady() {
                        if args.windows {
                            println!(
                                "{} {} {:.1}s {}: not scored",
                                p.display(),
                                w.agent.id,
                                w.start_ns as f64 / 1e9,
                                if w.first { "start-up" } else { "partial" }
                            );
                        }
                        continue;
                    }
                    let score = model.score(w)?;
                    let s = score.score;
                    if args.windows {
                        let top: Vec<String> = score
                            .top_features
                            .iter()
                            .take(4)
                            .map(|c| format!("{}={:.2} ({:.0}%)", c.feature, c.value, c.weight * 100.0))
                            .collect();
                        println!(
                            "{} {} {:.1}s: severity {s:.3} calibrated {:.4} novelty {:.3} surprise {:.3}: {}",
                            p.display(),
                            w.agent.id,
                            w.start_ns as f64 / 1e9,
                            score.calibrated,
                            score.seq_novelty,
                            score.seq_surprise,
                            top.join(", ")
                        );
                    }
                    best = Some(best.map_or(s, |b| b.max(s)));
                }
                best.with_context(|| format!("{}: no windows of class {class}", p.display()))
            })
            .collect()
    };
    let normal = score_all(&args.normal)?;
    let attack = score_all(&args.attack)?;
    let auc = roc_auc(&normal, &attack);
    println!(
        "class {class} (model of {}, {} windows): {} normal and {} attack traces",
        meta.created,
        meta.trained_windows,
        normal.len(),
        attack.len()
    );
    println!(
        "ROC AUC: {}",
        auc.map_or("n/a".into(), |a| format!("{a:.3}"))
    );
    for far in [0.01, 0.05] {
        match detection_at_far(&normal, &attack, far) {
            Some(p) => println!(
                "at {:.0}% false alarms: {:.1}% detected (threshold {:.3})",
                far * 100.0,
                p.detection_rate * 100.0,
                p.threshold
            ),
            None => println!("at {:.0}% false alarms: n/a", far * 100.0),
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"class": class, "auc": auc, "normal": normal, "attack": attack})
        );
    }
    Ok(ExitCode::SUCCESS)
}
