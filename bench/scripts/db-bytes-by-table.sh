#!/usr/bin/env bash
# What SQLite keeps per delivery, table by table and index by index: runs wharf-bench, copies
# the journal's database (SQLite's online backup, WAL included) a few seconds into the
# full-load phase, and prints dbstat's pages of each table and index ÷ deliveries held, with
# the change feed's rows by kind. Every page written here is written twice on disk: into the
# WAL, then by a checkpoint. Needs cargo build --release and python3 (its sqlite3 has dbstat).
#   bench/scripts/db-bytes-by-table.sh [seconds into the run, default 9] [wharf-bench args…]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
after=${1:-9}
shift || true
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/wharf" <<WRAP
#!/usr/bin/env bash
db="\${WHARF_DATABASE#sqlite://}"
( sleep $after; python3 -c "
import sqlite3, sys
src = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()" "\$db" "$dir/snapshot.db.tmp" && mv "$dir/snapshot.db.tmp" "$dir/snapshot.db" ) &
exec "$root/target/release/wharf" "\$@"
WRAP
chmod +x "$dir/wharf"
"$root/target/release/wharf-bench" --wharf "$dir/wharf" "$@" > "$dir/bench.log"
[ -f "$dir/snapshot.db" ] || { echo "no snapshot was taken (did the run last $after s?)" >&2; exit 1; }
python3 - "$dir/snapshot.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
if n == 0:
    sys.exit("the snapshot holds no deliveries yet")
page = db.execute("PRAGMA page_size").fetchone()[0]
print(f"{n} deliveries in the snapshot; bytes per delivery (pages x {page} B, and the payload in them)")
total = 0
for name, pages, payload in db.execute(
        "SELECT name, COUNT(*), SUM(payload) FROM dbstat GROUP BY name ORDER BY COUNT(*) DESC"):
    total += pages * page
    if pages * page >= n:  # at least a byte per delivery
        print(f"  {name:32s} {pages * page / n:8.0f} B  (payload {payload / n:6.0f} B)")
print(f"  {'all':32s} {total / n:8.0f} B")
print("change feed rows by kind: count, mean data bytes")
for kind, count, data in db.execute(
        "SELECT kind, COUNT(*), AVG(LENGTH(data)) FROM change_feed GROUP BY kind ORDER BY kind"):
    print(f"  {kind:32s} {count:8d} {data or 0:8.0f} B")
PY
