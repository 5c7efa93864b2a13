//! Start-up feature probe: everything the kernel programs need, checked before loading, with an
//! error that names what is missing. Mounts bpffs and tracefs when they are absent (both are
//! virtual file systems a fresh node may simply not have mounted yet).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapType,
    programs::{LsmAttachType, ProgramType},
    sys::{is_map_supported, is_program_supported},
};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::statfs,
};

use crate::cgroup;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const BPFFS: &str = "/sys/fs/bpf";
const TRACEFS: &str = "/sys/kernel/tracing";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("kernel BTF is missing ({BTF_PATH}): the kernel needs CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error("bpffs is not mounted at {BPFFS} and mounting it failed: {0}")]
    NoBpffs(String),
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    NoTracefs(String),
    #[error(transparent)]
    NoCgroupV2(#[from] cgroup::CgroupError),
    #[error("the kernel refuses {what} ({detail})")]
    Unsupported { what: &'static str, detail: String },
}

/// Where the kernel interfaces are.
#[derive(Clone, Debug)]
pub struct Platform {
    pub cgroup_v2: PathBuf,
    pub bpffs: PathBuf,
}

/// What the probe found, for `agent-monitor probe` and the start-up log.
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    pub lines: Vec<(String, Result<String, String>)>,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (what, result) in &self.lines {
            match result {
                Ok(detail) => writeln!(f, "ok       {what}: {detail}")?,
                Err(detail) => writeln!(f, "MISSING  {what}: {detail}")?,
            }
        }
        Ok(())
    }
}

impl Platform {
    /// Checks (and where possible prepares) everything the programs need.
    pub fn probe() -> Result<(Self, ProbeReport), ProbeError> {
        let mut report = ProbeReport::default();
        let mut note = |what: &str, r: Result<String, String>| report.lines.push((what.into(), r));

        if !Path::new(BTF_PATH).exists() {
            note("BTF", Err(BTF_PATH.into()));
            return Err(ProbeError::NoBtf);
        }
        note("BTF", Ok(BTF_PATH.into()));

        let bpffs = ensure_mounted(BPFFS, "bpf", BPF_FS_MAGIC).map_err(ProbeError::NoBpffs)?;
        note("bpffs", Ok(bpffs.clone()));
        let tracefs =
            ensure_mounted(TRACEFS, "tracefs", TRACEFS_MAGIC).map_err(ProbeError::NoTracefs)?;
        note("tracefs", Ok(tracefs));

        let cgroup_v2 = cgroup::v2_mount()?;
        note("cgroup v2", Ok(cgroup_v2.display().to_string()));

        let programs = [
            (ProgramType::RawTracePoint, "raw tracepoint programs"),
            (ProgramType::TracePoint, "tracepoint programs"),
            (
                ProgramType::CgroupSockAddr,
                "cgroup socket-address programs",
            ),
            (ProgramType::CgroupSkb, "cgroup skb programs"),
        ];
        for (ty, what) in programs {
            match is_program_supported(ty) {
                Ok(true) => note(what, Ok("supported".into())),
                Ok(false) => {
                    note(what, Err("not supported".into()));
                    return Err(ProbeError::Unsupported {
                        what,
                        detail: "program type not supported".into(),
                    });
                }
                Err(e) => {
                    note(what, Err(e.to_string()));
                    return Err(ProbeError::Unsupported {
                        what,
                        detail: e.to_string(),
                    });
                }
            }
        }
        match is_map_supported(MapType::RingBuf) {
            Ok(true) => note("ring buffer maps", Ok("supported".into())),
            other => {
                let detail = format!("{other:?}");
                note("ring buffer maps", Err(detail.clone()));
                return Err(ProbeError::Unsupported {
                    what: "ring buffer maps",
                    detail,
                });
            }
        }
        Ok((
            Self {
                cgroup_v2,
                bpffs: PathBuf::from(BPFFS),
            },
            report,
        ))
    }
}

impl ProbeReport {
    /// Adds the hooks the daemon does not need, for operators (`agent-monitor probe`). Not part
    /// of the daemon's start: probing BPF LSM parses the kernel's whole BTF once more (tens of
    /// milliseconds and megabytes, PERF-ANCHORS rows 7 and 8) for a line of report.
    pub fn probe_optional(&mut self) {
        let lsm = is_program_supported(ProgramType::Lsm(LsmAttachType::Mac))
            .map_err(|e| e.to_string())
            .and_then(|ok| {
                if ok {
                    Ok("supported".into())
                } else {
                    Err("refused by this kernel".into())
                }
            });
        self.lines.push((
            "BPF LSM (optional; enforcement uses cgroup hooks)".into(),
            lsm,
        ));
    }
}

fn ensure_mounted(dir: &str, fstype: &str, magic: i64) -> Result<String, String> {
    let is_mounted = |d: &str| statfs(d).is_ok_and(|s| s.filesystem_type().0 == magic);
    if is_mounted(dir) {
        return Ok(format!("{dir} (mounted)"));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    mount(
        Some(fstype),
        dir,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount -t {fstype} {fstype} {dir}: {e}"))?;
    log::info!("mounted {fstype} at {dir}");
    Ok(format!("{dir} (mounted by agent-monitor)"))
}
