#!/usr/bin/env bash
# Set up, then run the whole test suite (unit tests and root-only kernel integration tests),
# formatting and lint checks, and the checks of the Kubernetes manifests and Helm chart.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
"$TOOLS/deploy-venv/bin/python" scripts/check-deploy.py
# Debian's cargo-fmt/cargo-clippy by path: cargo prefers subcommands in ~/.cargo/bin (rustup's).
/usr/bin/cargo-fmt fmt --all -- --check
/usr/bin/cargo-clippy clippy --workspace --exclude agent-monitor-ebpf --all-targets -- -D warnings
# The live drills (tests/drills.rs) run their agents from the release build, like real agents.
cargo build --release -p agent-monitor
cargo test --workspace --exclude agent-monitor-ebpf -- --test-threads=2
