#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the Prometheus side of the daemon with test/tools/metrics_dump, which renders the
# product's metric families:
# - its /metrics page, from stdout and over HTTP, passes `promtool check metrics`;
# - the rules pass `promtool check rules` and their unit tests (`promtool test rules`);
# - every metric name in the rules and the Grafana dashboard exists on the page;
# - a real Prometheus scrapes the endpoint, loads the rules and runs every dashboard query.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:?set SNAKEPIT_BUILD_DIR to the meson build directory}
rules=$root/deploy/prometheus/snakepit-rules.yml
rules_test=$root/deploy/prometheus/snakepit-rules.test.yml
dashboard=$root/deploy/grafana/snakepit-dashboard.json
dump=$build/test/metrics_dump
tmp=$(mktemp -d)
passed=0
failed=0
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Run one check: "check NAME COMMAND..."; on failure print its output.
check() {
    local name=$1
    shift
    if "$@" >"$tmp/check.log" 2>&1; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "FAILED - $name"
        sed 's/^/    /' "$tmp/check.log"
        failed=$((failed + 1))
    fi
}

# Metric names in FILE, without recording-rule names (level:metric:operation).
names_in() {
    grep -oE '(^|[^:A-Za-z0-9_])(snakepit|process)_[A-Za-z0-9_]+' "$1" |
        sed -E 's/^[^A-Za-z]//' | sort -u
}

# Every metric name used in FILE appears on the page as a sample or a TYPE line.
names_exist() {
    local file=$1 missing=0 count=0 name
    for name in $(names_in "$file"); do
        count=$((count + 1))
        if ! grep -qE "^($name[{ ]|# TYPE $name )" "$tmp/metrics.txt"; then
            echo "$name is used in $file but not exported"
            missing=1
        fi
    done
    echo "$count names checked"
    [ "$count" -gt 0 ] && [ "$missing" -eq 0 ]
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start metrics_dump --serve on a free port; sets dump_port.
start_dump_server() {
    "$dump" --serve 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
    pids+=($!)
    for _ in $(seq 50); do
        dump_port=$(sed -nE 's/^LISTENING ([0-9]+)$/\1/p' "$tmp/serve.out")
        [ -n "$dump_port" ] && return 0
        sleep 0.1
    done
    cat "$tmp/serve.err"
    return 1
}

http_metrics_valid() {
    curl -fsS "http://127.0.0.1:$dump_port/metrics" -o "$tmp/http.txt" &&
        curl -fsSI "http://127.0.0.1:$dump_port/metrics" | tr -d '\r' | tee "$tmp/head.txt" |
        grep -qi '^content-type: text/plain; version=0.0.4' &&
        promtool check metrics <"$tmp/http.txt"
}

# Query the Prometheus HTTP API until the expression yields a sample, for up to 30 s.
prometheus_has() {
    local expr=$1
    for _ in $(seq 60); do
        if curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$expr" |
            grep -q '"result":\[{'; then
            return 0
        fi
        sleep 0.5
    done
    echo "no result for $expr"
    tail -n 20 "$tmp/prometheus.log"
    return 1
}

start_prometheus() {
    prom_port=$(free_port)
    cp "$rules" "$tmp/snakepit-rules.yml"
    cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $tmp/snakepit-rules.yml
scrape_configs:
  - job_name: snakepit
    static_configs:
      - targets: ['127.0.0.1:$dump_port']
YAML
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
        --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
    pids+=($!)
}

# Every dashboard query, with Grafana's variables filled in, is valid PromQL for Prometheus.
dashboard_queries_valid() {
    /usr/bin/python3 - "$dashboard" "http://127.0.0.1:$prom_port/api/v1/query" <<'PY'
import json, sys, urllib.parse, urllib.request
dashboard, url = sys.argv[1], sys.argv[2]
exprs = [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
bad = 0
for expr in exprs:
    query = expr.replace("$__rate_interval", "1m")
    for var in ("$instance", "$pool", "$job"):
        query = query.replace(var, ".*")
    data = urllib.parse.urlencode({"query": query}).encode()
    try:
        with urllib.request.urlopen(url, data, timeout=10) as response:
            status = json.load(response)["status"]
    except urllib.error.HTTPError as e:
        status = f"HTTP {e.code}: {e.read().decode()[:200]}"
    if status != "success":
        print(f"query failed ({status}): {query}")
        bad += 1
print(f"{len(exprs)} queries, {bad} failed")
sys.exit(1 if bad or not exprs else 0)
PY
}

rules_healthy() {
    curl -fsS "http://127.0.0.1:$prom_port/api/v1/rules" >"$tmp/rules.json" &&
        /usr/bin/python3 - "$tmp/rules.json" <<'PY'
import json, sys
groups = json.load(open(sys.argv[1]))["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") != "ok"]
print(f"{len(rules)} rules loaded, unhealthy: {bad}")
sys.exit(1 if bad or not rules else 0)
PY
}

ninja -C "$build" test/metrics_dump >/dev/null || { echo "promtool: 0 passed, 1 failed"; exit 1; }

check "metrics_dump renders the page" sh -c "'$dump' >'$tmp/metrics.txt'"
check "promtool check metrics" sh -c "promtool check metrics <'$tmp/metrics.txt'"
check "page has the overflow series" grep -q '^snakepit_requests_total{pool="other",command="other",status="other"} ' "$tmp/metrics.txt"
check "promtool check rules" promtool check rules "$rules"
check "promtool test rules" promtool test rules "$rules_test"
check "dashboard is valid JSON" /usr/bin/python3 -m json.tool "$dashboard"
check "rule metrics exist" names_exist "$rules"
check "dashboard metrics exist" names_exist "$dashboard"
if start_dump_server; then
    check "GET /metrics over HTTP passes promtool" http_metrics_valid
    start_prometheus
    check "Prometheus scrapes the endpoint" prometheus_has 'up{job="snakepit"} == 1'
    check "Prometheus sees snakepit_info" prometheus_has 'snakepit_info{version="0.1.0"} == 1'
    check "Prometheus computes the p99 rule" prometheus_has 'pool:snakepit_request_duration_seconds:p99_5m'
    check "Prometheus loads every rule" rules_healthy
    check "Prometheus runs every dashboard query" dashboard_queries_valid
else
    echo "FAILED - metrics_dump --serve did not start"
    failed=$((failed + 1))
fi

echo "promtool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
