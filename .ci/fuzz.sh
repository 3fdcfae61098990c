#!/usr/bin/env bash
# Runs every shapecast-wire fuzz target, then shapecast-geom's, for FUZZ_SECONDS (default
# 20) each. Exits non-zero if any target finds a crash (artifacts are left under
# crates/<crate>/fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../crates"
SECS="${FUZZ_SECONDS:-20}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
failed=()
ran=0
# fuzz CRATE TARGET...: runs each target of crates/CRATE/fuzz
fuzz() {
    local crate="$1"; shift
    for t in "$@"; do
        echo "=== fuzz $crate/$t (${SECS}s)"
        # committed seed streams/files join the target's working corpus
        local dirs=()
        if [ -d "$crate/fuzz/seeds/$t" ]; then
            dirs=("fuzz/corpus/$t" "fuzz/seeds/$t"); mkdir -p "$crate/fuzz/corpus/$t"
        fi
        if ! (cd "$crate" && cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$SECS" -rss_limit_mb=2048); then
            failed+=("$crate/$t")
        fi
        ran=$((ran + 1))
    done
}
fuzz wire message_decode frame_reader reassembler pointcode_decode pointcode_roundtrip pointcode_order
# shapecast-geom's PLY/XYZ reader (no tract: as cheap to build as the wire targets)
fuzz geom ply_read
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all $ran targets ran ${SECS}s without a crash"
