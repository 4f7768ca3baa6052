#!/usr/bin/env bash
# Replication benchmark: two real `citymesh serve` processes (release build) over mutual TLS on
# loopback, one share of an air-quality dataset from hangzhou to shanghai.
#   S1  initial sync of N records (default 1,000,000): from the moment the agreement is active
#       until shanghai holds every record — batches signed by hangzhou, verified by shanghai,
#       merged durably (SQLite WAL) — in records/s
#   S2  local writes while the sync runs: latency of single-record PUTs on both nodes (every
#       100 ms through the admin API), max and p99 — the goal is never above 50 ms
#   S3  idle anti-entropy once in sync: replication bytes on the wire per share per exchange
#   S4  repair: D records changed at hangzhou (default 1,000), replication bytes until shanghai
#       has them, against the changed records' payload (their encoded states)
# Byte counts come from the nodes' own counters (/metrics, citymesh_replication_bytes_total):
# DATA frames on the wire, TLS record overhead excluded.
#   S5  erasure: D records erased at hangzhou (one `record erase`): the owner's call, the member's
#       compaction pass, the replication bytes
#   S6  (FILTER=1: the share has a row filter, `pm25 >= 0`, that every record passes) retraction:
#       D records moved out of the filter at hangzhou; time and bytes until shanghai dropped them
# Usage: Benchmarks/replication-sync.sh [records] [changed]      (SCRATCH=/path: build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
D=${2:-1000}
BUILD=(-c release)
[ -n "${SCRATCH:-}" ] && BUILD+=(--scratch-path "$SCRATCH")
WORK=$(mktemp -d /tmp/citymesh-replbench.XXXXXX)
PIDS=()
# KEEP=1 keeps the work directory (the nodes' logs: hz.log, sh.log) for a look afterwards.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"' EXIT

swift build "${BUILD[@]}" --product citymesh >/dev/null
BIN=$(swift build "${BUILD[@]}" --show-bin-path)
CM="$BIN/citymesh"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

cd "$WORK"
"$CM" federation init --out fed --name Bench >/dev/null
for c in hangzhou shanghai; do "$CM" federation issue --ca fed --city $c --out $c-cert >/dev/null; done
HL=$(port); HA=$(port); SL=$(port); SA=$(port)
"$CM" init --dir hz --city hangzhou --ca fed/ca.pem --cert hangzhou-cert/node.pem --key hangzhou-cert/node.key \
    --listen "127.0.0.1:$HL" --admin "127.0.0.1:$HA" >/dev/null
"$CM" init --dir sh --city shanghai --ca fed/ca.pem --cert shanghai-cert/node.pem --key shanghai-cert/node.key \
    --listen "127.0.0.1:$SL" --admin "127.0.0.1:$SA" --seed "hangzhou@127.0.0.1:$HL" >/dev/null
"$CM" serve --dir hz --log-level warning 2>hz.log & PIDS+=($!)
"$CM" serve --dir sh --log-level warning 2>sh.log & PIDS+=($!)
for a in $HA $SA; do for _ in $(seq 100); do curl -s "http://127.0.0.1:$a/healthz" >/dev/null && break; sleep 0.1; done; done

"$CM" dataset create --dir hz air-quality --key station --field station:string --field district:string \
    --field pm25:double --field measured_at:timestamp >/dev/null
python3 - "$N" > stations.csv <<'EOF'
import sys
n = int(sys.argv[1])
districts = ["Xihu", "Binjiang", "Gongshu", "Shangcheng", "Yuhang", "Xiaoshan"]
out = sys.stdout
out.write("station,district,pm25,measured_at\n")
for i in range(n):
    out.write(f"S-{i:07d},{districts[i % 6]},{(i * 37) % 500 / 10},2026-11-29T08:00:00Z\n")
EOF
t=$(now); "$CM" import --dir hz air-quality --csv stations.csv >/dev/null || true
echo "== hangzhou imported $N records in $(python3 -c "print(round($(now)-$t,2))") s (not part of the sync figure)"

