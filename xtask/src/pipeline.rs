//! `cargo xtask bench pipeline`: the userspace pipeline in replay mode (PERF-ANCHORS rows 5 and
//! 10). A trace of the representative agents is recorded once, held in memory, and fed through
//! `Pipeline::process` repeatedly (timestamps shifted per pass so windows keep moving forward),
//! measuring this thread's CPU time: events per second per core, for decode + identity, + feature
//! windows, + the shipped rules, + anomaly scoring with the shipped class models, and the
//! per-event cost at 1 to 1,000 rules.

use std::{path::Path, process::Command};

use agent_monitor::{
    config::Config,
    detect::{
        engine::Detection,
        rules::{RuleEngine, RuleSet},
    },
    pipeline::Pipeline,
    source::Batch,
    trace::TraceReader,
};
use anyhow::{Context as _, bail};
use serde_json::json;

use crate::stats::median;

#[derive(clap::Args)]
pub struct Options {
    /// Seconds of demo agents to record (once; reused if the trace exists).
    #[arg(long, default_value_t = 60)]
    record_secs: u64,
    /// Events fed per measurement (the trace is replayed as often as needed).
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Repetitions per measurement (median reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let work = root.join("target/bench-pipeline");
    std::fs::create_dir_all(&work)?;
    let trace = work.join("agents.amtrace");
    if !trace.exists() {
        record(&root, &trace, opts.record_secs)?;
    }
    let records = load(&trace)?;
    eprintln!("{} records in {}", records.len(), trace.display());
    let config = Config::embedded();
    // The shipped class models: what is measured is the cost of scoring with them.
    let models = root.join("models");
    let rules_dir = root.join("rules");
    let shipped_rules = || Ok(RuleSet::load_dir(&rules_dir)?);

    // Detection holds state, so every repetition builds a fresh one. Classes without a model
    // stay learning (the first on-line fit would otherwise land inside the measurement).
    type Rules<'a> = Option<&'a dyn Fn() -> anyhow::Result<RuleSet>>;
    let fresh = |rules: Rules, with_models: bool| -> anyhow::Result<Detection> {
        let mut detection_config = config.detection.clone();
        detection_config.min_learning_windows = u32::MAX;
        let mut d = Detection::new(&detection_config)?;
        if with_models {
            d.load_models(&models)?;
        }
        if let Some(load) = rules {
            d.set_rules(RuleEngine::new(load()?));
        }
        Ok(d)
    };
    let measure = |make: &dyn Fn() -> anyhow::Result<Option<Detection>>| -> anyhow::Result<f64> {
        let mut xs = Vec::new();
        for _ in 0..opts.reps {
            xs.push(events_per_cpu_second(&records, opts.events, make()?)?);
        }
        Ok(median(xs))
    };
    let decode_only = measure(&|| Ok(None))?;
    let features = measure(&|| Ok(Some(fresh(None, false)?)))?;
    let rules = measure(&|| Ok(Some(fresh(Some(&shipped_rules), false)?)))?;
    let scoring = measure(&|| Ok(Some(fresh(Some(&shipped_rules), true)?)))?;
    let mut scaling = serde_json::Map::new();
    for n in [1usize, 10, 100, 1000] {
        let load = || synthetic_rules(n);
        let rate = measure(&|| Ok(Some(fresh(Some(&load), false)?)))?;
        scaling.insert(
            n.to_string(),
            json!({"events_per_cpu_second": rate, "ns_per_event": 1e9 / rate}),
        );
    }
    let report = json!({
        "method": "trace of the representative agents held in memory, fed through Pipeline::process (no output sinks); this thread's CPU time; median of reps",
        "records_in_trace": records.len(),
        "events_per_measurement": opts.events,
        "events_per_cpu_second": {
            "decode_identity": decode_only,
            "plus_feature_windows": features,
            "plus_shipped_rules": rules,
            "plus_anomaly_scoring": scoring,
        },
        "rule_scaling": scaling,
    });
    let out = root.join("bench/results/pipeline.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("written to {}", out.display());
    Ok(())
}

fn record(root: &Path, trace: &Path, secs: u64) -> anyhow::Result<()> {
    let bin = crate::build_release(root)?;
    let status = Command::new(&bin)
        .args(["demo", "--agents-per-class", "3", "--output", "/dev/null"])
        .arg("--duration")
        .arg(format!("{secs}s"))
        .arg("--record")
        .arg(trace)
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("recording the bench trace failed");
    }
    Ok(())
}

fn load(trace: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut reader = TraceReader::open(trace).with_context(|| trace.display().to_string())?;
    let mut records = Vec::new();
    let mut buf = Vec::new();
    while reader.next_into(&mut buf)? {
        records.push(buf.clone());
    }
    Ok(records)
}

/// Feeds `events` records through a pipeline, shifting timestamps by the trace's span on every
/// pass, and returns events per second of this thread's CPU time.
fn events_per_cpu_second(
    records: &[Vec<u8>],
    events: u64,
    detection: Option<Detection>,
) -> anyhow::Result<f64> {
    const TS: std::ops::Range<usize> = 8..16;
    let ts = |r: &[u8]| {
        r.get(TS)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let first = records.first().map_or(0, |r| ts(r));
    let span = records.last().map_or(0, |r| ts(r)).saturating_sub(first) + 1_000_000_000;
    let mut pipeline = Pipeline::default();
    if let Some(d) = detection {
        pipeline = pipeline.with_detection(d);
    }
    let mut batch = Batch::default();
    let mut record = Vec::new();
    let mut fed = 0u64;
    let mut pass = 0u64;
    let start = thread_cpu_ns();
    'outer: loop {
        for chunk in records.chunks(4096) {
            batch.clear();
            for r in chunk {
                record.clear();
                record.extend_from_slice(r);
                if let Some(t) = record.get_mut(TS) {
                    t.copy_from_slice(&(ts(r) + pass * span).to_le_bytes());
                }
                batch.push(&record);
            }
            pipeline.process(&batch)?;
            fed += chunk.len() as u64;
            if fed >= events {
                break 'outer;
            }
        }
        pass += 1;
    }
    pipeline.finish()?;
    let cpu = (thread_cpu_ns() - start) as f64 / 1e9;
    Ok(fed as f64 / cpu)
}

fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// `n` rules spread over the event kinds of the trace, none of which fire: what is measured is
/// the cost of carrying them.
fn synthetic_rules(n: usize) -> anyhow::Result<RuleSet> {
    let mut yaml = String::from("version: 1\nrules:\n");
    for i in 0..n {
        let rule = match i % 3 {
            0 => format!(
                "  - name: synthetic-open-{i}\n    description: synthetic\n    kinds: open\n    when:\n      path: {{starts_with: /synthetic/{i}/}}\n    tier: log\n    summary: synthetic\n"
            ),
            1 => format!(
                "  - name: synthetic-connect-{i}\n    description: synthetic\n    kinds: connect\n    when:\n      port: {}\n    tier: log\n    summary: synthetic\n",
                40_000 + i
            ),
            _ => format!(
                "  - name: synthetic-exec-{i}\n    description: synthetic\n    kinds: exec\n    when:\n      filename: {{glob: \"/synthetic/{i}/*\"}}\n    tier: log\n    summary: synthetic\n"
            ),
        };
        yaml.push_str(&rule);
    }
    Ok(RuleSet::parse("synthetic.yaml", &yaml)?)
}
