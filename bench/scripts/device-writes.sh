#!/usr/bin/env bash
# Real bytes written to the block device per acked delivery during one wharf-bench run
# (/proc/PID/io write_bytes counts every re-dirtied page and overstates it many times).
#   bench/scripts/device-writes.sh [wharf-bench args…]      # needs `cargo build --release`
set -euo pipefail
cd "$(dirname "$0")/../.."
device="${WHARF_BENCH_DEVICE:-$(lsblk -no pkname "$(df --output=source /tmp | tail -1)" 2>/dev/null || true)}"
device="${device:-$(basename "$(df --output=source /tmp | tail -1)")}"
sectors() { awk -v d="$device" '$3 == d { print $10 }' /proc/diskstats; }
before=$(sectors)
./target/release/wharf-bench "$@" | tee /tmp/wharf-bench-device-writes.log
after=$(sectors)
acked=$(grep -oE 'processing: [0-9]+ acked' /tmp/wharf-bench-device-writes.log | grep -oE '[0-9]+' | head -1)
bytes=$(( (after - before) * 512 ))
echo "device $device: $((bytes / 1048576)) MiB written over the run (floor included, it writes nothing); ${acked} deliveries acked; $((bytes / acked)) B per acked delivery"
