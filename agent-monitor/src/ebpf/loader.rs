//! Loads the embedded kernel object, sizes its maps, and attaches every program. With a pin
//! directory, the containment maps and the enforcing cgroup links are pinned there (see
//! [`super::pin`]) so that containment outlives the daemon.

use anyhow::Context as _;
use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use agent_monitor_common::{AgentSlot, ContainPolicy, Denials, FlowCounters, SyscallRow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Program,
        ProgramError, RawTracePoint, TracePoint,
    },
};

use super::{
    Platform,
    pin::{self, PINNED_HOOKS},
};

/// The compiled kernel programs (built by build.rs from `agent-monitor-ebpf`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-monitor"));

/// Syscalls reported with arguments and result: `sys_enter_tracked` and `sys_exit_tracked` are
/// attached to both of their tracepoints.
const TRACKED: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "execve",
    "execveat",
    "accept",
    "accept4",
    "clone",
    "clone3",
    "fork",
    "vfork",
];
/// Entry only: the exit code is kept until the process exits.
const ENTER_ONLY: &[&str] = &["exit", "exit_group"];
/// Exit only: connect and bind events are started by the socket-address hooks.
const EXIT_ONLY: &[&str] = &["connect", "bind"];
/// Syscalls that exist only on newer kernels: a missing tracepoint is not an error.
const OPTIONAL: &[&str] = &["fchmodat2", "openat2", "clone3"];

const SOCK_ADDR_PROGRAMS: &[&str] = &[
    "connect4", "connect6", "bind4", "bind6", "sendmsg4", "sendmsg6",
];
const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("skb_egress", CgroupSkbAttachType::Egress),
    ("skb_ingress", CgroupSkbAttachType::Ingress),
];

/// Names of the pinned maps, also their file names in the pin directory.
pub const CONTAINMENT_MAP: &str = "CONTAINMENT";
pub const DENIALS_MAP: &str = "DENIALS";
/// Subdirectory of the pin directory holding the pinned links.
pub const LINKS_DIR: &str = "links";

pub struct LoadOptions {
    pub max_agents: u32,
    /// Size of the event ring buffer (a power of two, in bytes).
    pub ring_buffer_bytes: u32,
    /// The daemon's own process id: the kernel never reports it.
    pub daemon_tgid: u32,
    /// bpffs directory where containment is pinned (None: nothing pinned, containment ends with
    /// the daemon).
    pub pin_dir: Option<PathBuf>,
}

/// Loaded programs, attached in two steps (see [`Kernel::load_timed`]). Dropping it detaches the
/// unpinned programs; the pinned links stay while a containment is in force (see [`Pins`]).
pub struct Kernel {
    pins: Option<Pins>,
    ebpf: Ebpf,
    /// The cgroup v2 root the socket and packet hooks attach to, until they are attached.
    cgroup_root: Option<(File, u64)>,
}

/// The containment maps, for [`crate::respond::contain::Containment::open`].
pub struct ContainMaps {
    pub policies: HashMap<MapData, u64, ContainPolicy>,
    pub denials: HashMap<MapData, u64, Denials>,
    /// Where they are pinned, if they are.
    pub pin_dir: Option<PathBuf>,
}

/// Ownership of a pin directory: an exclusive `flock` on it, held for the daemon's life (the
/// kernel drops it when the process dies, SIGKILL included).
struct Pins {
    dir: PathBuf,
    _lock: File,
}

impl Pins {
    /// Takes the directory, or returns None when another live daemon holds it.
    fn acquire(dir: &Path) -> anyhow::Result<Option<Self>> {
        use std::os::fd::AsRawFd as _;

        std::fs::create_dir_all(dir.join(LINKS_DIR))
            .with_context(|| format!("creating pin directory {}", dir.display()))?;
        let lock = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            dir: dir.to_owned(),
            _lock: lock,
        }))
    }

    /// On an orderly exit with no containment in force nothing is left behind: the links are
    /// unpinned (which detaches them) and the maps unpinned. With a containment in force
    /// everything stays, enforcing, for the next daemon or `agent-monitor contain release`.
    fn release(&self) {
        let map = self.dir.join(CONTAINMENT_MAP);
        let in_force = MapData::from_pin(&map)
            .ok()
            .and_then(|m| aya::maps::Map::from_map_data(m).ok())
            .and_then(|m| HashMap::<_, u64, ContainPolicy>::try_from(m).ok())
            .map_or(0, |m| m.keys().count());
        if in_force > 0 {
            log::warn!(
                "{in_force} containment(s) in force: the hooks stay pinned in {} and keep enforcing",
                self.dir.display()
            );
            return;
        }
        for (name, _) in PINNED_HOOKS {
            let _ = std::fs::remove_file(self.dir.join(LINKS_DIR).join(name));
        }
        let _ = std::fs::remove_file(&map);
        let _ = std::fs::remove_file(self.dir.join(DENIALS_MAP));
        let _ = std::fs::remove_dir(self.dir.join(LINKS_DIR));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(pins) = &self.pins {
            pins.release();
        }
    }
}

