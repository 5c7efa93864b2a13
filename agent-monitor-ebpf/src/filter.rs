//! The in-kernel filter: is the current task part of a monitored agent?

use agent_monitor_common::AgentSlot;
use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};

use crate::maps::MONITORED;

/// The daemon's own tgid, set at load: its activity is never reported.
#[unsafe(no_mangle)]
static DAEMON_TGID: u32 = 0;

/// The task context an event is attributed to.
pub struct Current {
    pub agent: AgentSlot,
    pub cgroup_id: u64,
    pub pid_tgid: u64,
}

impl Current {
    pub fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }
    pub fn tid(&self) -> u32 {
        self.pid_tgid as u32
    }
}

/// The agent the current task belongs to, or `None` for unmonitored tasks and the daemon.
#[inline(always)]
pub fn current_agent() -> Option<Current> {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out before any other map operation.
    let agent = *unsafe { MONITORED.get(&cgroup_id) }?;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a read-only global patched at load time.
    if (pid_tgid >> 32) as u32 == unsafe { core::ptr::read_volatile(&DAEMON_TGID) } {
        return None;
    }
    Some(Current {
        agent,
        cgroup_id,
        pid_tgid,
    })
}
