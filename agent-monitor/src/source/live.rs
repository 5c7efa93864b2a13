//! The live source: drains the kernel ring buffer and turns map snapshots (syscall counters,
//! per-flow bytes, loss counters) and agent registry changes into records of the same format.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::{
    io::unix::AsyncFd,
    sync::Notify,
    time::{Instant, Interval, MissedTickBehavior, interval_at},
};

use super::{
    Batch, EventSource,
    cgroup_watch::CgroupWatch,
    hold::{Hold, HoldOptions, HoldStats},
    ring::RingReader,
    snapshots::Snapshots,
};
use crate::{
    clock,
    ebpf::{Kernel, KernelMaps, WakeKinds},
    event::wire,
    identity::{AgentRegistry, PendingOutcome},
};

/// The rescan interval when the kernel offers no inotify: changes are only found by rescans.
pub const RESCAN_WITHOUT_INOTIFY: Duration = Duration::from_millis(100);

/// Bytes of records taken from the ring buffer into one batch: the rest waits for the next
/// batch, so the batch buffers (which keep their capacity) stay small, instead of growing to the
/// whole ring buffer after one burst (PERF-ANCHORS row 7).
const DRAIN_BYTES: usize = 256 << 10;

pub struct LiveOptions {
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

pub struct LiveSource {
    kernel: Kernel,
    ring: AsyncFd<RingReader>,
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
    /// Observability: drains and map reads reported to the probes.
    health: Option<crate::observe::Health>,
    /// The last drain stopped at [`DRAIN_BYTES`]: records are waiting.
    backlog: bool,
    /// The start-up scan's second pass, still to run.
    recheck: Recheck,
    /// The reader has woken once: the first drain is done.
    woken: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Recheck {
    No,
    AfterFirstWake,
    Now,
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
        // Snapshots and rescans first tick one period from now: at start-up they would compete
        // with the first drain (PERF-ANCHORS row 8), and the start-up scan has just run.
        let tick = |d: Duration, first: Instant| {
            let mut i = interval_at(first, d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        let now = Instant::now();
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
            kernel,
            // SAFETY: the reader owns the map's fd for as long as the AsyncFd holds it.
            ring: unsafe { AsyncFd::register(RingReader::new(maps.events)?) }
                .map_err(|e| anyhow::anyhow!("registering the ring buffer fd: {e}"))?,
            wake: WakeKinds::new(maps.wake_kinds),
            registry,
            snapshots: Snapshots::new(
                maps.monitored,
                maps.syscall_counts,
                maps.lost,
                maps.nr_cpus,
                maps.flows,
            ),
            poll: tick(opts.poll_interval, now),
            snapshot: tick(opts.snapshot_interval, now + opts.snapshot_interval),
            rescan: tick(rescan, now + rescan),
            hold: opts.hold.map(Hold::new),
            identity_changed: opts.identity_changed.clone(),
            cgroup_watch,
            published: HoldStats::default(),
            health: None,
            backlog: false,
            recheck: Recheck::No,
            woken: false,
        };
        // One pass, then the directories it found are watched; cgroups made in them before
        // their watch are found by a second pass, which waits for the first wake-up (the first
        // drain) so that it does not delay the first events (10,000 agents: tens of ms a pass).
        if source.rescan(initial, 1)? {
            source.recheck = Recheck::AfterFirstWake;
        }
        Ok(source)
    }

    /// Reports drains and kernel map reads to `health` from now on.
    pub fn set_health(&mut self, health: crate::observe::Health) {
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
        // A directory first watched now may already hold cgroups made before its watch: look
        // again (a pod slice and its first container are made within microseconds, and so are
        // a class directory and its first agent).
        self.rescan(batch, 3).map(drop)
    }

    /// Up to `passes` scans, while each one adds watched directories; returns whether the last
    /// one did (cgroups made in them before their watch are not found yet).
    fn rescan(&mut self, batch: &mut Batch, passes: usize) -> anyhow::Result<bool> {
        // Without a hold the records go straight into the batch (10,000 at start-up).
        let mut out = Batch::default();
        let records = if self.hold.is_none() {
            &mut *batch
        } else {
            &mut out
        };
        let mut outcomes = Vec::new();
        let mut watching_more = false;
        for _ in 0..passes {
            outcomes.extend(self.registry.rescan(
                &mut self.snapshots,
                records,
                clock::boot_ns(),
            )?);
            watching_more = self
                .cgroup_watch
                .as_mut()
                .is_some_and(|w| w.sync(self.registry.watch_dirs()));
            if !watching_more {
                break;
            }
        }
        let Some(hold) = &mut self.hold else {
            return Ok(watching_more);
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
        Ok(watching_more)
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
        if let Some(h) = &self.health {
            h.drained();
        }
        self.backlog = self.ring.get_mut().drain(batch, DRAIN_BYTES);
    }
}

impl LiveSource {
    /// After the first drain: attaches the socket and packet hooks that
    /// [`Kernel::load_timed`] left for later, and reports them to the probes. True when it
    /// attached them now (the batch is then empty: the caller learns that the daemon is
    /// complete, see [`LiveSource::cgroup_hooks_attached`]).
    fn attach_cgroup_hooks(&mut self) -> anyhow::Result<bool> {
        if !self.kernel.attach_cgroup_hooks()? {
            return Ok(false);
        }
        if let Some(h) = &self.health {
            h.set_programs_attached(
                u32::try_from(self.kernel.loaded_programs()).unwrap_or(u32::MAX),
            );
        }
        Ok(true)
    }

    /// Whether every program is attached: until the first drain, the socket and packet hooks
    /// are not (connects, binds and packets are neither seen nor contained yet).
    pub fn cgroup_hooks_attached(&self) -> bool {
        self.kernel.cgroup_hooks_attached()
    }

    /// Once per snapshot: a lookup that must succeed while the maps are readable (slot 0 of
    /// the per-CPU loss counters always exists), and the highest ring buffer fill of the
    /// interval.
    fn observe_maps(&mut self) {
        if let Some(h) = &self.health {
            h.maps_read(self.snapshots.probe_read());
        }
        metrics::gauge!(crate::observe::names::RINGBUF_FILL)
            .set(self.ring.get_mut().take_max_fill());
    }
}

impl EventSource for LiveSource {
    async fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool> {
        batch.clear();
        if self.woken && self.attach_cgroup_hooks()? {
            return Ok(true);
        }
        let changed = self.identity_changed.clone();
        loop {
            if self.recheck == Recheck::Now {
                self.recheck = Recheck::No;
                self.rescan_now(batch)?;
            }
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
            self.woken = true;
            if self.recheck == Recheck::AfterFirstWake {
                self.recheck = Recheck::Now;
            }
            self.hold_pending(batch);
            // The first events go out before the cgroup hooks are attached (next call).
            if !batch.is_empty() || self.attach_cgroup_hooks()? {
                return Ok(true);
            }
        }
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
