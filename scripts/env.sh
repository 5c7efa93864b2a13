# Sourced by the other scripts: build with Debian's Rust 1.96 and the project's bpf-linker, with
# rustup's toolchains off PATH (aya-build would otherwise ask rustup for a nightly).
TOOLS=${AGENT_MONITOR_TOOLS:-/opt/agent-monitor-tools}
export PATH="$TOOLS/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export RUSTC_BOOTSTRAP=aya_ebpf
unset RUSTC RUSTUP_TOOLCHAIN
