//! Liveness and readiness from the daemon's real state. The live source reports each ring
//! buffer drain and each kernel map read; the loader reports the programs attached; every
//! identity source (the cgroup scan, the Kubernetes watch) registers itself and says when it is
//! in sync. The probes only read these facts, from another thread, so a stuck pipeline shows as
//! a failing check instead of a probe that hangs.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

/// How old a fact may be before its check fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Readiness: the ring buffer was drained this recently.
    pub drain: Duration,
    /// Readiness: a kernel map lookup succeeded this recently.
    pub maps: Duration,
    /// Liveness: the event loop turned this recently.
    pub event_loop: Duration,
}

impl Limits {
    /// From the live source's intervals: 20 drain intervals (at least 1 s) for the drain, three
    /// snapshot intervals plus a second for the map reads, 30 s (at least the map limit) for
    /// liveness.
    pub fn for_intervals(poll: Duration, snapshot: Duration) -> Self {
        let drain = (poll * 20).max(Duration::from_secs(1));
        let maps = snapshot * 3 + Duration::from_secs(1);
        Self {
            drain,
            maps,
            event_loop: Duration::from_secs(30).max(maps).max(drain),
        }
    }
}

/// Shared health state; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

struct Inner {
    epoch: Instant,
    limits: Limits,
    programs: AtomicU32,
    /// Milliseconds since `epoch` + 1 of the last drain and map read (0: never).
    last_drain: AtomicU64,
    last_maps_ok: AtomicU64,
    maps_error: Mutex<Option<String>>,
    identity: Mutex<Vec<IdentitySource>>,
    stopping: AtomicBool,
}

/// One identity source's sync state; the handle its owner keeps to report it.
#[derive(Clone)]
pub struct IdentitySource(Arc<SourceState>);

struct SourceState {
    name: String,
    synced: AtomicBool,
    detail: Mutex<String>,
}

