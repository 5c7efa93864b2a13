//! `agent-monitor train --class <class> <traces...>`: fit a class baseline off-line from recorded
//! traces of healthy agents and save it under `models/<class>/`.

use std::{path::PathBuf, process::ExitCode};

use agent_monitor::detect::{
    baseline::{ClassModel, FEATURE_SCHEMA_VERSION, ModelMeta, store},
    engine::DEFAULT_REPORT_THRESHOLD,
    training::windows_of_trace,
    window::Window,
};
use anyhow::Context as _;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The agent class to learn (only its agents' windows are used).
    #[arg(long)]
    class: String,
    /// Where models are saved (default: the config's models_dir).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Configuration file (window length, sensitive paths; default: embedded).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Window score from which findings are reported.
    #[arg(long, default_value_t = DEFAULT_REPORT_THRESHOLD)]
    report_threshold: f64,
    /// Recorded traces of healthy agents (`agent-monitor record`).
    #[arg(required = true)]
    traces: Vec<PathBuf>,
}

pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(p) => agent_monitor::config::Config::load(p)?,
        None => agent_monitor::config::Config::embedded(),
    };
    let detection = &config.detection;
    let mut windows: Vec<Window> = Vec::new();
    let mut digests = Vec::new();
    let (mut lossy, mut other, mut unsteady) = (0usize, 0usize, 0usize);
    for path in &args.traces {
        let (ws, digest) = windows_of_trace(path, detection)
            .with_context(|| format!("reading {}", path.display()))?;
        digests.push(digest);
        for w in ws {
            if *w.agent.class != *args.class {
                other += 1;
            } else if w.lossy() {
                lossy += 1;
            } else if !w.steady() {
                unsteady += 1;
            } else {
                windows.push(w);
            }
        }
    }
    log::info!(
        "class {}: {} healthy windows ({} lossy and {} start-up or partial windows skipped, {} of \
         other classes)",
        args.class,
        windows.len(),
        lossy,
        unsteady,
        other
    );
    let refs: Vec<&Window> = windows.iter().collect();
    let model = ClassModel::fit(&args.class, &refs, detection.min_learning_windows as usize)?;
    let meta = ModelMeta {
        class: args.class.clone(),
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        window_secs: detection.window_secs,
        trained_windows: model.trained_windows,
        report_threshold: args.report_threshold,
        training_data_sha256: store::sha256_hex(digests.join("\n").as_bytes()),
        training_traces: args
            .traces
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect(),
        model_sha256: String::new(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        agent_monitor_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let dir = args
        .models
        .clone()
        .unwrap_or_else(|| detection.models_dir.clone());
    let saved = store::save(&dir, &model, meta)?;
    println!(
        "trained {} on {} windows from {} trace(s): {}",
        args.class,
        model.trained_windows,
        args.traces.len(),
        saved.display()
    );
    Ok(ExitCode::SUCCESS)
}
