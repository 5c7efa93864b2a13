#!/usr/bin/env bash
# Main job on a fresh machine: set up, build, and run the daemon on its embedded default
# configuration against demo agents in their own cgroups. Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release -p agent-monitor
exec ./target/release/agent-monitor demo "$@"
