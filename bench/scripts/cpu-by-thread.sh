#!/usr/bin/env bash
# Where Wharf's CPU goes at full load, by thread and by symbol: samples the `wharf serve`
# that wharf-bench starts (software clock: this machine has no hardware counters).
#   bench/scripts/cpu-by-thread.sh       # needs `cargo build --release` and linux-perf
set -euo pipefail
cd "$(dirname "$0")/../.."
./target/release/wharf-bench --seconds 10 --warmup-seconds 1 > /tmp/wharf-bench-cpu.log 2>&1 &
bench=$!
# The floor phase runs first (about 11 s); then wharf serve takes the full load.
sleep 14
pid=$(pgrep -f "wharf serve" | head -1)
perf record -q -e cpu-clock -F 999 -g -p "$pid" -o /tmp/wharf-perf.data -- sleep 6
perf report -i /tmp/wharf-perf.data --no-children --sort comm --stdio -g none | grep -E '^ +[0-9]'
perf report -i /tmp/wharf-perf.data --no-children --sort sym --stdio -g none | grep -E '^ +[0-9]' | head -25
wait "$bench"
