#!/usr/bin/env bash
# Flood benchmark of the host receiver (not a test): an in-process receiver
# on loopback UDP is flooded with random datagrams at full speed for
# SECONDS while valid point-cloud frames are sent alongside; prints peak RSS
# (VmHWM) and valid frames sent vs received (all must arrive, bit-exact).
# Exit code 3 if any valid frame was lost.
#
#   bench/host/flood.sh [SECONDS] [extra flood-bench args, e.g. --psk --flooders 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
shift || true
cargo build --release -q -p shapecast-host
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, rmem_max $(cat /proc/sys/net/core/rmem_max)"
exec ./target/release/shapecast-host flood-bench --seconds "$secs" "$@"
