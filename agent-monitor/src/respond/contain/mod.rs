//! Containment of an agent cgroup in the kernel: deny all network, or rate-limit connects and
//! egress bytes, through the `CONTAINMENT` map that the socket hooks consult (see
//! docs/CONTAINMENT.md). Every action is idempotent and returns an [`ActionResult`] (before and
//! after) that can be audited and undone. The same type works on the maps of a running daemon
//! ([`Containment::open`]) and, from another process, on the pinned maps alone
//! ([`Containment::open_pinned`]).

pub mod cli;
mod view;

#[cfg(test)]
mod tests;

use std::{
    io::ErrorKind,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use agent_monitor_common::{ContainPolicy, Denials, MAX_BYTES_PER_SEC};
use aya::maps::{HashMap, Map, MapData, MapError};
pub use view::{Action, ActionResult, DenialsView, PolicyView};

use crate::ebpf::{
    CONTAINMENT_MAP, ContainMaps, DENIALS_MAP, LINKS_DIR,
    pin::{self, LinkInfo, PINNED_HOOKS},
};

/// The default pin directory (config key `pin_dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/agent-monitor";

#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    #[error(
        "no pinned containment map at {path}: no daemon with this pin_dir is running and no \
         containment was left in force ({source})"
    )]
    NotPinned { path: PathBuf, source: MapError },
    #[error("containment map {op} for cgroup {cgroup_id}: {source}")]
    Map {
        op: &'static str,
        cgroup_id: u64,
        source: MapError,
    },
    #[error("bytes_per_s {0} is above the maximum {MAX_BYTES_PER_SEC}")]
    RateTooHigh(u64),
}

type Result<T> = std::result::Result<T, ContainError>;

/// Map update flag: create the entry only if there is none (`include/uapi/linux/bpf.h`).
const BPF_NOEXIST: u64 = 1;

/// The containment actuator over the kernel maps.
pub struct Containment {
    policies: HashMap<MapData, u64, ContainPolicy>,
    denials: HashMap<MapData, u64, Denials>,
    pin_dir: Option<PathBuf>,
}

