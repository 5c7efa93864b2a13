#!/usr/bin/env bash
# Re-makes the shipped class models (models/<class>/) from the project's own representative agent
# workloads: records the demo agents (3 per class, 240 s), then trains each class on that trace.
# Run as root after scripts/setup.sh. The trace stays in target/ (it is large and reproducible).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release -p agent-monitor
bin=./target/release/agent-monitor
trace=target/models/train.amtrace
mkdir -p target/models
RUST_LOG=info "$bin" demo --duration "${DURATION:-240s}" --agents-per-class 3 \
    --output /dev/null --record "$trace"
for class in fraud onboarding compliance; do
    "$bin" train --class "$class" --models models "$trace"
done
