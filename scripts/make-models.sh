#!/usr/bin/env bash
# Re-makes the shipped class models (models/<class>/) from the project's own representative agent
# workloads. Run as root after scripts/setup.sh. The traces stay in target/models/ (large and
# reproducible); their digests are in each meta.yaml.
#
# Several recordings, so that a model has seen the variety a live agent shows:
# - a long run with release-built agents (steady state, 3 agents per class);
# - a run with debug-built agents (Rust std in debug checks each fd with fcntl before closing it:
#   a real agent may be either, and the syscall-sequence model must know both);
# - short runs, whose agents start at different moments of a window, so that the first steady
#   window after start-up is seen at many phases (a drill or a new pod is scored from there).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release -p agent-monitor
cargo build -p agent-monitor
target=$(realpath "${CARGO_TARGET_DIR:-target}")
bin=$target/release/agent-monitor
debug_bin=$target/debug/agent-monitor
out=$target/models
mkdir -p "$out"
# The recordings run the daemon without rules, models or on-line learning, so that nothing is
# contained while they record (a contained agent's failing connects would be learned as normal),
# and without the API socket and metrics port (they may be taken); everything else as shipped.
python3 - config/default.yaml "$out/record.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
for old, new in [
    ("min_learning_windows: 30", "min_learning_windows: 1000000"),
    ("models_dir: models", "models_dir: /nonexistent/models"),
    ("rules_dir: rules", "rules_dir: /nonexistent/rules"),
    ('  listen: "127.0.0.1:9750"', "  listen: null"),
]:
    assert old in text, old
    text = text.replace(old, new)
start, end = text.index("\napi:\n"), text.index("\n# The daemon's own observability")
open(sys.argv[2], "w").write(text[:start] + "\napi: null\n" + text[end:])
PY
# The daemon's working directory holds no models/ or rules/ either.
cd "$out"
record() { # name duration agent-binary
    RUST_LOG=info "$bin" demo --config record.yaml --duration "$2" \
        --agents-per-class "${AGENTS:-5}" --agent-bin "$3" --output /dev/null --record "$1.amtrace"
}
record train-release "${DURATION:-240s}" "$bin"
record train-debug "${DEBUG_DURATION:-150s}" "$debug_bin"
for i in 1 2 3 4; do
    record "train-short-$i" "${SHORT_DURATION:-35s}" "$bin"
    # A pause of a few seconds moves the next run's start to another phase of the window.
    sleep "$((i + 2))"
done
cd - >/dev/null
for class in fraud onboarding compliance; do
    "$bin" train --class "$class" --models models "$out"/train-release.amtrace \
        "$out"/train-debug.amtrace "$out"/train-short-{1,2,3,4}.amtrace
done
