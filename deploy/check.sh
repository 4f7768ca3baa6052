#!/usr/bin/env bash
# shellcheck disable=SC2015  # `A && pass … || fail …` is safe: pass only prints.
# Static checks of the deploy/ files; each is skipped (and said so) when its tool is missing.
#   deploy/check.sh                      # from anywhere
#   COMPOSE_SCHEMA=compose-spec.json deploy/check.sh   # also validate compose.yaml against the
#                                        # Compose Specification's JSON schema (needs jsonschema)
# Builds nothing and starts nothing.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
failed=0
pass() { printf 'ok    %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failed=1; }
skip() { printf 'skip  %s (%s)\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# systemd units: verify in a scratch root, where /usr/local/bin/citymesh is a stand-in
# (verify only checks that ExecStart's program exists and is executable).
if have systemd-analyze; then
    root="$tmp/root"
    mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd" \
        "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
    cp -a /lib/systemd/system "$root/usr/lib/systemd/"
    printf '#!/bin/sh\n' > "$root/usr/local/bin/citymesh" && chmod 0755 "$root/usr/local/bin/citymesh"
    cp /bin/kill /bin/sh "$root/bin/" && cp /usr/bin/find "$root/usr/bin/"
    cp "$here"/systemd/*.service "$here"/systemd/*.timer "$root/etc/systemd/system/"
    if out="$(systemd-analyze verify --root="$root" citymesh.service citymesh-backup.service citymesh-backup.timer 2>&1)" && [ -z "$out" ]; then
        pass "systemd-analyze verify: citymesh.service citymesh-backup.service citymesh-backup.timer"
    else
        fail "systemd-analyze verify: $out"
    fi
    mkdir -p "$root/etc/systemd/system/citymesh.service.d"
    cp "$here/systemd/citymesh.service.d/low-port.conf.example" "$root/etc/systemd/system/citymesh.service.d/low-port.conf"
    if out="$(systemd-analyze verify --root="$root" citymesh.service 2>&1)" && [ -z "$out" ]; then
        pass "systemd-analyze verify: citymesh.service with low-port.conf drop-in"
    else
        fail "systemd-analyze verify with drop-in: $out"
    fi
    rm -r "$root/etc/systemd/system/citymesh.service.d"
    for unit in citymesh.service citymesh-backup.service; do
        score="$(systemd-analyze security --offline=yes --root="$root" "$unit" 2>/dev/null | tail -n 1)"
        [ -n "$score" ] && pass "systemd-analyze security $unit: ${score#→ }" || skip "systemd-analyze security $unit" "--offline not supported"
    done
    touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
    cp "$here/systemd/citymesh.sysusers.conf" "$root/usr/lib/sysusers.d/citymesh.conf"
    cp "$here/systemd/citymesh.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/citymesh.conf"
    if systemd-sysusers --root="$root" >/dev/null 2>&1 && grep -q '^citymesh:' "$root/etc/passwd" \
        && systemd-tmpfiles --root="$root" --create citymesh.conf >/dev/null 2>&1 && [ -d "$root/var/lib/citymesh" ]; then
        pass "systemd-sysusers and systemd-tmpfiles (scratch root): user citymesh, /var/lib/citymesh, /etc/citymesh, /var/backups/citymesh"
    else
        fail "systemd-sysusers / systemd-tmpfiles"
    fi
else
    skip "systemd units" "no systemd-analyze"
fi

# YAML files parse.
if have python3 && python3 -c 'import yaml' 2>/dev/null; then
    for f in compose.yaml config/citymesh.example.yaml config/policy.example.yaml prometheus/prometheus.yml \
        prometheus/citymesh-alerts.yml grafana/provisioning/datasources/citymesh-prometheus.yaml \
        grafana/provisioning/dashboards/citymesh.yaml; do
        python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$here/$f" && pass "YAML parses: $f" || fail "YAML: $f"
    done
else
    skip "YAML" "python3 with PyYAML missing (pip install pyyaml)"
fi
if [ -n "${COMPOSE_SCHEMA:-}" ]; then
    python3 - "$COMPOSE_SCHEMA" "$here/compose.yaml" <<'PY' && pass "compose.yaml valid against $COMPOSE_SCHEMA" || fail "compose.yaml schema"
import json, sys, yaml, jsonschema
errors = list(jsonschema.Draft7Validator(json.load(open(sys.argv[1]))).iter_errors(yaml.safe_load(open(sys.argv[2]))))
for e in errors: print("  ", "/".join(map(str, e.path)), e.message)
sys.exit(1 if errors else 0)
PY
fi
if have docker && docker compose version >/dev/null 2>&1; then
    (cd "$here" && docker compose --profile monitoring config --quiet) && pass "docker compose config" || fail "docker compose config"
else
    skip "docker compose config" "no docker compose plugin"
fi

# Grafana dashboard: valid JSON; every query parses as PromQL (Grafana's variables substituted).
if have python3; then
    python3 -m json.tool "$here/grafana/citymesh-dashboard.json" >/dev/null && pass "JSON: grafana/citymesh-dashboard.json" || fail "dashboard JSON"
fi

# Prometheus: config (with stand-in token files) and rules.
if have promtool; then
    mkdir -p "$tmp/prom/secrets"
    for c in hangzhou shanghai suzhou; do echo stand-in > "$tmp/prom/secrets/$c.token"; done
    cp "$here/prometheus/citymesh-alerts.yml" "$tmp/prom/"
    sed "s#/etc/prometheus/#$tmp/prom/#g" "$here/prometheus/prometheus.yml" > "$tmp/prom/prometheus.yml"
    promtool check config "$tmp/prom/prometheus.yml" >/dev/null 2>&1 && pass "promtool check config prometheus/prometheus.yml" || fail "promtool check config"
    promtool check rules "$here/prometheus/citymesh-alerts.yml" >/dev/null 2>&1 && pass "promtool check rules prometheus/citymesh-alerts.yml" || fail "promtool check rules"
    if have python3 && python3 -c 'import yaml' 2>/dev/null; then
        python3 - "$here/grafana/citymesh-dashboard.json" "$tmp/dashboard-rules.yml" <<'PY'
import json, sys, yaml
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
rules = [{"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "1m").replace("$city", ".*")} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PY
        promtool check rules "$tmp/dashboard-rules.yml" >/dev/null 2>&1 && pass "promtool: every dashboard query parses" || fail "dashboard queries"
    fi
else
    skip "Prometheus config and rules" "no promtool (apt-get install prometheus)"
fi

if have shellcheck; then
    shellcheck -s sh "$here"/compose/*.sh && pass "shellcheck compose/*.sh" || fail "shellcheck"
else
    for f in "$here"/compose/*.sh; do sh -n "$f" || fail "sh -n $f"; done
    skip "shellcheck" "not installed; sh -n only"
fi

exit "$failed"
