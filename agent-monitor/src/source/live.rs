//! The live source: drains the kernel ring buffer and turns map snapshots (syscall counters,
//! per-flow bytes, loss counters) and agent registry changes into records of the same format.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use agent_monitor_common::{
    AgentSlot, EventHeader, FlowBytes, FlowCounters, LostEvent, SYSCALL_BUCKETS, SyscallCount,
    SyscallRow, kind,
};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    util::nr_cpus,
};
use tokio::{
    io::unix::AsyncFd,
    sync::Notify,
    time::{Interval, MissedTickBehavior, interval},
};

use super::{
    Batch, EventSource,
    cgroup_watch::CgroupWatch,
    hold::{Hold, HoldOptions, HoldStats},
};
use crate::{
    clock,
    ebpf::{Kernel, KernelMaps, WakeKinds},
    event::wire::{self, bytes_of},
    identity::{AgentRegistry, PendingOutcome, SlotTable},
};

/// The rescan interval when the kernel offers no inotify: changes are only found by rescans.
pub const RESCAN_WITHOUT_INOTIFY: Duration = Duration::from_millis(100);

/// Bytes of records taken from the ring buffer into one batch: the rest waits for the next
/// batch, so the batch buffers (which keep their capacity) stay small, instead of growing to the
/// whole ring buffer after one burst (PERF-ANCHORS row 7).
const DRAIN_BYTES: usize = 256 << 10;

pub struct LiveOptions {
    /// Size of the ring buffer the programs were loaded with, in bytes (for its fill metric).
    pub ring_buffer_bytes: u32,
    pub poll_interval: Duration,
    pub snapshot_interval: Duration,
    /// Rescans of every agent directory as a safety net; changes are noticed at once through
    /// inotify. Without inotify, [`RESCAN_WITHOUT_INOTIFY`] at most.
    pub rescan_interval: Duration,
    /// Holding the records of pending cgroups (pod identity); `None`: nothing is pending.
    pub hold: Option<HoldOptions>,
    /// Woken when identities change (the pod cache): rescan at once.
    pub identity_changed: Option<Arc<Notify>>,
}

/// Snapshot state: what the kernel counters held at the previous read, so records carry deltas.
struct Snapshots {
    monitored: HashMap<MapData, u64, AgentSlot>,
    syscall_counts: PerCpuArray<MapData, SyscallRow>,
    lost: PerCpuArray<MapData, u64>,
    flows: HashMap<MapData, u64, FlowCounters>,
    ncpus: usize,
    /// slot -> (syscall nr, sum over CPUs mod 2^32) of the counters seen last; sparse because an
    /// agent uses a few dozen of the 512 syscall numbers.
    prev_counts: StdHashMap<u32, Vec<(u16, u32)>>,
    prev_lost: StdHashMap<u32, Vec<u64>>,
    prev_flows: StdHashMap<u64, FlowCounters>,
    /// cgroup id -> slot of current agents, for attributing flows.
    slot_of: StdHashMap<u64, u32>,
    /// Slots that held an agent before (indexed by slot): their counters must be zeroed for
    /// the next one. The maps are new at each start, so the first agent of a slot needs no
    /// write (two map updates of 2 KiB per CPU saved per agent at start-up).
    used_slots: Vec<bool>,
}

pub struct LiveSource {
    _kernel: Kernel,
    ring: AsyncFd<RingBuf<MapData>>,
    wake: WakeKinds,
    registry: AgentRegistry,
    snapshots: Snapshots,
    poll: Interval,
    snapshot: Interval,
    rescan: Interval,
    hold: Option<Hold>,
    identity_changed: Option<Arc<Notify>>,
    /// New and removed agent (and pod) cgroups, noticed as they are made.
    cgroup_watch: Option<CgroupWatch>,
    /// Hold counts already published as metrics.
    published: HoldStats,
    /// Observability: drains and map reads reported to the probes, ring buffer fill sampled.
    health: Option<crate::observe::Health>,
    fill: Option<crate::observe::ringfill::RingFill>,
    ring_buffer_bytes: u32,
    /// The last drain stopped at [`DRAIN_BYTES`]: records are waiting.
    backlog: bool,
}

