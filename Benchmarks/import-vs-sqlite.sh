#!/usr/bin/env bash
# Import benchmark: 1,000,000 CSV rows of the air-quality shape.
#   A: sqlite3's own `.import` into a plain table (no key, no index, no metadata): the reference.
#   F: the floor: the same rows copied, in SQL inside sqlite3, into CityMesh's table layout
#      (seq rowid, unique (dataset, key) index, a state blob of CityMesh's average size), with
#      CityMesh's settings (16 KiB pages, WAL).
#      No parsing, no HTTP, no CRDT work: what SQLite alone needs for that layout.
#   B: `citymesh import` through a running node: HTTP upload, streaming parse, typing, CRDT cells
#      (value + HLC + city per cell), primary key, sequence index, 5,000-row transactions.
# Both run side by side in one invocation, each ROUNDS times; the best and median are reported.
# Usage: Benchmarks/import-vs-sqlite.sh [rows] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${2:-3}
WORK=$(mktemp -d /tmp/citymesh-bench.XXXXXX)
trap 'kill $SERVE_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
SERVE_PID=

swift build -c release --product citymesh >/dev/null
BIN=$(swift build -c release --show-bin-path)/citymesh

python3 - "$WORK/stations.csv" "$ROWS" <<'PY'
import sys, random
path, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
districts = ["Xihu", "Binjiang", "Gongshu", "Shangcheng", "Xiaoshan", "Yuhang", "Linping", "Qiantang", "Fuyang", "Lin'an"]
with open(path, "w") as f:
    f.write("station,district,pm25,measured_at\n")
    for i in range(n):
        f.write(f"S-{i:07d},{districts[i % 10]},{random.randint(0, 3000) / 10},2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z\n")
PY
SIZE=$(du -m "$WORK/stations.csv" | cut -f1)
echo "rows: $ROWS  file: ${SIZE} MiB  rounds: $ROUNDS  machine: $(nproc) cores, sqlite3 $(sqlite3 --version | cut -d' ' -f1)"

now() { date +%s.%N; }
sqlite_times=()
floor_times=()
citymesh_times=()

cd "$WORK"
"$BIN" federation init --out fed --name "Bench" >/dev/null
"$BIN" federation issue --ca fed --city hangzhou --host localhost --out hz-cert >/dev/null
ADMIN_PORT=$((20000 + RANDOM % 20000))

for round in $(seq 1 "$ROUNDS"); do
    rm -f plain.db
    t0=$(now)
    sqlite3 plain.db ".import --csv stations.csv plain"
    t1=$(now)
    sqlite_times+=("$(echo "$t1 - $t0" | bc)")

    rm -f floor.db*
    t0=$(now)
    sqlite3 floor.db >/dev/null <<'SQL'
PRAGMA page_size=16384;
ATTACH 'plain.db' AS p;
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE records (seq INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, key TEXT NOT NULL, live INTEGER NOT NULL, state BLOB NOT NULL);
CREATE UNIQUE INDEX records_by_key ON records (dataset, key);
INSERT INTO records (seq, dataset, key, live, state) SELECT rowid, 1, station, 1, randomblob(56) FROM p.plain;
SQL
    t1=$(now)
    floor_times+=("$(echo "$t1 - $t0" | bc)")
    rm -f floor.db*

    rm -rf hz
    "$BIN" init --dir hz --city hangzhou --ca fed/ca.pem --cert hz-cert/node.pem --key hz-cert/node.key \
        --listen 127.0.0.1:$((ADMIN_PORT + 1)) --admin 127.0.0.1:$ADMIN_PORT >/dev/null
    "$BIN" serve --dir hz 2>serve.log &
    SERVE_PID=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null && break; sleep 0.1; done
    "$BIN" dataset create --dir hz air-quality --key station --field station:string --field district:string \
        --field pm25:double --field measured_at:timestamp >/dev/null
    t0=$(now)
    "$BIN" import --dir hz air-quality --csv stations.csv > import.out
    t1=$(now)
    citymesh_times+=("$(echo "$t1 - $t0" | bc)")
    grep -q "imported $(printf "%'d" "$ROWS" 2>/dev/null || echo "$ROWS") rows\|imported .* rows" import.out
    kill -TERM $SERVE_PID; wait $SERVE_PID || true
    SERVE_PID=
    echo "round $round: sqlite3 .import ${sqlite_times[-1]} s   floor ${floor_times[-1]} s   citymesh import ${citymesh_times[-1]} s   ($(head -c 80 import.out))"
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[1], a[int((NR+1)/2)]}'; }
read -r s_best s_med <<<"$(stats "${sqlite_times[@]}")"
read -r c_best c_med <<<"$(stats "${citymesh_times[@]}")"
read -r f_best f_med <<<"$(stats "${floor_times[@]}")"
echo
echo "| | best (s) | median (s) | rows/s (best) |"
echo "|---|---|---|---|"
echo "| sqlite3 .import (plain table) | $s_best | $s_med | $(echo "$ROWS / $s_best" | bc) |"
echo "| floor: same rows into CityMesh's layout, in SQL | $f_best | $f_med | $(echo "$ROWS / $f_best" | bc) |"
echo "| citymesh import (CRDT, via node) | $c_best | $c_med | $(echo "$ROWS / $c_best" | bc) |"
echo "| ratio citymesh / sqlite3 | $(echo "scale=2; $c_best / $s_best" | bc) | $(echo "scale=2; $c_med / $s_med" | bc) | |"
