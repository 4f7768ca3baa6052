#!/usr/bin/env bash
# Peer transport benchmark, CityMesh next to OpenSSL on the same machine in the same run.
#   Handshakes (mutual TLS 1.3, Ed25519 certificates of one federation CA):
#     O1  openssl s_time -new  → openssl s_server -Verify 1          OpenSSL on both ends
#     C1  openssl s_time -new  → citymesh serve (the real daemon)    same client, CityMesh listener
#     C2  citymesh-net-bench: CityMesh listener + a NIO client that also exchanges HELLOs
#   Throughput over one loopback connection:
#     O2  OpenSSL's own TLS 1.3 pipe (Python's ssl module over OpenSSL, two processes)
#     C3  raw TLS over swift-nio-ssl, 64 KiB writes (no framing)      the stack CityMesh uses
#     C4  CityMesh DATA frames of 64 KiB through the whole peer pipeline, delivered
#     O3  openssl speed -evp aes-256-gcm (the TLS 1.3 cipher negotiated): the cipher's ceiling
# Usage: Benchmarks/net-vs-openssl.sh [MiB]     (SCRATCH=/path to build elsewhere than .build)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-512}
BUILD=(-c release)
[ -n "${SCRATCH:-}" ] && BUILD+=(--scratch-path "$SCRATCH")
WORK=$(mktemp -d /tmp/citymesh-netbench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

swift build "${BUILD[@]}" --product citymesh >/dev/null
swift build "${BUILD[@]}" --product citymesh-net-bench >/dev/null
BIN=$(swift build "${BUILD[@]}" --show-bin-path)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== machine: $(nproc) cores, $(openssl version)"
echo "== handshakes"
"$BIN/citymesh-net-bench" handshakes --pki "$WORK/pki" | sed 's/^/C2  /'
P=$(port)
openssl s_server -accept "127.0.0.1:$P" -tls1_3 -cert "$WORK/pki/server.pem" -key "$WORK/pki/server.key" \
    -CAfile "$WORK/pki/ca.pem" -Verify 1 -naccept 100000 -quiet >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
openssl s_time -connect "127.0.0.1:$P" -new -tls1_3 -time 5 -cert "$WORK/pki/client.pem" -key "$WORK/pki/client.key" \
    -CAfile "$WORK/pki/ca.pem" 2>/dev/null | grep -E "connections/user sec|connections in" | sed 's/^/O1  openssl s_server: /'

cd "$WORK"
"$BIN/citymesh" federation init --out fed --name Bench >/dev/null
"$BIN/citymesh" federation issue --ca fed --city hangzhou --out hz-cert >/dev/null
"$BIN/citymesh" federation issue --ca fed --city shanghai --out sh-cert >/dev/null
L=$(port); A=$(port)
"$BIN/citymesh" init --dir hz --city hangzhou --ca fed/ca.pem --cert hz-cert/node.pem --key hz-cert/node.key \
    --listen "127.0.0.1:$L" --admin "127.0.0.1:$A" >/dev/null
"$BIN/citymesh" serve --dir hz --log-level critical 2>/dev/null &
PIDS+=($!)
for _ in $(seq 50); do curl -s "http://127.0.0.1:$A/healthz" >/dev/null && break; sleep 0.1; done
openssl s_time -connect "127.0.0.1:$L" -new -tls1_3 -time 5 -cert sh-cert/node.pem -key sh-cert/node.key \
    -CAfile fed/ca.pem 2>/dev/null | grep -E "connections/user sec|connections in" | sed 's/^/C1  citymesh serve:    /'
cd - >/dev/null

echo "== throughput, one loopback connection"
python3 Benchmarks/openssl-tls-pipe.py "$WORK/pki" "$MIB" | sed 's/^/O2  /'
"$BIN/citymesh-net-bench" throughput --mib "$MIB" | sed 's/^/C3-4  /'
openssl speed -evp aes-256-gcm -seconds 2 2>/dev/null | tail -1 | awk '{printf "O3  openssl speed aes-256-gcm, 16 KiB blocks %8.0f MB/s\n", $(NF-1)/1000/1.048576}'