impl IdentitySource {
    /// In sync (`true`) or not, with a word on why for the probe's body.
    pub fn set_synced(&self, synced: bool, detail: impl Into<String>) {
        if let Ok(mut d) = self.0.detail.lock() {
            *d = detail.into();
        }
        self.0.synced.store(synced, Ordering::Release);
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// One named check and its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A probe's answer: the JSON body of `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `ok` or `failing`.
    pub status: &'static str,
    /// Names of the failing checks.
    pub failing: Vec<String>,
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.clone())
            .collect();
        Self {
            status: if failing.is_empty() { "ok" } else { "failing" },
            failing,
            checks,
        }
    }

    pub fn ok(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Health {
    pub fn new(limits: Limits) -> Self {
        Self(Arc::new(Inner {
            epoch: Instant::now(),
            limits,
            programs: AtomicU32::new(0),
            last_drain: AtomicU64::new(0),
            last_maps_ok: AtomicU64::new(0),
            maps_error: Mutex::new(None),
            identity: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        }))
    }

    fn stamp(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.0.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
    }

    /// The loader attached `n` programs (0: none, or detached).
    pub fn set_programs_attached(&self, n: u32) {
        self.0.programs.store(n, Ordering::Release);
    }

    /// The ring buffer was drained now.
    pub fn drained(&self) {
        self.drained_at(Instant::now());
    }

    pub fn drained_at(&self, at: Instant) {
        self.0.last_drain.store(self.stamp(at), Ordering::Release);
    }

    /// A kernel map lookup just succeeded, or failed with this error.
    pub fn maps_read(&self, result: Result<(), String>) {
        self.maps_read_at(Instant::now(), result);
    }

    pub fn maps_read_at(&self, at: Instant, result: Result<(), String>) {
        let ok = result.is_ok();
        if let Ok(mut e) = self.0.maps_error.lock() {
            *e = result.err();
        }
        if ok {
            self.0.last_maps_ok.store(self.stamp(at), Ordering::Release);
        }
    }

    /// Registers an identity source: readiness waits until it says it is in sync.
    pub fn identity_source(&self, name: &str) -> IdentitySource {
        let source = IdentitySource(Arc::new(SourceState {
            name: name.to_owned(),
            synced: AtomicBool::new(false),
            detail: Mutex::new("not synced yet".into()),
        }));
        if let Ok(mut all) = self.0.identity.lock() {
            all.retain(|s| s.0.name != name);
            all.push(source.clone());
        }
        source
    }

    /// The daemon is shutting down: no longer ready.
    pub fn set_stopping(&self) {
        self.0.stopping.store(true, Ordering::Release);
    }

    pub fn liveness(&self) -> Report {
        self.liveness_at(Instant::now())
    }

    pub fn readiness(&self) -> Report {
        self.readiness_at(Instant::now())
    }

    /// Age of a stamp at `now`, `None` when never stamped.
    fn age(&self, stamp: &AtomicU64, now: Instant) -> Option<Duration> {
        match stamp.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_millis(self.stamp(now).saturating_sub(s))),
        }
    }

    /// Alive while the event loop turns: failing only when it has turned before and then
    /// stopped for longer than the liveness limit (a start-up is left to a start-up probe).
    pub fn liveness_at(&self, now: Instant) -> Report {
        let limit = self.0.limits.event_loop;
        let check = match self.age(&self.0.last_drain, now) {
            None => ok("event_loop", "starting: the event loop has not run yet"),
            Some(age) if age <= limit => {
                ok("event_loop", format!("turned {} ms ago", age.as_millis()))
            }
            Some(age) => fail(
                "event_loop",
                format!(
                    "stalled: last turn {} ms ago (limit {} ms)",
                    age.as_millis(),
                    limit.as_millis()
                ),
            ),
        };
        Report::of(vec![check])
    }

    pub fn readiness_at(&self, now: Instant) -> Report {
        let limits = self.0.limits;
        let mut checks = Vec::new();
        if self.0.stopping.load(Ordering::Acquire) {
            checks.push(fail("running", "shutting down"));
        }
        let programs = self.0.programs.load(Ordering::Acquire);
        checks.push(if programs > 0 {
            ok("programs_attached", format!("{programs} programs attached"))
        } else {
            fail(
                "programs_attached",
                "the kernel programs are not attached yet",
            )
        });
        let error = self.0.maps_error.lock().ok().and_then(|e| e.clone());
        checks.push(match (self.age(&self.0.last_maps_ok, now), error) {
            (_, Some(e)) => fail("maps_readable", format!("map lookup failed: {e}")),
            (None, None) => fail("maps_readable", "no map lookup yet"),
            (Some(age), None) if age <= limits.maps => ok(
                "maps_readable",
                format!("lookup succeeded {} ms ago", age.as_millis()),
            ),
            (Some(age), None) => fail(
                "maps_readable",
                format!(
                    "last successful lookup {} ms ago (limit {} ms)",
                    age.as_millis(),
                    limits.maps.as_millis()
                ),
            ),
        });
        checks.push(match self.age(&self.0.last_drain, now) {
            None => fail("ring_buffer_drained", "not drained yet"),
            Some(age) if age <= limits.drain => ok(
                "ring_buffer_drained",
                format!("drained {} ms ago", age.as_millis()),
            ),
            Some(age) => fail(
                "ring_buffer_drained",
                format!(
                    "last drain {} ms ago (limit {} ms)",
                    age.as_millis(),
                    limits.drain.as_millis()
                ),
            ),
        });
        let sources = self
            .0
            .identity
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if sources.is_empty() {
            checks.push(fail("identity_in_sync", "no identity source registered"));
        }
        for s in sources {
            let detail = s.0.detail.lock().map(|d| d.clone()).unwrap_or_default();
            let name = format!("identity_in_sync:{}", s.0.name);
            checks.push(if s.0.synced.load(Ordering::Acquire) {
                ok(&name, detail)
            } else {
                fail(&name, detail)
            });
        }
        Report::of(checks)
    }
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        ok: true,
        detail: detail.into(),
    }
}

