#!/usr/bin/env bash
# Builds the shapecast edge binary for a board. Usage:
#   cross/build.sh jetpack4   # Jetson Nano (last JetPack: 4.6, Ubuntu 18.04, glibc 2.27)
#   cross/build.sh jetpack5   # Jetson Xavier/Orin on JetPack 5 (Ubuntu 20.04, glibc 2.31)
#   cross/build.sh jetpack6   # Orin on JetPack 6 (Ubuntu 22.04, glibc 2.35)
#   cross/build.sh rpi5       # Raspberry Pi OS bookworm (glibc 2.36)
# Options (environment): FEATURES (default "camera"), PROFILE (default "board"),
#   INSTALL=1 installs what is missing (apt, pip, cargo) instead of only naming it,
#   CHECK=1 then runs cross/check.sh (the default model under qemu-aarch64 against an x86
#   build: needs qemu-user and `cargo build --release -p shapecast`),
#   BOARD_RUSTFLAGS: extra rustc flags of the board profile (default below; "" for none).
# Prints the path of the stripped binary and its size; checks the glibc symbol versions.
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:-}
case "$board" in
  jetpack4) glibc=2.27 ;;
  jetpack5) glibc=2.31 ;;
  jetpack6) glibc=2.35 ;;
  rpi5) glibc=2.36 ;;
  *) echo "usage: cross/build.sh jetpack4|jetpack5|jetpack6|rpi5" >&2; exit 2 ;;
esac
features=${FEATURES-camera}
profile=${PROFILE:-board}
triple=aarch64-unknown-linux-gnu

missing=()
command -v cargo-zigbuild >/dev/null || missing+=("cargo-zigbuild (cargo install cargo-zigbuild --locked)")
python3 -c 'import ziglang' 2>/dev/null || command -v zig >/dev/null || missing+=("zig (python3 -m pip install ziglang)")
rustup target list --installed | grep -qx $triple || missing+=("rust target (rustup target add $triple)")
command -v aarch64-linux-gnu-objdump >/dev/null || missing+=("binutils-aarch64-linux-gnu (apt-get install binutils-aarch64-linux-gnu)")
if [[ " $features " == *camera* ]]; then
  [ -f /usr/aarch64-linux-gnu/include/linux/videodev2.h ] || missing+=("aarch64 kernel headers (apt-get install libc6-dev-arm64-cross)")
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=("libclang for bindgen (apt-get install libclang-dev)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${INSTALL:-0}" = 1 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      binutils-aarch64-linux-gnu libc6-dev-arm64-cross libclang-dev
    python3 -m pip install -q ziglang
    command -v cargo-zigbuild >/dev/null || cargo install cargo-zigbuild --locked
    rustup target add $triple
  else
    echo "cross/build.sh: missing, install these (or rerun with INSTALL=1):" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 3
  fi
fi

# bindgen (v4l camera) must read the aarch64 kernel headers, not the host's.
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
# Board profile flags, for size (bench/boards/RESULTS.md): no unwind tables (panic = "abort"
# needs none; a panic still prints its message, without a backtrace) and a non-PIE
# executable (no dynamic relocations; the binary loses ASLR of its own code: set
# BOARD_RUSTFLAGS="-C force-unwind-tables=no" to keep PIE). Only target code gets them,
# not build scripts. `cargo board-jp5` (.cargo/config.toml) passes the same flags.
if [ "$profile" = board ]; then
  flags=${BOARD_RUSTFLAGS--C force-unwind-tables=no -C relocation-model=static}
  [ -n "$flags" ] && export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$flags"
fi
args=(--profile "$profile" --target "$triple.$glibc" -p shapecast)
[ -n "$features" ] && args+=(--features "$features")
cargo zigbuild "${args[@]}"

dir=$profile; [ "$profile" = dev ] && dir=debug; [ "$profile" = test ] && dir=debug
[ "$profile" = bench ] && dir=release
bin="${CARGO_TARGET_DIR:-target}/$triple/$dir/shapecast"
newest=$(aarch64-linux-gnu-objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
size=$(stat -c %s "$bin")
if [ "$profile" != board ]; then   # the board profile strips; measure the others stripped too
  tmp=$(mktemp); aarch64-linux-gnu-strip -o "$tmp" "$bin"; size=$(stat -c %s "$tmp"); rm -f "$tmp"
fi
echo "binary: $bin"
echo "size: $size bytes = $(awk "BEGIN{printf \"%.2f\", $size/1048576}") MiB stripped ($profile profile, features: ${features:-none})"
echo "newest glibc symbol: $newest (board has $glibc)"
if [ "$(printf '%s\n' "${newest#GLIBC_}" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]; then
  echo "cross/build.sh: $bin needs $newest, newer than the board's glibc $glibc" >&2
  exit 1
fi
if [ "${CHECK:-0}" = 1 ]; then
  bash cross/check.sh "$bin"
fi
