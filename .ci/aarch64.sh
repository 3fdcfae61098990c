#!/usr/bin/env bash
# aarch64 leg of CI. ONE aarch64 build (cargo-zigbuild, glibc 2.31, release profile, camera
# feature on) serves all of it:
#   1. the test executables and the workspace binaries they spawn, built once;
#   2. `objdump -T` of those binaries: no GLIBC symbol newer than 2.31 (JetPack 5);
#   3. the workspace tests under qemu-aarch64 (the runner in .cargo/config.toml), among them
#      default_model_matches_the_x86_reference (aarch64 == x86 within 1e-4), serial tests
#      excepted (qemu-user cannot do serial-port ioctls). Tests that spawn a workspace binary
#      do so through $SHAPECAST_TEST_RUNNER (qemu-aarch64): the kernel cannot exec an aarch64
#      child by itself (no binfmt_misc on CI machines).
# The packages are listed explicitly: never the training crate (burn) on aarch64.
# The size-optimised `board` profile (fat LTO) is not built here: cross/build.sh does it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
t0=$(date +%s)
triple=aarch64-unknown-linux-gnu
glibc=2.31

# cargo-zigbuild runs zig as `python3 -m ziglang`: installed in the CI venv
source .ci/python-env.sh
python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install -q ziglang
command -v cargo-zigbuild >/dev/null || cargo install cargo-zigbuild --locked
command -v aarch64-linux-gnu-objdump >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q binutils-aarch64-linux-gnu; }
rustup target list --installed | grep -qx $triple || rustup target add $triple

packages=(-p shapecast -p shapecast-wire -p shapecast-link -p shapecast-host -p shapecast-geom -p shapecast-onnx)
args=(--release --target "$triple.$glibc" "${packages[@]}" --features "shapecast/${BOARD_FEATURES-camera}")
[ -z "${BOARD_FEATURES-camera}" ] && args=(--release --target "$triple.$glibc" "${packages[@]}")
# bindgen (v4l camera) must read the aarch64 kernel headers, not the host's. bindgen reads
# the hyphenated BINDGEN_EXTRA_CLANG_ARGS_aarch64-unknown-linux-gnu first, and cargo-zigbuild
# sets that very name (zig's include folders, appended to a value it finds): so pass it, not
# the underscore spelling of .cargo/config.toml, through `env` (bash cannot export it).
zigbuild=(env "BINDGEN_EXTRA_CLANG_ARGS_$triple=--target=aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include" cargo-zigbuild)

echo "--- build (tests and binaries, zig-linked for glibc $glibc)"
"${zigbuild[@]}" test "${args[@]}" --no-run
t1=$(date +%s)

echo "--- glibc symbol versions"
for bin in shapecast shapecast-host; do
  f="$CARGO_TARGET_DIR/$triple/release/$bin"
  newest=$(aarch64-linux-gnu-objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
  echo "$bin: newest symbol $newest, $(stat -c %s "$f") bytes (release profile, unstripped)"
  if [ "$(printf '%s\n' "${newest#GLIBC_}" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]; then
    echo "aarch64.sh: $f needs $newest, newer than JetPack 5's glibc $glibc" >&2
    exit 1
  fi
done

echo "--- tests under qemu-aarch64"
sysroot=/usr/aarch64-linux-gnu   # Debian's cross libc (libc6-arm64-cross), not the Rust triple
export QEMU_LD_PREFIX=$sysroot
# the arm64 multiarch libc, where installed, must not shadow the cross one (threads hang)
[ -e /lib/aarch64-linux-gnu/libc.so.6 ] && export QEMU_SET_ENV=LD_LIBRARY_PATH=$sysroot/lib
# The children get the prefix as flags: qemu-user does not hand QEMU_* variables to the guest.
SHAPECAST_TEST_RUNNER="qemu-aarch64 -L $sysroot"
[ -n "${QEMU_SET_ENV-}" ] && SHAPECAST_TEST_RUNNER+=" -E $QEMU_SET_ENV"
export SHAPECAST_TEST_RUNNER
echo "spawned binaries run through: $SHAPECAST_TEST_RUNNER"
skip=(--skip serial)
# shapecast-host's CLI tests spawn its binary directly unless they honour the runner variable
if ! grep -q SHAPECAST_TEST_RUNNER crates/host/tests/host.rs; then
  skip+=(--skip cli_encode_decode_roundtrip_and_errors --skip cli_listen_stops_after_frames)
fi
"${zigbuild[@]}" test "${args[@]}" --no-fail-fast -- "${skip[@]}"
t2=$(date +%s)
echo "aarch64 leg took $((t2 - t0))s (build $((t1 - t0))s, tests under qemu $((t2 - t1))s)"