impl LiveSource {
    /// Takes over loaded programs and registers the agents that exist now, so that they are
    /// monitored before `new` returns.
    pub fn new(
        kernel: Kernel,
        maps: KernelMaps,
        registry: AgentRegistry,
        opts: &LiveOptions,
        initial: &mut Batch,
    ) -> anyhow::Result<Self> {
        let tick = |d: Duration| {
            let mut i = interval(d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        let cgroup_watch = match CgroupWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "no inotify ({e}): new and removed agent cgroups are found by rescans every \
                     {RESCAN_WITHOUT_INOTIFY:?}"
                );
                None
            }
        };
        let rescan = match cgroup_watch {
            Some(_) => opts.rescan_interval,
            None => opts.rescan_interval.min(RESCAN_WITHOUT_INOTIFY),
        };
        let mut source = Self {
            _kernel: kernel,
            // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it.
            ring: unsafe { AsyncFd::register(maps.events) }
                .map_err(|e| anyhow::anyhow!("registering the ring buffer fd: {e}"))?,
            wake: WakeKinds::new(maps.wake_kinds),
            registry,
            snapshots: Snapshots {
                monitored: maps.monitored,
                syscall_counts: maps.syscall_counts,
                lost: maps.lost,
                flows: maps.flows,
                ncpus: nr_cpus().map_err(|(_, e)| e)?,
                prev_counts: StdHashMap::new(),
                prev_lost: StdHashMap::new(),
                prev_flows: StdHashMap::new(),
                slot_of: StdHashMap::new(),
                used_slots: Vec::new(),
            },
            poll: tick(opts.poll_interval),
            snapshot: tick(opts.snapshot_interval),
            rescan: tick(rescan),
            hold: opts.hold.map(Hold::new),
            identity_changed: opts.identity_changed.clone(),
            cgroup_watch,
            published: HoldStats::default(),
            health: None,
            fill: None,
            ring_buffer_bytes: opts.ring_buffer_bytes,
            backlog: false,
        };
        source.rescan_now(initial)?;
        Ok(source)
    }

    /// Reports drains and kernel map reads to `health`, and the ring buffer fill to the
    /// metrics, from now on.
    pub fn set_health(&mut self, health: crate::observe::Health) {
        let size = self.ring_buffer_bytes;
        match crate::observe::ringfill::RingFill::new(self.ring.get_ref(), size) {
            Ok(fill) => self.fill = Some(fill),
            Err(e) => log::warn!("ring buffer fill not measured: mapping its positions: {e}"),
        }
        self.health = Some(health);
    }

    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Events of these kinds (wire numbers) wake the reader at once; the others are batched
    /// until the next poll (see [`crate::respond::urgent`]).
    pub fn set_wake_kinds(&mut self, kinds: &[u16]) -> anyhow::Result<()> {
        self.wake
            .set(kinds)
            .map_err(|e| anyhow::anyhow!("writing WAKE_KINDS: {e}"))
    }

    /// The kinds that wake the reader at once, read back from the kernel map.
    pub fn wake_kinds(&self) -> anyhow::Result<Vec<u16>> {
        self.wake
            .read()
            .map_err(|e| anyhow::anyhow!("reading WAKE_KINDS: {e}"))
    }

    /// What the hold did so far (all zero without one).
    pub fn hold_stats(&self) -> HoldStats {
        self.hold.as_ref().map(|h| h.stats).unwrap_or_default()
    }

    /// Reconciles monitored cgroups with the file system (and pods) now. Records held for a
    /// cgroup that resolved follow its announcement.
    pub fn rescan_now(&mut self, batch: &mut Batch) -> anyhow::Result<()> {
        let mut out = Batch::default();
        let mut outcomes = Vec::new();
        // A directory first watched now may already hold cgroups made before its watch: look
        // again (a pod slice and its first container are made within microseconds, and so are
        // a class directory and its first agent).
        for _ in 0..3 {
            outcomes.extend(self.registry.rescan(
                &mut self.snapshots,
                &mut out,
                clock::boot_ns(),
            )?);
            let watching_more = self
                .cgroup_watch
                .as_mut()
                .is_some_and(|w| w.sync(self.registry.watch_dirs()));
            if !watching_more {
                break;
            }
        }
        let Some(hold) = &mut self.hold else {
            append(batch, &out);
            return Ok(());
        };
        let of = |want: PendingOutcome| {
            outcomes
                .iter()
                .filter(move |(_, o)| *o == want)
                .map(|(cg, _)| *cg)
        };
        // A vanished cgroup's held records come before its final counters (in `out`).
        for cg in of(PendingOutcome::Gone) {
            hold.resolve(cg, PendingOutcome::Gone, batch);
        }
        let not_agents: HashSet<u64> = of(PendingOutcome::NotAgent).collect();
        for record in out.iter() {
            let cg = wire::read::<agent_monitor_common::EventHeader>(record).map(|h| h.cgroup_id);
            if cg.is_some_and(|cg| not_agents.contains(&cg)) {
                hold.stats.not_agent += 1;
            } else {
                batch.push(record);
            }
        }
        for (cg, outcome) in outcomes {
            if outcome != PendingOutcome::Gone {
                hold.resolve(cg, outcome, batch);
            }
        }
        Ok(())
    }

    /// Drains the ring buffer and takes a final snapshot: call before stopping so nothing the
    /// kernel already counted is left behind. Held records go out unattributed, first.
    pub fn finish(&mut self, batch: &mut Batch) -> anyhow::Result<()> {
        if let Some(hold) = &mut self.hold {
            hold.release_all(batch);
        }
        self.drain(batch);
        while self.backlog {
            self.drain(batch);
        }
        self.snapshots.take(batch, clock::boot_ns())?;
        self.publish_hold_metrics();
        Ok(())
    }

    /// Holds what belongs to pending cgroups and releases what waited long enough.
    fn hold_pending(&mut self, batch: &mut Batch) {
        let Some(hold) = &mut self.hold else {
            return;
        };
        let now = clock::boot_ns();
        if self.registry.pending() > 0 {
            let registry = &self.registry;
            hold.filter(batch, |cg| registry.is_pending(cg), now);
        }
        if !hold.is_empty() {
            hold.expire(now, batch);
        }
        self.publish_hold_metrics();
    }

    fn publish_hold_metrics(&mut self) {
        let now = self.hold_stats();
        let before = std::mem::replace(&mut self.published, now);
        for (result, n) in [
            ("held", now.held - before.held),
            ("not_agent", now.not_agent - before.not_agent),
        ] {
            if n > 0 {
                metrics::counter!("agent_monitor_attribution_events_total", "result" => result)
                    .increment(n);
            }
        }
    }

    fn drain(&mut self, batch: &mut Batch) {
        if let Some(fill) = &mut self.fill {
            fill.sample();
        }
        if let Some(h) = &self.health {
            h.drained();
        }
        let ring = self.ring.get_mut();
        let limit = batch.bytes() + DRAIN_BYTES;
        while batch.bytes() < limit {
            let Some(item) = ring.next() else {
                self.backlog = false;
                return;
            };
            batch.push(&item);
        }
        self.backlog = true;
    }
}

