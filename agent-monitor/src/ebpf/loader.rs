//! Loads the embedded kernel object, sizes its maps, and attaches every program.

use std::fs::File;

use agent_monitor_common::{AgentSlot, FlowCounters, SyscallRow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Program,
        ProgramError, RawTracePoint, TracePoint,
    },
};

use super::Platform;

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

pub struct LoadOptions {
    pub max_agents: u32,
    /// The daemon's own process id: the kernel never reports it.
    pub daemon_tgid: u32,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Kernel {
    _ebpf: Ebpf,
}

/// The maps the daemon reads and writes.
pub struct KernelMaps {
    pub events: RingBuf<MapData>,
    pub monitored: HashMap<MapData, u64, AgentSlot>,
    pub syscall_counts: PerCpuArray<MapData, SyscallRow>,
    pub lost: PerCpuArray<MapData, u64>,
    pub flows: HashMap<MapData, u64, FlowCounters>,
}

impl Kernel {
    pub fn load(platform: &Platform, opts: &LoadOptions) -> anyhow::Result<(Self, KernelMaps)> {
        use anyhow::Context as _;

        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("DAEMON_TGID", &opts.daemon_tgid, true)
            .map_max_entries("MONITORED", opts.max_agents)
            .map_max_entries("SYSCALL_COUNTS", opts.max_agents)
            .map_max_entries("LOST", opts.max_agents)
            .load(OBJECT)
            .context("loading the kernel programs")?;

        // The hot path: tp_btf where the kernel allows it, raw_tp otherwise.
        let tp_btf: &mut BtfTracePoint = program(&mut ebpf, "sys_enter")?;
        let hook = match tp_btf
            .load("sys_enter", &btf)
            .and_then(|()| tp_btf.attach())
        {
            Ok(_) => "tp_btf",
            Err(e) => {
                log::warn!("tp_btf sys_enter unavailable ({e}); using raw_tp");
                let raw: &mut RawTracePoint = program(&mut ebpf, "sys_enter_raw")?;
                raw.load().context("loading sys_enter_raw")?;
                raw.attach("sys_enter")
                    .context("attaching raw_tp sys_enter")?;
                "raw_tp"
            }
        };
        log::debug!("syscall counting through {hook}");

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

        // Attached through bpf_link, which always coexists with other programs on the same cgroup
        // (another monitor, systemd); the "single" mode only means no legacy attach flags.
        let root = File::open(&platform.cgroup_v2)
            .with_context(|| format!("opening cgroup v2 root {}", platform.cgroup_v2.display()))?;
        for name in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach(&root, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to the cgroup v2 root"))?;
        }
        for (name, ty) in [
            ("skb_egress", CgroupSkbAttachType::Egress),
            ("skb_ingress", CgroupSkbAttachType::Ingress),
        ] {
            let p: &mut CgroupSkb = program(&mut ebpf, name)?;
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach(&root, ty, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to the cgroup v2 root"))?;
        }

        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing"))
        };
        let maps = KernelMaps {
            events: RingBuf::try_from(take("EVENTS")?)?,
            monitored: HashMap::try_from(take("MONITORED")?)?,
            syscall_counts: PerCpuArray::try_from(take("SYSCALL_COUNTS")?)?,
            lost: PerCpuArray::try_from(take("LOST")?)?,
            flows: HashMap::try_from(take("FLOWS")?)?,
        };
        Ok((Self { _ebpf: ebpf }, maps))
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
