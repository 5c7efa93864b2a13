//! agent-monitor kernel programs.
//!
//! Every program first asks [`filter::current_agent`] (or, at packet hooks, the socket's cgroup)
//! whether the event belongs to a monitored agent cgroup; everything else returns after one
//! hash lookup.
#![no_std]
#![no_main]

mod contain;
mod emit;
mod filter;
mod maps;
mod net;
mod nr;
mod process;
mod syscalls;
mod tracked;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
