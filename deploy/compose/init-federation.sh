#!/bin/sh
# One-shot set-up for the compose federation (the `init` service in ../compose.yaml).
#
#   1. a federation CA in $FEDERATION_DIR (kept in its own volume, mounted by this service only);
#   2. a certificate per city, issued by that CA;
#   3. `citymesh init` for each city into $NODES_ROOT/<city>/node, a volume the city's
#      `serve` container mounts at /var/lib/citymesh (so its node directory is
#      /var/lib/citymesh/node there);
#   4. hand the node directories to the image's citymesh user.
#
# Each city seeds the cities listed before it in $CITIES, so hangzhou (first) is every node's
# seed and every pair of cities has one side that dials the other.
#
# Safe to run again: a CA, certificate or node that exists is kept as it is.
# Runs as root in the container (fresh named volumes are owned by root).
set -eu

: "${CITIES:=hangzhou shanghai suzhou}"
: "${FEDERATION_NAME:=Yangtze Delta}"
: "${FEDERATION_DIR:=/federation}"
: "${NODES_ROOT:=/nodes}"
: "${CRL_PATH:=/etc/citymesh/crl/crl.pem}"
: "${PEER_PORT:=7001}"
: "${ADMIN_PORT:=7101}"
: "${NODE_UID:=10001}"
: "${NODE_GID:=10001}"
: "${CITYMESH:=citymesh}"

umask 077

if [ -f "$FEDERATION_DIR/ca.pem" ]; then
    echo "federation CA: kept ($FEDERATION_DIR/ca.pem)"
else
    "$CITYMESH" federation init --out "$FEDERATION_DIR" --name "$FEDERATION_NAME"
fi
mkdir -p "$(dirname "$CRL_PATH")"
chmod 0755 "$(dirname "$CRL_PATH")"

before=""
for city in $CITIES; do
    node="$NODES_ROOT/$city/node"
    certs="$FEDERATION_DIR/issued/$city"
    seeds=""
    for other in $before; do
        seeds="$seeds --seed $other@$other:$PEER_PORT"
    done
    before="$before $city"

    if [ -f "$node/citymesh.yaml" ]; then
        echo "$city: node kept ($node)"
        continue
    fi
    if [ ! -f "$certs/node.pem" ]; then
        # The container's service name is the host other cities dial; it goes in the SAN too
        # (peers identify each other by the city URI, not the host name).
        "$CITYMESH" federation issue --ca "$FEDERATION_DIR" --city "$city" --host "$city" --out "$certs"
    fi
    mkdir -p "$NODES_ROOT/$city"
    # Listen on every interface of the container; the admin port is published on the host's
    # loopback only (compose.yaml), and other containers reach it for Prometheus.
    # shellcheck disable=SC2086 # $seeds is a list of options
    "$CITYMESH" init --dir "$node" --city "$city" \
        --ca "$FEDERATION_DIR/ca.pem" --cert "$certs/node.pem" --key "$certs/node.key" \
        --listen "0.0.0.0:$PEER_PORT" --admin "0.0.0.0:$ADMIN_PORT" \
        --advertise "$city:$PEER_PORT" --crl "$CRL_PATH" $seeds
    # (Without --advertise the node would announce 0.0.0.0:PORT in HELLO and peers would
    # redial themselves.)
    chown -R "$NODE_UID:$NODE_GID" "$NODES_ROOT/$city"
    chmod 0700 "$NODES_ROOT/$city"
done

echo "federation ready:$before"
