#!/usr/bin/env bash
# Proves shapecast-wire builds for a bare-metal Cortex-M4F (no_std, no alloc).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add thumbv7em-none-eabihf
cargo build --release -p shapecast-wire --no-default-features --target thumbv7em-none-eabihf
echo "wire-nostd: OK"
