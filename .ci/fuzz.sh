#!/usr/bin/env bash
# Runs every shapecast-wire fuzz target, then shapecast-geom's, for FUZZ_SECONDS (default
# 20) each. Exits non-zero if any target finds a crash (artifacts are left under
# crates/<crate>/fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../crates/wire"
SECS="${FUZZ_SECONDS:-20}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=(message_decode frame_reader reassembler pointcode_decode pointcode_roundtrip)
failed=()
for t in "${targets[@]}"; do
    echo "=== fuzz $t (${SECS}s)"
    # committed seed streams (every point format) join the target's working corpus
    dirs=()
    if [ -d "fuzz/seeds/$t" ]; then dirs=("fuzz/corpus/$t" "fuzz/seeds/$t"); mkdir -p "fuzz/corpus/$t"; fi
    if ! cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$SECS" -rss_limit_mb=2048; then
        failed+=("$t")
    fi
done
# shapecast-geom's PLY/XYZ reader (no tract: as cheap to build as the wire targets)
cd ../geom
geom_targets=(ply_read)
for t in "${geom_targets[@]}"; do
    echo "=== fuzz geom $t (${SECS}s)"
    dirs=()
    if [ -d "fuzz/seeds/$t" ]; then dirs=("fuzz/corpus/$t" "fuzz/seeds/$t"); mkdir -p "fuzz/corpus/$t"; fi
    if ! cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$SECS" -rss_limit_mb=2048; then
        failed+=("geom/$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all $((${#targets[@]} + ${#geom_targets[@]})) targets ran ${SECS}s without a crash"
