//! Map snapshots: at every snapshot tick the live source reads the kernel's per-agent counters
//! (syscalls, ring buffer losses) and per-flow bytes, and turns what changed since the previous
//! read into records.

use std::collections::{HashMap as StdHashMap, HashSet};

use agent_monitor_common::{
    AgentSlot, EventHeader, FlowBytes, FlowCounters, LostEvent, SYSCALL_BUCKETS, SyscallCount,
    SyscallRow, cpu_row, kind,
};
use anyhow::Context as _;
use aya::{
    Pod,
    maps::{Array, HashMap, IterableMap, MapData, MapError},
};

use super::Batch;
use crate::{clock, ebpf::batch, event::wire::bytes_of, identity::SlotTable};

/// Snapshot state: what the kernel counters held at the previous read, so records carry deltas.
pub(super) struct Snapshots {
    monitored: HashMap<MapData, u64, AgentSlot>,
    syscall_counts: CpuRows<SyscallRow>,
    lost: CpuRows<u64>,
    flows: HashMap<MapData, u64, FlowCounters>,
    /// slot -> (syscall nr, sum over CPUs mod 2^32) of the counters seen last; sparse because an
    /// agent uses a few dozen of the 512 syscall numbers.
    prev_counts: StdHashMap<u32, Vec<(u16, u32)>>,
    prev_lost: StdHashMap<u32, Vec<u64>>,
    prev_flows: StdHashMap<u64, FlowCounters>,
    /// cgroup id -> slot of current agents, for attributing flows.
    slot_of: StdHashMap<u64, u32>,
    /// Slots that held an agent before (indexed by slot): their counters must be zeroed for
    /// the next one. The maps are new at each start, so the first agent of a slot needs no
    /// write (one map update of 2 KiB per CPU saved per agent at start-up).
    used_slots: Vec<bool>,
    /// Agents to add to `MONITORED` at the end of the scan, in one kernel call.
    new_keys: Vec<u64>,
    new_slots: Vec<AgentSlot>,
    /// The rows of the agent being read (kept to avoid allocations per agent).
    rows: Vec<SyscallRow>,
    lost_rows: Vec<u64>,
}

/// One of the per-agent arrays: an agent's rows, one per CPU, are side by side (see
/// [`cpu_row`]).
struct CpuRows<V: Pod> {
    map: Array<MapData, V>,
    ncpus: u32,
}

impl<V: Pod> CpuRows<V> {
    /// The rows of `slot`, CPU by CPU, into `out`.
    fn read(&self, slot: u32, out: &mut Vec<V>) -> Result<(), MapError> {
        out.clear();
        for cpu in 0..self.ncpus {
            out.push(self.map.get(&cpu_row(slot, cpu, self.ncpus), 0)?);
        }
        Ok(())
    }

    fn fill(&mut self, slot: u32, value: V) -> Result<(), MapError> {
        for cpu in 0..self.ncpus {
            self.map.set(cpu_row(slot, cpu, self.ncpus), value, 0)?;
        }
        Ok(())
    }
}

impl Snapshots {
    pub(super) fn new(
        monitored: HashMap<MapData, u64, AgentSlot>,
        syscall_counts: Array<MapData, SyscallRow>,
        lost: Array<MapData, u64>,
        ncpus: u32,
        flows: HashMap<MapData, u64, FlowCounters>,
    ) -> Self {
        Self {
            monitored,
            syscall_counts: CpuRows {
                map: syscall_counts,
                ncpus,
            },
            lost: CpuRows { map: lost, ncpus },
            flows,
            prev_counts: StdHashMap::new(),
            prev_lost: StdHashMap::new(),
            prev_flows: StdHashMap::new(),
            slot_of: StdHashMap::new(),
            used_slots: Vec::new(),
            new_keys: Vec::new(),
            new_slots: Vec::new(),
            rows: Vec::new(),
            lost_rows: Vec::new(),
        }
    }

