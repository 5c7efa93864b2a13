//! Discovers agent cgroups from the configuration and from watched parent directories, keeps the
//! kernel's `MONITORED` map in step, and announces changes as records.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use agent_monitor_common::{
    AGENT_CLASS_LEN, AGENT_ID_LEN, AgentRecord, AgentSlot, EventHeader, PATH_LEN,
    SLOT_FLAG_SYSCALL_STREAM, kind,
};

use super::kubepods::{self, PodLookup, PodResolution};
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
    /// Puts the inserts of a scan in force (a table may gather them into one kernel call).
    fn commit(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An agent cgroup found on disk. Kept for every registered agent: boxed names, and a class
/// name shared by the agents of one scan (PERF-ANCHORS row 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredAgent {
    pub cgroup_id: u64,
    pub id: Box<str>,
    pub class: Arc<str>,
    /// Relative to the cgroup v2 mount.
    pub path: Box<Path>,
}

struct Registered {
    agent: DiscoveredAgent,
    slot: u32,
    /// A pod container whose pod is not known yet: monitored, not announced.
    pending: bool,
}

/// What became of a pending cgroup at a rescan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingOutcome {
    /// Its pod is an agent: announced, its held events can follow.
    Agent,
    /// Its pod is not an agent: no longer monitored, its held events are not agent events.
    NotAgent,
    /// The cgroup is gone while pending.
    Gone,
}

/// What the registry wants for a cgroup after discovery.
enum Desired {
    Agent(DiscoveredAgent),
    Pending(PathBuf),
}