impl LiveSource {
    /// Once per snapshot: a lookup that must succeed while the maps are readable (slot 0 of
    /// the per-CPU loss counters always exists), and the ring buffer fill of the interval.
    fn observe_maps(&mut self) {
        if let Some(h) = &self.health {
            let lookup = self.snapshots.lost.get(&0, 0).map(drop);
            h.maps_read(lookup.map_err(|e| format!("LOST[0]: {e}")));
        }
        if let Some(fill) = &mut self.fill {
            metrics::gauge!(crate::observe::names::RINGBUF_FILL).set(fill.take_max());
        }
    }
}

impl EventSource for LiveSource {
    async fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool> {
        batch.clear();
        let changed = self.identity_changed.clone();
        loop {
            tokio::select! {
                // Records left by a drain that stopped at its limit; the other branches still
                // get their turn (select picks among ready branches at random).
                () = std::future::ready(()), if self.backlog => self.drain(batch),
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    drop(guard);
                    self.drain(batch);
                }
                // Batched events do not wake the reader: this tick picks them up.
                _ = self.poll.tick() => self.drain(batch),
                _ = self.snapshot.tick() => {
                    self.drain(batch);
                    self.snapshots.take(batch, clock::boot_ns())?;
                    self.observe_maps();
                }
                _ = self.rescan.tick() => self.rescan_now(batch)?,
                () = notified(changed.as_deref()) => self.rescan_now(batch)?,
                r = cgroups_changed(self.cgroup_watch.as_mut()) => {
                    r?;
                    self.rescan_now(batch)?;
                }
            }
            self.hold_pending(batch);
            if !batch.is_empty() {
                return Ok(true);
            }
        }
    }
}

