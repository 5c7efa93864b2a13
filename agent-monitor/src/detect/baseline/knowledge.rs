//! What a class has been seen doing: the reference for "new for the class" features.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::detect::window::Window;

/// Largest set of known values kept per kind, so a class that talks to everything cannot grow a
/// model without bound (past the cap, nothing more is learned as known).
pub const MAX_KNOWN: usize = 65_536;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassKnowledge {
    pub destinations: BTreeSet<String>,
    pub dns_names: BTreeSet<String>,
    pub binaries: BTreeSet<String>,
    /// Windows seen per UTC hour of day.
    pub hours: [u64; 24],
    /// Unix seconds of the first and last learned window: hours mean something only once the
    /// learning spans a full day.
    pub first_unix_s: Option<u64>,
    pub last_unix_s: Option<u64>,
    /// Syscall totals over the learned windows.
    pub syscalls: BTreeMap<u32, u64>,
}

impl ClassKnowledge {
    /// `unix_s`: wall-clock seconds at the window's end, when known.
    pub fn learn(&mut self, window: &Window, unix_s: Option<u64>) {
        let s = &window.stats;
        extend_capped(
            &mut self.destinations,
            s.destinations.iter().map(ToString::to_string),
        );
        extend_capped(&mut self.dns_names, &s.dns_names);
        extend_capped(&mut self.binaries, &s.binaries);
        if let Some(t) = unix_s {
            self.hours[hour_of(t)] += 1;
            self.first_unix_s = Some(self.first_unix_s.map_or(t, |f| f.min(t)));
            self.last_unix_s = Some(self.last_unix_s.map_or(t, |l| l.max(t)));
        }
        for (nr, n) in s.syscalls.iter() {
            *self.syscalls.entry(nr).or_default() += n;
        }
    }

    /// The learning covers a whole day, so an hour never seen is news, not a gap in the data.
    pub fn knows_the_day(&self) -> bool {
        matches!((self.first_unix_s, self.last_unix_s), (Some(f), Some(l)) if l - f >= 86_400)
    }

    /// 0 at the class's busiest hour, 1 at an hour it was never seen; 0 until the learning
    /// covers a whole day.
    pub fn hour_deviation(&self, unix_s: Option<u64>) -> f64 {
        let max = self.hours.iter().copied().max().unwrap_or(0);
        match unix_s {
            Some(t) if max > 0 && self.knows_the_day() => {
                1.0 - self.hours[hour_of(t)] as f64 / max as f64
            }
            _ => 0.0,
        }
    }
}

fn hour_of(unix_s: u64) -> usize {
    ((unix_s / 3600) % 24) as usize
}

fn extend_capped<S: AsRef<str>>(known: &mut BTreeSet<String>, seen: impl IntoIterator<Item = S>) {
    for v in seen {
        if known.len() >= MAX_KNOWN {
            return;
        }
        let v = v.as_ref();
        if !known.contains(v) {
            known.insert(v.to_owned());
        }
    }
}

/// How many of `seen` the class has never shown.
pub fn count_new<S: AsRef<str>>(
    known: &BTreeSet<String>,
    seen: impl IntoIterator<Item = S>,
) -> u64 {
    seen.into_iter()
        .filter(|v| !known.contains(v.as_ref()))
        .count() as u64
}
