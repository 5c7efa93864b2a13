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
    /// Syscall totals over the learned windows.
    pub syscalls: BTreeMap<u32, u64>,
}

impl ClassKnowledge {
    pub fn learn(&mut self, window: &Window, hour: Option<u8>) {
        let s = &window.stats;
        extend_capped(&mut self.destinations, &s.destinations);
        extend_capped(&mut self.dns_names, &s.dns_names);
        extend_capped(&mut self.binaries, &s.binaries);
        if let Some(h) = hour {
            self.hours[usize::from(h % 24)] += 1;
        }
        for (nr, n) in &s.syscalls {
            *self.syscalls.entry(*nr).or_default() += n;
        }
    }

    /// 0 at the class's busiest hour, 1 at an hour it was never seen; 0 while nothing is known.
    pub fn hour_deviation(&self, hour: Option<u8>) -> f64 {
        let max = self.hours.iter().copied().max().unwrap_or(0);
        match hour {
            Some(h) if max > 0 => 1.0 - self.hours[usize::from(h % 24)] as f64 / max as f64,
            _ => 0.0,
        }
    }
}

fn extend_capped<'a>(known: &mut BTreeSet<String>, seen: impl IntoIterator<Item = &'a String>) {
    for v in seen {
        if known.len() >= MAX_KNOWN {
            return;
        }
        if !known.contains(v) {
            known.insert(v.clone());
        }
    }
}

/// How many of `seen` the class has never shown.
pub fn count_new<'a>(known: &BTreeSet<String>, seen: impl IntoIterator<Item = &'a String>) -> u64 {
    seen.into_iter().filter(|v| !known.contains(*v)).count() as u64
}