    /// A lookup that must succeed while the maps are readable (slot 0 always exists).
    pub(super) fn probe_read(&self) -> Result<(), String> {
        self.lost
            .map
            .get(&0, 0)
            .map(drop)
            .map_err(|e| format!("LOST[0]: {e}"))
    }
}

impl SlotTable for Snapshots {
    fn insert(&mut self, cgroup_id: u64, slot: AgentSlot) -> anyhow::Result<()> {
        // A reused slot starts from zero so the new agent is not charged the old one's counts.
        let i = slot.slot as usize;
        if self.used_slots.get(i).copied().unwrap_or(false) {
            self.syscall_counts
                .fill(slot.slot, SyscallRow([0; SYSCALL_BUCKETS as usize]))?;
            self.lost.fill(slot.slot, 0)?;
        } else {
            if self.used_slots.len() <= i {
                self.used_slots.resize(i + 1, false);
            }
            self.used_slots[i] = true;
        }
        self.prev_counts.remove(&slot.slot);
        self.prev_lost.remove(&slot.slot);
        self.new_keys.push(cgroup_id);
        self.new_slots.push(slot);
        self.slot_of.insert(cgroup_id, slot.slot);
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        let (keys, slots) = (
            std::mem::take(&mut self.new_keys),
            std::mem::take(&mut self.new_slots),
        );
        let map = IterableMap::map(&self.monitored);
        if let Err((done, e)) = batch::update_batch(map, &keys, &slots) {
            // One by one from where the batch stopped: a kernel without batches takes them so,
            // and a real error is then reported for the agent it concerns.
            log::debug!("MONITORED batch update stopped after {done}: {e}");
            for (&cgroup_id, &slot) in keys.iter().zip(&slots).skip(done) {
                self.monitored
                    .insert(cgroup_id, slot, 0)
                    .with_context(|| format!("monitoring cgroup {cgroup_id}"))?;
            }
        }
        Ok(())
    }

    fn remove(&mut self, cgroup_id: u64, slot: u32, out: &mut Batch) -> anyhow::Result<()> {
        self.monitored.remove(&cgroup_id)?;
        // The agent's last counts go out before its removal is announced.
        let now = clock::boot_ns();
        self.counts_of(slot, cgroup_id, out, now)?;
        self.lost_of(slot, cgroup_id, out, now)?;
        self.prev_counts.remove(&slot);
        self.prev_lost.remove(&slot);
        self.slot_of.remove(&cgroup_id);
        Ok(())
    }
}

impl Snapshots {
    pub(super) fn take(&mut self, out: &mut Batch, now: u64) -> anyhow::Result<()> {
        let agents: Vec<(u64, u32)> = self.slot_of.iter().map(|(&c, &s)| (c, s)).collect();
        for (cgroup_id, slot) in agents {
            self.counts_of(slot, cgroup_id, out, now)?;
            self.lost_of(slot, cgroup_id, out, now)?;
        }
        self.flows(out, now)
    }

