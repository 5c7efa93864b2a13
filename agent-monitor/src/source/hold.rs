//! Records of pending cgroups (a pod container whose pod is not known yet) wait here for their
//! identity instead of flowing on unattributed: raw records, so that what is finally written to
//! a trace is in the order a replay needs (the `agent_added` announcement first).
//!
//! Nothing is dropped. A record leaves when its cgroup resolves (after the announcement), when
//! its cgroup turns out not to be an agent's (discarded as such, counted), when the cgroup
//! vanishes, after `hold` (released unattributed), or when the buffer is full (the cgroup held
//! longest is released unattributed). Once a cgroup's hold ran out its later records pass
//! unheld until it resolves: the identity source is late, and detection must not wait longer.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use agent_monitor_common::EventHeader;

use super::Batch;
use crate::{event::wire, identity::PendingOutcome};

#[derive(Clone, Copy, Debug)]
pub struct HoldOptions {
    pub hold: Duration,
    pub max_records: usize,
}

/// Counts of what the hold did with records, for the attribution metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HoldStats {
    pub held: u64,
    /// Released after their cgroup's announcement.
    pub attributed: u64,
    /// Released without identity (hold expired, buffer full, cgroup gone, shutdown).
    pub unattributed: u64,
    /// Records of pods that proved not to be agents.
    pub not_agent: u64,
    /// Times the buffer was full.
    pub overflows: u64,
}

struct Held {
    since_ns: u64,
    records: Batch,
}

pub struct Hold {
    opts: HoldOptions,
    held: HashMap<u64, Held>,
    total: usize,
    expired: HashSet<u64>,
    pub stats: HoldStats,
}

/// The cgroup id in a record's header (`None` for a record too short to have one).
fn cgroup_of(record: &[u8]) -> Option<u64> {
    wire::read::<EventHeader>(record).map(|h| h.cgroup_id)
}

impl Hold {
    pub fn new(opts: HoldOptions) -> Self {
        Self {
            opts,
            held: HashMap::new(),
            total: 0,
            expired: HashSet::new(),
            stats: HoldStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Moves the records of pending cgroups out of `batch` into the hold; `now_ns` is the
    /// daemon's clock (hold time is the daemon's wait, not the events' age).
    pub fn filter(&mut self, batch: &mut Batch, pending: impl Fn(u64) -> bool, now_ns: u64) {
        let holds = |expired: &HashSet<u64>, r: &[u8]| {
            cgroup_of(r).is_some_and(|cg| pending(cg) && !expired.contains(&cg))
        };
        if !batch.iter().any(|r| holds(&self.expired, r)) {
            return;
        }
        let mut kept = Batch::default();
        for record in batch.iter() {
            if !holds(&self.expired, record) {
                kept.push(record);
                continue;
            }
            let cg = cgroup_of(record).unwrap_or(0);
            self.held
                .entry(cg)
                .or_insert_with(|| Held {
                    since_ns: now_ns,
                    records: Batch::default(),
                })
                .records
                .push(record);
            self.total += 1;
            self.stats.held += 1;
            if self.total > self.opts.max_records {
                self.stats.overflows += 1;
                // Into the output at once: older than that cgroup's records still to come.
                self.release_oldest(&mut kept);
            }
        }
        *batch = kept;
    }

    /// After a rescan: a resolved cgroup's records follow its announcement (`out` already holds
    /// it); a vanished one's are released unattributed; a non-agent's are discarded.
    pub fn resolve(&mut self, cgroup_id: u64, outcome: PendingOutcome, out: &mut Batch) {
        self.expired.remove(&cgroup_id);
        let Some(held) = self.held.remove(&cgroup_id) else {
            return;
        };
        let n = held.records.len();
        self.total -= n;
        match outcome {
            PendingOutcome::Agent => {
                self.stats.attributed += n as u64;
                for r in held.records.iter() {
                    out.push(r);
                }
            }
            PendingOutcome::Gone => {
                self.stats.unattributed += n as u64;
                for r in held.records.iter() {
                    out.push(r);
                }
            }
            PendingOutcome::NotAgent => {
                self.stats.not_agent += n as u64;
                log::debug!("{n} held records of cgroup {cgroup_id} discarded: not an agent's pod");
            }
        }
    }

    /// Releases, unattributed, the records of cgroups held longer than the hold time.
    pub fn expire(&mut self, now_ns: u64, out: &mut Batch) {
        let hold = u64::try_from(self.opts.hold.as_nanos()).unwrap_or(u64::MAX);
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| now_ns.saturating_sub(h.since_ns) >= hold)
            .map(|(&cg, _)| cg)
            .collect();
        for cg in due {
            log::warn!(
                "cgroup {cgroup}: its pod is still unknown after {:?}; its events go on unattributed",
                self.opts.hold,
                cgroup = cg
            );
            self.release(cg, out);
        }
    }

    /// Releases everything, unattributed (shutdown).
    pub fn release_all(&mut self, out: &mut Batch) {
        let mut all: Vec<(u64, u64)> = self.held.iter().map(|(&c, h)| (h.since_ns, c)).collect();
        all.sort_unstable();
        for (_, cg) in all {
            self.release(cg, out);
        }
    }

    fn release_oldest(&mut self, out: &mut Batch) {
        if let Some(cg) = self
            .held
            .iter()
            .min_by_key(|(_, h)| h.since_ns)
            .map(|(&cg, _)| cg)
        {
            log::warn!(
                "hold buffer full ({} records): cgroup {cg} released unattributed",
                self.opts.max_records
            );
            self.release(cg, out);
        }
    }

    fn release(&mut self, cgroup_id: u64, out: &mut Batch) {
        if let Some(held) = self.held.remove(&cgroup_id) {
            self.total -= held.records.len();
            self.stats.unattributed += held.records.len() as u64;
            for r in held.records.iter() {
                out.push(r);
            }
        }
        self.expired.insert(cgroup_id);
    }
}

#[cfg(test)]
mod tests {
    use agent_monitor_common::{EventHeader, kind};

