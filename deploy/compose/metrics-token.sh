#!/bin/sh
# Creates an auditor (read-only) token for Prometheus on one node and writes it to
# $TOKENS_DIR/$CITY.token, readable by the Prometheus container's user (nobody).
# Run by the token-<city> services of compose.yaml's `monitoring` profile; they share the
# node's network namespace, so the admin address 0.0.0.0:7101 in its citymesh.yaml reaches it.
# Safe to run again: an existing token file is kept.
set -eu

: "${CITY:?set CITY}"
: "${TOKENS_DIR:=/tokens}"
: "${NODE_DIR:=/var/lib/citymesh/node}"
: "${READER_UID:=65534}"

out="$TOKENS_DIR/$CITY.token"
if [ -s "$out" ]; then
    echo "$CITY: token kept ($out)"
    exit 0
fi
umask 077
citymesh token create --dir "$NODE_DIR" --role auditor --name "prometheus (compose)" > "$out.tmp"
chown "$READER_UID" "$out.tmp"
chmod 0400 "$out.tmp"
mv "$out.tmp" "$out"
echo "$CITY: auditor token written to $out"