pub struct AgentRegistry {
    mount: PathBuf,
    config: Config,
    agents: HashMap<u64, Registered>,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Agents seen but not monitored because every slot is taken (reported, never silent).
    over_capacity: usize,
    /// Pod identities (Kubernetes); `None`: kubepods hierarchies are not looked at.
    pods: Option<Arc<dyn PodLookup>>,
    pending: usize,
    /// Malformed kubepods paths already logged.
    logged: HashSet<String>,
    /// Directories whose new or removed subdirectories can change the agents (watched
    /// parents, their class directories, the parents of static agents and the kubepods levels
    /// above pod containers), as of the last rescan.
    watch_dirs: Vec<PathBuf>,
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
            pods: None,
            pending: 0,
            logged: HashSet::new(),
            watch_dirs: Vec::new(),
        }
    }

    /// Container cgroups under the configured kubepods roots become agents when `pods` says
    /// their pod is one (pending until it knows).
    pub fn with_pods(mut self, pods: Arc<dyn PodLookup>) -> Self {
        self.pods = Some(pods);
        self
    }

    pub fn len(&self) -> usize {
        self.agents.len() - self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn over_capacity(&self) -> usize {
        self.over_capacity
    }

    /// Cgroups monitored while their pod is not known.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Where a new or removed directory can add or remove an agent, as of the last rescan:
    /// watched with inotify, so that a rescan follows each change at once.
    pub fn watch_dirs(&self) -> &[PathBuf] {
        &self.watch_dirs
    }

    pub fn is_pending(&self, cgroup_id: u64) -> bool {
        self.agents.get(&cgroup_id).is_some_and(|r| r.pending)
    }

    /// The current identity of a monitored agent cgroup.
    pub fn agent(&self, cgroup_id: u64) -> Option<&DiscoveredAgent> {
        self.agents
            .get(&cgroup_id)
            .filter(|r| !r.pending)
            .map(|r| &r.agent)
    }

    /// Slots in use (pending cgroups included), for the counter snapshots.
    pub fn slots(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.agents.iter().map(|(&cg, r)| (cg, r.slot))
    }

    /// Reconciles the kernel map with what is on disk (and the pods known) now; each change is
    /// announced in `out` before the kernel starts (or after it stops) reporting that cgroup.
    /// Returns what became of cgroups that were pending.
    pub fn rescan(
        &mut self,
        table: &mut impl SlotTable,
        out: &mut Batch,
        now_ns: u64,
    ) -> anyhow::Result<Vec<(u64, PendingOutcome)>> {
        let (found, mut watch_dirs) = self.discover_with_dirs();
        let mut desired: HashMap<u64, Desired> = found
            .into_iter()
            .map(|(cg, a)| (cg, Desired::Agent(a)))
            .collect();
        let not_agents = self.discover_pods(&mut desired, &mut watch_dirs);
        self.watch_dirs = watch_dirs;
        let mut outcomes = Vec::new();

        let gone: Vec<u64> = self
            .agents
            .keys()
            .filter(|cg| !desired.contains_key(cg))
            .copied()
            .collect();
        for cg in gone {
            let Some(r) = self.agents.remove(&cg) else {
                continue;
            };
            table.remove(cg, r.slot, out)?;
            if r.pending {
                self.pending -= 1;
                let outcome = if not_agents.contains(&cg) {
                    PendingOutcome::NotAgent
                } else {
                    PendingOutcome::Gone
                };
                outcomes.push((cg, outcome));
            } else {
                out.push(bytes_of(&record(
                    kind::AGENT_REMOVED,
                    &r.agent,
                    r.slot,
                    now_ns,
                )));
            }
            self.free_slots.push(r.slot);
        }

        let mut new = Vec::new();
        for (cg, want) in desired {
            let Some(r) = self.agents.get_mut(&cg) else {
                new.push((cg, want));
                continue;
            };
            match (want, r.pending) {
                (Desired::Agent(agent), false) if agent == r.agent => {}
                (Desired::Agent(agent), was_pending) => {
                    // A new identity for the same cgroup (pod labels changed), or the pod of a
                    // pending cgroup is now known.
                    if was_pending {
                        outcomes.push((cg, PendingOutcome::Agent));
                        self.pending -= 1;
                    } else {
                        out.push(bytes_of(&record(
                            kind::AGENT_REMOVED,
                            &r.agent,
                            r.slot,
                            now_ns,
                        )));
                    }
                    out.push(bytes_of(&record(kind::AGENT_ADDED, &agent, r.slot, now_ns)));
                    r.agent = agent;
                    r.pending = false;
                }
                (Desired::Pending(_), true) => {}
                (Desired::Pending(path), false) => {
                    // Its pod vanished from the API while the cgroup lives on: no identity.
                    out.push(bytes_of(&record(
                        kind::AGENT_REMOVED,
                        &r.agent,
                        r.slot,
                        now_ns,
                    )));
                    log::warn!(
                        "{}: agent {} lost its pod while its cgroup remains; events held",
                        path.display(),
                        r.agent.id
                    );
                    r.agent = pending_agent(cg, path);
                    r.pending = true;
                    self.pending += 1;
                }
            }
        }

        let mut over = 0;
        // Slots in path order, so that a scan assigns them the same way every time; bytes
        // compare several times faster than `Path`'s component-wise order (10,000 agents at
        // start-up, PERF-ANCHORS row 8).
        new.sort_unstable_by(|a, b| path_bytes(&a.1).cmp(path_bytes(&b.1)));
        for (cg, want) in new {
            let Some(slot) = self.take_slot() else {
                over += 1;
                continue;
            };
            let (agent, pending) = match want {
                Desired::Agent(agent) => {
                    out.push(bytes_of(&record(kind::AGENT_ADDED, &agent, slot, now_ns)));
                    (agent, false)
                }
                Desired::Pending(path) => {
                    log::info!(
                        "{}: pod not known yet; monitored, events held until it is",
                        path.display()
                    );
                    (pending_agent(cg, path), true)
                }
            };
            let flags = if self.config.syscall_stream {
                SLOT_FLAG_SYSCALL_STREAM
            } else {
                0
            };
            if let Err(e) = table.insert(cg, AgentSlot { slot, flags }) {
                self.free_slots.push(slot);
                return Err(e);
            }
            self.pending += usize::from(pending);
            self.agents.insert(
                cg,
                Registered {
                    agent,
                    slot,
                    pending,
                },
            );
        }
        table.commit()?;
        if over > 0 && over != self.over_capacity {
            log::error!(
                "{over} agent cgroups are not monitored: all {} slots are in use (raise max_agents)",
                self.config.max_agents
            );
        }
        self.over_capacity = over;
        Ok(outcomes)
    }

    /// Adds the pod containers to `desired` (agents and pending); returns the containers of
    /// pods known not to be agents.
    fn discover_pods(
        &mut self,
        desired: &mut HashMap<u64, Desired>,
        watch_dirs: &mut Vec<PathBuf>,
    ) -> HashSet<u64> {
        let mut not_agents = HashSet::new();
        let (Some(pods), Some(k8s)) = (&self.pods, &self.config.kubernetes) else {
            return not_agents;
        };
        let scan = kubepods::discover(&self.mount, &k8s.cgroup_roots, pods.as_ref());
        watch_dirs.extend(scan.parents);
        for e in scan.errors {
            // Logged once per path (bounded: a runaway tree cannot grow this without limit).
            if self.logged.len() < 4096 && self.logged.insert(e.path.clone()) {
                log::warn!("not a pod cgroup layout, ignored: {e}");
            }
        }
        for pc in scan.containers {
            match pc.resolution {
                PodResolution::Agent { id, class } => {
                    desired
                        .entry(pc.cgroup_id)
                        .or_insert(Desired::Agent(DiscoveredAgent {
                            cgroup_id: pc.cgroup_id,
                            id: id.into(),
                            class: class.into(),
                            path: pc.path.into(),
                        }));
                }
                PodResolution::Unknown => {
                    desired
                        .entry(pc.cgroup_id)
                        .or_insert(Desired::Pending(pc.path));
                }
                PodResolution::NotAgent => {
                    not_agents.insert(pc.cgroup_id);
                }
            }
        }
        not_agents
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
        self.discover_with_dirs().0
    }

    /// The agent cgroups that exist now, and the directories to watch for changes to them.
    fn discover_with_dirs(&self) -> (HashMap<u64, DiscoveredAgent>, Vec<PathBuf>) {
        let mut found = HashMap::new();
        let mut dirs = Vec::new();
        for a in &self.config.agents {
            let dir = Config::cgroup_path(&self.mount, &a.cgroup);
            if let Some(parent) = dir.parent()
                && !dirs.iter().any(|d| d == parent)
            {
                dirs.push(parent.to_owned());
            }
            if let Ok(cgroup_id) = cgroup::id_of(&dir) {
                found.insert(
                    cgroup_id,
                    DiscoveredAgent {
                        cgroup_id,
                        id: a.id.as_str().into(),
                        class: a.class.as_str().into(),
                        path: self.relative(&dir).into(),
                    },
                );
            }
        }
        for parent in &self.config.watch {
            let parent = Config::cgroup_path(&self.mount, parent);
            let classes = subdirs(&parent);
            // A parent not made yet: its nearest existing ancestor tells when it is.
            if let Some(existing) = parent.ancestors().find(|d| d.is_dir())
                && !dirs.iter().any(|d| d == existing)
            {
                dirs.push(existing.to_owned());
            }
            for (class, class_dir, _) in classes {
                dirs.push(class_dir.clone());
                let class_name: Arc<str> = class.as_str().into();
                for (id, dir, cgroup_id) in subdirs(&class_dir) {
                    if id.len() >= AGENT_ID_LEN || class.len() >= AGENT_CLASS_LEN {
                        log::warn!(
                            "{}: agent id or class name too long, ignored",
                            dir.display()
                        );
                        continue;
                    }
                    let path = self.relative(&dir).into();
                    found.entry(cgroup_id).or_insert(DiscoveredAgent {
                        cgroup_id,
                        id: id.into(),
                        class: class_name.clone(),
                        path,
                    });
                }
            }
        }
        (found, dirs)
    }

    fn relative(&self, dir: &Path) -> PathBuf {
        Path::new("/").join(dir.strip_prefix(&self.mount).unwrap_or(dir))
    }
}

