#!/usr/bin/env bash
# Which thread of `wharf serve` /proc's write_bytes charges, against what the block device
# really wrote, over N signed CartPanda sales (needs cargo build --release). On kernels that
# charge a whole large folio each time a synced page is dirtied again, write_bytes overstates
# disk traffic many times; the device's sector count is the real figure (system-wide, so run
# it on a quiet machine).
#   bench/scripts/write-bytes-by-thread.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-4000}
dir=$(mktemp -d)
port=18556
WHARF_LISTEN=127.0.0.1:$port WHARF_DATABASE="sqlite://$dir/w.db" CARTPANDA_WEBHOOK_SECRET=cg-secret \
  WHARF_ADMIN_TOKEN=x RUST_LOG=warn "$root/target/release/wharf" serve > "$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/health" > /dev/null && break; sleep 0.2; done
device=$(lsblk -no pkname "$(df --output=source "$dir" | tail -1)" 2>/dev/null || true)
device=${device:-$(basename "$(df --output=source "$dir" | tail -1)")}
by_thread() {
  for task in /proc/$server/task/*; do
    echo "$(cat "$task/comm" | tr ' ' '_') $(awk '/^write_bytes/ {print $2}' "$task/io")"
  done | awk '{sum[$1] += $2} END {for (name in sum) print name, sum[name]}' | sort
}
sectors() { awk -v d="$device" '$3 == d { print $10 }' /proc/diskstats; }
by_thread > "$dir/before"; s1=$(sectors)
python3 "$root/bench/scripts/signed-posts.py" "$port" "$n" 4
sleep 2
by_thread > "$dir/after"; s2=$(sectors)
join "$dir/before" "$dir/after" |
  awk -v n="$n" '$3 > $2 { printf "%-18s write_bytes %12d B  %9.0f B/delivery\n", $1, $3 - $2, ($3 - $2) / n }'
echo "device $device: $(( (s2 - s1) * 512 )) B written, $(( (s2 - s1) * 512 / n )) B/delivery"
