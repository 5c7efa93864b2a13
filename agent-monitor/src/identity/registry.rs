//! Discovers agent cgroups from the configuration and from watched parent directories, keeps the
//! kernel's `MONITORED` map in step, and announces changes as records.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use agent_monitor_common::{
    AGENT_CLASS_LEN, AGENT_ID_LEN, AgentRecord, AgentSlot, EventHeader, PATH_LEN,
    SLOT_FLAG_SYSCALL_STREAM, kind,
};

use crate::{
    cgroup,
    config::Config,
    event::wire::{bytes_of, put_c_str},
    source::Batch,
};

/// The kernel side of the registry (the `MONITORED` map and per-slot counters); a plain map in
/// tests.
pub trait SlotTable {
    fn insert(&mut self, cgroup_id: u64, slot: AgentSlot) -> anyhow::Result<()>;
    /// Stops monitoring `cgroup_id`; the table may push the agent's final counters into `out`.
    fn remove(&mut self, cgroup_id: u64, slot: u32, out: &mut Batch) -> anyhow::Result<()>;
}

/// An agent cgroup found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredAgent {
    pub cgroup_id: u64,
    pub id: String,
    pub class: String,
    /// Relative to the cgroup v2 mount.
    pub path: PathBuf,
}

struct Registered {
    agent: DiscoveredAgent,
    slot: u32,
}

pub struct AgentRegistry {
    mount: PathBuf,
    config: Config,
    agents: HashMap<u64, Registered>,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Agents seen but not monitored because every slot is taken (reported, never silent).
    over_capacity: usize,
}