fn path_bytes(d: &Desired) -> &[u8] {
    match d {
        Desired::Agent(a) => a.path.as_os_str().as_encoded_bytes(),
        Desired::Pending(p) => p.as_os_str().as_encoded_bytes(),
    }
}

fn pending_agent(cgroup_id: u64, path: PathBuf) -> DiscoveredAgent {
    DiscoveredAgent {
        cgroup_id,
        id: "".into(),
        class: "".into(),
        path: path.into(),
    }
}

/// The subdirectories of `dir` with their inode numbers, from the directory listing alone: on
/// cgroupfs the inode a listing reports is the cgroup id, so thousands of agent cgroups need no
/// `stat` each (PERF-ANCHORS row 8, start-up).
fn subdirs(dir: &Path) -> Vec<(String, PathBuf, u64)> {
    use std::os::unix::fs::DirEntryExt as _;
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path(), e.ino())))
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
        assert_eq!(&*found[0].class, "payments");
        let mut out = Batch::default();
        reg.rescan(&mut Table::default(), &mut out, 1).unwrap();
        assert_eq!(out.len(), 1);
    }

    mod pods {
        use std::sync::Mutex;

        use super::*;

        const UID_A: &str = "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13";
        const ID: &str = "4a7f3c9e1b2d8e6f0a5c7b9d3e1f2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6f";

        #[derive(Default)]
        struct Pods(Mutex<HashMap<String, PodResolution>>);
        impl PodLookup for Pods {
            fn resolve(&self, uid: &str) -> PodResolution {
                self.0
                    .lock()
                    .unwrap()
                    .get(uid)
                    .cloned()
                    .unwrap_or(PodResolution::Unknown)
            }
        }

        fn set(pods: &Pods, r: PodResolution) {
            pods.0.lock().unwrap().insert(UID_A.into(), r);
        }

        fn agent(id: &str, class: &str) -> PodResolution {
            PodResolution::Agent {
                id: id.into(),
                class: class.into(),
            }
        }

        fn bodies(out: &Batch) -> Vec<Body> {
            out.iter().map(|r| decode(r).unwrap().body).collect()
        }

        /// A registry over a kubepods tree of plain directories, with one container.
        fn setup() -> (tempfile::TempDir, AgentRegistry, Arc<Pods>, u64) {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join(format!(
                "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
                UID_A.replace('-', "_")
            ));
            fs::create_dir_all(&dir).unwrap();
            let cg = cgroup::id_of(&dir).unwrap();
            let mut c = config(Path::new("none"), 8);
            c.kubernetes = Some(crate::k8s::KubernetesConfig::default());
            let pods = Arc::new(Pods::default());
            let reg = AgentRegistry::new(root.path().to_owned(), c).with_pods(pods.clone());
            (root, reg, pods, cg)
        }

        #[test]
        fn an_unknown_pod_is_pending_then_announced_when_known() {
            let (_root, mut reg, pods, cg) = setup();
            let (mut table, mut out) = (Table::default(), Batch::default());
            assert!(reg.rescan(&mut table, &mut out, 1).unwrap().is_empty());
            // Monitored in the kernel, not announced.
            assert!(table.0.contains_key(&cg) && out.is_empty());
            assert!(reg.is_pending(cg) && reg.pending() == 1 && reg.is_empty());

            set(&pods, agent("agents/a", "fraud"));
            let outcomes = reg.rescan(&mut table, &mut out, 2).unwrap();
            assert_eq!(outcomes, [(cg, PendingOutcome::Agent)]);
            assert!(
                matches!(&bodies(&out)[..], [Body::AgentAdded(a)] if a.id == "agents/a" && a.class == "fraud")
            );
            assert_eq!((reg.len(), reg.pending()), (1, 0));
        }

        #[test]
        fn label_changes_reannounce_and_a_pod_that_is_no_agent_is_dropped() {
            let (_root, mut reg, pods, cg) = setup();
            let (mut table, mut out) = (Table::default(), Batch::default());
            set(&pods, agent("agents/a", "fraud"));
            reg.rescan(&mut table, &mut out, 1).unwrap();
            out.clear();
            set(&pods, agent("agents/a", "payments"));
            reg.rescan(&mut table, &mut out, 2).unwrap();
            let b = bodies(&out);
            assert!(
                matches!(&b[..], [Body::AgentRemoved(old), Body::AgentAdded(new)]
                if old.class == "fraud" && new.class == "payments" && old.slot == new.slot),
                "{b:?}"
            );
            out.clear();
            // The class label removed: no longer an agent, no longer monitored.
            set(&pods, PodResolution::NotAgent);
            reg.rescan(&mut table, &mut out, 3).unwrap();
            assert!(matches!(&bodies(&out)[..], [Body::AgentRemoved(a)] if a.class == "payments"));
            assert!(!table.0.contains_key(&cg) && reg.is_empty());
        }

        #[test]
        fn a_deleted_pod_leaves_its_live_cgroup_pending_and_pending_outcomes_are_reported() {
            let (root, mut reg, pods, cg) = setup();
            let (mut table, mut out) = (Table::default(), Batch::default());
            set(&pods, agent("agents/a", "fraud"));
            reg.rescan(&mut table, &mut out, 1).unwrap();
            out.clear();
            pods.0.lock().unwrap().clear();
            reg.rescan(&mut table, &mut out, 2).unwrap();
            assert!(matches!(&bodies(&out)[..], [Body::AgentRemoved(_)]));
            assert!(reg.is_pending(cg) && table.0.contains_key(&cg));
            // Known as not an agent while pending: dropped, and said so.
            set(&pods, PodResolution::NotAgent);
            assert_eq!(
                reg.rescan(&mut table, &mut out, 3).unwrap(),
                [(cg, PendingOutcome::NotAgent)]
            );
            assert!(!table.0.contains_key(&cg));
            // Pending again, then the cgroup goes away.
            pods.0.lock().unwrap().clear();
            reg.rescan(&mut table, &mut out, 4).unwrap();
            assert!(reg.is_pending(cg));
            fs::remove_dir_all(root.path().join("kubepods.slice")).unwrap();
            assert_eq!(
                reg.rescan(&mut table, &mut out, 5).unwrap(),
                [(cg, PendingOutcome::Gone)]
            );
            assert!(table.0.is_empty() && reg.pending() == 0);
        }
    }
}
