//! Start-up phases and their durations (PERF-ANCHORS row 8: start-up to first event), logged
//! once at info level under the target [`LOG_TARGET`] as one JSON object, so that a benchmark
//! can read them from the daemon's log.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The log target of the phases line (`RUST_LOG=warn,agent_monitor::startup=info` shows it).
pub const LOG_TARGET: &str = "agent_monitor::startup";
/// What the phases line starts with; the JSON object follows it.
pub const LOG_PREFIX: &str = "start-up phases (ms): ";

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the process (call first thing in `main`); later calls change nothing.
pub fn mark_process_start() -> Instant {
    *PROCESS_START.get_or_init(Instant::now)
}

/// Phases in the order they ran, each with its duration.
#[derive(Debug)]
pub struct Phases {
    start: Instant,
    last: Instant,
    parts: Vec<(&'static str, Duration)>,
}

impl Default for Phases {
    /// Counting from the process start when it was marked, else from now.
    fn default() -> Self {
        let start = mark_process_start();
        Self {
            start,
            last: start,
            parts: Vec::new(),
        }
    }
}

impl Phases {
    /// Ends the phase `name` now (it began where the previous one ended).
    pub fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }

    /// Whether the phase `name` has ended.
    pub fn has(&self, name: &str) -> bool {
        self.parts.iter().any(|(n, _)| *n == name)
    }

    /// Since the start, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        ms(self.last - self.start)
    }

    /// The phases as a JSON object (`{"phase": ms, ..., "total": ms}`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, d) in &self.parts {
            map.insert((*name).to_owned(), serde_json::json!(ms(*d)));
        }
        map.insert("total".into(), serde_json::json!(self.total_ms()));
        serde_json::Value::Object(map)
    }

    /// Logs the phases (one line, see [`LOG_PREFIX`]).
    pub fn log(&self) {
        log::info!(target: LOG_TARGET, "{LOG_PREFIX}{}", self.to_json());
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other_and_add_up() {
        let mut p = Phases::default();
        std::thread::sleep(Duration::from_millis(2));
        p.done("a");
        p.done("b");
        let j = p.to_json();
        let a = j["a"].as_f64().unwrap();
        let b = j["b"].as_f64().unwrap();
        assert!(a >= 2.0, "{j}");
        assert!(j["total"].as_f64().unwrap() >= a + b - 0.02, "{j}");
        assert_eq!(j.as_object().unwrap().len(), 3);
        assert!(p.has("a") && !p.has("c"));
    }
}