/// Checks that a map already pinned at `path` has the layout this build expects, so that a pin
/// left by another version is refused instead of misread.
fn check_pinned(path: &Path, key: usize, value: usize) -> anyhow::Result<()> {
    let Ok(map) = MapData::from_pin(path) else {
        return Ok(());
    };
    let info = map.info()?;
    anyhow::ensure!(
        info.key_size() as usize == key && info.value_size() as usize == value,
        "the map pinned at {} has key/value sizes {}/{}, this build expects {key}/{value}: \
         remove it (after releasing what it contains) or use another pin_dir",
        path.display(),
        info.key_size(),
        info.value_size()
    );
    Ok(())
}

/// The maps the daemon reads and writes.
pub struct KernelMaps {
    /// The ring buffer, read by [`crate::source::LiveSource`]'s own reader.
    pub events: MapData,
    pub monitored: HashMap<MapData, u64, AgentSlot>,
    /// Per agent and CPU (see [`agent_monitor_common::cpu_row`]).
    pub syscall_counts: Array<MapData, SyscallRow>,
    pub lost: Array<MapData, u64>,
    /// CPUs the per-agent arrays have a row for.
    pub nr_cpus: u32,
    pub flows: HashMap<MapData, u64, FlowCounters>,
    /// Event kinds that wake the reader at once (see [`super::WakeKinds`]).
    pub wake_kinds: Array<MapData, u32>,
    /// Taken by the containment actuator (`Option` so it can be moved out).
    pub containment: Option<ContainMaps>,
}

impl Kernel {
    /// Loads every program and attaches all of them.
    pub fn load(platform: &Platform, opts: &LoadOptions) -> anyhow::Result<(Self, KernelMaps)> {
        let (mut kernel, maps) =
            Self::load_timed(platform, opts, &mut crate::startup::Phases::default())?;
        kernel.attach_cgroup_hooks()?;
        Ok((kernel, maps))
    }

