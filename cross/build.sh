#!/usr/bin/env bash
# Builds the shapecast edge binary for a board. Usage:
#   cross/build.sh jetpack4   # Jetson Nano (last JetPack: 4.6, Ubuntu 18.04, glibc 2.27)
#   cross/build.sh jetpack5   # Jetson Xavier/Orin on JetPack 5 (Ubuntu 20.04, glibc 2.31)
#   cross/build.sh jetpack6   # Orin on JetPack 6 (Ubuntu 22.04, glibc 2.35)
#   cross/build.sh rpi5       # Raspberry Pi OS bookworm (glibc 2.36)
# The jetpack5 binary also runs on JetPack 6 and on Raspberry Pi OS bookworm (glibc is
# backward compatible; it needs GLIBC_2.30 at most): jetpack6 / rpi5 only link the same
# objects against the newer glibc (the crates are compiled in the glibc 2.31 environment
# of jetpack5, whose compiled crates they share, so only the final link step reruns).
# Options (environment): FEATURES (default "camera"), PROFILE (default "board"),
#   INSTALL=1 installs what is missing (apt, pip, cargo) instead of only naming it,
#   CHECK=1 then runs cross/check.sh (the default model under qemu-aarch64 against an x86
#   build: needs qemu-user and `cargo build --release -p shapecast`),
#   BOARD_RUSTFLAGS: extra rustc flags of the board profile (default below; "" for none),
#   KEEP_EH_FRAME=1 keeps the unwind tables in the board binary (see cross/no-eh-frame.ld).
# --min-size (first or second argument): the smallest binary, NIGHTLY Rust (rustup toolchain
#   `nightly` with the rust-src component): std rebuilt with the board profile
#   (-Z build-std), panics abort at once without a message (-C panic=immediate-abort),
#   no panic locations, std's size-optimised algorithms. Own target dir (target/min-size),
#   a full build of every crate. Not the shipped binary: a panic then says nothing.
# Prints the path of the stripped binary and its size; checks the glibc symbol versions.
set -euo pipefail
cd "$(dirname "$0")/.."
min_size=0
if [ "${1:-}" = --min-size ]; then min_size=1; shift; fi
if [ "${2:-}" = --min-size ]; then min_size=1; set -- "$1"; fi
board=${1:-}
case "$board" in
  jetpack4) glibc=2.27 ;;
  jetpack5) glibc=2.31 ;;
  jetpack6) glibc=2.35 ;;
  rpi5) glibc=2.36 ;;
  *) echo "usage: cross/build.sh [--min-size] jetpack4|jetpack5|jetpack6|rpi5" >&2; exit 2 ;;
esac
features=${FEATURES-camera}
profile=${PROFILE:-board}
triple=aarch64-unknown-linux-gnu

# A zig or ziglang of your own comes first (the README's ~/.venvs/zig on PATH, a `pip --user`
# ziglang, a zig binary); otherwise the project's Python venv, where INSTALL=1 (and CI) put
# ziglang (.ci/python-env.sh: PEP 668 distributions refuse pip into their own python3), if it
# exists: it is not created here, and it never hides yours.
have_zig() { python3 -c 'import ziglang' 2>/dev/null || command -v zig >/dev/null; }
if ! have_zig; then SHAPECAST_VENV_NO_CREATE=1 source .ci/python-env.sh; fi
missing=()
command -v cargo-zigbuild >/dev/null || missing+=("cargo-zigbuild (cargo install cargo-zigbuild --locked)")
have_zig || missing+=("zig (python3 -m pip install ziglang)")
rustup target list --installed | grep -qx $triple || missing+=("rust target (rustup target add $triple)")
command -v aarch64-linux-gnu-objdump >/dev/null || missing+=("binutils-aarch64-linux-gnu (apt-get install binutils-aarch64-linux-gnu)")
if [[ " $features " == *camera* ]]; then
  [ -f /usr/aarch64-linux-gnu/include/linux/videodev2.h ] || missing+=("aarch64 kernel headers (apt-get install libc6-dev-arm64-cross)")
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=("libclang for bindgen (apt-get install libclang-dev)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${INSTALL:-0}" = 1 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      binutils-aarch64-linux-gnu libc6-dev-arm64-cross libclang-dev python3-venv
    have_zig || { source .ci/python-env.sh && python3 -m pip install -q ziglang; }
    command -v cargo-zigbuild >/dev/null || cargo install cargo-zigbuild --locked
    rustup target add $triple
  else
    echo "cross/build.sh: missing, install these (or rerun with INSTALL=1):" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 3
  fi
fi

# bindgen (v4l camera) must read the aarch64 kernel headers, not the host's. bindgen reads
# BINDGEN_EXTRA_CLANG_ARGS_<target> with the target's hyphens FIRST, and cargo-zigbuild sets
# that name itself (to zig's include folders, appended to any value it finds), so the
# underscore spelling in .cargo/config.toml is never read here: pass the hyphen one (a name
# `export` cannot set) through `env`. Debian's cross headers then come first.
zigbuild=(env "BINDGEN_EXTRA_CLANG_ARGS_$triple=--target=aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include" cargo-zigbuild)
# Board profile flags, for size (bench/boards/RESULTS.md): no unwind tables (panic = "abort"
# needs none; a panic still prints its message, without a backtrace) and a non-PIE
# executable (no dynamic relocations; the binary loses ASLR of its own code: set
# BOARD_RUSTFLAGS="-C force-unwind-tables=no" to keep PIE). Only target code gets them,
# not build scripts.
if [ "$profile" = board ]; then
  flags=${BOARD_RUSTFLAGS--C force-unwind-tables=no -C relocation-model=static}
  [ -n "$flags" ] && export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$flags"
fi
cargo_z=(-Z build-std=std,panic_abort -Z build-std-features=optimize_for_size)
if [ "$min_size" = 1 ]; then
  [ "$profile" = board ] || { echo "cross/build.sh: --min-size needs PROFILE=board" >&2; exit 2; }
  rustup run nightly rustc --version >/dev/null 2>&1 \
    || { echo "cross/build.sh: --min-size needs the nightly toolchain (rustup toolchain install nightly)" >&2; exit 3; }
  [ -d "$(rustup run nightly rustc --print sysroot)/lib/rustlib/src/rust/library" ] \
    || { echo "cross/build.sh: --min-size needs rust-src (rustup component add rust-src --toolchain nightly)" >&2; exit 3; }
  export RUSTUP_TOOLCHAIN=nightly
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/min-size"
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS-} -Z unstable-options -C panic=immediate-abort -Z location-detail=none"
else
  cargo_z=()
