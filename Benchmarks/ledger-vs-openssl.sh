#!/usr/bin/env bash
# Ledger benchmarks next to the physical limits measured in the same run: SHA-256 throughput
# and Ed25519 verifications from `openssl speed` on this machine.
# Usage: Benchmarks/ledger-vs-openssl.sh [entries for verify]   (SCRATCH=/path to build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=(-c release)
[ -n "${SCRATCH:-}" ] && BUILD+=(--scratch-path "$SCRATCH")
swift build "${BUILD[@]}" --product citymesh-ledger-bench >/dev/null
BIN=$(swift build "${BUILD[@]}" --show-bin-path)
echo "== machine: $(nproc) cores, $(openssl version)"
"$BIN/citymesh-ledger-bench" all --entries "${1:-1000000}"
echo "== openssl speed (the limits)"
openssl speed -seconds 2 sha256 2>/dev/null | grep -E "^sha256|^type" | tail -2
openssl speed -seconds 2 ed25519 2>/dev/null | tail -2
