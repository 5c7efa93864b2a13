//! Latency of the response: from an event to the decision it led to, and from a containment
//! decision to its actions being in force. Recorded in HDR histograms (1 us to 60 s, three
//! significant digits) and rendered as Prometheus summaries: the project's targets are
//! quantiles (p50, p99) per node, which HDR gives to 0.1% without choosing buckets in advance.
//! Quantiles cover a sliding window of the last one to two [`HALF_WINDOW`]s, so that a change
//! shows within minutes; `_sum` and `_count` are cumulative, as Prometheus expects. Over OTLP
//! the same values go to an OpenTelemetry histogram (the collector computes its own quantiles).
//!
//! Nothing is recorded until [`install`] is called (the live daemon with observability on):
//! replayed decisions carry trace time, not the clock of now.

use std::{
    fmt::Write as _,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use super::names;
use crate::{
    detect::{Finding, Tier},
    respond::policy::Decision,
};

/// Quantiles rendered for each summary.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];
/// Quantiles are over the current and the previous half window.
pub const HALF_WINDOW: Duration = Duration::from_secs(60);
/// Bucket bounds of the OTLP histograms, in seconds, around the targets (100 us, 1 ms, 5 ms).
pub const OTLP_BOUNDS: [f64; 16] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5, 1.0,
    5.0,
];
const MAX_US: u64 = 60_000_000;

/// One latency: windowed HDR histograms plus cumulative sum and count.
pub struct Windowed {
    current: Histogram<u32>,
    previous: Histogram<u32>,
    rotated: Instant,
    sum_s: f64,
    count: u64,
}

impl Windowed {
    pub fn new(now: Instant) -> Self {
        let h = || {
            Histogram::new_with_bounds(1, MAX_US, 3)
                .unwrap_or_else(|e| unreachable!("constant bounds are valid: {e}"))
        };
        Self {
            current: h(),
            previous: h(),
            rotated: now,
            sum_s: 0.0,
            count: 0,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.rotated);
        if since < HALF_WINDOW {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        if since >= 2 * HALF_WINDOW {
            self.previous.reset();
        }
        self.rotated = now;
    }

    pub fn record(&mut self, now: Instant, latency: Duration) {
        self.rotate(now);
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_US).max(1);
        self.current.saturating_record(us.min(MAX_US));
        self.sum_s += latency.as_secs_f64();
        self.count += 1;
    }

    /// The quantiles of the window in seconds (`None` when the window is empty).
    pub fn quantiles(&mut self, now: Instant) -> Vec<(f64, Option<f64>)> {
        self.rotate(now);
        let mut merged = self.previous.clone();
        // Same bounds on both: adding cannot fail.
        let _ = merged.add(&self.current);
        QUANTILES
            .iter()
            .map(|&q| {
                let v = (!merged.is_empty()).then(|| merged.value_at_quantile(q) as f64 / 1e6);
                (q, v)
            })
            .collect()
    }

