//! `cargo xtask bench pipeline`: the userspace pipeline in replay mode (PERF-ANCHORS rows 5 and
//! 10). A trace of the representative agents is recorded once, held in memory, and fed through
//! `Pipeline::process` repeatedly (timestamps shifted per pass so windows keep moving forward),
//! measuring this thread's CPU time: events per second per core, for decode + identity, + feature
//! windows, + the shipped rules, + anomaly scoring with the shipped class models (each stage's own
//! ns per event is the difference to the one before), and the per-event cost at 1 to 1,000 rules
//! with the ratio of 1,000 to 1.

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
    /// Rounds; each round measures every configuration once, in turn, so that a slow spell of a
    /// shared machine hits all of them alike (median over rounds reported). One measurement
    /// takes about half a second and varies by up to 10% on a shared VM, more than row 10's
    /// 5% allows; 15 rounds (about a minute and a half) settle the medians.
    #[arg(long, alias = "reps", default_value_t = 15)]
    rounds: usize,
    /// Measure only the configurations whose name contains one of these (comma-separated, for
    /// example `rules,scoring`); the results file is then not written.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The rule counts of the row-10 sweep.
const RULE_COUNTS: [usize; 4] = [1, 10, 100, 1000];

/// One measured configuration: a name and how to build its detection stage (`None`: decode and
/// identity only).
struct Setup<'a> {
    name: String,
    make: Box<dyn Fn() -> anyhow::Result<Option<Detection>> + 'a>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let work = root.join("target/bench-pipeline");
    std::fs::create_dir_all(&work)?;
    let trace = work.join("agents.amtrace");
    if !trace.exists() {
        record(&root, &trace, opts.record_secs)?;
    }
    let mut held = load(&trace)?;
    let records = held.records();
    eprintln!("{records} records in {}", trace.display());
    let config = Config::embedded();
    // The shipped class models: what is measured is the cost of scoring with them.
    let models = root.join("models");
    let rules_dir = root.join("rules");
    let shipped_rules = || Ok(RuleSet::load_dir(&rules_dir)?);

    // Detection holds state, so every measurement builds a fresh one. Classes without a model
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
    let mut setups: Vec<Setup> = vec![
        Setup {
            name: "decode_identity".into(),
            make: Box::new(|| Ok(None)),
        },
        Setup {
            name: "plus_feature_windows".into(),
            make: Box::new(|| Ok(Some(fresh(None, false)?))),
        },
        Setup {
            name: "plus_shipped_rules".into(),
            make: Box::new(|| Ok(Some(fresh(Some(&shipped_rules), false)?))),
        },
        Setup {
            name: "plus_anomaly_scoring".into(),
            make: Box::new(|| Ok(Some(fresh(Some(&shipped_rules), true)?))),
        },
    ];
    for n in RULE_COUNTS {
        setups.push(Setup {
            name: format!("synthetic_rules_{n}"),
            make: Box::new(move || {
                let load = || synthetic_rules(n);
                Ok(Some(fresh(Some(&load), false)?))
            }),
        });
    }
    setups.retain(|s| opts.only.is_empty() || opts.only.iter().any(|o| s.name.contains(o)));

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 1..=opts.rounds {
        // Each round starts one configuration later, so none always follows the same one
        // (what ran before leaves the caches and the allocator in its own state).
        let start = (round - 1) % setups.len().max(1);
        let mut order: Vec<_> = setups.iter().zip(&mut samples).collect();
        order.rotate_left(start);
        for (setup, xs) in order {
            let rate = events_per_cpu_second(&mut held, opts.events, (setup.make)()?)?;
            eprintln!(
                "round {round}: {:<24} {:>6.2} M events/CPU-s, {:>6.0} ns/event",
                setup.name,
                rate / 1e6,
                1e9 / rate
            );
            xs.push(rate);
        }
    }
    let rates: std::collections::BTreeMap<&str, f64> = setups
        .iter()
        .zip(samples)
        .map(|(s, xs)| (s.name.as_str(), median(xs)))
        .collect();
    let ns = |name: &str| rates.get(name).map(|r| 1e9 / r);
    let stages = [
        "decode_identity",
        "plus_feature_windows",
        "plus_shipped_rules",
        "plus_anomaly_scoring",
    ];
    let mut per_second = serde_json::Map::new();
    let mut per_event = serde_json::Map::new();
    let mut added = serde_json::Map::new();
    let mut before: Option<f64> = None;
    for stage in stages {
        let (Some(rate), Some(cost)) = (rates.get(stage), ns(stage)) else {
            before = None;
            continue;
        };
        per_second.insert(stage.into(), json!(rate));
        per_event.insert(stage.into(), json!(cost));
        let own = stage.trim_start_matches("plus_");
        if let Some(b) = before.or((stage == "decode_identity").then_some(0.0)) {
            added.insert(own.into(), json!(cost - b));
        }
        before = Some(cost);
    }
    let mut scaling = serde_json::Map::new();
    for n in RULE_COUNTS {
        let name = format!("synthetic_rules_{n}");
        if let (Some(rate), Some(cost)) = (rates.get(name.as_str()), ns(&name)) {
            scaling.insert(
                n.to_string(),
                json!({"events_per_cpu_second": rate, "ns_per_event": cost}),
            );
        }
    }
    if let (Some(one), Some(thousand)) = (ns("synthetic_rules_1"), ns("synthetic_rules_1000")) {
        scaling.insert("ratio_1000_to_1".into(), json!(thousand / one));
    }
    let report = json!({
        "method": "trace of the representative agents held in memory, fed through Pipeline::process (no output sinks); this thread's CPU time inside process and finish; every configuration measured once per round, in turn, each round starting one configuration later; median over rounds",
        "records_in_trace": records,
        "events_per_measurement": opts.events,
        "rounds": opts.rounds,
        "events_per_cpu_second": per_second,
        "ns_per_event": per_event,
        "stage_ns_per_event": added,
        "rule_scaling": scaling,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if opts.only.is_empty() {
        let out = root.join("bench/results/pipeline.json");
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("written to {}", out.display());
    }
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

/// The trace's records in batches of 4096, as a source hands them over, with each record's
/// original timestamp.
struct Held {
    batches: Vec<Batch>,
    stamps: Vec<Vec<u64>>,
}

impl Held {
    fn records(&self) -> usize {
        self.batches.iter().map(Batch::len).sum()
    }
}

fn load(trace: &Path) -> anyhow::Result<Held> {
    let mut reader = TraceReader::open(trace).with_context(|| trace.display().to_string())?;
    let mut held = Held {
        batches: Vec::new(),
        stamps: Vec::new(),
    };
    let mut batch = Batch::default();
    let mut buf = Vec::new();
    loop {
        let more = reader.next_into(&mut buf)?;
        if more {
            batch.push(&buf);
        }
        if batch.len() == 4096 || (!more && !batch.is_empty()) {
            held.stamps.push(batch.iter().map(ts).collect());
            held.batches.push(std::mem::take(&mut batch));
        }
        if !more {
            return Ok(held);
        }
    }
}

const TS: std::ops::Range<usize> = 8..16;

fn ts(record: &[u8]) -> u64 {
    record
        .get(TS)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Feeds `events` records through a pipeline and returns events per second of this thread's
/// CPU time spent in it. The batches are replayed as often as needed; before every pass their timestamps
/// are set, in place, to the original ones moved on by the trace's span per pass, so windows
/// keep moving forward and every measurement sees the same events.
fn events_per_cpu_second(
    held: &mut Held,
    events: u64,
    detection: Option<Detection>,
) -> anyhow::Result<f64> {
    let first = held.stamps.first().and_then(|s| s.first()).copied();
    let last = held.stamps.last().and_then(|s| s.last()).copied();
    let span = last.unwrap_or(0).saturating_sub(first.unwrap_or(0)) + 1_000_000_000;
    let mut pipeline = Pipeline::default();
    if let Some(d) = detection {
        pipeline = pipeline.with_detection(d);
    }
    let mut fed = 0u64;
    let mut shift = 0u64;
    // Only the pipeline's own calls are timed: re-stamping the batches is the harness's work.
    let mut cpu_ns = 0u64;
    'outer: loop {
        for (batch, stamps) in held.batches.iter_mut().zip(&held.stamps) {
            for (record, t) in batch.iter_mut().zip(stamps) {
                if let Some(dst) = record.get_mut(TS) {
                    dst.copy_from_slice(&(t + shift).to_le_bytes());
                }
            }
            let start = thread_cpu_ns();
            pipeline.process(batch)?;
            cpu_ns += thread_cpu_ns() - start;
            fed += batch.len() as u64;
            if fed >= events {
                break 'outer;
            }
        }
        shift += span;
    }
    let start = thread_cpu_ns();
    pipeline.finish()?;
    cpu_ns += thread_cpu_ns() - start;
    Ok(fed as f64 / (cpu_ns as f64 / 1e9))
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