fi
# Crates compile against glibc 2.31 headers for every board at or above it (a build with
# another zig target reruns the build scripts and so recompiles all of tract), and the
# final link alone targets the board's glibc (below: -C linker).
compile_glibc=$glibc
[ "$(printf '%s\n' "$glibc" 2.31 | sort -V | head -n 1)" = 2.31 ] && compile_glibc=2.31
args=(--profile "$profile" --target "$triple.$compile_glibc" -p shapecast)
[ -n "$features" ] && args+=(--features "$features")
# Flags of the final link only: as rustc flags of every crate they would change all the
# crates' fingerprints and rebuild every dependency.
link=()
if [ "$profile" = board ] && [ "${KEEP_EH_FRAME:-0}" != 1 ]; then
  # no unwind tables in the binary: 1.8 MB (see cross/no-eh-frame.ld)
  link+=(-C "link-arg=-Wl,-T,$PWD/cross/no-eh-frame.ld")
fi
if [ "$compile_glibc" != "$glibc" ]; then
  wrapper="$(realpath -m "${CARGO_TARGET_DIR:-target}")/zigcc-$triple.$glibc.sh"
  mkdir -p "$(dirname "$wrapper")"
  printf '#!/bin/sh\nexec cargo-zigbuild zig cc -- -g -fno-sanitize=all -target aarch64-linux-gnu.%s "$@"\n' \
    "$glibc" > "$wrapper"
  chmod +x "$wrapper"
  link+=(-C "linker=$wrapper")
fi
if [ ${#link[@]} -gt 0 ]; then
  "${zigbuild[@]}" rustc "${cargo_z[@]}" "${args[@]}" --bin shapecast -- "${link[@]}"
else
  "${zigbuild[@]}" zigbuild "${cargo_z[@]}" "${args[@]}"
fi

dir=$profile; [ "$profile" = dev ] && dir=debug; [ "$profile" = test ] && dir=debug
[ "$profile" = bench ] && dir=release
bin="${CARGO_TARGET_DIR:-target}/$triple/$dir/shapecast"
newest=$(aarch64-linux-gnu-objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
size=$(stat -c %s "$bin")
if [ "$profile" != board ]; then   # the board profile strips; measure the others stripped too
  tmp=$(mktemp); aarch64-linux-gnu-strip -o "$tmp" "$bin"; size=$(stat -c %s "$tmp"); rm -f "$tmp"
fi
# one copy per board and feature set, so that several boards' binaries can sit side by side
copy="$(dirname "$bin")/shapecast-$board${features:+-${features//,/-}}"
[ "$min_size" = 1 ] && copy+=-min-size
cp -f "$bin" "$copy"
echo "binary: $bin (copy: $copy)"
echo "size: $size bytes = $(awk "BEGIN{printf \"%.2f\", $size/1048576}") MiB stripped ($profile profile, features: ${features:-none})"
echo "newest glibc symbol: $newest (board has $glibc)"
if [ "$(printf '%s\n' "${newest#GLIBC_}" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]; then
  echo "cross/build.sh: $bin needs $newest, newer than the board's glibc $glibc" >&2
  exit 1
fi
if [ "${CHECK:-0}" = 1 ]; then
  bash cross/check.sh "$bin"
fi