impl AgentRegistry {
    pub fn new(mount: PathBuf, config: Config) -> Self {
        Self {
            mount,
            config,
            agents: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            over_capacity: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn over_capacity(&self) -> usize {
        self.over_capacity
    }

    /// Slots in use, for the counter snapshots.
    pub fn slots(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.agents.iter().map(|(&cg, r)| (cg, r.slot))
    }

    /// Reconciles the kernel map with what is on disk now; each change is announced in `out`
    /// before the kernel starts (or after it stops) reporting that cgroup.
    pub fn rescan(
        &mut self,
        table: &mut impl SlotTable,
        out: &mut Batch,
        now_ns: u64,
    ) -> anyhow::Result<()> {
        let found = self.discover();
        let gone: Vec<u64> = self
            .agents
            .keys()
            .filter(|cg| !found.contains_key(cg))
            .copied()
            .collect();
        for cg in gone {
            if let Some(r) = self.agents.remove(&cg) {
                table.remove(cg, r.slot, out)?;
                out.push(bytes_of(&record(
                    kind::AGENT_REMOVED,
                    &r.agent,
                    r.slot,
                    now_ns,
                )));
                self.free_slots.push(r.slot);
            }
        }
        let mut over = 0;
        let mut new: Vec<_> = found
            .into_values()
            .filter(|a| !self.agents.contains_key(&a.cgroup_id))
            .collect();
        new.sort_by(|a, b| a.path.cmp(&b.path));
        for agent in new {
            let Some(slot) = self.take_slot() else {
                over += 1;
                continue;
            };
            out.push(bytes_of(&record(kind::AGENT_ADDED, &agent, slot, now_ns)));
            let flags = if self.config.syscall_stream {
                SLOT_FLAG_SYSCALL_STREAM
            } else {
                0
            };
            if let Err(e) = table.insert(agent.cgroup_id, AgentSlot { slot, flags }) {
                self.free_slots.push(slot);
                return Err(e);
            }
            self.agents
                .insert(agent.cgroup_id, Registered { agent, slot });
        }
        if over > 0 && over != self.over_capacity {
            log::error!(
                "{over} agent cgroups are not monitored: all {} slots are in use (raise max_agents)",
                self.config.max_agents
            );
        }
        self.over_capacity = over;
        Ok(())
    }

    fn take_slot(&mut self) -> Option<u32> {
        self.free_slots.pop().or_else(|| {
            (self.next_slot < self.config.max_agents).then(|| {
                self.next_slot += 1;
                self.next_slot - 1
            })
        })
    }

    /// Every agent cgroup that exists now, by cgroup id.
    pub fn discover(&self) -> HashMap<u64, DiscoveredAgent> {
        let mut found = HashMap::new();
        for a in &self.config.agents {
            let dir = Config::cgroup_path(&self.mount, &a.cgroup);
            if let Ok(cgroup_id) = cgroup::id_of(&dir) {
                found.insert(
                    cgroup_id,
                    DiscoveredAgent {
                        cgroup_id,
                        id: a.id.clone(),
                        class: a.class.clone(),
                        path: self.relative(&dir),
                    },
                );
            }
        }
        for parent in &self.config.watch {
            let parent = Config::cgroup_path(&self.mount, parent);
            for (class, class_dir) in subdirs(&parent) {
                for (id, dir) in subdirs(&class_dir) {
                    if id.len() >= AGENT_ID_LEN || class.len() >= AGENT_CLASS_LEN {
                        log::warn!(
                            "{}: agent id or class name too long, ignored",
                            dir.display()
                        );
                        continue;
                    }
                    if let Ok(cgroup_id) = cgroup::id_of(&dir) {
                        let path = self.relative(&dir);
                        found.entry(cgroup_id).or_insert(DiscoveredAgent {
                            cgroup_id,
                            id,
                            class: class.clone(),
                            path,
                        });
                    }
                }
            }
        }
        found
    }

    fn relative(&self, dir: &Path) -> PathBuf {
        Path::new("/").join(dir.strip_prefix(&self.mount).unwrap_or(dir))
    }
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

fn record(kind: u16, agent: &DiscoveredAgent, slot: u32, now_ns: u64) -> AgentRecord {
    let mut r = AgentRecord {
        header: EventHeader {
            kind,
            flags: 0,
            slot,
            ts_ns: now_ns,
            cgroup_id: agent.cgroup_id,
            tgid: 0,
            tid: 0,
        },
        id: [0; AGENT_ID_LEN],
        class: [0; AGENT_CLASS_LEN],
        cgroup_path: [0; PATH_LEN],
    };
    put_c_str(&mut r.id, &agent.id);
    put_c_str(&mut r.class, &agent.class);
    put_c_str(&mut r.cgroup_path, &agent.path.to_string_lossy());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, decode};

    #[derive(Default)]
    struct Table(HashMap<u64, AgentSlot>);
    impl SlotTable for Table {
        fn insert(&mut self, cg: u64, slot: AgentSlot) -> anyhow::Result<()> {
            self.0.insert(cg, slot);
            Ok(())
        }
        fn remove(&mut self, cg: u64, _slot: u32, _out: &mut Batch) -> anyhow::Result<()> {
            self.0.remove(&cg);
            Ok(())
        }
    }

    fn config(watch: &Path, max_agents: u32) -> Config {
        let mut c = Config::embedded();
        c.watch = vec![watch.to_owned()];
        c.max_agents = max_agents;
        c
    }

    // Plain directories stand in for cgroups here: discovery only needs directories and inodes.
    #[test]
    fn watched_parent_children_become_agents_and_leave() {
        let root = tempfile::tempdir().unwrap();
        let a1 = root.path().join("agents/fraud/a1");
        let a2 = root.path().join("agents/onboarding/a2");
        fs::create_dir_all(&a1).unwrap();
        fs::create_dir_all(&a2).unwrap();
        let mut reg = AgentRegistry::new(root.path().to_owned(), config(Path::new("agents"), 8));
        let mut table = Table::default();
        let mut out = Batch::default();
        reg.rescan(&mut table, &mut out, 5).unwrap();
        assert_eq!(table.0.len(), 2);
        let added: Vec<_> = out.iter().map(|r| decode(r).unwrap().body).collect();
        assert!(added.iter().any(|b| matches!(b, Body::AgentAdded(a) if a.id == "a1" && a.class == "fraud" && a.cgroup_path == "/agents/fraud/a1")));

        fs::remove_dir(&a1).unwrap();
        out.clear();
        reg.rescan(&mut table, &mut out, 6).unwrap();
        assert_eq!(table.0.len(), 1);
        let removed: Vec<_> = out.iter().map(|r| decode(r).unwrap().body).collect();
        assert!(matches!(&removed[..], [Body::AgentRemoved(a)] if a.id == "a1"));
    }

    #[test]
    fn slots_are_bounded_and_reused() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..3 {
            fs::create_dir_all(root.path().join(format!("w/c/a{i}"))).unwrap();
        }
        let mut reg = AgentRegistry::new(root.path().to_owned(), config(Path::new("w"), 2));
        let mut table = Table::default();
        let mut out = Batch::default();
        reg.rescan(&mut table, &mut out, 1).unwrap();
        assert_eq!((reg.len(), reg.over_capacity()), (2, 1));
        let taken: Vec<u32> = table.0.values().map(|s| s.slot).collect();
        assert!(taken.iter().all(|&s| s < 2));
        fs::remove_dir(root.path().join("w/c/a0")).unwrap();
        reg.rescan(&mut table, &mut out, 2).unwrap();
        assert_eq!((reg.len(), reg.over_capacity()), (2, 0));
    }

    #[test]
    fn static_agents_need_their_cgroup_to_exist() {
        let root = tempfile::tempdir().unwrap();
        let mut c = config(Path::new("none"), 4);
        c.agents.push(crate::config::StaticAgent {
            cgroup: "pay/p1".into(),
            id: "p1".into(),
            class: "payments".into(),
        });
        let mut reg = AgentRegistry::new(root.path().to_owned(), c);
        assert!(reg.discover().is_empty());
        fs::create_dir_all(root.path().join("pay/p1")).unwrap();
        let found: Vec<_> = reg.discover().into_values().collect();
        assert_eq!(found[0].class, "payments");
        let mut out = Batch::default();
        reg.rescan(&mut Table::default(), &mut out, 1).unwrap();
        assert_eq!(out.len(), 1);
    }
}