    /// Loads (verifies) every program and attaches the tracepoints, timing the phases: the
    /// kernel's BTF read, the object loaded (maps created), the programs verified and the
    /// tracepoints attached. The socket and packet hooks wait for
    /// [`Kernel::attach_cgroup_hooks`]: each of their attachments makes the kernel recompute the
    /// programs of every cgroup on the host (tens of ms with 10,000 agents, PERF-ANCHORS row 8),
    /// which need not delay the first file and process events.
    pub fn load_timed(
        platform: &Platform,
        opts: &LoadOptions,
        phases: &mut crate::startup::Phases,
    ) -> anyhow::Result<(Self, KernelMaps)> {
        // aya's loader reads the kernel's BTF when it is made, and the tp_btf attachments below
        // need a copy of their own: the two reads (tens of milliseconds each, PERF-ANCHORS row 8)
        // run side by side.
        let (btf, mut loader) = std::thread::scope(|s| {
            let ours = s.spawn(Btf::from_sys_fs);
            let loader = EbpfLoader::new();
            (ours.join(), loader)
        });
        let btf = btf
            .map_err(|_| anyhow::anyhow!("reading kernel BTF panicked"))?
            .context("reading kernel BTF")?;
        let pins = match &opts.pin_dir {
            Some(dir) => {
                let pins = Pins::acquire(dir)?;
                if pins.is_none() {
                    log::warn!(
                        "pin directory {} is held by another running daemon: this one's \
                         containment is not pinned and ends with it",
                        dir.display()
                    );
                }
                pins
            }
            None => None,
        };
        if let Some(p) = &pins {
            let (map_path, denials_path) = (p.dir.join(CONTAINMENT_MAP), p.dir.join(DENIALS_MAP));
            check_pinned(&map_path, 8, size_of::<ContainPolicy>())?;
            check_pinned(&denials_path, 8, size_of::<Denials>())?;
            loader
                .map_pin_path(CONTAINMENT_MAP, map_path)
                .map_pin_path(DENIALS_MAP, denials_path);
        }
        // The per-agent arrays hold a row per agent and CPU.
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))
            .and_then(|n| Ok(u32::try_from(n)?))?;
        let rows = opts
            .max_agents
            .checked_mul(nr_cpus)
            .filter(|&r| u64::from(r) * size_of::<SyscallRow>() as u64 <= u64::from(u32::MAX))
            .with_context(|| {
                format!(
                    "max_agents {} on {nr_cpus} CPUs: the syscall counters would exceed 4 GiB",
                    opts.max_agents
                )
            })?;
        let mut ebpf = loader
            .btf(Some(&btf))
            .override_global("DAEMON_TGID", &opts.daemon_tgid, true)
            .override_global("NR_CPUS", &nr_cpus, true)
            .map_max_entries("MONITORED", opts.max_agents)
            .map_max_entries("SYSCALL_COUNTS", rows)
            .map_max_entries("LOST", rows)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .load(OBJECT)
            .context("loading the kernel programs")?;
        phases.done("btf_and_maps");

        // The hot paths: tp_btf where the kernel allows it, raw_tp otherwise.
        for tracepoint in ["sys_enter", "sched_switch"] {
            let hook = attach_btf_or_raw(&mut ebpf, &btf, tracepoint)?;
            log::debug!("{tracepoint} through {hook}");
        }

        for (name, prefix, only) in [
            ("sys_enter_tracked", "sys_enter_", ENTER_ONLY),
            ("sys_exit_tracked", "sys_exit_", EXIT_ONLY),
        ] {
            let tp: &mut TracePoint = program(&mut ebpf, name)?;
            tp.load().with_context(|| format!("loading {name}"))?;
            for syscall in TRACKED.iter().chain(only) {
                let event = format!("{prefix}{syscall}");
                match tp.attach("syscalls", &event) {
                    Ok(_) => {}
                    Err(e) if OPTIONAL.contains(syscall) => {
                        log::info!("tracepoint syscalls/{event} not available here: {e}");
                    }
                    Err(e) => return Err(e).with_context(|| format!("attaching syscalls/{event}")),
                }
            }
        }

        let exit: &mut TracePoint = program(&mut ebpf, "sched_process_exit")?;
        exit.load()?;
        exit.attach("sched", "sched_process_exit")
            .context("attaching sched_process_exit")?;

        // Verified now, so that a program the kernel refuses stops the start.
        for name in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        for name in SKB_PROGRAMS.map(|(name, _)| name) {
            let p: &mut CgroupSkb = program(&mut ebpf, name)?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let root = File::open(&platform.cgroup_v2)
            .with_context(|| format!("opening cgroup v2 root {}", platform.cgroup_v2.display()))?;
        let root_id = crate::cgroup::id_of(&platform.cgroup_v2)?;
        phases.done("programs_verified_and_tracepoints_attached");
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing"))
        };
        let maps = KernelMaps {
            events: match take("EVENTS")? {
                Map::RingBuf(data) => data,
                _ => anyhow::bail!("map EVENTS is not a ring buffer"),
            },
            monitored: HashMap::try_from(take("MONITORED")?)?,
            syscall_counts: Array::try_from(take("SYSCALL_COUNTS")?)?,
            lost: Array::try_from(take("LOST")?)?,
            nr_cpus,
            flows: HashMap::try_from(take("FLOWS")?)?,
            wake_kinds: Array::try_from(take("WAKE_KINDS")?)?,
            containment: Some(ContainMaps {
                policies: HashMap::try_from(take(CONTAINMENT_MAP)?)?,
                denials: HashMap::try_from(take(DENIALS_MAP)?)?,
                pin_dir: pins.as_ref().map(|p| p.dir.clone()),
            }),
        };
        if let Some(c) = &maps.containment {
            for (cgroup_id, policy) in c.policies.iter().flatten() {
                log::warn!(
                    "containment in force from before this start: cgroup {cgroup_id}: {}",
                    crate::respond::contain::PolicyView::from(&policy)
                );
            }
        }
        Ok((
            Self {
                pins,
                ebpf,
                cgroup_root: Some((root, root_id)),
            },
            maps,
        ))
    }
}