printf 'accept:\n  - from: hangzhou\n    share: aq\n' > sh-policy.yaml
"$CM" policy apply --dir sh sh-policy.yaml >/dev/null
"$CM" dataset create --dir sh probe --key k --field k:string --field v:int >/dev/null
"$CM" dataset create --dir hz probe --key k --field k:string --field v:int >/dev/null
cat > hz-policy.yaml <<'EOF'
shares:
  - id: aq
    dataset: air-quality
    to: [shanghai]
    fields: [station, district, pm25, measured_at]
    purpose: "benchmark"
    legal_basis: "benchmark"
    valid_until: 2099-12-31
    on_revoke: keep
EOF
[ -n "${FILTER:-}" ] && printf '    where: "pm25 >= 0"\n' >> hz-policy.yaml

# S2: a write probe on each node, every 100 ms, for the whole sync.
probe() {  # admin-port token-file out
    local i=0
    while [ -f probing ]; do
        curl -s -o /dev/null -w "%{time_total} %header{server-timing} at=$(date +%s.%N)\n" -X PUT -H "Authorization: Bearer $(cat "$2")" -H 'Content-Type: application/json' \
            --data "{\"values\":{\"v\":$i}}" "http://127.0.0.1:$1/v1/datasets/$3/probe/record?key=p$((i % 50))" >> "$4"
        i=$((i + 1)); sleep 0.1
    done
}
# The disk's own figure, side by side: a process outside CityMesh appends 4 KiB to a file of its
# own on the same file system and fdatasyncs it, every 100 ms, for as long as the probes run.
# It shares nothing with the nodes but the disk, so its stalls are what any durable write here
# would meet.
disk_probe() {  # out
    python3 - "$1" <<'PY'
import os, sys, time
out = open(sys.argv[1], "w")
fd = os.open("disk-probe.dat", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
block = b"x" * 4096
while os.path.exists("probing"):
    t = time.perf_counter(); os.write(fd, block); os.fdatasync(fd)
    out.write(f"{(time.perf_counter() - t) * 1000:.3f} at={time.time():.3f}\n"); out.flush()
    time.sleep(0.1)
PY
}
# The setup's own writes (the 42 MB CSV above, the import) must not reach the disk in the middle
# of the measurement: the kernel writes dirty pages back 30 s after they were written, and a 42 MB
# writeback stalls every fsync on this disk for 100-130 ms, a node's as much as any other. Runs
# before 2026-11-30 left this in; their maxima were that writeback (docs/performance.md, run 5).
sync
# Before the sync: the same probes for 10 s with the nodes idle, as the baseline.
touch probing
probe "$HA" hz/admin.token hangzhou hz-idle-writes.txt & PIDS+=($!)
probe "$SA" sh/admin.token shanghai sh-idle-writes.txt & PIDS+=($!)
disk_probe disk-idle.txt & PIDS+=($!)
sleep 10; rm -f probing; wait "${PIDS[@]:2}" 2>/dev/null || true
touch probing
probe "$HA" hz/admin.token hangzhou hz-writes.txt & PIDS+=($!)
probe "$SA" sh/admin.token shanghai sh-writes.txt & PIDS+=($!)
disk_probe disk-sync.txt & PIDS+=($!)

count() { curl -s -H "Authorization: Bearer $(cat sh/admin.token)" "http://127.0.0.1:$SA/v1/datasets/hangzhou/air-quality" 2>/dev/null \
    | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("records", 0))
except Exception: print(0)'; }
metric() {  # admin-port token-file direction → replication bytes
    curl -s -H "Authorization: Bearer $(cat "$2")" "http://127.0.0.1:$1/metrics" \
        | awk -v d="$3" '/^citymesh_replication_bytes_total/ && $0 ~ "direction=\""d"\"" {s += $NF} END {printf "%d\n", s}'
}

"$CM" policy apply --dir hz hz-policy.yaml >/dev/null
for _ in $(seq 600); do
    "$CM" agreement list --dir hz --json | grep -q '"state" : "active"' && break; sleep 0.05
done
t0=$(now)
last=0
while true; do
    c=$(count)
    [ "$c" -ge "$N" ] && break
    if [ "$c" != "$last" ]; then last=$c; fi
    sleep 0.2
done
t1=$(now)
rm -f probing; sleep 0.3
# How each node's WAL started over during the sync (citymesh_wal_restarts_total{how}).
restarts() {
    curl -s -H "Authorization: Bearer $(cat "$2")" "http://127.0.0.1:$1/metrics" \
        | awk '/^citymesh_wal_restarts_total/ {h = ($0 ~ /paused/) ? "paused" : "forced"; n[h] += $NF}
               END {printf "%d in pauses of replication, %d forced (a RESTART holding the write lock)", n["paused"], n["forced"]}'
}
echo "S2  WAL restarts during the sync: hz $(restarts "$HA" hz/admin.token); sh $(restarts "$SA" sh/admin.token)" > restarts.txt
python3 - "$N" "$t0" "$t1" <<'EOF'
import re, sys
n, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"S1  initial sync: {n} records in {t1 - t0:.2f} s = {n / (t1 - t0):,.0f} records/s (goal ≥ 20,000)")
def stats(xs):
    xs = sorted(xs)
    return f"median {xs[len(xs)//2]:.1f} ms, p99 {xs[min(len(xs) - 1, int(len(xs) * 0.99))]:.1f} ms, max {xs[-1]:.1f} ms"
