#!/usr/bin/env bash
# Instructions per delivery, repeatable on a noisy machine: runs `wharf serve` under callgrind,
# posts N signed CartPanda sales over 4 keep-alive connections, stops it, and prints the
# inclusive counts of the ingest path's parts. Compare two builds by their totals / N.
#   bench/scripts/callgrind-per-delivery.sh [N] [--processing]   (needs cargo build --release)
# Without --processing the processor's loop sleeps (bench/scripts/processing-off.toml); first
# attempts still ride SQLite's projection, so the two differ only by retries and lookups.
# Note that valgrind hides SHA-NI, so HMAC (sha2::compress256) costs far more here than on the
# CPU; subtract it when comparing with the floor.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-3000}
dir=$(mktemp -d)
[ "${2:-}" = "--processing" ] || cp "$root/bench/scripts/processing-off.toml" "$dir/wharf.toml"
port=${CALLGRIND_PORT:-18555}  # set it when two runs share the machine
(cd "$dir" && WHARF_LISTEN=127.0.0.1:$port WHARF_DATABASE="sqlite://$dir/cg.db" \
  CARTPANDA_WEBHOOK_SECRET=cg-secret WHARF_ADMIN_TOKEN=x \
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
  "$root/target/release/wharf" serve > "$dir/serve.log" 2>&1) &
server=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/health" > /dev/null && break; sleep 0.5; done
python3 "$root/bench/scripts/signed-posts.py" "$port" "$n" 4
pkill -TERM -f "callgrind-out-file=$dir/callgrind.out" || true
wait "$server" || true
callgrind_annotate --inclusive=yes "$dir/callgrind.out" 2>/dev/null |
  grep -E "PROGRAM TOTALS|receive_for::|ingress::identify|new_delivery|parse_strict|compress256|project_batch|processor::attempt|Writer::run" |
  awk -v n="$n" '{gsub(",", "", $1); printf "%10.0f instr/delivery  %s\n", $1 / n, $0}'
