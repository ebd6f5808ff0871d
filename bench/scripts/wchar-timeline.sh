#!/usr/bin/env bash
# Where Wharf's writes come from, second by second, during one wharf-bench run: MB passed to
# write calls by each thread of `wharf serve` (/proc/PID/task/TID/io wchar; tokio workers and
# the main thread summed as tokio/other, sockets included) next to MB the block device wrote
# (/proc/diskstats, system-wide: run it on a quiet machine). Needs cargo build --release.
#   bench/scripts/wchar-timeline.sh [wharf-bench args…]     e.g. --seconds 10
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'kill "${sampler:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
device=$(lsblk -no pkname "$(df --output=source "${TMPDIR:-/tmp}" | tail -1)" 2>/dev/null || true)
device=${device:-$(basename "$(df --output=source "${TMPDIR:-/tmp}" | tail -1)")}
cat > "$dir/wharf" <<WRAP
#!/usr/bin/env bash
pid=\$\$
( while [ -d /proc/\$pid ]; do
    now=\$(date +%s)
    for task in /proc/\$pid/task/*; do
      echo "\$now \$(cat "\$task/comm" 2>/dev/null) \$(awk '/^wchar/ {print \$2}' "\$task/io" 2>/dev/null)"
    done
    sleep 1
  done > "$dir/threads.log" ) &
exec "$root/target/release/wharf" "\$@"
WRAP
chmod +x "$dir/wharf"
( while true; do echo "$(date +%s) $(awk -v d="$device" '$3 == d {print $10}' /proc/diskstats)"; sleep 1; done > "$dir/disk.log" ) &
sampler=$!
"$root/target/release/wharf-bench" --wharf "$dir/wharf" "$@"
python3 - "$dir/threads.log" "$dir/disk.log" <<'PY'
import collections, sys
threads = collections.defaultdict(lambda: collections.defaultdict(int))
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 3:
        continue
    name = parts[1] if parts[1].startswith("wharf-") else "tokio/other"
    threads[int(parts[0])][name] += int(parts[2])
disk = {int(a): int(b) * 512 for a, b in (line.split() for line in open(sys.argv[2]) if len(line.split()) == 2)}
seconds = sorted(threads)
names = sorted({name for second in seconds for name in threads[second]})
print("MB written per second, by thread (write calls) and by the device")
print("%4s " % "s" + " ".join("%15s" % name[:15] for name in names) + " %9s" % "device")
for before, now in zip(seconds, seconds[1:]):
    # A thread that started or ended within the second counts as 0 then.
    row = [(threads[now][n] - threads[before][n]) / 1e6
           if n in threads[now] and n in threads[before] else 0.0 for n in names]
    device = (disk.get(now, 0) - disk.get(before, 0)) / 1e6 if now in disk and before in disk else float("nan")
    print("%4d " % (now - seconds[0]) + " ".join("%15.1f" % x for x in row) + " %9.1f" % device)
PY
