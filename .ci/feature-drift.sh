#!/usr/bin/env bash
# Checks that the README's main command (`cargo run --release -- demo`, the root package alone)
# reuses every unit the README's test command (`cargo test --workspace --release`) builds:
# cargo resolves features per selected package set, so a dependency of the runtime whose
# features the training crate or the tests widen would otherwise compile twice (tract: ~10
# CPU-minutes). The feature-alignment lines in the root Cargo.toml keep the two sets equal;
# this check (unit graphs only, no compilation, ~3 s) says what to add when they drift.
# Needs a nightly toolchain (`--unit-graph` is unstable) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo +nightly build --release -p shapecast --unit-graph -Z unstable-options > "$tmp/run.json"
cargo +nightly test --workspace --release --no-run --unit-graph -Z unstable-options > "$tmp/test.json"
if ! python3 .ci/feature_drift.py "$tmp/run.json" "$tmp/test.json"; then
  echo "feature drift: add the features above to the feature-alignment lines of the root Cargo.toml" >&2
  exit 1
fi