    fn counts_of(
        &mut self,
        slot: u32,
        cgroup_id: u64,
        out: &mut Batch,
        now: u64,
    ) -> anyhow::Result<()> {
        let mut rows = std::mem::take(&mut self.rows);
        self.syscall_counts.read(slot, &mut rows)?;
        // Per-CPU u32 counters summed mod 2^32: the delta is exact while an agent makes fewer
        // than 4 billion syscalls between two snapshots.
        let mut sums = [0u32; SYSCALL_BUCKETS as usize];
        for row in &rows {
            for (sum, count) in sums.iter_mut().zip(row.0) {
                *sum = sum.wrapping_add(count);
            }
        }
        self.rows = rows;
        // No entry until the agent's first syscall: an idle agent costs nothing more here.
        let mut prev = self.prev_counts.remove(&slot).unwrap_or_default();
        if prev.is_empty() && sums.iter().all(|&s| s == 0) {
            return Ok(());
        }
        for (nr, &sum) in sums.iter().enumerate() {
            let i = prev.partition_point(|&(n, _)| usize::from(n) < nr);
            let before = prev
                .get(i)
                .filter(|&&(n, _)| usize::from(n) == nr)
                .map(|&(_, c)| c);
            let delta = sum.wrapping_sub(before.unwrap_or(0));
            if delta == 0 {
                continue;
            }
            match before {
                Some(_) => prev[i].1 = sum,
                None => prev.insert(i, (nr as u16, sum)),
            }
            let record = SyscallCount {
                header: header(kind::SYSCALL_COUNT, slot, cgroup_id, now),
                nr: nr as u32,
                _pad: 0,
                count: u64::from(delta),
            };
            out.push(bytes_of(&record));
        }
        if !prev.is_empty() {
            // Kept for every agent that ever made a syscall: without the room that doubling
            // left (10,000 agents, PERF-ANCHORS row 7).
            prev.shrink_to_fit();
            self.prev_counts.insert(slot, prev);
        }
        Ok(())
    }

    fn lost_of(
        &mut self,
        slot: u32,
        cgroup_id: u64,
        out: &mut Batch,
        now: u64,
    ) -> anyhow::Result<()> {
        let mut values = std::mem::take(&mut self.lost_rows);
        self.lost.read(slot, &mut values)?;
        // Nothing ever lost for this agent (the usual case): no entry kept.
        if self.prev_lost.contains_key(&slot) || values.iter().any(|&v| v != 0) {
            let prev = self
                .prev_lost
                .entry(slot)
                .or_insert_with(|| vec![0; values.len()]);
            for (cpu, (&now_lost, before)) in values.iter().zip(prev.iter_mut()).enumerate() {
                let delta = now_lost.wrapping_sub(*before);
                if delta == 0 {
                    continue;
                }
                *before = now_lost;
                log::warn!("kernel lost {delta} events of slot {slot} on CPU {cpu} (ring full)");
                let record = LostEvent {
                    header: header(kind::LOST, slot, cgroup_id, now),
                    cpu: cpu as u32,
                    _pad: 0,
                    count: delta,
                };
                out.push(bytes_of(&record));
            }
        }
        self.lost_rows = values;
        Ok(())
    }

    fn flows(&mut self, out: &mut Batch, now: u64) -> anyhow::Result<()> {
        let current: Vec<(u64, FlowCounters)> = self.flows.iter().filter_map(Result::ok).collect();
        let mut idle = Vec::new();
        for (cookie, c) in &current {
            let before = self.prev_flows.get(cookie).copied().unwrap_or_default();
            if *c == before {
                idle.push(*cookie);
                continue;
            }
            self.prev_flows.insert(*cookie, *c);
            let Some(&slot) = self.slot_of.get(&c.cgroup_id) else {
                continue;
            };
            let record = FlowBytes {
                header: header(kind::FLOW_BYTES, slot, c.cgroup_id, now),
                cookie: *cookie,
                bytes_out: c.bytes_out.wrapping_sub(before.bytes_out),
                bytes_in: c.bytes_in.wrapping_sub(before.bytes_in),
                packets_out: c.packets_out.wrapping_sub(before.packets_out),
                packets_in: c.packets_in.wrapping_sub(before.packets_in),
            };
            out.push(bytes_of(&record));
        }
        // Flows quiet for a whole interval leave the map (it would otherwise fill with closed
        // sockets); a later packet starts a fresh entry, counted from zero.
        for cookie in idle {
            let _ = self.flows.remove(&cookie);
            self.prev_flows.remove(&cookie);
        }
        let live: HashSet<u64> = current.iter().map(|(c, _)| *c).collect();
        self.prev_flows.retain(|c, _| live.contains(c));
        Ok(())
    }
}

fn header(kind: u16, slot: u32, cgroup_id: u64, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        flags: 0,
        slot,
        ts_ns,
        cgroup_id,
        tgid: 0,
        tid: 0,
    }
}