/// One pinned enforcing hook, for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookStatus {
    pub program: &'static str,
    /// None: not pinned (the hook is not enforcing without a daemon).
    pub link: Option<LinkInfo>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Containment {
    /// On the maps of the programs this process loaded.
    pub fn open(maps: ContainMaps) -> Self {
        Self {
            policies: maps.policies,
            denials: maps.denials,
            pin_dir: maps.pin_dir,
        }
    }

    /// On the maps pinned in `dir` by a daemon, without loading any program (for
    /// `agent-monitor contain` run from another process).
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        fn open<V: aya::Pod>(dir: &Path, name: &str) -> Result<HashMap<MapData, u64, V>> {
            let path = dir.join(name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .and_then(HashMap::try_from)
                .map_err(|source| ContainError::NotPinned { path, source })
        }
        Ok(Self {
            policies: open(dir, CONTAINMENT_MAP)?,
            denials: open(dir, DENIALS_MAP)?,
            pin_dir: Some(dir.to_owned()),
        })
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Refuses every connect and UDP send of the cgroup (EPERM) and drops its egress packets,
    /// from the next syscall on. A rate limit in force is kept (it applies again after an
    /// undo).
    pub fn deny_all(&mut self, cgroup_id: u64, agent: Option<&str>) -> Result<ActionResult> {
        // Usually nothing is in force yet: one map update that only creates the entry
        // (atomically) puts the deny in force without a lookup first, on the containment's
        // critical path (PERF-ANCHORS row 6).
        let fresh = next_deny(None, now_unix_ms());
        match self
            .policies
            .insert(cgroup_id, fresh.to_policy(), BPF_NOEXIST)
        {
            Ok(()) => return Ok(self.done(Action::DenyAll, cgroup_id, agent, None, Some(fresh))),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ContainError::Map {
                    op: "update",
                    cgroup_id,
                    source,
                });
            }
        }
        let before = self.policy(cgroup_id)?;
        let after = next_deny(before, now_unix_ms());
        self.set(Action::DenyAll, cgroup_id, agent, before, Some(after))
    }

    /// Limits connects per second and egress bytes per second (0: that dimension unlimited;
    /// both 0 removes the rate limit). Buckets start full: a burst of one second's worth.
    pub fn rate_limit(
        &mut self,
        cgroup_id: u64,
        connects_per_s: u32,
        bytes_per_s: u64,
    ) -> Result<ActionResult> {
        if bytes_per_s > MAX_BYTES_PER_SEC {
            return Err(ContainError::RateTooHigh(bytes_per_s));
        }
        let before = self.policy(cgroup_id)?;
        let after = next_rate(before, connects_per_s, bytes_per_s, now_unix_ms());
        self.set(Action::RateLimit, cgroup_id, None, before, after)
    }

    /// Lifts every restriction on the cgroup.
    pub fn release(&mut self, cgroup_id: u64) -> Result<ActionResult> {
        let before = self.policy(cgroup_id)?;
        self.set(Action::Release, cgroup_id, None, before, None)
    }

    /// Sets the cgroup's policy back to what it was before `done`.
    pub fn undo(&mut self, done: &ActionResult) -> Result<ActionResult> {
        let before = self.policy(done.cgroup_id)?;
        let after = done.before.map(|p| PolicyView {
            applied_unix_ms: now_unix_ms(),
            ..p
        });
        self.set(
            Action::Restore,
            done.cgroup_id,
            done.agent.as_deref(),
            before,
            after,
        )
    }

    /// Undoes only what `done` itself set, leaving the rest of the policy in force: after a
    /// `deny_all` the deny flag goes back to what it was before it, after a `rate_limit` the
    /// rates do. Two actions undone this way give the same result in either order, unlike
    /// [`Containment::undo`], which sets the whole policy back. Release and restore results
    /// are undone whole.
    pub fn undo_own(&mut self, done: &ActionResult) -> Result<ActionResult> {
        let now = self.policy(done.cgroup_id)?;
        let Some(after) = own_undo(now, done, now_unix_ms()) else {
            return self.undo(done);
        };
        self.set(
            Action::Restore,
            done.cgroup_id,
            done.agent.as_deref(),
            now,
            after,
        )
    }

    /// Releases the containment of every cgroup that no longer exists (`exists` says which
    /// do) and drops its denial counters: a removed cgroup's entry would otherwise stay in the
    /// pinned map, and keep its hooks pinned, for ever. Returns what was released.
    pub fn release_gone(&mut self, exists: &dyn Fn(u64) -> bool) -> Result<Vec<ActionResult>> {
        let gone: Vec<u64> = self
            .state()?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !exists(*id))
            .collect();
        let mut out = Vec::new();
        for cgroup_id in gone {
            let before = self.policy(cgroup_id)?;
            out.push(self.set(Action::Release, cgroup_id, None, before, None)?);
            // Counters only: a cgroup that was never refused anything has no row.
            match self.denials.remove(&cgroup_id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e)) if e.io_error.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ContainError::Map {
                        op: "remove denials",
                        cgroup_id,
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every containment in force.
    pub fn state(&self) -> Result<Vec<(u64, PolicyView)>> {
        let mut out = Vec::new();
        for entry in self.policies.iter() {
            let (cgroup_id, p) = entry.map_err(|source| ContainError::Map {
                op: "iterate",
                cgroup_id: 0,
                source,
            })?;
            out.push((cgroup_id, PolicyView::from(&p)));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// The cgroup's policy, None when it is not contained.
    pub fn policy(&self, cgroup_id: u64) -> Result<Option<PolicyView>> {
        match self.policies.get(&cgroup_id, 0) {
            Ok(p) => Ok(Some(PolicyView::from(&p))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ContainError::Map {
                op: "lookup",
                cgroup_id,
                source,
            }),
        }
    }

    /// What containment refused for the cgroup so far (zeros when nothing was).
    pub fn denials(&self, cgroup_id: u64) -> Result<DenialsView> {
        match self.denials.get(&cgroup_id, 0) {
            Ok(d) => Ok(d.into()),
            Err(MapError::KeyNotFound) => Ok(DenialsView::default()),
            Err(source) => Err(ContainError::Map {
                op: "lookup denials",
                cgroup_id,
                source,
            }),
        }
    }

    /// The pinned enforcing links (empty when nothing is pinned).
    pub fn hooks(&self) -> Vec<HookStatus> {
        let Some(dir) = &self.pin_dir else {
            return Vec::new();
        };
        PINNED_HOOKS
            .iter()
            .map(|(name, _)| HookStatus {
                program: name,
                link: pin::obj_get(&dir.join(LINKS_DIR).join(name))
                    .and_then(|fd| pin::link_info(fd.as_fd()))
                    .ok(),
            })
            .collect()
    }

    fn set(
        &mut self,
        action: Action,
        cgroup_id: u64,
        agent: Option<&str>,
        before: Option<PolicyView>,
        after: Option<PolicyView>,
    ) -> Result<ActionResult> {
        let changed = !same(before.as_ref(), after.as_ref());
        let after = if changed { after } else { before };
        if changed {
            let r = match &after {
                Some(p) => self.policies.insert(cgroup_id, p.to_policy(), 0),
                None => match self.policies.remove(&cgroup_id) {
                    Err(MapError::KeyNotFound) => Ok(()),
                    r => r,
                },
            };
            r.map_err(|source| ContainError::Map {
                op: "update",
                cgroup_id,
                source,
            })?;
        }
        Ok(self.done(action, cgroup_id, agent, before, after))
    }

    /// The record of an action carried out (or found already in force: `before` == `after`).
    fn done(
        &self,
        action: Action,
        cgroup_id: u64,
        agent: Option<&str>,
        before: Option<PolicyView>,
        after: Option<PolicyView>,
    ) -> ActionResult {
        let changed = !same(before.as_ref(), after.as_ref());
        let result = ActionResult {
            action,
            cgroup_id,
            agent: agent.map(str::to_owned),
            before,
            after,
            changed,
        };
        log::info!(
            "containment {:?} cgroup {cgroup_id}{}: {} -> {}{}",
            action,
            agent.map(|a| format!(" (agent {a})")).unwrap_or_default(),
            show(before.as_ref()),
            show(after.as_ref()),
            if changed { "" } else { " (unchanged)" }
        );
        result
    }
}

fn show(p: Option<&PolicyView>) -> String {
    p.map_or_else(|| "not contained".to_owned(), ToString::to_string)
}

fn same(a: Option<&PolicyView>, b: Option<&PolicyView>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_rules(b),
        _ => false,
    }
}

/// The policy after `deny_all`.
pub(crate) fn next_deny(before: Option<PolicyView>, now_ms: u64) -> PolicyView {
    PolicyView {
        deny_all: true,
        applied_unix_ms: now_ms,
        ..before.unwrap_or_default()
    }
}

/// The policy after `rate_limit` (None: nothing left to enforce).
pub(crate) fn next_rate(
    before: Option<PolicyView>,
    connects_per_s: u32,
    bytes_per_s: u64,
    now_ms: u64,
) -> Option<PolicyView> {
    let deny_all = before.is_some_and(|p| p.deny_all);
    let p = PolicyView {
        deny_all,
        connects_per_s: (connects_per_s != 0).then_some(connects_per_s),
        bytes_per_s: (bytes_per_s != 0).then_some(bytes_per_s),
        applied_unix_ms: now_ms,
    };
    (p.deny_all || p.connects_per_s.is_some() || p.bytes_per_s.is_some()).then_some(p)
}

/// The policy after undoing only `done`'s own part of `now` (see [`Containment::undo_own`]);
/// None for the actions that are undone whole.
pub(crate) fn own_undo(
    now: Option<PolicyView>,
    done: &ActionResult,
    now_ms: u64,
) -> Option<Option<PolicyView>> {
    let before = done.before.unwrap_or_default();
    let after = match done.action {
        Action::DenyAll => now.map(|p| PolicyView {
            deny_all: before.deny_all,
            applied_unix_ms: now_ms,
            ..p
        }),
        Action::RateLimit => now.map(|p| PolicyView {
            connects_per_s: before.connects_per_s,
            bytes_per_s: before.bytes_per_s,
            applied_unix_ms: now_ms,
            ..p
        }),
        Action::Release | Action::Restore => return None,
    };
    Some(after.filter(PolicyView::restricts))
}