def disk(f):
    xs = [float(x.split()[0]) for x in open(f) if x.strip()]
    return f"{len(xs)} fdatasyncs, {stats(xs)}" if xs else "no samples"
print(f"S2  the disk itself (4 KiB append + fdatasync by another process): idle {disk('disk-idle.txt')}; during the sync {disk('disk-sync.txt')}")
for name, label in (("hz-idle", "hz, idle"), ("sh-idle", "sh, idle"), ("hz", "hz"), ("sh", "sh")):
    rows = [line.split() for line in open(f"{name}-writes.txt") if line.strip()]
    if not rows:
        continue
    name = label
    # The client's time (curl start to last byte), and the node's own (Server-Timing: app;dur=…,
    # then the write's phases: check, and store — the record and its ledger entry, one durable transaction).
    client = [float(r[0]) * 1000 for r in rows]
    phases = [dict((k, float(v)) for k, v in re.findall(r"([a-z]+);dur=([0-9.]+)", " ".join(r[1:]))) for r in rows]
    node = [p["app"] for p in phases if "app" in p]
    print(f"S2  local writes at {name}{'' if 'idle' in name else ' during the sync'}: {len(rows)} PUTs; in the node {stats(node)} (goal: never above 50 ms); as curl saw them {stats(client)}")
    slow = sorted((p for p in phases if "app" in p), key=lambda p: -p["app"])[:3]
    print("      slowest in the node: " + "; ".join(", ".join(f"{k} {v:.1f}" for k, v in p.items()) for p in slow))
EOF
cat restarts.txt

# S3: idle. Let anti-entropy settle, then count bytes for 20 s.
sleep 5
b0=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
sleep 20
b1=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
python3 -c "
b = $b1 - $b0
# Each node sends one summary per share per 0.5 s tick; an exchange is one summary each way.
exchanges = 20 / 0.5
print(f'S3  idle, in sync: {b} bytes in 20 s for 1 share = {b / exchanges:.0f} bytes per exchange (both directions; goal ≤ 200)')"

