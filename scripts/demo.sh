#!/usr/bin/env bash
# Main job on a fresh machine: set up, build, and run the daemon on its embedded default
# configuration against demo agents in their own cgroups. Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release -p agent-monitor
if [ $# -eq 0 ]; then
    # Three agents, one per class; halfway through the fraud agent turns hostile.
    set -- --duration 40s --hostile fraud
fi
exec ./target/release/agent-monitor demo "$@"
