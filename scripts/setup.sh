#!/usr/bin/env bash
# Installs everything agent-monitor needs to build on Debian 12 (bookworm), skipping what is
# already there: Debian's Rust 1.96 with the prebuilt bpf core, LLVM 22, bpftool, and bpf-linker
# built against LLVM 22 into its own directory (see docs/BUILD.md for why).
# Source scripts/env.sh afterwards (the other scripts do) to build with that toolchain.
# Unless --build-only is given, it also makes the Python venv of the manifest checks
# (scripts/check-deploy.py, tools pinned in scripts/deploy-tools.txt).
set -euo pipefail

BUILD_ONLY=false
[ "${1:-}" = --build-only ] && BUILD_ONLY=true

TOOLS=${AGENT_MONITOR_TOOLS:-/opt/agent-monitor-tools}
BPF_LINKER_VERSION=0.13.0
PACKAGES=(rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev bpftool rust-web-clippy
  rustfmt-web)
$BUILD_ONLY || PACKAGES+=(python3-venv)
# Tools the live drills' attacks use (pipe-to-shell downloads with curl, recon-shell runs ps).
PACKAGES+=(curl procps)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages, and agent-monitor loads eBPF programs)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$TOOLS/bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  echo "setup.sh: building bpf-linker $BPF_LINKER_VERSION against LLVM 22 into $TOOLS"
  # Debian's cargo, and the first llvm-config it finds must be LLVM 22's.
  env PATH=/usr/lib/llvm-22/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
    --no-default-features --features llvm-22 --root "$TOOLS"
fi
if ! $BUILD_ONLY; then
  # Recreated only when the pinned list changed (its copy in the venv is the marker).
  VENV="$TOOLS/deploy-venv"
  REQS="$(dirname "$0")/deploy-tools.txt"
  if ! cmp -s "$REQS" "$VENV/deploy-tools.txt"; then
    echo "setup.sh: installing the manifest check tools into $VENV"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
    cp "$REQS" "$VENV/deploy-tools.txt"
  fi
fi
echo "setup.sh: toolchain ready ($(/usr/bin/cargo --version); $("$TOOLS/bin/bpf-linker" --version))"