impl Kernel {
    /// Attaches the socket-address and packet hooks to the cgroup v2 root; true when it
    /// attached them now (later calls do nothing). Until then connects, binds and packets are
    /// neither seen nor contained. With a pin directory the enforcing hooks go through links
    /// pinned there (see [`super::pin`]), so a containment pinned by an earlier daemon
    /// enforces meanwhile.
    pub fn attach_cgroup_hooks(&mut self) -> anyhow::Result<bool> {
        let Some((root, root_id)) = self.cgroup_root.take() else {
            return Ok(false);
        };
        let (ebpf, pins) = (&mut self.ebpf, &self.pins);
        let pinned_link = |name: &str| {
            pins.as_ref().and_then(|p| {
                PINNED_HOOKS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, ty)| (p.dir.join(LINKS_DIR).join(name), *ty))
            })
        };
        // Attached through bpf_link, which always coexists with other programs on the same
        // cgroup (another monitor, systemd); the "single" mode only means no legacy attach
        // flags. Pinned links: a restarted daemon swaps their program atomically, so they
        // never stack and never lapse.
        let mut reused = 0;
        for name in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = program(ebpf, name)?;
            if let Some((path, ty)) = pinned_link(name) {
                reused += usize::from(
                    pin::attach_pinned(p.fd()?.as_fd(), root.as_fd(), root_id, ty, &path)
                        .with_context(|| format!("attaching {name} through {}", path.display()))?,
                );
            } else {
                p.attach(&root, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to the cgroup v2 root"))?;
            }
        }
        for (name, ty) in SKB_PROGRAMS {
            let p: &mut CgroupSkb = program(ebpf, name)?;
            if let Some((path, attach)) = pinned_link(name) {
                reused += usize::from(
                    pin::attach_pinned(p.fd()?.as_fd(), root.as_fd(), root_id, attach, &path)
                        .with_context(|| format!("attaching {name} through {}", path.display()))?,
                );
            } else {
                p.attach(&root, ty, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to the cgroup v2 root"))?;
            }
        }
        if let Some(p) = pins {
            log::info!(
                "containment pinned in {} ({reused} of {} pinned links taken over)",
                p.dir.display(),
                PINNED_HOOKS.len()
            );
        }
        Ok(true)
    }

    /// Whether [`Kernel::attach_cgroup_hooks`] has run.
    pub fn cgroup_hooks_attached(&self) -> bool {
        self.cgroup_root.is_none()
    }

    /// Programs the kernel reports as loaded (its program info answers); once
    /// [`Kernel::attach_cgroup_hooks`] has run, every one of them is attached.
    pub fn loaded_programs(&self) -> usize {
        self.ebpf
            .programs()
            .filter(|(_, p)| p.info().is_ok())
            .count()
    }
}

/// A program of the object by name, as its concrete type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} missing from the kernel object"))?;
    Ok(p.try_into()?)
}

/// Loads and attaches `<tracepoint>` as tp_btf, or `<tracepoint>_raw` as raw_tp where the
/// kernel refuses tp_btf; returns which.
fn attach_btf_or_raw(ebpf: &mut Ebpf, btf: &Btf, tracepoint: &str) -> anyhow::Result<&'static str> {
    let tp_btf: &mut BtfTracePoint = program(ebpf, tracepoint)?;
    match tp_btf.load(tracepoint, btf).and_then(|()| tp_btf.attach()) {
        Ok(_) => Ok("tp_btf"),
        Err(e) => {
            log::warn!("tp_btf {tracepoint} unavailable ({e}); using raw_tp");
            let name = format!("{tracepoint}_raw");
            let raw: &mut RawTracePoint = program(ebpf, &name)?;
            raw.load().with_context(|| format!("loading {name}"))?;
            raw.attach(tracepoint)
                .with_context(|| format!("attaching raw_tp {tracepoint}"))?;
            Ok("raw_tp")
        }
    }
}
