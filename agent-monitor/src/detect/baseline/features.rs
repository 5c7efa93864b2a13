//! The numeric feature vector of a window, relative to what its class is known to do.
//!
//! Counts enter as `ln(1 + n)`: activity is heavy-tailed and a model should see a tenfold burst
//! as a step, not as a cliff. The syscall mix enters as the square root of each syscall's share
//! (a variance-stabilising transform for proportions) over the columns the class used in training.

use serde::{Deserialize, Serialize};

use super::knowledge::{ClassKnowledge, count_new};
use crate::{detect::window::Window, event::syscall_name};

/// Bump when the meaning or order of the features changes: models of another version are refused.
pub const FEATURE_SCHEMA_VERSION: u32 = 2;

/// Scalar features, in vector order.
pub const SCALAR_FEATURES: &[&str] = &[
    "syscalls_total",
    "file_reads",
    "file_writes",
    "file_failures",
    "file_mutations",
    "file_distinct_paths",
    "file_distinct_dirs",
    "file_sensitive_hits",
    "net_connects",
    "net_connect_failures",
    "net_accepts",
    "net_binds",
    "net_udp_sends",
    "net_distinct_destinations",
    "net_new_destinations",
    "net_bytes_out",
    "net_bytes_in",
    "dns_queries",
    "dns_distinct_names",
    "dns_new_names",
    "proc_execs",
    "proc_distinct_binaries",
    "proc_new_binaries",
    "proc_shells",
    "proc_forks",
    "proc_exits_nonzero",
    "seq_novel_ngrams",
    "seq_surprise",
    "time_of_day_deviation",
];

/// The syscall columns a class's model was fitted with; everything else is `sys_other`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub version: u32,
    pub syscall_columns: Vec<u32>,
}

/// Syscalls that make up less than this share of a class's training calls are pooled.
const MIN_COLUMN_SHARE: f64 = 0.001;

impl FeatureSchema {
    /// Columns for the syscalls that carry a visible share of the class's activity.
    pub fn for_class(knowledge: &ClassKnowledge) -> Self {
        let total: u64 = knowledge.syscalls.values().sum();
        let syscall_columns = knowledge
            .syscalls
            .iter()
            .filter(|(_, n)| total > 0 && **n as f64 / total as f64 >= MIN_COLUMN_SHARE)
            .map(|(nr, _)| *nr)
            .collect();
        Self {
            version: FEATURE_SCHEMA_VERSION,
            syscall_columns,
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = SCALAR_FEATURES.iter().map(|s| (*s).to_owned()).collect();
        names.extend(self.syscall_columns.iter().map(|nr| {
            format!(
                "sys_{}",
                syscall_name(*nr).unwrap_or_else(|| format!("nr{nr}"))
            )
        }));
        names.push("sys_other".to_owned());
        names
    }

    /// `seq_novelty`: share of the window's syscall n-grams never seen for the class, in [0, 1];
    /// `seq_surprise`: mean surprise per syscall under the class's language model (nats);
    /// `unix_s`: wall-clock seconds at the window's end, when known.
    pub fn vector(
        &self,
        window: &Window,
        known: &ClassKnowledge,
        seq_novelty: f64,
        seq_surprise: f64,
        unix_s: Option<u64>,
    ) -> Vec<f64> {
        let s = &window.stats;
        let l = |n: u64| (n as f64).ln_1p();
        let len = |n: usize| l(n as u64);
        let total = s.syscall_total();
        let mut v = vec![
            l(total),
            l(s.file_reads),
            l(s.file_writes),
            l(s.file_failures),
            l(s.file_mutations),
            len(s.paths.len()),
            len(s.dirs.len()),
            l(s.sensitive_hits),
            l(s.connects),
            l(s.connect_failures),
            l(s.accepts),
            l(s.binds),
            l(s.udp_sends),
            len(s.destinations.len()),
            l(count_new(
                &known.destinations,
                s.destinations.iter().map(ToString::to_string),
            )),
            l(s.bytes_out),
            l(s.bytes_in),
            l(s.dns_queries),
            len(s.dns_names.len()),
            l(count_new(&known.dns_names, &s.dns_names)),
            l(s.execs),
            len(s.binaries.len()),
            l(count_new(&known.binaries, &s.binaries)),
            l(s.shells),
            l(s.forks),
            l(s.exits_nonzero),
            seq_novelty.clamp(0.0, 1.0),
            seq_surprise.max(0.0),
            known.hour_deviation(unix_s),
        ];
        debug_assert_eq!(v.len(), SCALAR_FEATURES.len());
        let share = |n: u64| {
            if total == 0 {
                0.0
            } else {
                (n as f64 / total as f64).sqrt()
            }
        };
        let mut covered = 0;
        for nr in &self.syscall_columns {
            let n = s.syscalls.get(*nr);
            covered += n;
            v.push(share(n));
        }
        v.push(share(total - covered));
        v
    }
}