impl SlotTable for Snapshots {
    fn insert(&mut self, cgroup_id: u64, slot: AgentSlot) -> anyhow::Result<()> {
        // A reused slot starts from zero so the new agent is not charged the old one's counts.
        let i = slot.slot as usize;
        if self.used_slots.get(i).copied().unwrap_or(false) {
            let zero = PerCpuValues::try_from(vec![
                SyscallRow([0; SYSCALL_BUCKETS as usize]);
                self.ncpus
            ])?;
            self.syscall_counts.set(slot.slot, zero, 0)?;
            self.lost.set(
                slot.slot,
                PerCpuValues::try_from(vec![0u64; self.ncpus])?,
                0,
            )?;
        } else {
            if self.used_slots.len() <= i {
                self.used_slots.resize(i + 1, false);
            }
            self.used_slots[i] = true;
        }
        self.prev_counts.remove(&slot.slot);
        self.prev_lost.remove(&slot.slot);
        self.monitored.insert(cgroup_id, slot, 0)?;
        self.slot_of.insert(cgroup_id, slot.slot);
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
    fn take(&mut self, out: &mut Batch, now: u64) -> anyhow::Result<()> {
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
        let rows = self.syscall_counts.get(&slot, 0)?;
        // No entry until the agent's first syscall: an idle agent costs nothing here.
        let mut prev = self.prev_counts.remove(&slot).unwrap_or_default();
        for nr in 0..SYSCALL_BUCKETS as usize {
            // Per-CPU u32 counters summed mod 2^32: the delta is exact while an agent makes
            // fewer than 4 billion syscalls between two snapshots.
            let sum = rows
                .iter()
                .fold(0u32, |acc, row| acc.wrapping_add(row.0[nr]));
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
        let values = self.lost.get(&slot, 0)?;
        if !self.prev_lost.contains_key(&slot) && values.iter().all(|&v| v == 0) {
            // Nothing ever lost for this agent (the usual case): no entry kept.
            return Ok(());
        }
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
            log::warn!(
                "kernel lost {delta} events of agent slot {slot} on CPU {cpu} (ring buffer full)"
            );
            let record = LostEvent {
                header: header(kind::LOST, slot, cgroup_id, now),
                cpu: cpu as u32,
                _pad: 0,
                count: delta,
            };
            out.push(bytes_of(&record));
        }
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
        let live: std::collections::HashSet<u64> = current.iter().map(|(c, _)| *c).collect();
        self.prev_flows.retain(|c, _| live.contains(c));
        Ok(())
    }
}

fn append(batch: &mut Batch, records: &Batch) {
    for r in records.iter() {
        batch.push(r);
    }
}

/// Resolves when a watched cgroup directory changed; never without a watch.
async fn cgroups_changed(watch: Option<&mut CgroupWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `notify` is woken; never without one.
async fn notified(notify: Option<&Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
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
