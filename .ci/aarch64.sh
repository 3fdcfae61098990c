#!/usr/bin/env bash
# aarch64 leg of CI: the board binary for JetPack 5 (glibc 2.31) with the camera feature,
# its glibc symbol check, then the workspace tests (all but the training crate, which runs
# on workstations, and serial tests: qemu-user cannot do serial ioctls) under qemu-aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
t0=$(date +%s)

python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install -q ziglang
command -v cargo-zigbuild >/dev/null || cargo install cargo-zigbuild --locked
command -v aarch64-linux-gnu-objdump >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q binutils-aarch64-linux-gnu; }

# Same profile as the tests below, so the aarch64 dependency graph is compiled once.
PROFILE=release FEATURES="${BOARD_FEATURES-camera}" bash cross/build.sh jetpack5

# Tests: linked by Debian's cross gcc, run by the qemu runner in .cargo/config.toml.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# Skipped under qemu only (they pass natively): the tests that spawn a workspace binary
# (CARGO_BIN_EXE_shapecast, CARGO_BIN_EXE_shapecast-host) as a child process exit 127, because the child aarch64 ELF is
# exec'd by the x86 kernel, not by qemu-user (no binfmt_misc registration on CI machines).
cargo test --release --target aarch64-unknown-linux-gnu --workspace --exclude shapecast-train \
  --no-fail-fast -- --skip serial \
  --skip cli_run_from_config_over_udp_with_a_final_stats_line \
  --skip cli_info_prints_the_contract_or_refuses_with_exit_code_3 \
  --skip cli_encode_decode_roundtrip_and_errors --skip cli_listen_stops_after_frames
echo "aarch64 leg took $(( $(date +%s) - t0 ))s"