fn fail(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        ok: false,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> Limits {
        Limits::for_intervals(5 * MS, 1000 * MS)
    }

    fn running(h: &Health, at: Instant) {
        h.set_programs_attached(12);
        h.drained_at(at);
        h.maps_read_at(at, Ok(()));
        h.identity_source("cgroups").set_synced(true, "scanned");
    }

    #[test]
    fn limits_follow_the_intervals() {
        let l = limits();
        assert_eq!(
            (l.drain, l.maps, l.event_loop),
            (1000 * MS, 4000 * MS, 30_000 * MS)
        );
        let slow = Limits::for_intervals(100 * MS, 20_000 * MS);
        assert_eq!((slow.drain, slow.maps), (2000 * MS, 61_000 * MS));
        assert_eq!(slow.event_loop, 61_000 * MS);
    }

    #[test]
    fn a_fresh_daemon_is_alive_but_not_ready_and_says_why() {
        let h = Health::new(limits());
        let t = Instant::now();
        assert!(h.liveness_at(t).ok());
        let r = h.readiness_at(t);
        assert_eq!(
            r.failing,
            [
                "programs_attached",
                "maps_readable",
                "ring_buffer_drained",
                "identity_in_sync"
            ]
        );
        assert_eq!(r.status, "failing");
    }

    #[test]
    fn ready_once_every_fact_is_fresh() {
        let h = Health::new(limits());
        let t = Instant::now();
        running(&h, t);
        let r = h.readiness_at(t + 200 * MS);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.status, "ok");
        assert!(h.liveness_at(t + 200 * MS).ok());
    }

    #[test]
    fn a_stale_drain_fails_readiness_first_and_liveness_much_later() {
        let h = Health::new(limits());
        let t = Instant::now();
        running(&h, t);
        h.maps_read_at(t + 2000 * MS, Ok(()));
        let r = h.readiness_at(t + 2000 * MS);
        assert_eq!(r.failing, ["ring_buffer_drained"], "{r:?}");
        assert!(h.liveness_at(t + 2000 * MS).ok());
        let l = h.liveness_at(t + 31_000 * MS);
        assert_eq!(l.failing, ["event_loop"]);
        assert!(l.checks[0].detail.contains("stalled"), "{l:?}");
    }

    #[test]
    fn a_failed_map_lookup_fails_readiness_until_one_succeeds() {
        let h = Health::new(limits());
        let t = Instant::now();
        running(&h, t);
        h.maps_read_at(t, Err("EBADF".into()));
        let r = h.readiness_at(t);
        assert_eq!(r.failing, ["maps_readable"]);
        assert!(r.checks.iter().any(|c| c.detail.contains("EBADF")), "{r:?}");
        h.maps_read_at(t + MS, Ok(()));
        assert!(h.readiness_at(t + MS).ok());
        // A lookup too long ago fails too.
        h.drained_at(t + 5000 * MS);
        assert_eq!(h.readiness_at(t + 5000 * MS).failing, ["maps_readable"]);
    }

    #[test]
    fn every_identity_source_must_be_in_sync() {
        let h = Health::new(limits());
        let t = Instant::now();
        running(&h, t);
        let k8s = h.identity_source("kubernetes");
        let r = h.readiness_at(t);
        assert_eq!(r.failing, ["identity_in_sync:kubernetes"]);
        k8s.set_synced(true, "pods listed, watching");
        assert!(h.readiness_at(t).ok());
        k8s.set_synced(false, "watch lost, relisting");
        let r = h.readiness_at(t);
        assert_eq!(r.failing, ["identity_in_sync:kubernetes"]);
        assert!(r.checks.iter().any(|c| c.detail == "watch lost, relisting"));
    }

    #[test]
    fn stopping_is_not_ready() {
        let h = Health::new(limits());
        let t = Instant::now();
        running(&h, t);
        h.set_stopping();
        assert_eq!(h.readiness_at(t).failing, ["running"]);
    }

    #[test]
    fn the_report_serialises_with_the_failing_check_named() {
        let h = Health::new(limits());
        let v = serde_json::to_value(h.readiness_at(Instant::now())).unwrap();
        assert_eq!(v["status"], "failing");
        assert_eq!(v["failing"][0], "programs_attached");
        assert_eq!(v["checks"][0]["ok"], false);
    }
}