# S4: repair. Change D records at hangzhou; bytes until shanghai has the last one.
python3 - "$D" "$N" > changed.csv <<'EOF'
import sys
d, n = int(sys.argv[1]), int(sys.argv[2])
print("station,district,pm25,measured_at")
step = max(1, n // d)
for j in range(d):
    print(f"S-{j * step:07d},Changed,999.9,2026-11-30T08:00:00Z")
EOF
b0=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
"$CM" import --dir hz air-quality --csv changed.csv >/dev/null
lastkey=$(tail -1 changed.csv | cut -d, -f1)
for _ in $(seq 600); do
    "$CM" record get --dir sh hangzhou/air-quality "$lastkey" --json 2>/dev/null | grep -q 999.9 && break; sleep 0.1
done
sleep 1.5
b1=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
payload=$(sqlite3 hz/citymesh.db "SELECT SUM(LENGTH(state) + LENGTH(key)) FROM records WHERE key IN ($(tail -n +2 changed.csv | cut -d, -f1 | sed "s/.*/'&'/" | paste -sd,))")
python3 -c "
b, p, d = $b1 - $b0, $payload, $D
print(f'S4  repair of {d} changed records out of $N: {b} bytes on the wire; payload {p} bytes; ratio {b / p:.2f}x, overhead {b - p} bytes (goal ≤ 2x payload + 1 KiB = {2 * p + 1024})')"

# S5: erasure of D records out of N (citymesh record erase, one call): the time the owner's call
# takes (delete, ledger, its compaction pass over the whole stored history), the time until the
# member's compaction pass has run (its share.compacted entry), and the replication bytes of the
# deletions. Skipped by a build without `record erase`.
if "$CM" record erase --help >/dev/null 2>&1; then
    python3 - "$D" "$N" > erase-keys.txt <<'PY'
import sys
d, n = int(sys.argv[1]), int(sys.argv[2])
step = max(1, n // d)
for j in range(d):
    print(f"S-{j * step + 1:07d}")
PY
    b0=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
    t0=$(now)
    "$CM" record erase --dir hz air-quality --keys-from erase-keys.txt --json > erase.json
    t1=$(now)
    for _ in $(seq 1200); do
        "$CM" audit log --dir sh --kind share.compacted --json 2>/dev/null | grep -q '"records"' && break; sleep 0.1
    done
    t2=$(now)
    sleep 1.5
    b1=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
    python3 - "$D" "$N" "$t0" "$t1" "$t2" "$((b1 - b0))" <<'PY'
import json, sys
d, n, t0, t1, t2, b = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
r = json.load(open("erase.json"))
print(f"S5  erasure of {d} records out of {n}: the owner's call {t1 - t0:.2f} s ({r['compactedRecords']} stored records compacted in {r['compactedBatches']} batches); "
      f"the member compacted {t2 - t0:.2f} s after the call began; {b} replication bytes (both directions)")
PY
fi

# S6 (FILTER=1): retraction of D records out of N: hangzhou moves them out of the row filter
# (pm25 = -1); time and replication bytes until shanghai no longer holds them.
if [ -n "${FILTER:-}" ]; then
    python3 - "$D" "$N" > retract.csv <<'PY'
import sys
d, n = int(sys.argv[1]), int(sys.argv[2])
print("station,district,pm25,measured_at")
step = max(1, n // d)
for j in range(d):
    print(f"S-{j * step + 2:07d},Moved,-1,2026-12-01T08:00:00Z")
PY
    before=$(count)
    b0=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
    t0=$(now)
    "$CM" import --dir hz air-quality --csv retract.csv >/dev/null
    for _ in $(seq 1200); do [ "$(count)" -le $((before - D)) ] && break; sleep 0.1; done
    t1=$(now)
    sleep 1.5
    b1=$(( $(metric $HA hz/admin.token sent) + $(metric $SA sh/admin.token sent) ))
    python3 -c "print(f'S6  retraction of $D records out of $before (row filter): {$t1 - $t0:.2f} s from the import until shanghai dropped them; {$b1 - $b0} replication bytes (both directions); shanghai holds $(count)')"
fi
