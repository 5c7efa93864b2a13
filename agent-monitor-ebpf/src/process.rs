//! Process exit. Exec and fork are tracked syscalls (see `tracked`).

use agent_monitor_common::{ExitEvent, HDR_FLAG_NO_EXIT_CODE, kind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{emit, filter, maps::EXIT_CODES, syscalls};

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let Some(cur) = filter::current_agent() else {
        return 0;
    };
    // The thread's unsent syscall ids go out before it disappears.
    syscalls::flush_stream_of(cur.tid());
    if cur.tid() != cur.tgid() {
        return 0;
    }
    let mut ev = ExitEvent {
        header: emit::header(kind::EXIT, &cur),
        ..Default::default()
    };
    let tgid = cur.tgid();
    // SAFETY: the value is copied out before the entry is removed.
    match unsafe { EXIT_CODES.get(&tgid) } {
        Some(code) => {
            ev.exit_code = *code;
            let _ = EXIT_CODES.remove(&tgid);
        }
        None => ev.header.flags |= HDR_FLAG_NO_EXIT_CODE,
    }
    emit::output(&ev, ev.header.slot, kind::EXIT);
    0
}