    /// Prometheus text exposition of this summary.
    pub fn render(&mut self, name: &str, help: &str, now: Instant, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} summary");
        for (q, v) in self.quantiles(now) {
            let v = v.map_or_else(|| "NaN".to_owned(), |v| v.to_string());
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_s);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

struct Latencies {
    event_to_decision: Mutex<Windowed>,
    decision_to_containment: Mutex<Windowed>,
    otlp: OnceLock<[opentelemetry::metrics::Histogram<f64>; 2]>,
}

static LATENCIES: OnceLock<Latencies> = OnceLock::new();

const EVENT_TO_DECISION_HELP: &str = "Seconds from the newest event behind a decision to the decision (quantiles over the last 1-2 minutes)";
const DECISION_TO_CONTAINMENT_HELP: &str = "Seconds from a containment decision to all its actions having run (quantiles over the last 1-2 minutes)";

/// Starts recording (idempotent).
pub fn install() {
    let now = Instant::now();
    LATENCIES.get_or_init(|| Latencies {
        event_to_decision: Mutex::new(Windowed::new(now)),
        decision_to_containment: Mutex::new(Windowed::new(now)),
        otlp: OnceLock::new(),
    });
}

/// Also records into these OTLP histograms (built from the exporter's meter).
pub fn export_to(meter: &opentelemetry::metrics::Meter) {
    let Some(l) = LATENCIES.get() else { return };
    let histogram = |name: &'static str, help: &'static str| {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(help)
            .with_boundaries(OTLP_BOUNDS.to_vec())
            .build()
    };
    let _ = l.otlp.set([
        histogram(names::EVENT_TO_DECISION, EVENT_TO_DECISION_HELP),
        histogram(names::DECISION_TO_CONTAINMENT, DECISION_TO_CONTAINMENT_HELP),
    ]);
}

pub fn installed() -> bool {
    LATENCIES.get().is_some()
}

/// Called by the response stage when it has decided (at `decided_ns`, boot clock) and run the
/// decision's actions: event-to-decision from the newest finding's time; decision-to-containment
/// when the decision enters the containment tier.
pub fn decided(findings: &[Finding], decision: &Decision, decided_ns: u64) {
    let Some(l) = LATENCIES.get() else { return };
    let done_ns = crate::clock::boot_ns();
    let now = Instant::now();
    let record = |w: &Mutex<Windowed>, i: usize, ns: u64| {
        let d = Duration::from_nanos(ns);
        if let Ok(mut w) = w.lock() {
            w.record(now, d);
        }
        if let Some(h) = l.otlp.get() {
            h[i].record(d.as_secs_f64(), &[]);
        }
    };
    if let Some(newest) = findings.iter().map(|f| f.ts_ns).max() {
        record(&l.event_to_decision, 0, decided_ns.saturating_sub(newest));
    }
    if decision.to == Some(Tier::Contain) && decision.from < Some(Tier::Contain) {
        record(
            &l.decision_to_containment,
            1,
            done_ns.saturating_sub(decided_ns),
        );
    }
}

/// Both summaries in the Prometheus text format (empty before [`install`]).
pub fn render(out: &mut String) {
    let Some(l) = LATENCIES.get() else { return };
    let now = Instant::now();
    for (w, name, help) in [
        (
            &l.event_to_decision,
            names::EVENT_TO_DECISION,
            EVENT_TO_DECISION_HELP,
        ),
        (
            &l.decision_to_containment,
            names::DECISION_TO_CONTAINMENT,
            DECISION_TO_CONTAINMENT_HELP,
        ),
    ] {
        if let Ok(mut w) = w.lock() {
            w.render(name, help, now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let t = Instant::now();
        let mut w = Windowed::new(t);
        for i in 1..=1000u32 {
            w.record(t, US * i * 10);
        }
        let q = w.quantiles(t);
        let at = |p: f64| {
            q.iter()
                .find(|(x, _)| *x == p)
                .and_then(|(_, v)| *v)
                .unwrap()
        };
        // Three significant digits: within 0.1% of 5 ms, 9 ms, 9.9 ms and 9.99 ms.
        for (p, want) in [(0.5, 5e-3), (0.9, 9e-3), (0.99, 9.9e-3), (0.999, 9.99e-3)] {
            assert!(
                (at(p) - want).abs() <= want * 1e-3,
                "p{p}: {} vs {want}",
                at(p)
            );
        }
    }

    #[test]
    fn the_window_slides_but_sum_and_count_are_cumulative() {
        let t = Instant::now();
        let mut w = Windowed::new(t);
        w.record(t, US * 100);
        // Within the next half window the old value still counts.
        w.record(t + HALF_WINDOW, US * 300);
        assert_eq!(w.quantiles(t + HALF_WINDOW)[0].1, Some(100e-6));
        // Two half windows on, only the newer value is left; then nothing.
        let q = w.quantiles(t + HALF_WINDOW * 2);
        assert!((q[0].1.unwrap() - 300e-6).abs() < 1e-6, "{q:?}");
        assert_eq!(w.quantiles(t + HALF_WINDOW * 5)[0].1, None);
        let mut out = String::new();
        w.render("x_seconds", "help", t + HALF_WINDOW * 5, &mut out);
        assert!(out.contains("# TYPE x_seconds summary"), "{out}");
        assert!(out.contains("x_seconds{quantile=\"0.99\"} NaN"), "{out}");
        assert!(out.contains("x_seconds_count 2"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((sum - 400e-6).abs() < 1e-12, "{out}");
    }

    #[test]
    fn values_out_of_range_are_clamped_not_lost() {
        let t = Instant::now();
        let mut w = Windowed::new(t);
        w.record(t, Duration::from_secs(3600));
        w.record(t, Duration::ZERO);
        assert_eq!(w.count, 2);
        let q = w.quantiles(t);
        assert!(q[3].1.unwrap() >= 59.9, "{q:?}");
    }
}
