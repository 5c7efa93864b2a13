//! Builds the kernel programs (`agent-monitor-ebpf`) for the bpf target and embeds them.
//!
//! The toolchain is Debian's stable Rust with a prebuilt bpf `core` (see docs/BUILD.md): aya-ebpf's
//! one unstable feature is unlocked for that crate only, bpf-linker comes from the project's tools
//! directory, and rustup is kept off PATH so that aya-build uses the current toolchain instead of
//! asking rustup for a nightly with `-Z build-std`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    api_proto()?;
    // Relative relocations packed (DT_RELR, glibc 2.36+: Debian 12 and the container image):
    // the position-independent daemon's relocation table shrinks from about 590 KB, all of it
    // read at every start, to a few KB (PERF-ANCHORS rows 7 and 8).
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=AGENT_MONITOR_TOOLS");
    println!("cargo:rerun-if-changed=../agent-monitor-common/src");
    let tools = env::var_os("AGENT_MONITOR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/agent-monitor-tools"));

    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![tools.join("bin")];
    dirs.extend(env::split_paths(&path).filter(|d| !d.join("rustup").exists()));
    let path = env::join_paths(dirs).context("PATH")?;
    // SAFETY: the build script is single-threaded at this point.
    unsafe {
        env::set_var("PATH", &path);
        if env::var_os("RUSTC_BOOTSTRAP").is_none() {
            env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf");
        }
    }
    if which_in("bpf-linker", &path).is_none() {
        return Err(anyhow!(
            "bpf-linker not found in {}/bin or on PATH: run scripts/setup.sh first",
            tools.display()
        ));
    }

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../agent-monitor-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "agent-monitor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Compiles the gRPC API's protobuf with protox (pure Rust), so no system `protoc` is needed.
fn api_proto() -> anyhow::Result<()> {
    let proto = "../proto/agent_monitor/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"]).context("compiling the API protobuf")?;
    tonic_prost_build::configure()
        .compile_fds(fds)
        .context("generating the API code")
}