    use super::*;
    use crate::event::wire::bytes_of;

    fn rec(cg: u64, ts: u64) -> Vec<u8> {
        bytes_of(&EventHeader {
            kind: kind::EXIT,
            flags: 0,
            slot: 0,
            ts_ns: ts,
            cgroup_id: cg,
            tgid: 0,
            tid: 0,
        })
        .to_vec()
    }

    fn batch(recs: &[(u64, u64)]) -> Batch {
        let mut b = Batch::default();
        for &(cg, ts) in recs {
            b.push(&rec(cg, ts));
        }
        b
    }

    fn ids(b: &Batch) -> Vec<(u64, u64)> {
        b.iter()
            .map(|r| {
                let h: EventHeader = wire::read(r).unwrap();
                (h.cgroup_id, h.ts_ns)
            })
            .collect()
    }

    fn hold(ms: u64, max: usize) -> Hold {
        Hold::new(HoldOptions {
            hold: Duration::from_millis(ms),
            max_records: max,
        })
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn pending_records_wait_and_follow_their_announcement() {
        let mut h = hold(500, 100);
        let mut b = batch(&[(1, 1), (7, 2), (1, 3), (7, 4)]);
        h.filter(&mut b, |cg| cg == 7, 0);
        assert_eq!(ids(&b), [(1, 1), (1, 3)]);
        assert_eq!((h.len(), h.stats.held), (2, 2));
        let mut out = batch(&[(7, 9)]); // stands for the announcement
        h.resolve(7, PendingOutcome::Agent, &mut out);
        assert_eq!(ids(&out), [(7, 9), (7, 2), (7, 4)]);
        assert_eq!((h.len(), h.stats.attributed), (0, 2));
    }

    #[test]
    fn non_agents_are_discarded_and_vanished_cgroups_released() {
        let mut h = hold(500, 100);
        let mut b = batch(&[(7, 1), (8, 2)]);
        h.filter(&mut b, |_| true, 0);
        let mut out = Batch::default();
        h.resolve(7, PendingOutcome::NotAgent, &mut out);
        h.resolve(8, PendingOutcome::Gone, &mut out);
        assert_eq!(ids(&out), [(8, 2)]);
        assert_eq!((h.stats.not_agent, h.stats.unattributed), (1, 1));
        assert!(h.is_empty());
    }

    #[test]
    fn the_hold_expires_then_later_records_pass() {
        let mut h = hold(500, 100);
        let mut b = batch(&[(7, 1)]);
        h.filter(&mut b, |_| true, 0);
        let mut out = Batch::default();
        h.expire(499 * MS, &mut out);
        assert!(out.is_empty());
        h.expire(500 * MS, &mut out);
        assert_eq!(ids(&out), [(7, 1)]);
        assert_eq!(h.stats.unattributed, 1);
        let mut b = batch(&[(7, 2)]);
        h.filter(&mut b, |_| true, 600 * MS);
        assert_eq!(ids(&b), [(7, 2)], "no second wait once the hold ran out");
        // Announced after all: a later pending spell holds again.
        h.resolve(7, PendingOutcome::Agent, &mut out);
        let mut b = batch(&[(7, 3)]);
        h.filter(&mut b, |_| true, 700 * MS);
        assert!(b.is_empty());
    }

    #[test]
    fn a_full_buffer_releases_the_cgroup_held_longest_in_order() {
        let mut h = hold(500, 3);
        let mut b = batch(&[(7, 1), (7, 2)]);
        h.filter(&mut b, |cg| cg != 1, 0);
        let mut b = batch(&[(8, 3), (1, 4), (8, 5)]);
        h.filter(&mut b, |cg| cg != 1, MS);
        assert_eq!(ids(&b), [(1, 4), (7, 1), (7, 2)]);
        assert_eq!(
            (h.len(), h.stats.overflows, h.stats.unattributed),
            (2, 1, 2)
        );
        let mut out = Batch::default();
        h.release_all(&mut out);
        assert_eq!(ids(&out), [(8, 3), (8, 5)]);
        assert_eq!(h.stats.held, h.stats.unattributed + h.stats.attributed);
    }
}
